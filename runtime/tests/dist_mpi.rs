//! Data parallelism over MPI on the real model (tiny Llama) and the trainer's step: 2 ranks × k
//! micro-batches equal 1 rank × 2k; a parameter mismatch stops every rank; a non-zero rank that
//! is killed or stopped fails the job within 60 s, and so does one that hangs outside the
//! collectives while its heartbeat lives (collective timeout); the same equality inside a two-node
//! allocation of the local Slurm cluster.
//!
//! One executable plays both parts (`harness = false`): run by cargo it is the orchestrator and
//! starts itself under `mpirun`; with `SFTCTL_DIST_WORKER=<scenario>` it is one rank.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use sftctl_runtime::collective::mpi::MpiCollective;
use sftctl_runtime::collective::replicas;
use sftctl_runtime::collective::{Collective, SingleProcess};
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::CausalLm;
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::{
    AdamWSettings, LrSchedule, MicroBatch, ScheduleKind, StepOutcome, StepSettings, StopSignal,
    Trainer, with_stable_param_ids,
};

const VOCAB: usize = 96;
/// Micro-batches per optimizer step over all ranks (2k with k = 2 per rank on 2 ranks).
const MICRO_PER_STEP: usize = 4;
const SAMPLES_PER_MICRO: usize = 3;
const STEPS: usize = 4;

/// Tolerances (fp32 rounding: the 2-rank run sums the same per-micro-batch gradients in
/// another order). Parameters are O(0.02..1), learning rate 1e-3.
const PARAM_ABS_TOL: f32 = 1e-6;
const LOSS_REL_TOL: f64 = 1e-6;
const NORM_REL_TOL: f64 = 1e-5;

/// Micro-batch `index` (global over all steps).
fn micro_batch(index: u64) -> MicroBatch {
    common::llama_micro_batch(0x5EED, index, SAMPLES_PER_MICRO, VOCAB)
}

fn trainer() -> Trainer<CausalLm> {
    trainer_for(STEPS as u64)
}

fn trainer_for(total_steps: u64) -> Trainer<CausalLm> {
    let device = Device::flex().autodiff();
    let model = CausalLm::random(&tiny_config(Arch::Llama, VOCAB), &device, 11);
    let model = with_stable_param_ids(model);
    let settings = StepSettings {
        adamw: AdamWSettings::default(),
        schedule: LrSchedule {
            kind: ScheduleKind::Cosine,
            peak_lr: 1e-3,
            warmup_steps: 0,
            total_steps,
            min_lr_ratio: 0.0,
        },
        // Low enough that clipping acts, so the global norm after the reduction matters.
        max_grad_norm: Some(0.5),
    };
    Trainer::new(model, settings, device)
}

