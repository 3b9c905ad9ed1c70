//! Checkpoints and resume on a toy model: a crash mid-write leaves the previous checkpoint
//! usable, old checkpoints are pruned, and interrupted+resumed runs equal uninterrupted ones bit
//! for bit (parameters, Adam moments, sampler state), also when stopped mid-accumulation.

mod common;

use std::time::Duration;

use common::*;
use sftctl_runtime::collective::SingleProcess;
use sftctl_runtime::train::checkpoint::{MARKER, OPTIMIZER_FILE};
use sftctl_runtime::train::run::{resume, run};
use sftctl_runtime::train::toy::{ToyLm, ToyWeights};
use sftctl_runtime::train::{
    BatchSource, CheckpointInfo, Checkpoints, LoopSettings, Observer, Progress, RunOutcome,
    ScheduleKind, StepSettings, StepStats, StopReason, StopSignal, Trainer,
};

#[derive(Default)]
struct Log {
    steps: Vec<StepStats>,
    checkpoints: Vec<u64>,
    validations: Vec<(u64, f64)>,
    /// Request a stop after this many steps were observed.
    stop_after: Option<(usize, StopSignal)>,
}

impl Observer for Log {
    fn step(&mut self, stats: &StepStats, _progress: &Progress) {
        self.steps.push(stats.clone());
        if let Some((n, stop)) = &self.stop_after
            && self.steps.len() == *n
        {
            stop.request();
        }
    }
    fn validation(&mut self, step: u64, loss: f64, _tokens: u64) {
        self.validations.push((step, loss));
    }
    fn checkpoint(&mut self, info: &CheckpointInfo, _progress: &Progress) {
        self.checkpoints.push(info.marker.step);
    }
}

fn weights() -> ToyWeights {
    ToyWeights { template: toy(0) }
}

fn loop_settings(total: u64) -> LoopSettings {
    LoopSettings {
        total_steps: total,
        checkpoint_every_samples: Some(24),
        keep_last: 2,
        validate_every_steps: Some(3),
        best_by_validation: false,
    }
}

fn step_settings(kind: ScheduleKind, total: u64) -> StepSettings {
    settings(kind, 3, total)
}

/// A fresh process's view: new model with other random weights, then resume.
fn fresh(
    kind: ScheduleKind,
    total: u64,
    ckpts: &Checkpoints,
) -> (Trainer<ToyLm>, ToySource, Progress) {
    let mut t = trainer(999, step_settings(kind, total));
    let mut src = ToySource::new(42, 8, 3);
    let progress = match resume(&mut t, &mut src, ckpts, &weights()).unwrap() {
        Some((p, _)) => p,
        None => Progress::default(),
    };
    (t, src, progress)
}

fn uninterrupted(kind: ScheduleKind, total: u64) -> (Trainer<ToyLm>, ToySource, Log) {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = Checkpoints::open(dir.path().join("checkpoints")).unwrap();
    let mut t = trainer(1, step_settings(kind, total));
    let mut src = ToySource::new(42, 8, 3);
    let mut log = Log::default();
    let stop = StopSignal::manual(Duration::from_secs(60));
    let out = run(
        &mut t,
        &mut src,
        Progress::default(),
        &ckpts,
        &weights(),
        &loop_settings(total),
        &mut SingleProcess,
        &stop,
        &mut log,
    )
    .unwrap();
    assert!(matches!(out, RunOutcome::Completed { .. }), "{out:?}");
    (t, src, log)
}

fn assert_same(a: &Trainer<ToyLm>, sa: &ToySource, b: &Trainer<ToyLm>, sb: &ToySource) {
    assert_eq!(a.step, b.step);
    assert_eq!(
        bits(&params(&a.model)),
        bits(&params(&b.model)),
        "parameters differ"
    );
    assert_eq!(adam_state(a), adam_state(b), "Adam moments differ");
    assert_eq!(sa.state(), sb.state(), "sampler state differs");
}

