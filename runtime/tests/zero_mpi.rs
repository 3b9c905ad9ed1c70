//! ZeRO-1 over MPI: on 2 ranks the sharded trainer gives the parameters, loss and gradient norm
//! of unsharded AdamW on 1 rank with the same global batch (tiny Llama, clipping active); the
//! MPI reduce-scatter and all-gather, and the trait's defaults over all-reduce, give the exact
//! sums and concatenations; a sharded checkpoint written by 2 ranks resumes bit for bit on 2
//! ranks and, within fp32 rounding, on 1 rank.
//!
//! One executable plays both parts (`harness = false`), as `dist_mpi.rs` does: run by cargo it
//! is the orchestrator and starts itself under `mpirun`; with `SFTCTL_ZERO_WORKER=<scenario>`
//! it is one rank.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use common::{ToySource, settings as toy_step_settings, toy};
use sftctl_runtime::collective::mpi::MpiCollective;
use sftctl_runtime::collective::{Collective, CollectiveError, SingleProcess, replicas};
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::CausalLm;
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::checkpoint::{OPTIMIZER_FILE, ZERO_FILE};
use sftctl_runtime::train::run::{resume, run};
use sftctl_runtime::train::toy::ToyWeights;
use sftctl_runtime::train::{
    AdamWSettings, BatchSource, CheckpointInfo, Checkpoints, LoopSettings, LrSchedule, MicroBatch,
    Observer, Progress, RunOutcome, ScheduleKind, StepBatch, StepOutcome, StepSettings, StepStats,
    StopSignal, Trainer, with_stable_param_ids,
};

const VOCAB: usize = 96;
/// Micro-batches per optimizer step over all ranks.
const MICRO_PER_STEP: usize = 4;
const SAMPLES_PER_MICRO: usize = 3;
const STEPS: usize = 6;

/// Tolerances: the 2-rank run sums the same per-micro-batch gradients in another order (fp32
/// rounding), and its norm is summed over shards in f64 instead of per tensor in f32.
const PARAM_ABS_TOL: f32 = 1e-6;
const LOSS_REL_TOL: f64 = 1e-6;
const NORM_REL_TOL: f64 = 1e-5;

/// Micro-batch `index` (global over all steps).
fn micro_batch(index: u64) -> MicroBatch {
    common::llama_micro_batch(0x2E20, index, SAMPLES_PER_MICRO, VOCAB)
}

fn llama_trainer() -> Trainer<CausalLm> {
    let device = Device::flex().autodiff();
    let model = CausalLm::random(&tiny_config(Arch::Llama, VOCAB), &device, 11);
    let model = with_stable_param_ids(model);
    let settings = StepSettings {
        adamw: AdamWSettings {
            weight_decay: 0.01,
            ..AdamWSettings::default()
        },
        schedule: LrSchedule {
            kind: ScheduleKind::Cosine,
            peak_lr: 1e-3,
            warmup_steps: 1,
            total_steps: STEPS as u64,
            min_lr_ratio: 0.0,
        },
        // Low enough that clipping acts, so the global norm over the shards matters.
        max_grad_norm: Some(0.5),
    };
    Trainer::new(model, settings, device)
}

fn params<M: Module>(m: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let mut c = Collect(vec![]);
    m.visit(&mut c);
    c.0
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    fs_err::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    fs_err::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The fp32 weights of a run's complete step-6 checkpoint, every tensor in name order.
fn weights(run: &Path) -> Vec<f32> {
    let dir = run.join("checkpoints/step-6");
    assert!(
        dir.join("COMPLETE").is_file(),
        "no final checkpoint in {}",
        run.display()
    );
    let bytes = fs_err::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            let t = st.tensor(n).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{n}");
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

// ---------------------------------------------------------------------------------- ranks

/// Forwards only the required methods, so the trait's default reduce-scatter and all-gather
/// (what NCCL uses) run over MPI's all-reduce.
struct DefaultsOnly<'a>(&'a mut MpiCollective);

impl Collective for DefaultsOnly<'_> {
    fn rank(&self) -> usize {
        self.0.rank()
    }
    fn world_size(&self) -> usize {
        self.0.world_size()
    }
    fn all_reduce_sum_f32(&mut self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.0.all_reduce_sum_f32(values)
    }
    fn all_reduce_sum_u64(&mut self, value: u64) -> Result<u64, CollectiveError> {
        self.0.all_reduce_sum_u64(value)
    }
    fn all_reduce_sum_f64(&mut self, value: f64) -> Result<f64, CollectiveError> {
        self.0.all_reduce_sum_f64(value)
    }
    fn any(&mut self, flag: bool) -> Result<bool, CollectiveError> {
        self.0.any(flag)
    }
    fn broadcast_bytes(&mut self, root: usize, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        self.0.broadcast_bytes(root, bytes)
    }
}