fn params<M: Module>(m: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0
                .extend(param.val().into_data().iter::<f32>().collect::<Vec<_>>());
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

// ---------------------------------------------------------------------------------- ranks

/// One rank of a scenario; returns the process exit status.
fn worker(scenario: &str, out: &Path) -> i32 {
    let single = std::env::var("OMPI_COMM_WORLD_SIZE").is_err();
    let result = if single {
        run_scenario(scenario, out, &mut SingleProcess)
    } else {
        let mut c = match MpiCollective::init(Some(out)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        let r = run_scenario(scenario, out, &mut c);
        if let Err(e) = &r {
            // Every rank prints its error before any exits (mpirun kills the rest on the first
            // non-zero exit). Only the scenarios where all ranks fail together get here.
            // One write per line: ranks share the terminal, and `eprintln!` writes piecewise.
            let line = format!("error: rank {}: {e}\n", c.rank());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            c.barrier();
            return 3;
        }
        let s = c.stats();
        let line = format!(
            "rank {}: {} collectives, {} bytes, {:.3} s in collectives\n",
            c.rank(),
            s.calls,
            s.bytes,
            s.seconds
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        Ok(())
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            3
        }
    }
}

fn run_scenario(scenario: &str, out: &Path, c: &mut dyn Collective) -> Result<(), String> {
    let (rank, world) = (c.rank(), c.world_size());
    let per_rank = MICRO_PER_STEP / world;
    let stop = StopSignal::manual(Duration::from_secs(600));
    // `hang`: endless, for a signal from outside; `spin`: endless, and rank 1 stops calling
    // collectives after its second step while its heartbeat thread lives on.
    let endless = scenario == "hang" || scenario == "spin";
    let mut t = trainer_for(if endless { 1 << 40 } else { STEPS as u64 });
    if scenario == "mismatch" && rank == 1 {
        struct Nudge;
        impl ModuleMapper for Nudge {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                p.map(|t| t.add_scalar(1e-6).detach().require_grad())
            }
        }
        t.model = t.model.clone().map(&mut Nudge);
    }
    replicas::verify(&t.model, c, 0).map_err(|e| e.to_string())?;
    let steps = if endless { usize::MAX } else { STEPS };
    let mut log = Vec::new();
    for step in 0..steps {
        let first = (step * MICRO_PER_STEP + rank * per_rank) as u64;
        let mine: Vec<MicroBatch> = (first..first + per_rank as u64).map(micro_batch).collect();
        match t
            .step(&mine, per_rank, c, &stop)
            .map_err(|e| e.to_string())?
        {
            StepOutcome::Completed(s) => {
                log.push(serde_json::json!({"step": s.step, "loss": s.loss, "grad_norm": s.grad_norm,
                    "loss_tokens": s.loss_tokens, "samples": s.samples, "micro_batches": s.micro_batches}));
            }
            other => return Err(format!("step {step}: {other:?}")),
        }
        replicas::verify(&t.model, c, t.step).map_err(|e| e.to_string())?;
        if endless {
            fs_err::write(out.join(format!("step-{rank}")), step.to_string()).unwrap();
        }
        if scenario == "spin" && rank == 1 && step == 1 {
            fs_err::write(out.join("hung"), "").unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    write_f32(
        &out.join(format!("params-w{world}-r{rank}.bin")),
        &params(&t.model),
    );
    if rank == 0 {
        fs_err::write(
            out.join(format!("log-w{world}.json")),
            serde_json::to_string_pretty(&log).unwrap(),
        )
        .unwrap();
    }
    Ok(())
}

// ---------------------------------------------------------------------------- orchestrator

fn mpirun(np: usize, scenario: &str, out: &Path, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "-np",
        &np.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ]);
    let mut env = vec![
        ("SFTCTL_DIST_WORKER", scenario.to_string()),
        ("SFTCTL_DIST_OUT", out.display().to_string()),
    ];
    env.extend(extra_env.iter().map(|(k, v)| (*k, v.to_string())));
    for (k, v) in &env {
        cmd.env(k, v);
        cmd.args(["-x", k]);
    }
    cmd.arg(std::env::current_exe().unwrap());
    mpi_env(&mut cmd);
    cmd
}

fn mpi_env(cmd: &mut Command) {
    cmd.env("OMPI_MCA_btl", "self,tcp")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
}

fn run_ok(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stderr}",
        out.status
    );
    stderr
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sftctl-dist-{name}-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&d);
    fs_err::create_dir_all(&d).unwrap();
    d
}

/// 1 rank × 2k micro-batches: the reference, through `SingleProcess` (no MPI at all).
fn reference(out: &Path) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("SFTCTL_DIST_WORKER", "equal")
        .env("SFTCTL_DIST_OUT", out);
    run_ok(cmd, "the 1-rank reference");
}