/// Stop after `stop_at` steps (at a step boundary), resume in a fresh trainer, finish.
fn interrupted_at_boundary(kind: ScheduleKind, total: u64, stop_at: usize) {
    let (ref_t, ref_src, ref_log) = uninterrupted(kind, total);
    let dir = tempfile::tempdir().unwrap();
    let ckpts = Checkpoints::open(dir.path().join("checkpoints")).unwrap();
    let stop = StopSignal::manual(Duration::from_secs(60));
    let mut t = trainer(1, step_settings(kind, total));
    let mut src = ToySource::new(42, 8, 3);
    let mut log = Log {
        stop_after: Some((stop_at, stop.clone())),
        ..Log::default()
    };
    let out = run(
        &mut t,
        &mut src,
        Progress::default(),
        &ckpts,
        &weights(),
        &loop_settings(total),
        &mut SingleProcess,
        &stop,
        &mut log,
    )
    .unwrap();
    match out {
        RunOutcome::Stopped {
            reason: StopReason::Requested,
            checkpoint: Some(c),
        } => {
            assert_eq!(c.marker.step, stop_at as u64)
        }
        other => panic!("{other:?}"),
    }
    let (mut t2, mut src2, progress) = fresh(kind, total, &ckpts);
    assert_eq!(progress.step, stop_at as u64);
    let stop2 = StopSignal::manual(Duration::from_secs(60));
    let mut log2 = Log::default();
    let out = run(
        &mut t2,
        &mut src2,
        progress,
        &ckpts,
        &weights(),
        &loop_settings(total),
        &mut SingleProcess,
        &stop2,
        &mut log2,
    )
    .unwrap();
    assert!(matches!(out, RunOutcome::Completed { .. }), "{out:?}");
    assert_same(&ref_t, &ref_src, &t2, &src2);
    // The logged losses of the resumed part are the uninterrupted run's, bit for bit.
    let tail: Vec<u64> = ref_log.steps[stop_at..]
        .iter()
        .map(|s| s.loss.to_bits())
        .collect();
    let got: Vec<u64> = log2.steps.iter().map(|s| s.loss.to_bits()).collect();
    assert_eq!(tail, got);
}

/// Every logged figure except the wall time, as bits.
fn figures(steps: &[StepStats]) -> Vec<(u64, u64, u64, u64, u64, u64)> {
    steps
        .iter()
        .map(|s| {
            (
                s.step,
                s.loss.to_bits(),
                s.grad_norm.to_bits(),
                s.lr.to_bits(),
                s.samples,
                s.tokens,
            )
        })
        .collect()
}

#[test]
fn two_uninterrupted_runs_are_bit_identical() {
    let (a, sa, la) = uninterrupted(ScheduleKind::Cosine, 10);
    let (b, sb, lb) = uninterrupted(ScheduleKind::Cosine, 10);
    assert_same(&a, &sa, &b, &sb);
    assert_eq!(la.steps.len(), 10);
    assert_eq!(figures(&la.steps), figures(&lb.steps));
    // Checkpoints every 24 samples (3 steps of 8) and at the end; validation every 3 steps.
    assert_eq!(la.checkpoints, vec![3, 6, 9, 10]);
    assert_eq!(
        la.validations.iter().map(|v| v.0).collect::<Vec<_>>(),
        vec![3, 6, 9, 10]
    );
}

#[test]
fn resume_during_warmup_equals_uninterrupted() {
    interrupted_at_boundary(ScheduleKind::Cosine, 10, 2);
}

#[test]
fn resume_during_decay_equals_uninterrupted() {
    interrupted_at_boundary(ScheduleKind::Linear, 10, 7);
}

