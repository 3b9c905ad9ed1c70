//! Chunked cross-entropy and per-block activation checkpointing give the plain graph's loss and
//! gradients, for every architecture of the tiny model, on packed rows with prompt tokens.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use sftctl_runtime::config::{Arch, ModelConfig};
use sftctl_runtime::model::{
    CausalLm, IGNORE_INDEX, LeanOptions, PackedBatch, PackedRow, lean_loss_and_grads, loss_sum,
};
use sftctl_runtime::tiny::tiny_config;

fn device() -> Device {
    sftctl_runtime::backend::BackendChoice::compiled()[0]
        .device()
        .unwrap()
        .autodiff()
}

/// Two packed rows of random samples, each with a prompt (no loss) and a reply.
fn batch(vocab: usize, seed: u64, device: &Device) -> (PackedBatch, Vec<i64>) {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut rows = Vec::new();
    for lens in [[7usize, 9, 5], [12, 6, 3]] {
        let mut row = PackedRow::default();
        for len in lens {
            let tokens: Vec<i64> = (0..len).map(|_| (next() % vocab) as i64).collect();
            let prompt = 1 + next() % (len - 1);
            let labels: Vec<i64> = tokens
                .iter()
                .enumerate()
                .map(|(i, &t)| if i < prompt { IGNORE_INDEX } else { t })
                .collect();
            row.push(&tokens, &labels);
        }
        row.pad_to(24, 0);
        rows.push(row);
    }
    let targets = rows.iter().flat_map(|r| r.targets.clone()).collect();
    (PackedBatch::new(&rows, device), targets)
}

/// Every float parameter's gradient, flattened, in visiting order.
fn flat_grads(model: &CausalLm, grads: &GradientsParams) -> Vec<Vec<f32>> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<Vec<f32>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let g = self
                .grads
                .get::<D>(param.id)
                .expect("every parameter has a gradient");
            self.out.push(g.into_data().iter::<f32>().collect());
        }
    }
    let mut c = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

fn plain(model: &CausalLm, b: &PackedBatch, scale: f64) -> (f64, Vec<Vec<f32>>) {
    let logits = model.forward(b.tokens.clone(), b.positions.clone(), b.seq_ids.clone());
    let sum = loss_sum(logits, b.targets.clone());
    let loss = f64::from(sum.clone().into_scalar::<f32>());
    let grads = GradientsParams::from_grads(sum.mul_scalar(scale).backward(), model);
    (loss, flat_grads(model, &grads))
}

fn lean(
    model: &CausalLm,
    b: &PackedBatch,
    t: &[i64],
    scale: f64,
    o: LeanOptions,
) -> (f64, Vec<Vec<f32>>) {
    let (loss, grads) = lean_loss_and_grads(
        model,
        b.tokens.clone(),
        b.positions.clone(),
        b.seq_ids.clone(),
        t,
        scale,
        o,
    );
    (loss, flat_grads(model, &grads))
}

/// Largest difference relative to the largest magnitude of each parameter's gradient.
fn worst_relative(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
            let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            f64::from(diff / scale)
        })
        .fold(0.0, f64::max)
}

/// The tiny Llama (tied, GQA), Mistral (sliding window 4) and Granite (multipliers), vocab 97.
fn configs() -> [(Arch, ModelConfig); 3] {
    [Arch::Llama, Arch::Mistral, Arch::Granite].map(|arch| {
        let mut config = tiny_config(arch, 97);
        if arch == Arch::Mistral {
            config.sliding_window = Some(4);
        }
        (arch, config)
    })
}

#[test]
fn chunked_ce_and_checkpointing_match_the_plain_graph() {
    let device = device();
    for (i, (arch, config)) in configs().into_iter().enumerate() {
        let model = CausalLm::random(&config, &device, 11 + i as u64);
        let (b, targets) = batch(config.vocab_size, 5 + i as u64, &device);
        let scale = 1.0 / b.loss_tokens as f64;
        let (loss0, grads0) = plain(&model, &b, scale);
        assert!(
            grads0.iter().flatten().any(|g| g.abs() > 1e-6),
            "gradients vanish"
        );
        for opts in [
            LeanOptions {
                ce_chunk_tokens: Some(5),
                checkpoint_blocks: false,
            },
            LeanOptions {
                ce_chunk_tokens: Some(1000),
                checkpoint_blocks: false,
            },
            LeanOptions {
                ce_chunk_tokens: None,
                checkpoint_blocks: true,
            },
            LeanOptions {
                ce_chunk_tokens: Some(3),
                checkpoint_blocks: true,
            },
        ] {
            let (loss, grads) = lean(&model, &b, &targets, scale, opts);
            assert!(
                (loss - loss0).abs() <= 1e-5 * loss0.abs(),
                "{arch:?} {opts:?}: loss {loss} vs plain {loss0}"
            );
            let worst = worst_relative(&grads0, &grads);
            assert!(
                worst <= 1e-5,
                "{arch:?} {opts:?}: gradients differ by {worst:e}"
            );
        }
    }
}