fn compare(one: &Path, two: &Path) {
    let log = |p: &Path, w: usize| -> Vec<serde_json::Value> {
        serde_json::from_str(&fs_err::read_to_string(p.join(format!("log-w{w}.json"))).unwrap())
            .unwrap()
    };
    let (l1, l2) = (log(one, 1), log(two, 2));
    assert_eq!(l1.len(), STEPS);
    assert_eq!(l2.len(), STEPS);
    let mut clipped = 0;
    for (a, b) in l1.iter().zip(&l2) {
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
        for (k, tol) in [("loss", LOSS_REL_TOL), ("grad_norm", NORM_REL_TOL)] {
            let (x, y) = (f(a, k), f(b, k));
            assert!(
                (x - y).abs() <= tol * x.abs(),
                "step {}: {k} {x} vs {y}",
                a["step"]
            );
        }
        assert_eq!(a["loss_tokens"], b["loss_tokens"]);
        assert_eq!(a["samples"], b["samples"]);
        assert_eq!(a["micro_batches"].as_u64(), Some(MICRO_PER_STEP as u64));
        assert_eq!(
            b["micro_batches"].as_u64(),
            Some((MICRO_PER_STEP / 2) as u64)
        );
        if f(a, "grad_norm") > 0.5 {
            clipped += 1;
        }
    }
    assert!(clipped > 0, "no step was clipped: {l1:?}");
    let p1 = read_f32(&one.join("params-w1-r0.bin"));
    let r0 = read_f32(&two.join("params-w2-r0.bin"));
    let r1 = read_f32(&two.join("params-w2-r1.bin"));
    assert_eq!(p1.len(), r0.len());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&r0), bits(&r1), "the two ranks' parameters differ");
    let worst = p1
        .iter()
        .zip(&r0)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let start = params(&trainer().model);
    let moved = start
        .iter()
        .zip(&p1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "2 ranks × {} vs 1 rank × {}: max |param diff| {worst:e} (params moved up to {moved:e})",
        MICRO_PER_STEP / 2,
        MICRO_PER_STEP
    );
    assert!(worst <= PARAM_ABS_TOL, "max |param diff| {worst}");
    assert!(
        moved > 100.0 * PARAM_ABS_TOL,
        "parameters barely moved: {moved}"
    );
}

fn two_ranks_equal_one_rank() {
    let one = tempdir("one");
    reference(&one);
    let two = tempdir("two");
    let stderr = run_ok(mpirun(2, "equal", &two, &[]), "mpirun -np 2");
    eprint!("{stderr}");
    compare(&one, &two);
}

fn mismatch_stops_every_rank() {
    let out = tempdir("mismatch");
    let res = mpirun(2, "mismatch", &out, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "a mismatch did not fail the job");
    for r in [0, 1] {
        let want = format!(
            "rank {r}: parameters differ across ranks at step 0: rank(s) [1] disagree with rank 0"
        );
        assert!(stderr.contains(&want), "missing `{want}` in:\n{stderr}");
    }
}