/// Rank r sends `r·1000 + i` at position i; block b of the sum is then known exactly.
fn check_collectives(c: &mut dyn Collective, what: &str) -> Result<(), String> {
    let (rank, world) = (c.rank(), c.world_size());
    let block = 5;
    let send: Vec<f32> = (0..block * world)
        .map(|i| (rank * 1000 + i) as f32)
        .collect();
    let mut recv = vec![0.0; block];
    c.reduce_scatter_sum_f32(&send, &mut recv)
        .map_err(|e| e.to_string())?;
    let want: Vec<f32> = (0..block)
        .map(|j| {
            (0..world)
                .map(|q| (q * 1000 + rank * block + j) as f32)
                .sum()
        })
        .collect();
    if recv != want {
        return Err(format!(
            "{what}: reduce-scatter gave {recv:?}, want {want:?}"
        ));
    }
    let mine: Vec<f32> = (0..block).map(|j| (rank * 10 + j) as f32 - 0.5).collect();
    let mut all = vec![0.0; block * world];
    c.all_gather_f32(&mine, &mut all)
        .map_err(|e| e.to_string())?;
    let want: Vec<f32> = (0..world)
        .flat_map(|q| (0..block).map(move |j| (q * 10 + j) as f32 - 0.5))
        .collect();
    if all != want {
        return Err(format!("{what}: all-gather gave {all:?}, want {want:?}"));
    }
    if c.all_gather_f32(&mine, &mut [0.0; 3]).is_ok() {
        return Err(format!("{what}: a wrong buffer length was accepted"));
    }
    Ok(())
}

/// The toy model's data split over the ranks: 8 samples per step in 4 micro-batches, rank r
/// takes micro-batches `r·4/world ..`.
struct RankSource {
    inner: ToySource,
    rank: usize,
    world: usize,
}

impl BatchSource for RankSource {
    fn next_step(&mut self) -> Option<StepBatch> {
        let all = self.inner.next_step()?;
        let per = all.micro_batches.len() / self.world;
        Some(StepBatch {
            micro_batches: all.micro_batches[self.rank * per..(self.rank + 1) * per].to_vec(),
            agree_points: per,
        })
    }
    fn state(&self) -> serde_json::Value {
        self.inner.state()
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        self.inner.restore(state)
    }
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
    fn validation(&self) -> &[MicroBatch] {
        &[]
    }
}

struct StopAfter(usize, Option<(usize, StopSignal)>);

impl Observer for StopAfter {
    fn step(&mut self, _stats: &StepStats, _progress: &Progress) {
        self.0 += 1;
        if let Some((n, stop)) = &self.1
            && self.0 == *n
        {
            stop.request();
        }
    }
    fn validation(&mut self, _step: u64, _loss: f64, _tokens: u64) {}
    fn checkpoint(&mut self, _info: &CheckpointInfo, _progress: &Progress) {}
}

const TOY_STEPS: u64 = 7;

