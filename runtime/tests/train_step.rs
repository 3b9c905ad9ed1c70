//! The optimizer step on a toy model: accumulation equals one big batch, the global loss-token
//! normalisation, divergence detection, and determinism of the CPU backend.

mod common;

use common::*;
use sftctl_runtime::collective::SingleProcess;
use sftctl_runtime::train::{ScheduleKind, StepOutcome, StopSignal};
use std::time::Duration;

fn no_stop() -> StopSignal {
    StopSignal::manual(Duration::from_secs(60))
}

/// Run `steps` steps of `batch` samples in micro-batches of `per_micro`; return the trainer and
/// the logged (loss, grad norm) per step.
fn train(
    seed: u64,
    batch: u64,
    per_micro: u64,
    steps: u64,
) -> (
    sftctl_runtime::train::Trainer<sftctl_runtime::train::toy::ToyLm>,
    Vec<(f64, f64)>,
) {
    let mut t = trainer(seed, settings(ScheduleKind::Cosine, 2, 10));
    let mut log = vec![];
    for s in 0..steps {
        let mbs = step_batches(seed, s * batch, batch, per_micro);
        match t
            .step(&mbs, mbs.len(), &mut SingleProcess, &no_stop())
            .unwrap()
        {
            StepOutcome::Completed(stats) => log.push((stats.loss, stats.grad_norm)),
            other => panic!("step {s}: {other:?}"),
        }
    }
    (t, log)
}

/// Tolerance: parameters agree to 2e-6 absolute (they are O(1), learning rate 1e-2), losses and
/// gradient norms to 1e-5 relative: fp32 sums taken in another order, amplified a little by
/// Adam's division by the root of the second moment.
#[test]
fn k_micro_batches_equal_one_batch() {
    let (one, log_one) = train(7, 16, 16, 4);
    for per_micro in [1, 4, 5] {
        let (many, log_many) = train(7, 16, per_micro, 4);
        for ((l1, n1), (l2, n2)) in log_one.iter().zip(&log_many) {
            assert!((l1 - l2).abs() <= 1e-5 * l1.abs(), "loss {l1} vs {l2}");
            assert!((n1 - n2).abs() <= 1e-5 * n1.abs(), "norm {n1} vs {n2}");
        }
        let (a, b) = (params(&one.model), params(&many.model));
        let mut worst = 0.0f32;
        for (pa, pb) in a.iter().zip(&b) {
            for (x, y) in pa.iter().zip(pb) {
                worst = worst.max((x - y).abs());
            }
        }
        eprintln!("micro-batches of {per_micro}: max |param diff| {worst:e}");
        assert!(
            worst <= 2e-6,
            "micro-batches of {per_micro}: max |diff| {worst}"
        );
    }
    // The updates are not negligible: the run moved the parameters.
    let start = params(&toy(7));
    let moved: f32 = start
        .iter()
        .zip(params(&one.model))
        .flat_map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max);
    assert!(moved > 1e-3, "parameters barely moved: {moved}");
}

/// The loss is the mean over the loss tokens of the whole step, not a mean of micro-batch means.
#[test]
fn loss_is_normalised_by_the_global_token_count() {
    let t = trainer(3, settings(ScheduleKind::Constant, 0, 10));
    let mbs = step_batches(3, 0, 6, 2);
    let (sum, count) = t.evaluate(&mbs);
    let mut t = t;
    let StepOutcome::Completed(stats) = t
        .step(&mbs, mbs.len(), &mut SingleProcess, &no_stop())
        .unwrap()
    else {
        panic!("step did not complete")
    };
    assert_eq!(stats.loss_tokens, count);
    assert_eq!(stats.samples, 6);
    assert!((stats.loss - sum / count as f64).abs() < 1e-6 * stats.loss);
    // The micro-batches have unequal loss-token counts, so a mean of per-micro-batch means
    // would be a different number: the test can tell the two normalisations apart.
    let counts: Vec<u64> = mbs.iter().map(|m| m.loss_tokens()).collect();
    assert!(counts.windows(2).any(|w| w[0] != w[1]), "{counts:?}");
    let before = trainer(3, settings(ScheduleKind::Constant, 0, 10));
    let mean_of_means = mbs
        .iter()
        .map(|mb| {
            let (s, c) = before.evaluate(std::slice::from_ref(mb));
            s / c as f64
        })
        .sum::<f64>()
        / mbs.len() as f64;
    assert!(
        (stats.loss - mean_of_means).abs() > 1e-4,
        "{} vs {mean_of_means}",
        stats.loss
    );
}