#[test]
fn a_batch_without_loss_tokens_has_zero_loss_and_zero_gradients() {
    let device = device();
    let config = tiny_config(Arch::Llama, 50);
    let model = CausalLm::random(&config, &device, 3);
    let mut row = PackedRow::default();
    row.push(&[1, 2, 3, 4], &[IGNORE_INDEX; 4]);
    let b = PackedBatch::new(&[row.clone()], &device);
    for opts in [
        LeanOptions {
            ce_chunk_tokens: Some(2),
            checkpoint_blocks: false,
        },
        LeanOptions {
            ce_chunk_tokens: Some(2),
            checkpoint_blocks: true,
        },
    ] {
        let (loss, grads) = lean(&model, &b, &row.targets, 1.0, opts);
        assert_eq!(loss, 0.0);
        assert!(grads.iter().flatten().all(|&g| g == 0.0), "{opts:?}");
    }
}

/// Through the trainer (`Trainer::lean`, as `sftctl-train run` sets it from the spec): three
/// AdamW steps with chunking and checkpointing follow the plain run's losses and norms.
#[test]
fn trainer_steps_with_lean_options_follow_the_plain_run() {
    use sftctl_runtime::collective::SingleProcess;
    use sftctl_runtime::train::{
        AdamWSettings, LrSchedule, MicroBatch, ScheduleKind, StepOutcome, StepSettings, StopSignal,
        Trainer, with_stable_param_ids,
    };
    let device = device();
    let config = tiny_config(Arch::Granite, 61);
    let settings = StepSettings {
        adamw: AdamWSettings::default(),
        schedule: LrSchedule {
            kind: ScheduleKind::Constant,
            peak_lr: 1e-2,
            warmup_steps: 0,
            total_steps: 3,
            min_lr_ratio: 0.0,
        },
        max_grad_norm: Some(1.0),
    };
    let mb = |k: u32| MicroBatch {
        tokens: (0..20).map(|i| (i * 7 + k) % 61).collect(),
        positions: (0..12).chain(0..8).collect(),
        targets: (0..20)
            .map(|i: i32| {
                if i % 12 < 3 {
                    -100
                } else {
                    (i * 5 + k as i32) % 61
                }
            })
            .collect(),
        sample_lengths: vec![12, 8],
    };
    let batches = [mb(1), mb(2)];
    let stop = StopSignal::manual(std::time::Duration::from_secs(60));
    let run = |lean: LeanOptions| {
        let model = with_stable_param_ids(CausalLm::random(&config, &device, 9));
        let mut trainer = Trainer::new(model, settings, device.clone());
        trainer.lean = lean;
        (0..3)
            .map(|_| {
                match trainer
                    .step(&batches, 2, &mut SingleProcess, &stop)
                    .unwrap()
                {
                    StepOutcome::Completed(s) => (s.loss, s.grad_norm),
                    other => panic!("{other:?}"),
                }
            })
            .collect::<Vec<_>>()
    };
    let plain = run(LeanOptions::default());
    let lean = run(LeanOptions {
        ce_chunk_tokens: Some(4),
        checkpoint_blocks: true,
    });
    assert!(plain[2].0 < plain[0].0, "the loss falls: {plain:?}");
    for ((l0, n0), (l1, n1)) in plain.iter().zip(&lean) {
        assert!((l0 - l1).abs() <= 1e-5 * l0, "{plain:?} vs {lean:?}");
        assert!((n0 - n1).abs() <= 1e-4 * n0, "{plain:?} vs {lean:?}");
    }
}

