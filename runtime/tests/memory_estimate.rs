//! The per-GPU memory estimate (`sftctl-memory`, shown by `sftctl plan`) against this process's
//! resident memory on CPU: weights, weights + AdamW moments after an optimizer step, and the
//! step's peak, each within 15%, at a short micro-batch (gradients decide the peak) and a long
//! one (activations and logits decide it), and at the long one with chunked cross-entropy and
//! with chunking plus per-block checkpointing. With `--features tch` also tch-CPU at the long
//! micro-batch, where attention runs libtorch's fused kernel and the estimate drops the scores.
//! Method: docs/gpu.md. One test in this file, so no other test's allocations share the process.

use burn::tensor::Device;
use sftctl_memory::{ModelShape, RunShape, estimate};
use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::collective::SingleProcess;
use sftctl_runtime::config::Arch;
use sftctl_runtime::model::{CausalLm, LeanOptions};
use sftctl_runtime::tiny::tiny_config;
use sftctl_runtime::train::{
    AdamWSettings, LrSchedule, MicroBatch, ScheduleKind, StepOutcome, StepSettings, StopSignal,
    Trainer, with_stable_param_ids,
};
use std::time::Duration;

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> (u64, u64) {
    let status = fs_err::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn within(measured: u64, estimated: u64, what: &str) {
    let rel = (measured as f64 - estimated as f64).abs() / estimated as f64;
    eprintln!(
        "{what}: measured {measured} B, estimated {estimated} B ({:.1}% off)",
        rel * 100.0
    );
    assert!(
        rel <= 0.15,
        "{what}: measured {measured} vs estimated {estimated}"
    );
}

/// glibc keeps freed heap pages; with a fixed 64 KiB mmap threshold every tensor buffer is its
/// own mapping, returned on free, so `VmRSS` counts live memory. The tunable must be set before
/// the process starts: the test runs itself again with it.
const TUNABLES: &str = "glibc.malloc.mmap_threshold=65536";

/// Micro-batch lengths measured, each in its own process (`VmHWM` only grows): 16 tokens, where
/// gradients decide the backward's peak, and 1,024, where activations and logits do.
const LENGTHS: [&str; 2] = ["16", "1024"];

/// Loss tokens per cross-entropy chunk in the lean cases.
const CE_CHUNK: usize = 128;

#[test]
fn estimate_matches_resident_memory_of_a_cpu_step() {
    let Ok(t) = std::env::var("SFTCTL_MEM_TOKENS") else {
        let plain = BackendChoice::compiled()
            .into_iter()
            .flat_map(|b| LENGTHS.map(|t| (b, t, "")))
            // On tch only the long micro-batch, where the attention kernel decides the peak.
            .filter(|&(b, t, _)| b == BackendChoice::Flex || t == LENGTHS[1]);
        // The lean options at the long micro-batch (flex): chunked cross-entropy, then that
        // with per-block checkpointing.
        let lean = ["chunk", "chunk+blocks"].map(|l| (BackendChoice::Flex, LENGTHS[1], l));
        for (backend, t, lean) in plain.chain(lean) {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "estimate_matches_resident_memory_of_a_cpu_step",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("GLIBC_TUNABLES", TUNABLES)
                .env("SFTCTL_MEM_TOKENS", t)
                .env("SFTCTL_MEM_BACKEND", backend.to_string())
                .env("SFTCTL_MEM_LEAN", lean)
                .output()
                .unwrap();
            eprintln!(
                "{backend}, {t} tokens {lean}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        return;
    };
    assert_eq!(std::env::var("GLIBC_TUNABLES").as_deref(), Ok(TUNABLES));
    let t: usize = t.parse().unwrap();
    let backend: BackendChoice = std::env::var("SFTCTL_MEM_BACKEND")
        .unwrap()
        .parse()
        .unwrap();
    let device: Device = backend.device().unwrap().autodiff();
    let lean_name = std::env::var("SFTCTL_MEM_LEAN").unwrap_or_default();
    let lean = LeanOptions {
        ce_chunk_tokens: lean_name.starts_with("chunk").then_some(CE_CHUNK),
        checkpoint_blocks: lean_name.ends_with("blocks"),
    };
    let mut config = tiny_config(Arch::Mistral, 16000);
    config.hidden_size = 512;
    config.intermediate_size = 1536;
    config.num_hidden_layers = 4;
    config.num_attention_heads = 8;
    config.num_key_value_heads = 4;
    config.head_dim = 64;
    let shape: ModelShape = serde_json::from_value(serde_json::json!({
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads, "head_dim": config.head_dim,
        "tie_word_embeddings": config.tie_word_embeddings,
    }))
    .unwrap();
    let e = estimate(
        &shape,
        &RunShape {
            tokens_per_micro_batch: t as u64,
            max_seq_len: t as u64,
            micro_batches: 1,
            optimizer_shards: 1,
            fp32_master: false,
            ce_chunk_tokens: lean.ce_chunk_tokens.map(|c| c as u64),
            checkpoint_blocks: lean.checkpoint_blocks,
            bf16: false,
            // libtorch's fused kernel on tch (model::fused), the decomposed path on flex.
            fused_attention: backend != BackendChoice::Flex,
        },
    );

    let (base, _) = rss();
    let model = with_stable_param_ids(CausalLm::random(&config, &device, 1));
    assert_eq!(
        model.fused_attention(&device),
        backend != BackendChoice::Flex
    );
    assert_eq!(model.param_count() as u64, e.params);
    let (after_model, _) = rss();
    within(after_model - base, e.weights, "weights");

    let mut trainer = Trainer::new(
        model,
        StepSettings {
            adamw: AdamWSettings::default(),
            schedule: LrSchedule {
                kind: ScheduleKind::Constant,
                peak_lr: 1e-4,
                warmup_steps: 0,
                total_steps: 10,
                min_lr_ratio: 0.0,
            },
            max_grad_norm: Some(1.0),
        },
        device,
    );
    trainer.lean = lean;
    let batch = MicroBatch {
        tokens: (0..t as u32).map(|i| i * 7 % 16000).collect(),
        positions: (0..t as u32).collect(),
        targets: (0..t as i32).map(|i| (i * 11) % 16000).collect(),
        sample_lengths: vec![t],
    };
    let stop = StopSignal::manual(Duration::from_secs(60));
    for _ in 0..2 {
        let out = trainer
            .step(std::slice::from_ref(&batch), 1, &mut SingleProcess, &stop)
            .unwrap();
        assert!(matches!(out, StepOutcome::Completed(_)), "{out:?}");
    }
    let (after_step, peak) = rss();
    eprintln!(
        "peak during the step: {} B over the baseline; estimate total {} B (weights {}, gradients {}, optimizer {}, activations {}, logits {})",
        peak - base,
        e.total(),
        e.weights,
        e.gradients,
        e.optimizer,
        e.activations,
        e.logits
    );
    within(
        after_step - base,
        e.weights + e.optimizer,
        "weights + AdamW moments",
    );
    within(peak - base, e.total(), "peak of a step");
}