/// A stop with no time left mid-accumulation abandons the step: the checkpoint holds the state
/// before that step (sampler rewound), and the resumed run replays it.
#[test]
fn resume_after_stop_mid_accumulation_equals_uninterrupted() {
    let total = 8;
    let (ref_t, ref_src, _) = uninterrupted(ScheduleKind::Cosine, total);
    let dir = tempfile::tempdir().unwrap();
    let ckpts = Checkpoints::open(dir.path().join("checkpoints")).unwrap();
    // No grace: any stop request abandons the step in progress.
    let stop = StopSignal::manual(Duration::ZERO);
    let mut t = trainer(1, step_settings(ScheduleKind::Cosine, total));
    let mut src = ToySource::new(42, 8, 3);
    // 5 steps normally, then a step that is stopped after its first micro-batch.
    let mut log = Log::default();
    let out = run(
        &mut t,
        &mut src,
        Progress::default(),
        &ckpts,
        &weights(),
        &loop_settings(5),
        &mut SingleProcess,
        &stop,
        &mut log,
    )
    .unwrap();
    assert!(matches!(out, RunOutcome::Completed { .. }));
    let progress = Progress {
        phase: 0,
        step: 5,
        samples_seen: 40,
        tokens_seen: log.steps.iter().map(|s| s.tokens).sum(),
        epoch: 0,
    };
    let batch = src.next_step().unwrap();
    assert_eq!(batch.micro_batches.len(), 3);
    stop.request();
    let outcome = t
        .step(
            &batch.micro_batches,
            batch.agree_points,
            &mut SingleProcess,
            &stop,
        )
        .unwrap();
    assert_eq!(outcome, sftctl_runtime::train::StepOutcome::Abandoned);
    assert_eq!(t.step, 5);
    // The loop does the same on its own when the request arrives mid-step: rewind and save.
    let mut src_rewound = ToySource::new(42, 8, 3);
    src_rewound.next = 40;
    let out = run(
        &mut t,
        &mut src_rewound,
        progress,
        &ckpts,
        &weights(),
        &loop_settings(total),
        &mut SingleProcess,
        &stop,
        &mut Log::default(),
    )
    .unwrap();
    assert!(matches!(out, RunOutcome::Stopped { .. }), "{out:?}");
    let latest = ckpts.latest_resumable().unwrap().unwrap();
    assert_eq!(latest.marker.step, 5);

    let (mut t2, mut src2, progress) = fresh(ScheduleKind::Cosine, total, &ckpts);
    assert_eq!(src2.next, 40);
    let stop2 = StopSignal::manual(Duration::from_secs(60));
    let out = run(
        &mut t2,
        &mut src2,
        progress,
        &ckpts,
        &weights(),
        &loop_settings(total),
        &mut SingleProcess,
        &stop2,
        &mut Log::default(),
    )
    .unwrap();
    assert!(matches!(out, RunOutcome::Completed { .. }));
    assert_same(&ref_t, &ref_src, &t2, &src2);
}

