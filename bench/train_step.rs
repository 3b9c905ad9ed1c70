//! Benchmark: training-step throughput (tokens/s) of the runtime's trainer — forward, backward,
//! gradient accumulation, global-norm clipping and the AdamW update — on one backend, for a
//! tiny-architecture Llama of the given size. Compare with `bench/train_step_torch.py` (same
//! config, batch, thread count; transformers' LlamaForCausalLM and torch's AdamW). One JSON line.
//!
//! Usage: cargo run --release -p sftctl-runtime --example train_step -- \
//!   [--backend flex|tch-cpu|cuda:N] [--layers 2] [--hidden 256] [--micro 4] [--seq 256]
//!   [--accum 2] [--steps 5]

use std::time::{Duration, Instant};

use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::collective::SingleProcess;
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::CausalLm;
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::{
    AdamWSettings, LrSchedule, MicroBatch, ScheduleKind, StepOutcome, StepSettings, StopSignal,
    Trainer, with_stable_param_ids,
};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |n: &str, d: &str| arg(&args, n, d).parse::<usize>().expect(n);
    let backend: BackendChoice = arg(&args, "--backend", "flex").parse().expect("--backend");
    let (layers, hidden, micro, seq, accum, steps) = (
        num("--layers", "2"),
        num("--hidden", "256"),
        num("--micro", "4"),
        num("--seq", "256"),
        num("--accum", "2"),
        num("--steps", "5"),
    );
    let vocab = 2048;
    let mut config = tiny_config(Arch::Llama, vocab);
    config.num_hidden_layers = layers;
    config.hidden_size = hidden;
    config.intermediate_size = hidden * 4;
    config.head_dim = hidden / config.num_attention_heads;
    let device = backend.device().expect("backend").autodiff();
    let model = with_stable_param_ids(CausalLm::random(&config, &device, 1));
    let mut trainer = Trainer::new(
        model,
        StepSettings {
            adamw: AdamWSettings::default(),
            schedule: LrSchedule {
                kind: ScheduleKind::Constant,
                peak_lr: 1e-4,
                warmup_steps: 0,
                total_steps: steps as u64 + 1,
                min_lr_ratio: 0.0,
            },
            max_grad_norm: Some(1.0),
        },
        device,
    );
    // `micro` samples of `seq` tokens packed per micro-batch, `accum` micro-batches per step,
    // every token but each sample's last counted in the loss.
    let mut state = 7u64;
    let mut rand = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % vocab as u64) as u32
    };
    let mbs: Vec<MicroBatch> = (0..accum)
        .map(|_| {
            let tokens: Vec<u32> = (0..micro * seq).map(|_| rand()).collect();
            let targets = (0..micro * seq)
                .map(|t| {
                    if (t + 1) % seq == 0 {
                        -100
                    } else {
                        tokens[t + 1] as i32
                    }
                })
                .collect();
            MicroBatch {
                positions: (0..micro).flat_map(|_| 0..seq as u32).collect(),
                tokens,
                targets,
                sample_lengths: vec![seq; micro],
            }
        })
        .collect();
    let stop = StopSignal::manual(Duration::from_secs(3600));
    let mut times = vec![];
    for i in 0..=steps {
        let t = Instant::now();
        match trainer.step(&mbs, mbs.len(), &mut SingleProcess, &stop) {
            Ok(StepOutcome::Completed(_)) => {}
            other => panic!("step {i}: {other:?}"),
        }
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (micro * seq * accum) as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("sftctl-{backend}"),
            "layers": layers, "hidden": hidden, "micro": micro, "seq": seq, "accum": accum,
            "params": trainer.model.param_count(),
            "step_s_median": median,
            "tokens_per_s": tokens / median,
            "threads": std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
        })
    );
}
