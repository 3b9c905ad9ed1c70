//! GPU benchmark (issue 9, docs/gpu.md): optimizer steps of the runtime's trainer on a model with
//! Llama-3.2-3B's shapes and random weights, with the memory-lean options, printing one JSON line
//! (tokens/s and the model FLOPs per token for MFU; the script samples device memory).
//! `--tiny` shrinks the model so the same code runs on a CPU in seconds.
//!
//! Usage: cargo run --release -p sftctl-runtime --example gpu_step -- [--backend cuda:0]
//!   [--seq 4096] [--steps 5] [--ce-chunk 4096] [--checkpoint] [--bf16] [--plain-attention]
//!   [--tiny]
//! `--bf16`: mixed precision (bf16 parameters, fp32 master weights; train/precision.rs).
//! `--plain-attention`: the decomposed attention instead of libtorch's fused kernel
//! (model/fused.rs; only the tch backends have the latter).

use std::time::Instant;

use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::collective::SingleProcess;
use sftctl_runtime::config::{Arch, RopeScaling};
use sftctl_runtime::model::{AttentionKernel, CausalLm, LeanOptions};
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::{
    AdamWSettings, LrSchedule, MicroBatch, Precision, ScheduleKind, StepOutcome, StepSettings,
    StopSignal, Trainer, with_precision, with_stable_param_ids,
};

fn value(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn main() {
    // Logs (stderr): which kernel libtorch picks for the fused attention.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .try_init();
    let args: Vec<String> = std::env::args().collect();
    let num = |n: &str, d: usize| value(&args, n).map_or(d, |v| v.parse().expect(n));
    let tiny = args.iter().any(|a| a == "--tiny");
    let backend: BackendChoice = value(&args, "--backend")
        .unwrap_or_else(|| "cuda:0".into())
        .parse()
        .expect("--backend");
    let (seq, steps, chunk) = (num("--seq", 4096), num("--steps", 5), num("--ce-chunk", 0));
    let mut c = tiny_config(Arch::Llama, if tiny { 512 } else { 128256 });
    if !tiny {
        c.hidden_size = 3072;
        c.intermediate_size = 8192;
        c.num_hidden_layers = 28;
        c.num_attention_heads = 24;
        c.num_key_value_heads = 8;
        c.head_dim = 128;
        c.rope_scaling = RopeScaling::None;
        c.tie_word_embeddings = true;
    }
    let device = backend.device().expect("backend").autodiff();
    let mut model = with_stable_param_ids(CausalLm::random(&c, &device, 1));
    if args.iter().any(|a| a == "--plain-attention") {
        model.attention = AttentionKernel::Plain;
    }
    let fused = model.fused_attention(&device);
    let params = model.param_count() as f64;
    let mut trainer = Trainer::new(
        model,
        StepSettings {
            adamw: AdamWSettings::default(),
            schedule: LrSchedule {
                kind: ScheduleKind::Constant,
                peak_lr: 1e-5,
                warmup_steps: 0,
                total_steps: steps as u64 + 2,
                min_lr_ratio: 0.0,
            },
            max_grad_norm: Some(1.0),
        },
        device,
    );
    trainer.lean = LeanOptions {
        ce_chunk_tokens: (chunk > 0).then_some(chunk),
        checkpoint_blocks: args.iter().any(|a| a == "--checkpoint"),
    };
    let precision = if args.iter().any(|a| a == "--bf16") {
        Precision::Bf16
    } else {
        Precision::Fp32
    };
    let mut trainer = with_precision(trainer, precision, 0, 1);
    let mut state = 11u64;
    let mut token = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % c.vocab_size as u64) as u32
    };
    let tokens: Vec<u32> = (0..seq).map(|_| token()).collect();
    let mut targets: Vec<i32> = tokens[1..].iter().map(|&t| t as i32).collect();
    targets.push(-100);
    let batch = MicroBatch {
        positions: (0..seq as u32).collect(),
        tokens,
        targets,
        sample_lengths: vec![seq],
    };
    let stop = StopSignal::manual(std::time::Duration::from_secs(3600));
    let mut times = Vec::new();
    let mut loss = f64::NAN;
    for step in 0..steps + 1 {
        let started = Instant::now();
        match trainer
            .step(std::slice::from_ref(&batch), 1, &mut SingleProcess, &stop)
            .expect("step")
        {
            StepOutcome::Completed(s) => loss = s.loss,
            other => panic!("{other:?}"),
        }
        if step > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    let per_step = times.iter().sum::<f64>() / times.len() as f64;
    // 6 N per token for the matmuls, plus causal attention's 6 L S d_head H per token.
    let attn = 6.0 * (c.num_hidden_layers * seq * c.head_dim * c.num_attention_heads) as f64;
    println!(
        "{}",
        serde_json::json!({
            "what": "sftctl_step", "backend": backend.to_string(), "params": params,
            "tokens_per_step": seq, "tokens_per_s": seq as f64 / per_step,
            "flops_per_token": 6.0 * params + attn, "loss": loss,
            "lean": format!("{:?}", trainer.lean), "precision": format!("{precision:?}"),
            "fused_attention": fused,
        })
    );
}