/// A crash at any point of a checkpoint write leaves the previous checkpoint the one resumed.
#[test]
fn crash_mid_checkpoint_leaves_previous_usable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("checkpoints");
    let ckpts = Checkpoints::open(&root).unwrap();
    let mut t = trainer(1, step_settings(ScheduleKind::Constant, 6));
    let mut src = ToySource::new(42, 8, 3);
    let stop = StopSignal::manual(Duration::from_secs(60));
    run(
        &mut t,
        &mut src,
        Progress::default(),
        &ckpts,
        &weights(),
        &loop_settings(3),
        &mut SingleProcess,
        &stop,
        &mut Log::default(),
    )
    .unwrap();
    let good = ckpts.latest_resumable().unwrap().unwrap();
    assert_eq!(good.marker.step, 3);

    // Crash states of a write of step 4: (a) temp dir half written, (b) renamed, no marker,
    // (c) marker present but a file truncated afterwards (torn by the file system).
    let tmp = root.join(".tmp-step-4");
    fs_err::create_dir_all(&tmp).unwrap();
    fs_err::write(tmp.join(OPTIMIZER_FILE), b"partial").unwrap();
    assert_eq!(ckpts.latest_resumable().unwrap().unwrap().dir, good.dir);
    let renamed = root.join("step-5");
    fs_err::create_dir_all(&renamed).unwrap();
    for f in fs_err::read_dir(&good.dir).unwrap() {
        let f = f.unwrap();
        if f.file_name() != MARKER {
            fs_err::copy(f.path(), renamed.join(f.file_name())).unwrap();
        }
    }
    assert_eq!(ckpts.latest_resumable().unwrap().unwrap().dir, good.dir);
    let torn = root.join("step-6");
    fs_err::create_dir_all(&torn).unwrap();
    for f in fs_err::read_dir(&good.dir).unwrap() {
        let f = f.unwrap();
        fs_err::copy(f.path(), torn.join(f.file_name())).unwrap();
    }
    fs_err::write(torn.join(OPTIMIZER_FILE), b"torn").unwrap();
    assert_eq!(ckpts.latest_resumable().unwrap().unwrap().dir, good.dir);

    // Resume works from the good one, and the next prune clears the debris.
    let (t2, src2, progress) = fresh(ScheduleKind::Constant, 6, &ckpts);
    assert_eq!(progress.step, 3);
    assert_eq!(src2.next, 24);
    assert_eq!(bits(&params(&t2.model)), bits(&params(&t.model)));
    ckpts.prune(2, &|_| false).unwrap();
    assert!(!tmp.exists() && !renamed.exists() && !torn.exists());
    assert!(good.dir.exists());
}

/// Only the newest k stay; a checkpoint kept for evaluation keeps its weights but loses its
/// optimizer state, and is no longer offered for resume.
#[test]
fn prune_keeps_last_k_and_weights_for_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = Checkpoints::open(dir.path().join("c")).unwrap();
    let mut t = trainer(1, step_settings(ScheduleKind::Constant, 10));
    let mut src = ToySource::new(42, 8, 3);
    let stop = StopSignal::manual(Duration::from_secs(60));
    // keep_last 2 with checkpoints at 3, 6, 9, 10: the loop prunes as it goes.
    run(
        &mut t,
        &mut src,
        Progress::default(),
        &ckpts,
        &weights(),
        &loop_settings(10),
        &mut SingleProcess,
        &stop,
        &mut Log::default(),
    )
    .unwrap();
    let steps: Vec<u64> = ckpts
        .complete()
        .unwrap()
        .iter()
        .map(|c| c.marker.step)
        .collect();
    assert_eq!(steps, vec![9, 10]);
    // Now keep weights of step 9 while pruning to 1.
    ckpts.prune(1, &|c| c.marker.step == 9).unwrap();
    let all = ckpts.complete().unwrap();
    assert_eq!(
        all.iter()
            .map(|c| (c.marker.step, c.resumable))
            .collect::<Vec<_>>(),
        vec![(9, false), (10, true)]
    );
    assert!(
        all[0]
            .dir
            .join(sftctl_runtime::train::toy::TOY_WEIGHTS)
            .exists()
    );
    assert_eq!(ckpts.latest_resumable().unwrap().unwrap().marker.step, 10);
}