/// `full`: the whole run; `stop`: stop after 3 steps (checkpoint); `continue`: resume the
/// newest checkpoint in `out` with fresh random weights and finish. Writes the final
/// parameters and (rank 0) the gathered moments.
fn toy_run(part: &str, out: &Path, c: &mut dyn Collective) -> Result<(), String> {
    let (rank, world) = (c.rank(), c.world_size());
    let mut settings = toy_step_settings(ScheduleKind::Cosine, 2, TOY_STEPS);
    settings.adamw.weight_decay = 0.01;
    let seed = if part == "continue" { 999 } else { 1 };
    let mut t = Trainer::new(toy(seed), settings, common::device()).with_zero1(rank, world);
    let mut src = RankSource {
        inner: ToySource::new(42, 8, 2),
        rank,
        world,
    };
    let ckpts = Checkpoints::open(out.join("checkpoints")).map_err(|e| e.to_string())?;
    let weights = ToyWeights { template: toy(0) };
    let mut progress = Progress::default();
    if part == "continue" {
        let (p, _) = resume(&mut t, &mut src, &ckpts, &weights)
            .map_err(|e| e.to_string())?
            .ok_or("no checkpoint to resume")?;
        progress = p;
    }
    let stop = StopSignal::manual(Duration::from_secs(600));
    let mut obs = StopAfter(0, (part == "stop").then(|| (3, stop.clone())));
    let loop_settings = LoopSettings {
        total_steps: TOY_STEPS,
        checkpoint_every_samples: Some(16),
        keep_last: 2,
        validate_every_steps: None,
        best_by_validation: false,
    };
    let outcome = run(
        &mut t,
        &mut src,
        progress,
        &ckpts,
        &weights,
        &loop_settings,
        c,
        &stop,
        &mut obs,
    )
    .map_err(|e| e.to_string())?;
    match (part, &outcome) {
        ("stop", RunOutcome::Stopped { .. }) | (_, RunOutcome::Completed { .. }) => {}
        _ => return Err(format!("{part}: {outcome:?}")),
    }
    let zero = t.zero.as_ref().ok_or("not sharded")?;
    let state = zero.gather_state(c).map_err(|e| e.to_string())?;
    let tag = format!("{part}-w{world}");
    write_f32(
        &out.join(format!("params-{tag}-r{rank}.bin")),
        &params(&t.model),
    );
    if let Some(s) = state {
        write_f32(&out.join(format!("m-{tag}.bin")), &s.exp_avg);
        write_f32(&out.join(format!("v-{tag}.bin")), &s.exp_avg_sq);
        fs_err::write(out.join(format!("time-{tag}")), s.step_count.to_string()).unwrap();
    }
    Ok(())
}

fn llama_run(sharded: bool, out: &Path, c: &mut dyn Collective) -> Result<(), String> {
    let (rank, world) = (c.rank(), c.world_size());
    let per_rank = MICRO_PER_STEP / world;
    let stop = StopSignal::manual(Duration::from_secs(600));
    let mut t = llama_trainer();
    if sharded {
        t = t.with_zero1(rank, world);
    }
    let mut log = Vec::new();
    for step in 0..STEPS {
        let first = (step * MICRO_PER_STEP + rank * per_rank) as u64;
        let mine: Vec<MicroBatch> = (first..first + per_rank as u64).map(micro_batch).collect();
        match t
            .step(&mine, per_rank, c, &stop)
            .map_err(|e| e.to_string())?
        {
            StepOutcome::Completed(s) => log.push(serde_json::json!({
                "step": s.step, "loss": s.loss, "grad_norm": s.grad_norm,
                "loss_tokens": s.loss_tokens})),
            other => return Err(format!("step {step}: {other:?}")),
        }
        replicas::verify(&t.model, c, t.step).map_err(|e| e.to_string())?;
    }
    let tag = format!("{}-w{world}", if sharded { "zero1" } else { "plain" });
    write_f32(
        &out.join(format!("params-{tag}-r{rank}.bin")),
        &params(&t.model),
    );
    if let Some(z) = &t.zero {
        fs_err::write(
            out.join(format!("state-bytes-{tag}-r{rank}")),
            format!("{} {}", z.state_bytes(), z.layout().total),
        )
        .unwrap();
    }
    if rank == 0 {
        fs_err::write(
            out.join(format!("log-{tag}.json")),
            serde_json::to_string_pretty(&log).unwrap(),
        )
        .unwrap();
    }
    Ok(())
}

fn run_scenario(scenario: &str, out: &Path, c: &mut dyn Collective) -> Result<(), String> {
    match scenario {
        "llama-plain" => llama_run(false, out, c),
        "llama-zero1" => llama_run(true, out, c),
        "toy-full" => toy_run("full", out, c),
        "toy-stop" => toy_run("stop", out, c),
        "toy-continue" => toy_run("continue", out, c),
        other => Err(format!("unknown scenario `{other}`")),
    }
}