/// Start the endless scenario, wait for two steps, send `signal` to rank 1, and return how long
/// the job took to end after it and its stderr.
fn kill_rank_1(
    signal: &str,
    launch: &dyn Fn(&Path) -> Command,
) -> (Duration, String, std::process::ExitStatus) {
    let out = tempdir(&format!("hang-{signal}"));
    let mut cmd = launch(&out);
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pid1 = loop {
        let step = fs_err::read_to_string(out.join("step-1")).ok();
        if step.is_some_and(|s| s.trim().parse::<u64>().unwrap_or(0) >= 1) {
            break fs_err::read_to_string(out.join("pid-1")).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "ranks did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let sent = Instant::now();
    let st = Command::new("kill")
        .args([&format!("-{signal}"), pid1.trim()])
        .status()
        .unwrap();
    assert!(st.success());
    let limit = Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > limit + Duration::from_secs(30) {
            let _ = child.kill();
            let _ = Command::new("kill").args(["-KILL", pid1.trim()]).status();
            panic!(
                "the job still runs {} s after SIG{signal} of rank 1",
                sent.elapsed().as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = sent.elapsed();
    // Never leave a stopped process behind.
    let _ = Command::new("kill")
        .args(["-KILL", pid1.trim()])
        .stderr(Stdio::null())
        .status();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (took, stderr, status)
}

fn dead_rank_fails_the_job() {
    for signal in ["KILL", "STOP"] {
        let launch = |out: &Path| mpirun(2, "hang", out, &[("SFTCTL_RANK_TIMEOUT_S", "10")]);
        let (took, stderr, status) = kill_rank_1(signal, &launch);
        eprintln!(
            "SIG{signal} of rank 1: job ended after {:.1} s ({status})",
            took.as_secs_f64()
        );
        assert!(
            !status.success(),
            "SIG{signal}: the job succeeded:\n{stderr}"
        );
        assert!(
            took < Duration::from_secs(60),
            "SIG{signal}: {took:?}\n{stderr}"
        );
        if signal == "STOP" {
            assert!(
                stderr.contains("rank 0: rank 1 has not written a heartbeat"),
                "{stderr}"
            );
        }
    }
}

/// Rank 1 stops calling collectives while its heartbeat thread lives (a computation that never
/// ends): rank 0's collective times out (`SFTCTL_COLLECTIVE_TIMEOUT_S`, 5 s here), it names
/// rank 1 as the rank that never joined, and the post-mortem turns its line into the run's
/// reason.
fn hung_rank_fails_the_job() {
    use sftctl_runtime::collective::postmortem;
    let out = tempdir("spin");
    let mut child = mpirun(2, "spin", &out, &[("SFTCTL_COLLECTIVE_TIMEOUT_S", "5")])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(150) {
            let _ = child.kill();
            panic!("the job still runs 150 s after it started; rank 1 hangs");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let hung_for = fs_err::metadata(out.join("hung"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .expect("rank 1 hung");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!(
        "rank 1 hung outside collectives: job ended {:.1} s later ({status})",
        hung_for.as_secs_f64()
    );
    assert!(!status.success(), "{stderr}");
    assert!(hung_for < Duration::from_secs(60), "{hung_for:?}\n{stderr}");
    assert!(
        stderr.contains("rank 0: collective `")
            && stderr.contains("has not returned for ")
            && stderr.contains("rank 1 (on "),
        "{stderr}"
    );
    let code = status.code().unwrap_or(128 + 9);
    let why = postmortem::explain(&postmortem::findings(&stderr), &stderr, code)
        .unwrap_or_else(|| panic!("no finding in:\n{stderr}"));
    assert!(
        why.starts_with("rank 1 on ")
            && why.contains(" hung: alive (heartbeats) but it never joined collective `"),
        "{why}"
    );
}

/// Whether the local Slurm cluster answers; with `SFTCTL_REQUIRE_SLURM=1` it must.
fn slurm_up() -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-N", "-o", "%N %t"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("n2"));
    if !up && std::env::var("SFTCTL_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!("the Slurm test cluster is not up (tests/slurm/start.sh)");
    }
    if !up {
        eprintln!("skipping: no Slurm cluster (set SFTCTL_REQUIRE_SLURM=1 to fail instead)");
    }
    up
}

/// `sbatch --wait` of a 2-node job whose batch step runs `mpirun` over both nodes.
fn sbatch(scenario: &str, out: &Path, extra: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let script = format!(
        "#!/bin/bash\n#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n#SBATCH --time=10\n\
         #SBATCH --output={out}/slurm-%j.log\n\
         export OMPI_MCA_btl=self,tcp OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n\
         export SFTCTL_DIST_WORKER={scenario} SFTCTL_DIST_OUT={out} {extra}\n\
         mpirun --tag-output --bind-to none -x SFTCTL_DIST_WORKER -x SFTCTL_DIST_OUT -x SFTCTL_RANK_TIMEOUT_S {exe}\n",
        out = out.display(),
        exe = exe.display()
    );
    let path = out.join("job.sh");
    fs_err::write(&path, script).unwrap();
    // Submit, then poll every 0.5 s (sbatch --wait polls too coarsely to time a failure), and
    // exit 0 only when the job COMPLETED.
    let wrapper = format!(
        "set -e; id=$(sbatch --parsable {job}); echo \"job $id\" >&2\n\
         while [ -n \"$(squeue -h -j $id -t PD,CF,R,CG,S -o %T 2>/dev/null)\" ]; do sleep 0.5; done\n\
         for i in $(seq 1 60); do st=$(sacct -X -n -P -j $id -o State | head -1); \
         case \"$st\" in ''|PENDING|RUNNING|COMPLETING) sleep 0.5;; *) break;; esac; done\n\
         echo \"job $id: $st\" >&2; [ \"$st\" = COMPLETED ]\n",
        job = path.display()
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(wrapper);
    cmd
}

fn slurm_log(out: &Path) -> String {
    let mut all = String::new();
    for e in fs_err::read_dir(out).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("slurm-") {
            all += &fs_err::read_to_string(e.path()).unwrap_or_default();
        }
    }
    all
}

fn slurm_two_nodes() {
    if !slurm_up() {
        return;
    }
    // Slurm tests of all test processes take turns (the lock of sftctl-tests' harness).
    let _lock = sftctl_ledger::claim::Claim::acquire(
        Path::new("/tmp/sftctl-slurm-tests.lock"),
        Duration::from_secs(3600),
        Duration::from_secs(1800),
    )
    .expect("Slurm test lock");
    let one = tempdir("slurm-one");
    reference(&one);
    let two = tempdir("slurm-two");
    let res = sbatch("equal", &two, "SFTCTL_RANK_TIMEOUT_S=30")
        .output()
        .unwrap();
    let log = slurm_log(&two);
    assert!(
        res.status.success(),
        "2-node job failed ({}):\n{log}",
        res.status
    );
    let nodes: Vec<String> = (0..2)
        .map(|r| fs_err::read_to_string(two.join(format!("node-{r}"))).unwrap())
        .collect();
    assert_eq!(nodes, ["n1", "n2"], "one rank per node");
    compare(&one, &two);
    for signal in ["KILL", "STOP"] {
        let launch = |out: &Path| sbatch("hang", out, "SFTCTL_RANK_TIMEOUT_S=30");
        let (took, _, status) = kill_rank_1(signal, &launch);
        eprintln!(
            "Slurm: SIG{signal} of rank 1 (node n2): job ended after {:.1} s ({status})",
            took.as_secs_f64()
        );
        assert!(!status.success(), "SIG{signal}: the job succeeded");
        assert!(took < Duration::from_secs(60), "SIG{signal}: {took:?}");
    }
}

fn main() {
    if let Ok(scenario) = std::env::var("SFTCTL_DIST_WORKER") {
        let out = PathBuf::from(std::env::var("SFTCTL_DIST_OUT").expect("SFTCTL_DIST_OUT"));
        let rank = std::env::var("OMPI_COMM_WORLD_RANK").unwrap_or_else(|_| "0".into());
        fs_err::write(
            out.join(format!("pid-{rank}")),
            std::process::id().to_string(),
        )
        .unwrap();
        let node = std::env::var("SLURMD_NODENAME").unwrap_or_default();
        fs_err::write(out.join(format!("node-{rank}")), node).unwrap();
        std::process::exit(worker(&scenario, &out));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 5] = [
        ("two_ranks_equal_one_rank", two_ranks_equal_one_rank),
        ("mismatch_stops_every_rank", mismatch_stops_every_rank),
        ("dead_rank_fails_the_job", dead_rank_fails_the_job),
        ("hung_rank_fails_the_job", hung_rank_fails_the_job),
        ("slurm_two_nodes", slurm_two_nodes),
    ];
    for (name, test) in tests {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            eprintln!("test {name} ...");
            test();
            eprintln!("test {name} ... ok");
        }
    }
}