/// Rows of one sample each, all of `len` tokens, with a prompt: no packing and no padding, so
/// the fused kernel runs with its own causal mask (kv heads as they are).
#[cfg(feature = "tch")]
fn single_sample_rows(vocab: usize, len: usize, device: &Device) -> (PackedBatch, Vec<i64>) {
    let rows: Vec<PackedRow> = (0..2)
        .map(|r| {
            let tokens: Vec<i64> = (0..len)
                .map(|i| ((i * 7 + r * 13 + 1) % vocab) as i64)
                .collect();
            let labels: Vec<i64> = tokens
                .iter()
                .enumerate()
                .map(|(i, &t)| if i < 4 { IGNORE_INDEX } else { t })
                .collect();
            let mut row = PackedRow::default();
            row.push(&tokens, &labels);
            row
        })
        .collect();
    let targets = rows.iter().flat_map(|r| r.targets.clone()).collect();
    (PackedBatch::new(&rows, device), targets)
}

/// On libtorch, attention through the fused kernel (`AttentionKernel::Auto`, a Burn autodiff op
/// running libtorch's `scaled_dot_product_attention` forward and backward) gives the decomposed
/// path's loss and gradients: grouped kv heads, packed rows with padding (an additive mask),
/// rows of one sample (the kernel's causal mask), Mistral's sliding window, Granite's
/// multipliers; in the plain graph and with per-block checkpointing (whose forward runs the
/// kernel without autodiff). In bf16 the fused kernel is as close to fp32 as the decomposed
/// path in bf16 is.
#[cfg(feature = "tch")]
#[test]
fn fused_attention_on_libtorch_matches_the_decomposed_path() {
    use burn::tensor::DType;
    use sftctl_runtime::model::AttentionKernel;
    use sftctl_runtime::train::cast_params;
    let device = sftctl_runtime::backend::BackendChoice::TchCpu
        .device()
        .unwrap()
        .autodiff();
    for (i, (arch, config)) in configs().into_iter().enumerate() {
        assert!(
            config.num_attention_heads > config.num_key_value_heads,
            "GQA"
        );
        let mut model = CausalLm::random(&config, &device, 21 + i as u64);
        for (what, (b, targets)) in [
            ("packed", batch(config.vocab_size, 7 + i as u64, &device)),
            ("single", single_sample_rows(config.vocab_size, 16, &device)),
        ] {
            let scale = 1.0 / b.loss_tokens as f64;
            model.attention = AttentionKernel::Plain;
            assert!(!model.fused_attention(&device));
            let (loss0, grads0) = plain(&model, &b, scale);
            model.attention = AttentionKernel::Auto;
            assert!(model.fused_attention(&device));
            for opts in [
                LeanOptions::default(),
                LeanOptions {
                    ce_chunk_tokens: Some(5),
                    checkpoint_blocks: true,
                },
            ] {
                let (loss, grads) = if opts.is_plain() {
                    plain(&model, &b, scale)
                } else {
                    lean(&model, &b, &targets, scale, opts)
                };
                let worst = worst_relative(&grads0, &grads);
                eprintln!(
                    "{arch:?} {what} {opts:?}: loss {loss} vs {loss0}, gradients {worst:.1e}"
                );
                assert!(
                    (loss - loss0).abs() <= 1e-5 * loss0.abs(),
                    "{arch:?} {what} {opts:?}: loss {loss} vs decomposed {loss0}"
                );
                assert!(
                    worst <= 1e-5,
                    "{arch:?} {what} {opts:?}: gradients differ by {worst:e}"
                );
            }
            // bf16: each kernel's distance from fp32.
            let bf16 = |kernel| {
                let mut m = cast_params(model.clone(), DType::BF16);
                m.attention = kernel;
                let (loss, grads) = plain(&m, &b, scale);
                (
                    (loss - loss0).abs() / loss0.abs(),
                    worst_relative(&grads0, &grads),
                )
            };
            let (dl_plain, dg_plain) = bf16(AttentionKernel::Plain);
            let (dl_fused, dg_fused) = bf16(AttentionKernel::Auto);
            eprintln!(
                "{arch:?} {what} bf16: loss off by {dl_fused:.1e} fused, {dl_plain:.1e} decomposed; gradients {dg_fused:.1e}, {dg_plain:.1e}"
            );
            assert!(
                dl_fused <= 1e-2 && dg_fused <= 2.0 * dg_plain.max(1e-2),
                "{arch:?} {what}"
            );
        }
    }
}