/// One rank of a scenario; returns the process exit status.
fn worker(scenario: &str, out: &Path) -> i32 {
    let result = if std::env::var("OMPI_COMM_WORLD_SIZE").is_err() {
        run_scenario(scenario, out, &mut SingleProcess)
    } else {
        let mut c = match MpiCollective::init(Some(out)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        let r = if scenario == "collectives" {
            check_collectives(&mut c, "MPI")
                .and_then(|()| check_collectives(&mut DefaultsOnly(&mut c), "the trait's defaults"))
        } else {
            run_scenario(scenario, out, &mut c)
        };
        if r.is_ok() {
            let s = c.stats();
            let line = format!(
                "rank {}: {} collectives, {} bytes, {:.3} s in collectives\n",
                c.rank(),
                s.calls,
                s.bytes,
                s.seconds
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        }
        r
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            3
        }
    }
}

// ---------------------------------------------------------------------------- orchestrator

fn command(np: Option<usize>, scenario: &str, out: &Path) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match np {
        Some(np) => {
            let mut cmd = Command::new("mpirun");
            cmd.args([
                "-np",
                &np.to_string(),
                "--oversubscribe",
                "--bind-to",
                "none",
            ]);
            cmd.args(["-x", "SFTCTL_ZERO_WORKER", "-x", "SFTCTL_ZERO_OUT"]);
            cmd.arg(&exe);
            cmd.env("OMPI_MCA_btl", "self,tcp")
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
            cmd
        }
        None => Command::new(&exe),
    };
    cmd.env("SFTCTL_ZERO_WORKER", scenario)
        .env("SFTCTL_ZERO_OUT", out);
    cmd
}

fn run_ok(np: Option<usize>, scenario: &str, out: &Path) {
    let what = format!("{scenario} on {np:?} ranks");
    let res = command(np, scenario, out)
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stderr = String::from_utf8_lossy(&res.stderr);
    eprint!("{stderr}");
    assert!(res.status.success(), "{what} failed ({})", res.status);
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sftctl-zero-{name}-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&d);
    fs_err::create_dir_all(&d).unwrap();
    d
}

fn collectives_are_exact() {
    run_ok(Some(2), "collectives", &tempdir("coll"));
    run_ok(Some(3), "collectives", &tempdir("coll3"));
}