/// Near the job's time limit the loop stops by itself (reason `Deadline`) while one more step
/// and a checkpoint still fit, and checkpoints the step it stopped at; a deadline that has
/// passed stops it before the first step; a distant one changes nothing.
#[test]
fn deadline_stops_the_loop_with_a_checkpoint() {
    use sftctl_runtime::train::run::DEADLINE_MARGIN;
    use std::time::Instant;
    let total = 1_000_000;
    let go = |deadline: Instant| {
        let dir = tempfile::tempdir().unwrap();
        let ckpts = Checkpoints::open(dir.path().join("c")).unwrap();
        let mut t = trainer(1, step_settings(ScheduleKind::Constant, total));
        t.checkpoint_estimate = Duration::ZERO;
        let mut src = ToySource::new(42, 8, 3);
        let stop = StopSignal::manual(Duration::from_secs(60));
        stop.set_deadline(deadline);
        let mut log = Log::default();
        let started = Instant::now();
        let mut settings = loop_settings(total);
        settings.checkpoint_every_samples = None;
        settings.validate_every_steps = None;
        let out = run(
            &mut t,
            &mut src,
            Progress::default(),
            &ckpts,
            &weights(),
            &settings,
            &mut SingleProcess,
            &stop,
            &mut log,
        )
        .unwrap();
        let steps = ckpts
            .complete()
            .unwrap()
            .iter()
            .map(|c| c.marker.step)
            .collect::<Vec<_>>();
        (out, t.step, steps, started.elapsed(), dir)
    };

    // Passed already: no step runs, the step-0 state is checkpointed.
    let (out, step, ckpts, ..) = go(Instant::now());
    assert!(
        matches!(
            out,
            RunOutcome::Stopped {
                reason: StopReason::Deadline,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!((step, ckpts), (0, vec![0]));

    // 300 ms of work left before the margin: the toy's steps take well under that, so the loop
    // runs some, then stops at a step boundary with a checkpoint of that step, before the
    // deadline itself.
    let budget = Duration::from_millis(300);
    let (out, step, ckpts, took, _dir) = go(Instant::now() + DEADLINE_MARGIN + budget);
    assert!(
        matches!(
            out,
            RunOutcome::Stopped {
                reason: StopReason::Deadline,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(step > 0 && step < total, "stopped at step {step}");
    assert_eq!(ckpts, vec![step]);
    assert!(
        took >= budget / 2,
        "stopped after {took:?}, long before the deadline"
    );
    assert!(took < budget + DEADLINE_MARGIN, "stopped after {took:?}");
}

/// With `best_by_validation` every checkpoint records its validation loss, and pruning keeps the
/// weights of the best one (a later phase starts from it) besides the newest `keep_last`.
#[test]
fn best_by_validation_keeps_the_best_checkpoints_weights() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = Checkpoints::open(dir.path().join("c")).unwrap();
    // A high learning rate so that the validation loss is not monotone.
    let mut s = step_settings(ScheduleKind::Constant, 30);
    s.schedule.peak_lr = 0.5;
    let mut t = trainer(1, s);
    let mut src = ToySource::new(42, 8, 3);
    let stop = StopSignal::manual(Duration::from_secs(60));
    let mut settings = loop_settings(30);
    settings.keep_last = 1;
    settings.validate_every_steps = Some(0);
    settings.best_by_validation = true;
    let mut log = Log::default();
    run(
        &mut t,
        &mut src,
        Progress::default(),
        &ckpts,
        &weights(),
        &settings,
        &mut SingleProcess,
        &stop,
        &mut log,
    )
    .unwrap();
    // Validated at each checkpoint (every 3 steps) and at the end.
    let checkpointed: Vec<u64> = log.checkpoints.clone();
    assert_eq!(checkpointed, (1..=10).map(|i| i * 3).collect::<Vec<_>>());
    let val: std::collections::BTreeMap<u64, f64> = log.validations.iter().copied().collect();
    for step in &checkpointed {
        assert!(
            val.contains_key(step),
            "no validation at checkpoint {step}: {val:?}"
        );
    }
    let best = checkpointed
        .iter()
        .copied()
        .min_by(|a, b| val[a].total_cmp(&val[b]))
        .unwrap();
    assert_ne!(
        best, 30,
        "the loss fell to the end; raise the learning rate: {val:?}"
    );
    let kept: Vec<(u64, bool, Option<f64>)> = ckpts
        .complete()
        .unwrap()
        .iter()
        .map(|c| (c.marker.step, c.resumable, c.marker.validation_loss))
        .collect();
    assert_eq!(
        kept,
        vec![(best, false, Some(val[&best])), (30, true, Some(val[&30]))],
        "{val:?}"
    );
}
