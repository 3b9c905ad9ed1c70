//! ZeRO-1 on one rank, without MPI: the hand-written flat AdamW against Burn's AdamW on the same
//! gradients, the sharded trainer against the unsharded one, the shard layout, and checkpoints
//! with sharded optimizer state (bit-exact resume, a clear error when resumed unsharded).
//! Several ranks: `tests/zero_mpi.rs`.

mod common;

use std::time::Duration;

use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use sftctl_runtime::collective::{Collective, SingleProcess};
use sftctl_runtime::train::checkpoint::{MARKER, OPTIMIZER_FILE, ZERO_FILE};
use sftctl_runtime::train::run::{resume, run};
use sftctl_runtime::train::toy::{ToyLm, ToyWeights};
use sftctl_runtime::train::zero::ZeroState;
use sftctl_runtime::train::{
    AdamWSettings, CheckpointInfo, Checkpoints, FlatAdamW, LoopSettings, Observer,
    OptimizerSharding, Progress, RunOutcome, ScheduleKind, ShardLayout, StepOutcome, StepStats,
    StopSignal, Trainer,
};

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` values uniform in `[-scale, scale)`.
fn random(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| ((splitmix(&mut s) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

#[derive(Module, Debug)]
struct Flat {
    w: Param<Tensor<1>>,
}

fn host(t: Tensor<1>) -> Vec<u32> {
    t.into_data()
        .iter::<f32>()
        .map(|x| x.to_bits())
        .collect::<Vec<_>>()
}

#[test]
fn flat_adamw_is_burns_adamw_bit_for_bit() {
    const N: usize = 1000;
    let device = Device::flex();
    for (settings, lrs) in [
        (
            AdamWSettings::default(),
            [1e-3, 2e-3, 5e-4, 1e-3, 0.0, 3e-3],
        ),
        (
            AdamWSettings {
                beta1: 0.8,
                beta2: 0.99,
                epsilon: 1e-6,
                weight_decay: 0.1,
            },
            [1e-2, 1e-2, 5e-3, 0.0, 2e-2, 1e-3],
        ),
    ] {
        let start = random(1, N, 0.5);
        let mut burn_model = Flat {
            w: Param::initialized(
                ParamId::from(1),
                Tensor::from_data(
                    TensorData::new(start.clone(), [N]),
                    &device.clone().autodiff(),
                )
                .require_grad(),
            ),
        };
        let mut burn_opt = settings.build();
        let mut flat = FlatAdamW::new(&settings);
        let mut mine = Tensor::<1>::from_data(TensorData::new(start, [N]), &device);
        for (step, &lr) in lrs.iter().enumerate() {
            // Gradients of mixed scale, some exactly zero.
            let mut g = random(100 + step as u64, N, 10f32.powi(step as i32 - 3));
            g[7] = 0.0;
            let grad = Tensor::<1>::from_data(TensorData::new(g, [N]), &device);
            let mut grads = GradientsParams::new();
            grads.register::<1>(ParamId::from(1), grad.clone());
            burn_model = burn_opt.step(lr, burn_model, grads);
            mine = flat.step(lr, mine, grad);
            assert_eq!(
                host(burn_model.w.val()),
                host(mine.clone()),
                "{settings:?}: step {step} differs"
            );
        }
        assert_eq!(flat.time, lrs.len() as u64);
    }
}

#[test]
fn shard_layout_covers_the_vector_once() {
    // (total, world) -> shard, each rank's range
    type Case = (usize, usize, usize, &'static [(usize, usize)]);
    let table: &[Case] = &[
        (10, 1, 10, &[(0, 10)]),
        (10, 2, 5, &[(0, 5), (5, 10)]),
        (10, 3, 4, &[(0, 4), (4, 8), (8, 10)]),
        (2, 4, 1, &[(0, 1), (1, 2), (2, 2), (2, 2)]),
        (0, 2, 1, &[(0, 0), (0, 0)]),
    ];
    for &(total, world, shard, ranges) in table {
        for (rank, &(a, b)) in ranges.iter().enumerate() {
            let l = ShardLayout::new(total, world, rank);
            assert_eq!(l.shard, shard, "{total} over {world}");
            assert_eq!(l.range(), a..b, "{total} over {world}, rank {rank}");
            let pieces: Vec<_> = l.pieces().collect();
            assert_eq!(pieces, vec![0..shard], "one bucket for small vectors");
        }
    }
    assert_eq!("zero1".parse(), Ok(OptimizerSharding::Zero1));
    assert_eq!("none".parse(), Ok(OptimizerSharding::None));
    let e = "zero3".parse::<OptimizerSharding>().unwrap_err();
    assert!(e.contains("`zero3`"), "{e}");
}

#[test]
fn single_process_scatters_and_gathers_by_copy() {
    let mut c = SingleProcess;
    let send = random(5, 6, 1.0);
    let mut recv = vec![0.0; 6];
    c.reduce_scatter_sum_f32(&send, &mut recv).unwrap();
    assert_eq!(recv, send);
    let mut back = vec![0.0; 6];
    c.all_gather_f32(&recv, &mut back).unwrap();
    assert_eq!(back, send);
    let e = c.reduce_scatter_sum_f32(&send, &mut [0.0; 4]).unwrap_err();
    assert!(
        e.to_string().contains("6 elements is not 1 blocks of 4"),
        "{e}"
    );
}

fn run_steps(mut t: Trainer<ToyLm>, steps: u64) -> (Trainer<ToyLm>, Vec<StepStats>) {
    let stop = StopSignal::manual(Duration::from_secs(60));
    let mut stats = Vec::new();
    for step in 0..steps {
        let mbs = step_batches(42, step * 8, 8, 3);
        match t.step(&mbs, mbs.len(), &mut SingleProcess, &stop).unwrap() {
            StepOutcome::Completed(s) => stats.push(s),
            other => panic!("step {step}: {other:?}"),
        }
    }
    (t, stats)
}

fn toy_settings(clip: Option<f64>, weight_decay: f64) -> sftctl_runtime::train::StepSettings {
    let mut s = settings(ScheduleKind::Cosine, 2, 8);
    s.max_grad_norm = clip;
    s.adamw.weight_decay = weight_decay;
    s
}

/// Without clipping the sharded step applies exactly the unsharded update; with clipping the
/// clip factor comes from a norm summed in another order (f64 over the shard against f32 per
/// tensor), so the parameters agree to fp32 rounding.
#[test]
fn one_rank_zero1_equals_unsharded() {
    for (clip, wd) in [(None, 0.0), (None, 0.01), (Some(0.5), 0.01)] {
        let (plain, plain_stats) = run_steps(trainer(3, toy_settings(clip, wd)), 8);
        let sharded = trainer(3, toy_settings(clip, wd)).with_zero1(0, 1);
        let zero = sharded.zero.as_ref().unwrap();
        let n: usize = params(&sharded.model).iter().map(Vec::len).sum();
        assert_eq!(zero.layout().shard, n);
        assert_eq!(
            zero.state_bytes(),
            4 * n,
            "master weights only before a step"
        );
        let (sharded, zero_stats) = run_steps(sharded, 8);
        assert_eq!(
            sharded.zero.as_ref().unwrap().state_bytes(),
            12 * n,
            "master weights and two moments"
        );
        let mut clipped = 0;
        for (a, b) in plain_stats.iter().zip(&zero_stats) {
            let rel = (a.loss - b.loss).abs() / a.loss;
            assert!(rel < 1e-6, "step {}: loss {} vs {}", a.step, a.loss, b.loss);
            let rel = (a.grad_norm - b.grad_norm).abs() / a.grad_norm;
            assert!(
                rel < 1e-6,
                "step {}: norm {} vs {}",
                a.step,
                a.grad_norm,
                b.grad_norm
            );
            clipped += usize::from(clip.is_some_and(|c| a.grad_norm > c));
        }
        let (p, z) = (params(&plain.model), params(&sharded.model));
        if clip.is_none() {
            for (a, b) in plain_stats.iter().zip(&zero_stats) {
                assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "step {} loss", a.step);
            }
            assert_eq!(bits(&p), bits(&z), "wd {wd}: parameters differ");
        } else {
            assert!(clipped > 0, "no step was clipped: {plain_stats:?}");
            let worst = p
                .iter()
                .flatten()
                .zip(z.iter().flatten())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            eprintln!("one rank, clipping: max |param diff| zero1 vs unsharded {worst:e}");
            assert!(worst <= 1e-6, "max |param diff| {worst}");
        }
    }
}

#[derive(Default)]
struct StopAfter {
    steps: usize,
    at: Option<(usize, StopSignal)>,
}

impl Observer for StopAfter {
    fn step(&mut self, _stats: &StepStats, _progress: &Progress) {
        self.steps += 1;
        if let Some((n, stop)) = &self.at
            && self.steps == *n
        {
            stop.request();
        }
    }
    fn validation(&mut self, _step: u64, _loss: f64, _tokens: u64) {}
    fn checkpoint(&mut self, _info: &CheckpointInfo, _progress: &Progress) {}
}

const TOTAL: u64 = 7;

fn loop_settings() -> LoopSettings {
    LoopSettings {
        total_steps: TOTAL,
        checkpoint_every_samples: Some(16),
        keep_last: 2,
        validate_every_steps: None,
        best_by_validation: false,
    }
}

fn zero_trainer(seed: u64) -> Trainer<ToyLm> {
    trainer(seed, toy_settings(Some(1.0), 0.01)).with_zero1(0, 1)
}

/// Run (or, with `stop_at`, start) the loop on `dir`'s checkpoints.
fn drive(
    t: &mut Trainer<ToyLm>,
    src: &mut ToySource,
    progress: Progress,
    dir: &std::path::Path,
    stop_at: Option<usize>,
) -> RunOutcome {
    let ckpts = Checkpoints::open(dir.join("checkpoints")).unwrap();
    let stop = StopSignal::manual(Duration::from_secs(60));
    let mut obs = StopAfter {
        steps: 0,
        at: stop_at.map(|n| (n, stop.clone())),
    };
    run(
        t,
        src,
        progress,
        &ckpts,
        &ToyWeights { template: toy(0) },
        &loop_settings(),
        &mut SingleProcess,
        &stop,
        &mut obs,
    )
    .unwrap()
}

fn moments(t: &Trainer<ToyLm>) -> ZeroState {
    t.zero
        .as_ref()
        .unwrap()
        .gather_state(&mut SingleProcess)
        .unwrap()
        .unwrap()
}

#[test]
fn sharded_checkpoint_resumes_bit_exactly() {
    let full = tempfile::tempdir().unwrap();
    let mut a = zero_trainer(1);
    let mut sa = ToySource::new(42, 8, 3);
    let out = drive(&mut a, &mut sa, Progress::default(), full.path(), None);
    assert!(matches!(out, RunOutcome::Completed { .. }), "{out:?}");

    let part = tempfile::tempdir().unwrap();
    let mut b = zero_trainer(1);
    let mut sb = ToySource::new(42, 8, 3);
    let out = drive(&mut b, &mut sb, Progress::default(), part.path(), Some(3));
    let RunOutcome::Stopped {
        checkpoint: Some(c),
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(c.marker.step, 3);
    assert!(
        c.marker.files.contains(&ZERO_FILE.to_string()),
        "{:?}",
        c.marker.files
    );
    assert!(!c.dir.join(OPTIMIZER_FILE).exists());
    assert!(c.dir.join(MARKER).exists());

    // A fresh process: other random weights, then resume.
    let mut r = zero_trainer(999);
    let mut sr = ToySource::new(42, 8, 3);
    let ckpts = Checkpoints::open(part.path().join("checkpoints")).unwrap();
    let (progress, _) = resume(&mut r, &mut sr, &ckpts, &ToyWeights { template: toy(0) })
        .unwrap()
        .unwrap();
    assert_eq!(r.zero.as_ref().unwrap().time(), 3);
    let out = drive(&mut r, &mut sr, progress, part.path(), None);
    assert!(matches!(out, RunOutcome::Completed { .. }), "{out:?}");

    assert_eq!(r.step, a.step);
    assert_eq!(
        bits(&params(&r.model)),
        bits(&params(&a.model)),
        "parameters differ"
    );
    let (ma, mr) = (moments(&a), moments(&r));
    assert_eq!(ma.step_count, TOTAL);
    let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(b(&ma.exp_avg), b(&mr.exp_avg), "first moments differ");
    assert_eq!(
        b(&ma.exp_avg_sq),
        b(&mr.exp_avg_sq),
        "second moments differ"
    );
    assert_eq!(sa.next, sr.next);

    // The same checkpoint read by an unsharded trainer: a clear error, not a silent restart.
    let mut plain = trainer(5, toy_settings(Some(1.0), 0.01));
    let e = resume(
        &mut plain,
        &mut ToySource::new(42, 8, 3),
        &ckpts,
        &ToyWeights { template: toy(0) },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("optimizer_sharding = \"zero1\""), "{e}");
}

#[test]
fn unsharded_checkpoint_is_not_resumed_sharded() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(1, toy_settings(Some(1.0), 0.01));
    let mut src = ToySource::new(42, 8, 3);
    let out = drive(&mut t, &mut src, Progress::default(), dir.path(), Some(2));
    assert!(matches!(out, RunOutcome::Stopped { .. }), "{out:?}");
    let ckpts = Checkpoints::open(dir.path().join("checkpoints")).unwrap();
    let mut z = zero_trainer(5);
    let e = resume(
        &mut z,
        &mut ToySource::new(42, 8, 3),
        &ckpts,
        &ToyWeights { template: toy(0) },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("optimizer_sharding = \"none\""), "{e}");
}