fn zero1_on_two_ranks_equals_unsharded_on_one() {
    let out = tempdir("llama");
    run_ok(None, "llama-plain", &out);
    run_ok(Some(2), "llama-zero1", &out);
    let log = |tag: &str| -> Vec<serde_json::Value> {
        serde_json::from_str(&fs_err::read_to_string(out.join(format!("log-{tag}.json"))).unwrap())
            .unwrap()
    };
    let (one, two) = (log("plain-w1"), log("zero1-w2"));
    assert_eq!(one.len(), STEPS);
    assert_eq!(two.len(), STEPS);
    let mut clipped = 0;
    let (mut loss_worst, mut norm_worst) = (0.0f64, 0.0f64);
    for (a, b) in one.iter().zip(&two) {
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        for (k, tol, worst) in [
            ("loss", LOSS_REL_TOL, &mut loss_worst),
            ("grad_norm", NORM_REL_TOL, &mut norm_worst),
        ] {
            let (x, y) = (f(a, k), f(b, k));
            let rel = (x - y).abs() / x.abs();
            *worst = worst.max(rel);
            assert!(rel <= tol, "step {}: {k} {x} vs {y}", a["step"]);
        }
        assert_eq!(a["loss_tokens"], b["loss_tokens"]);
        clipped += usize::from(f(a, "grad_norm") > 0.5);
    }
    assert!(clipped > 0, "no step was clipped: {one:?}");
    let p1 = read_f32(&out.join("params-plain-w1-r0.bin"));
    let r0 = read_f32(&out.join("params-zero1-w2-r0.bin"));
    let r1 = read_f32(&out.join("params-zero1-w2-r1.bin"));
    assert_eq!(bits(&r0), bits(&r1), "the two ranks' parameters differ");
    let worst = max_diff(&p1, &r0);
    let moved = max_diff(&params(&llama_trainer().model), &p1);
    let (bytes0, total): (usize, usize) = {
        let s = fs_err::read_to_string(out.join("state-bytes-zero1-w2-r0")).unwrap();
        let mut it = s.split(' ').map(|x| x.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    eprintln!(
        "zero1 on 2 ranks vs unsharded on 1: max |param diff| {worst:e} (moved up to {moved:e}), \
         worst loss rel {loss_worst:e}, worst norm rel {norm_worst:e}; optimizer state per rank \
         {bytes0} bytes for {total} parameters (unsharded: {} bytes of moments on every rank)",
        8 * total
    );
    assert!(worst <= PARAM_ABS_TOL, "max |param diff| {worst}");
    assert!(
        moved > 100.0 * PARAM_ABS_TOL,
        "parameters barely moved: {moved}"
    );
    assert_eq!(
        bytes0,
        12 * total.div_ceil(2),
        "master + 2 moments of half the parameters"
    );
}

fn sharded_checkpoint_resumes() {
    let full = tempdir("full");
    run_ok(Some(2), "toy-full", &full);
    let part = tempdir("part");
    run_ok(Some(2), "toy-stop", &part);
    let ckpts = Checkpoints::open(part.join("checkpoints")).unwrap();
    let last = ckpts.latest_resumable().unwrap().expect("a checkpoint");
    assert_eq!(last.marker.step, 3);
    assert!(last.marker.files.contains(&ZERO_FILE.to_string()));
    assert!(!last.dir.join(OPTIMIZER_FILE).exists());
    // The same checkpoint resumed on 1 rank (a copy; the 2-rank resume writes into `part`).
    let one = tempdir("one");
    fs_err::create_dir_all(one.join("checkpoints")).unwrap();
    let dst = one.join("checkpoints").join(last.dir.file_name().unwrap());
    fs_err::create_dir_all(&dst).unwrap();
    for f in &last.marker.files {
        fs_err::copy(last.dir.join(f), dst.join(f)).unwrap();
    }
    fs_err::copy(last.dir.join("COMPLETE"), dst.join("COMPLETE")).unwrap();
    run_ok(Some(2), "toy-continue", &part);
    run_ok(None, "toy-continue", &one);

    let f = |dir: &Path, name: &str| read_f32(&dir.join(name));
    let time =
        |dir: &Path, tag: &str| fs_err::read_to_string(dir.join(format!("time-{tag}"))).unwrap();
    assert_eq!(time(&full, "full-w2"), TOY_STEPS.to_string());
    assert_eq!(time(&part, "continue-w2"), TOY_STEPS.to_string());
    assert_eq!(time(&one, "continue-w1"), TOY_STEPS.to_string());
    for name in [
        "params-{}-r0.bin",
        "params-{}-r1.bin",
        "m-{}.bin",
        "v-{}.bin",
    ] {
        let a = f(&full, &name.replace("{}", "full-w2"));
        let b = f(&part, &name.replace("{}", "continue-w2"));
        assert_eq!(
            bits(&a),
            bits(&b),
            "{name}: 2-rank resume differs from the uninterrupted run"
        );
    }
    let a = f(&full, "params-full-w2-r0.bin");
    let b = f(&one, "params-continue-w1-r0.bin");
    let worst = max_diff(&a, &b);
    let (ma, mb) = (f(&full, "m-full-w2.bin"), f(&one, "m-continue-w1.bin"));
    let m_scale = ma.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let m_worst = max_diff(&ma, &mb);
    eprintln!(
        "2-rank checkpoint resumed on 1 rank: max |param diff| {worst:e}, max |m diff| {m_worst:e} \
         (|m| up to {m_scale:e})"
    );
    assert!(
        worst <= PARAM_ABS_TOL * 10.0,
        "resume on 1 rank: max |param diff| {worst}"
    );
    assert!(
        m_worst <= 1e-5 * m_scale,
        "resume on 1 rank: max |m diff| {m_worst}"
    );
}

/// `sftctl-train run` on the tiny Llama and the quickstart data, 6 steps of 8 samples with
/// clipping at 0.5: unsharded on 1 rank against `optimizer_sharding = "zero1"` under
/// `mpirun -np 2` (the spec key through the job's wiring).
fn binary_zero1_matches_unsharded() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempdir("bin");
    let bin = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sftctl-train"));
        c.env_remove("SLURM_JOB_ID")
            .env_remove("SLURM_RESTART_COUNT")
            .env_remove("SFTCTL_PHASE");
        c
    };
    let model = tmp.join("model");
    let o = bin()
        .args(["make-tiny-model", "--arch", "llama", "--seed", "3", "--out"])
        .arg(&model)
        .arg("--tokenizer")
        .arg(repo.join("data/tests/fixtures/tiny-llama3"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let make_run = |name: &str, sharding: &str| {
        let run = tmp.join(name);
        fs_err::create_dir_all(&run).unwrap();
        let data = repo.join("examples/data/quickstart/train.jsonl");
        let config = serde_json::json!({
            "format_version": 1, "run_id": name, "name": name, "sweep": "test",
            "model": {"path": model},
            "data": [{"name": "quickstart", "path": data}],
            "train": {
                "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "schedule": "cosine",
                "max_steps": 6, "token_budget_per_gpu": 160, "max_seq_len": 160,
                "checkpoint_every": 3, "seed": 1, "grad_clip": 0.5, "weight_decay": 0.01,
                "optimizer_sharding": sharding
            },
            "phases": [0],
        });
        fs_err::write(run.join("config.json"), config.to_string()).unwrap();
        run
    };
    let (one, two) = (make_run("one", "none"), make_run("two", "zero1"));
    let o = bin().arg("run").arg(&one).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("mpirun")
        .args([
            "-np",
            "2",
            "--oversubscribe",
            "--bind-to",
            "none",
            "--tag-output",
        ])
        .arg(env!("CARGO_BIN_EXE_sftctl-train"))
        .arg("run")
        .arg(&two)
        .env("OMPI_MCA_btl", "self,tcp")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let metrics = |run: &Path| -> Vec<serde_json::Value> {
        fs_err::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (m1, m2) = (metrics(&one), metrics(&two));
    assert_eq!(m1.len(), 6);
    assert_eq!(m2.len(), 6);
    let (mut norm_worst, mut loss_worst) = (0.0f64, 0.0f64);
    let mut clipped = 0;
    for (a, b) in m1.iter().zip(&m2) {
        for (k, tol) in [("loss", LOSS_REL_TOL), ("grad_norm", NORM_REL_TOL)] {
            let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
            let worst = if k == "loss" {
                &mut loss_worst
            } else {
                &mut norm_worst
            };
            *worst = worst.max((x - y).abs() / x.abs());
            assert!(
                (x - y).abs() <= tol * x.abs(),
                "step {}: {k} {x} vs {y}",
                a["step"]
            );
        }
        clipped += usize::from(a["grad_norm"].as_f64().unwrap() > 0.5);
    }
    assert!(clipped > 0, "no step was clipped");
    let worst = max_diff(&weights(&one), &weights(&two));
    assert!(two.join("checkpoints/step-6").join(ZERO_FILE).is_file());
    assert!(!two.join("checkpoints/step-6").join(OPTIMIZER_FILE).exists());
    eprintln!(
        "sftctl-train: zero1 on 2 ranks vs unsharded on 1: max |weight diff| {worst:e}, worst \
         loss rel {loss_worst:e}, worst norm rel {norm_worst:e}"
    );
    assert!(worst <= PARAM_ABS_TOL, "max |weight diff| {worst}");

    // The 2-rank run's step-3 checkpoint resumed by the binary on 1 rank, still sharded.
    let unsharded_final = weights(&one);
    fs_err::remove_dir_all(two.join("checkpoints/step-6")).unwrap();
    let o = bin().arg("run").arg(&two).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resumed"), "{stderr}");
    let worst = max_diff(&unsharded_final, &weights(&two));
    eprintln!("sftctl-train: that checkpoint resumed on 1 rank: max |weight diff| {worst:e}");
    assert!(
        worst <= PARAM_ABS_TOL,
        "resumed on 1 rank: max |weight diff| {worst}"
    );
}

/// `sftctl-train run` with `precision = "bf16"` (train/precision.rs): 1 rank against 2 ranks
/// under `mpirun` (the flat fp32 optimizer sharded over them), then the 2-rank step-3
/// checkpoint, whose `model.safetensors` holds the master weights gathered from both ranks,
/// resumed on 1 rank. bf16 sums a rank's micro-batch gradients in bf16 and the ranks' in f32,
/// so the two differ by more than the fp32 runs above (figures in docs/gpu.md).
fn binary_bf16_two_ranks_matches_one() {
    const BF16_LOSS_REL_TOL: f64 = 2e-4;
    const BF16_WEIGHT_ABS_TOL: f32 = 2e-3;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempdir("bf16");
    let bin = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sftctl-train"));
        c.env_remove("SLURM_JOB_ID")
            .env_remove("SLURM_RESTART_COUNT")
            .env_remove("SFTCTL_PHASE");
        c
    };
    let model = tmp.join("model");
    let o = bin()
        .args(["make-tiny-model", "--arch", "llama", "--seed", "3", "--out"])
        .arg(&model)
        .arg("--tokenizer")
        .arg(repo.join("data/tests/fixtures/tiny-llama3"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let make_run = |name: &str| {
        let run = tmp.join(name);
        fs_err::create_dir_all(&run).unwrap();
        let data = repo.join("examples/data/quickstart/train.jsonl");
        let config = serde_json::json!({
            "format_version": 1, "run_id": name, "name": name, "sweep": "test",
            "model": {"path": model},
            "data": [{"name": "quickstart", "path": data}],
            "train": {
                "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "schedule": "cosine",
                "max_steps": 6, "token_budget_per_gpu": 160, "max_seq_len": 160,
                "checkpoint_every": 3, "seed": 1, "grad_clip": 0.5, "weight_decay": 0.01,
                "precision": "bf16"
            },
            "phases": [0],
        });
        fs_err::write(run.join("config.json"), config.to_string()).unwrap();
        run
    };
    let (one, two) = (make_run("one"), make_run("two"));
    let o = bin().arg("run").arg(&one).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("mpirun")
        .args([
            "-np",
            "2",
            "--oversubscribe",
            "--bind-to",
            "none",
            "--tag-output",
        ])
        .arg(env!("CARGO_BIN_EXE_sftctl-train"))
        .arg("run")
        .arg(&two)
        .env("OMPI_MCA_btl", "self,tcp")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let losses = |run: &Path| -> Vec<f64> {
        fs_err::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!((l1.len(), l2.len()), (6, 6));
    let loss_worst = l1
        .iter()
        .zip(&l2)
        .map(|(a, b)| (a - b).abs() / a)
        .fold(0.0f64, f64::max);
    let (w1, w2) = (weights(&one), weights(&two));
    // The master weights, not their bf16 copy: most values lie off the bf16 grid.
    let off_grid = w2.iter().filter(|x| x.to_bits() & 0xFFFF != 0).count();
    assert!(
        off_grid > w2.len() / 2,
        "{off_grid} of {} off the bf16 grid",
        w2.len()
    );
    let worst = max_diff(&w1, &w2);
    eprintln!(
        "sftctl-train bf16: 2 ranks vs 1: worst loss rel {loss_worst:e}, max |weight diff| \
         {worst:e}"
    );
    assert!(loss_worst <= BF16_LOSS_REL_TOL, "{l1:?} vs {l2:?}");
    assert!(worst <= BF16_WEIGHT_ABS_TOL, "max |weight diff| {worst}");

    // The 2-rank step-3 checkpoint resumed on 1 rank ends near the 1-rank run.
    fs_err::remove_dir_all(two.join("checkpoints/step-6")).unwrap();
    let o = bin().arg("run").arg(&two).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resumed"), "{stderr}");
    let worst = max_diff(&w1, &weights(&two));
    eprintln!("sftctl-train bf16: that checkpoint resumed on 1 rank: max |weight diff| {worst:e}");
    assert!(
        worst <= BF16_WEIGHT_ABS_TOL,
        "resumed: max |weight diff| {worst}"
    );
}

fn main() {
    if let Ok(scenario) = std::env::var("SFTCTL_ZERO_WORKER") {
        let out = PathBuf::from(std::env::var("SFTCTL_ZERO_OUT").expect("SFTCTL_ZERO_OUT"));
        std::process::exit(worker(&scenario, &out));
    }
    let tests: [(&str, fn()); 5] = [
        ("collectives_are_exact", collectives_are_exact),
        (
            "zero1_on_two_ranks_equals_unsharded_on_one",
            zero1_on_two_ranks_equals_unsharded_on_one,
        ),
        ("sharded_checkpoint_resumes", sharded_checkpoint_resumes),
        (
            "binary_zero1_matches_unsharded",
            binary_zero1_matches_unsharded,
        ),
        (
            "binary_bf16_two_ranks_matches_one",
            binary_bf16_two_ranks_matches_one,
        ),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        test();
        eprintln!("test {name} ... ok");
        ran += 1;
    }
    eprintln!("{ran} test(s) passed");
}
