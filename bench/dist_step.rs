//! Data-parallel benchmark (feature `mpi`): training-step throughput of the tiny Llama with 1 and
//! 2 ranks on the same global batch, the time each step spends in collectives against the bytes
//! it moves, and a sweep of plain `all_reduce_sum_f32` sizes. Run under `mpirun` (see
//! docs/benchmarks.md); rank 0 prints one JSON line per measurement on stdout.

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use sftctl_runtime::collective::mpi::MpiCollective;
use sftctl_runtime::collective::{Collective, SingleProcess};
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::CausalLm;
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::{
    AdamWSettings, IGNORE, LrSchedule, MicroBatch, PackedLm, ScheduleKind, StepOutcome,
    StepSettings, StopSignal, Trainer, with_stable_param_ids,
};

#[derive(Module, Debug)]
struct Llama {
    inner: CausalLm,
}

impl PackedLm for Llama {
    fn forward_packed(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        sample_lengths: &[usize],
    ) -> Tensor<3> {
        let device = tokens.device();
        let ids: Vec<i64> = sample_lengths
            .iter()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i as i64, n))
            .collect();
        let t = ids.len();
        let seq_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        self.inner.forward(tokens, positions, seq_ids)
    }
}

const VOCAB: usize = 256;
const MICRO_PER_STEP: usize = 4;
const TOKENS_PER_MICRO: usize = 128;

fn micro_batch(index: u64) -> MicroBatch {
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let tokens: Vec<u32> = (0..TOKENS_PER_MICRO)
        .map(|_| (next() % VOCAB as u64) as u32)
        .collect();
    let mut targets: Vec<i32> = tokens[1..].iter().map(|&t| t as i32).collect();
    targets.push(IGNORE);
    MicroBatch {
        positions: (0..TOKENS_PER_MICRO as u32).collect(),
        tokens,
        targets,
        sample_lengths: vec![TOKENS_PER_MICRO],
    }
}

/// A collective whose time and bytes in collectives can be read between steps.
trait Measured: Collective {
    fn comm(&self) -> (f64, u64);
}

impl Measured for SingleProcess {
    fn comm(&self) -> (f64, u64) {
        (0.0, 0)
    }
}

impl Measured for MpiCollective {
    fn comm(&self) -> (f64, u64) {
        let s = self.stats();
        (s.seconds, s.bytes)
    }
}

fn step_bench<C: Measured>(c: &mut C, hidden: usize, steps: usize) {
    let (rank, world) = (c.rank(), c.world_size());
    let device = Device::flex().autodiff();
    let mut config = tiny_config(Arch::Llama, VOCAB);
    config.hidden_size = hidden;
    config.intermediate_size = 2 * hidden;
    config.head_dim = hidden / config.num_attention_heads;
    let model = with_stable_param_ids(Llama {
        inner: CausalLm::random(&config, &device, 1),
    });
    let params = model.num_params();
    let settings = StepSettings {
        adamw: AdamWSettings::default(),
        schedule: LrSchedule {
            kind: ScheduleKind::Constant,
            peak_lr: 1e-4,
            warmup_steps: 0,
            total_steps: steps as u64 + 1,
            min_lr_ratio: 0.0,
        },
        max_grad_norm: Some(1.0),
    };
    let mut t = Trainer::new(model, settings, device);
    let stop = StopSignal::manual(Duration::from_secs(600));
    let per_rank = MICRO_PER_STEP / world;
    let run = |step: usize, t: &mut Trainer<Llama>, c: &mut C| {
        let first = (step * MICRO_PER_STEP + rank * per_rank) as u64;
        let mine: Vec<MicroBatch> = (first..first + per_rank as u64).map(micro_batch).collect();
        match t.step(&mine, per_rank, c, &stop).expect("step") {
            StepOutcome::Completed(_) => {}
            other => panic!("{other:?}"),
        }
    };
    run(0, &mut t, c); // warm-up
    let (s0, b0) = c.comm();
    let started = Instant::now();
    for step in 1..=steps {
        run(step, &mut t, c);
    }
    let secs = started.elapsed().as_secs_f64() / steps as f64;
    let (s1, b1) = c.comm();
    if rank == 0 {
        println!(
            "{}",
            serde_json::json!({
                "bench": "step", "ranks": world, "hidden": hidden, "params": params,
                "tokens_per_step": MICRO_PER_STEP * TOKENS_PER_MICRO,
                "step_s": secs, "tokens_per_s": (MICRO_PER_STEP * TOKENS_PER_MICRO) as f64 / secs,
                "comm_s_per_step": (s1 - s0) / steps as f64,
                "bytes_per_step": (b1 - b0) / steps as u64,
            })
        );
    }
}

fn main() {
    let steps: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let hiddens: Vec<usize> = std::env::var("BENCH_HIDDEN")
        .unwrap_or_else(|_| "64,128,256".into())
        .split(',')
        .map(|h| h.trim().parse().expect("BENCH_HIDDEN"))
        .collect();
    if std::env::var("OMPI_COMM_WORLD_SIZE").is_err() {
        let mut c = SingleProcess;
        for &h in &hiddens {
            step_bench(&mut c, h, steps);
        }
        return;
    }
    let mut c = MpiCollective::init(None).expect("MPI");
    for &h in &hiddens {
        step_bench(&mut c, h, steps);
    }
    for log2 in [10, 14, 18, 20, 22, 24] {
        let n = 1usize << log2;
        let mut v = vec![1.0f32; n / 4];
        c.barrier();
        c.all_reduce_sum_f32(&mut v).expect("warm-up");
        let reps = (1 << 26) / n + 3;
        c.barrier();
        let started = Instant::now();
        for _ in 0..reps {
            c.all_reduce_sum_f32(&mut v).expect("all-reduce");
        }
        let secs = started.elapsed().as_secs_f64() / reps as f64;
        if c.rank() == 0 {
            println!(
                "{}",
                serde_json::json!({"bench": "all_reduce", "ranks": c.world_size(), "bytes": n,
                    "seconds": secs, "gb_per_s": n as f64 / secs / 1e9})
            );
        }
    }
}