/// A NaN in the weights makes the step report divergence and apply nothing.
#[test]
fn nan_loss_is_divergence_not_a_crash() {
    use burn::module::{Module, ModuleMapper, Param};
    use burn::tensor::Tensor;
    struct Poison;
    impl ModuleMapper for Poison {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.mul_scalar(f32::NAN).detach().require_grad())
        }
    }
    let mut t = trainer(5, settings(ScheduleKind::Constant, 0, 10));
    t.model = t.model.clone().map(&mut Poison);
    let before = bits(&params(&t.model));
    let mbs = step_batches(5, 0, 4, 2);
    let out = t
        .step(&mbs, mbs.len(), &mut SingleProcess, &no_stop())
        .unwrap();
    assert!(
        matches!(out, StepOutcome::Diverged { loss, .. } if loss.is_nan()),
        "{out:?}"
    );
    assert_eq!(t.step, 0);
    assert_eq!(bits(&params(&t.model)), before);
}

/// Weights so large that the logits overflow f32 make a non-finite loss: divergence too.
#[test]
fn overflowing_weights_are_divergence() {
    use burn::module::{Module, ModuleMapper, Param};
    use burn::tensor::Tensor;
    struct Blow;
    impl ModuleMapper for Blow {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.mul_scalar(1e38f32).detach().require_grad())
        }
    }
    let mut t = trainer(5, settings(ScheduleKind::Constant, 0, 10));
    t.model = t.model.clone().map(&mut Blow);
    let mbs = step_batches(5, 0, 4, 2);
    let out = t
        .step(&mbs, mbs.len(), &mut SingleProcess, &no_stop())
        .unwrap();
    assert!(matches!(out, StepOutcome::Diverged { .. }), "{out:?}");
}

/// Two identical runs are bit-identical on the CPU backend (parameters and Adam moments).
#[test]
fn identical_runs_are_bit_identical() {
    let (a, la) = train(11, 12, 4, 5);
    let (b, lb) = train(11, 12, 4, 5);
    assert_eq!(bits(&params(&a.model)), bits(&params(&b.model)));
    assert_eq!(adam_state(&a), adam_state(&b));
    let to_bits = |l: &[(f64, f64)]| {
        l.iter()
            .map(|(x, y)| (x.to_bits(), y.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(to_bits(&la), to_bits(&lb));
}

/// The learning rate applied at each step follows the schedule with warmup (hand-computed:
/// warmup 2 of 10 steps, cosine, peak 1e-2).
#[test]
fn applied_learning_rate_follows_warmup_then_cosine() {
    let mut t = trainer(13, settings(ScheduleKind::Cosine, 2, 10));
    let want = [
        0.0,
        0.5e-2,
        1e-2,
        1e-2 * 0.5 * (1.0 + (std::f64::consts::PI / 8.0).cos()),
    ];
    for (s, want) in want.iter().enumerate() {
        let mbs = step_batches(13, s as u64 * 4, 4, 2);
        let StepOutcome::Completed(stats) = t
            .step(&mbs, mbs.len(), &mut SingleProcess, &no_stop())
            .unwrap()
        else {
            panic!()
        };
        assert!(
            (stats.lr - want).abs() < 1e-15,
            "step {s}: {} vs {want}",
            stats.lr
        );
    }
}
