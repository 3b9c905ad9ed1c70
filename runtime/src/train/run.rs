//! The loop over optimizer steps: draws each step's micro-batches, runs the step, validates,
//! checkpoints every N samples and at the end, and reacts to stop requests at step boundaries.
//! Reports through [`Observer`]; never writes ledger records itself.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::collective::{Collective, CollectiveError};
use crate::train::checkpoint::WeightsIo;
use crate::train::checkpoint::{
    CheckpointError, CheckpointInfo, Checkpoints, OptimizerFiles, TrainState,
};
use crate::train::optim::param_entries;
use crate::train::preempt::{StopReason, StopSignal};
use crate::train::step::PackedLm;
use crate::train::step::{MicroBatch, StepError, StepOutcome, StepStats, Trainer};

/// One optimizer step's share of data for this rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepBatch {
    /// This rank's micro-batches.
    pub micro_batches: Vec<MicroBatch>,
    /// The largest number of micro-batches any rank holds this step.
    pub agree_points: usize,
}

/// Where the loop gets its data from: the sampler over the packed training set.
pub trait BatchSource {
    /// The next step's batch, or `None` when the run's data is exhausted.
    fn next_step(&mut self) -> Option<StepBatch>;
    /// The sampler state positioned before the next step (saved in checkpoints).
    fn state(&self) -> serde_json::Value;
    /// Restore a state returned by [`BatchSource::state`].
    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String>;
    /// The epoch the next step belongs to.
    fn epoch(&self) -> u64;
    /// The held-out micro-batches validation runs over (this rank's share).
    fn validation(&self) -> &[MicroBatch];
}

/// What the loop reports as it goes.
pub trait Observer {
    /// After every completed optimizer step.
    fn step(&mut self, stats: &StepStats, progress: &Progress);
    /// After every validation.
    fn validation(&mut self, step: u64, loss: f64, loss_tokens: u64);
    /// After every checkpoint.
    fn checkpoint(&mut self, info: &CheckpointInfo, progress: &Progress);
}

/// Counters that survive checkpoints and phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer updates applied.
    pub step: u64,
    /// Samples trained on.
    pub samples_seen: u64,
    /// Tokens trained on.
    pub tokens_seen: u64,
    /// Epoch of the last step.
    pub epoch: u64,
    /// Phase of a phased run (0 for an unphased one).
    pub phase: u32,
}

/// How often the loop validates and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopSettings {
    /// Stop after this many optimizer steps in all (the schedule's length).
    pub total_steps: u64,
    /// Checkpoint each time the samples seen cross a multiple of this.
    pub checkpoint_every_samples: Option<u64>,
    /// Keep this many resumable checkpoints.
    pub keep_last: usize,
    /// Validate every this many steps (and at the end).
    pub validate_every_steps: Option<u64>,
    /// Validate at every checkpoint too, record the loss with it, and keep the weights of each
    /// phase's best checkpoint by validation loss (a later phase starts from it).
    #[serde(default)]
    pub best_by_validation: bool,
}

/// How the loop ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// All steps done, final checkpoint written.
    Completed {
        /// The last step's figures.
        last: Option<StepStats>,
        /// The final checkpoint (on rank 0).
        checkpoint: Option<CheckpointInfo>,
    },
    /// A stop request was honoured: a checkpoint was written and the run should be requeued.
    Stopped {
        /// Why.
        reason: StopReason,
        /// The checkpoint written (on rank 0).
        checkpoint: Option<CheckpointInfo>,
    },
    /// The loss or gradient norm became NaN or infinite at this step; nothing was applied.
    Diverged {
        /// The step that diverged.
        step: u64,
        /// Its loss.
        loss: f64,
        /// Its gradient norm.
        grad_norm: f64,
    },
}

/// The loop failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// A step failed.
    #[error(transparent)]
    Step(#[from] StepError),
    /// A collective failed.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The sampler state in a checkpoint could not be restored.
    #[error("sampler state of `{path}`: {message}")]
    Sampler {
        /// The checkpoint directory.
        path: std::path::PathBuf,
        /// The sampler's message.
        message: String,
    },
}

/// Resume from the newest resumable checkpoint, if there is one: loads weights, Adam moments
/// and sampler state; returns the counters to continue from.
pub fn resume<M: PackedLm, S: BatchSource>(
    trainer: &mut Trainer<M>,
    source: &mut S,
    checkpoints: &Checkpoints,
    weights: &dyn WeightsIo<M>,
) -> Result<Option<(Progress, CheckpointInfo)>, LoopError> {
    let Some(info) = checkpoints.latest_resumable()? else {
        return Ok(None);
    };
    let (model, state) = match &mut trainer.zero {
        // ZeRO-1: this rank's shard of the moments, at whatever world size they were saved.
        Some(zero) => {
            let (model, state) = crate::train::checkpoint::load_weights(&info, weights)?;
            zero.load(&model, &info.dir)
                .map_err(crate::train::checkpoint::CheckpointError::from)?;
            (model, state)
        }
        None => {
            let optimizer = trainer.settings.adamw.build();
            let (model, optimizer, state) =
                crate::train::checkpoint::load(&info, weights, optimizer)?;
            trainer.optimizer = optimizer;
            (model, state)
        }
    };
    source
        .restore(&state.sampler)
        .map_err(|message| LoopError::Sampler {
            path: info.dir.clone(),
            message,
        })?;
    trainer.model = model;
    trainer.step = state.step;
    trainer.schedule_offset = state.phase_start_step;
    trainer.checkpoint_estimate =
        Duration::from_secs_f64(info.marker.write_seconds.max(0.01) * 1.5);
    let progress = Progress {
        step: state.step,
        samples_seen: state.samples_seen,
        tokens_seen: state.tokens_seen,
        epoch: state.epoch,
        phase: state.phase,
    };
    Ok(Some((progress, info)))
}

#[allow(clippy::too_many_arguments)]
fn save<M: PackedLm, O: Observer>(
    trainer: &mut Trainer<M>,
    observer: &mut O,
    weights: &dyn WeightsIo<M>,
    sampler: serde_json::Value,
    progress: &Progress,
    checkpoints: &Checkpoints,
    settings: &LoopSettings,
    collective: &mut dyn Collective,
    validation_loss: Option<f64>,
) -> Result<Option<CheckpointInfo>, LoopError> {
    // ZeRO-1: every rank sends its shard of the moments; rank 0 writes them.
    let zero = match &trainer.zero {
        Some(zero) => zero.gather_state(collective)?,
        None => None,
    };
    // Mixed precision: the checkpoint holds the fp32 master weights, not their bf16 copy.
    let master = match &trainer.zero {
        Some(zero) if !crate::train::precision::is_fp32(&trainer.model) => {
            Some(zero.master_model(trainer.model.clone(), collective)?)
        }
        _ => None,
    };
    if collective.rank() != 0 {
        return Ok(None);
    }
    let started = Instant::now();
    let state = TrainState {
        format: crate::train::checkpoint::STATE_FORMAT,
        step: trainer.step,
        samples_seen: progress.samples_seen,
        tokens_seen: progress.tokens_seen,
        epoch: progress.epoch,
        phase: progress.phase,
        phase_start_step: trainer.schedule_offset,
        sampler,
        // The model has no dropout and the sampler carries its own generator, so no other
        // random state advances during training.
        rng: serde_json::Value::Null,
        params: param_entries(&trainer.model),
        validation_loss,
    };
    let optimizer = match &zero {
        Some(zero) => OptimizerFiles::Zero1(zero),
        None => OptimizerFiles::Replicated(&trainer.optimizer),
    };
    let model = master.as_ref().unwrap_or(&trainer.model);
    let info = checkpoints.write_with(model, weights, optimizer, &state)?;
    // The newest `keep_last` survive whole; older ones keep their weights (only) while an
    // evaluation of the run's `config.json` still has to score them, and each phase's best by
    // validation loss when a later phase may start from it.
    let keep = crate::eval::required::keep_for_evals(checkpoints.root());
    let best = if settings.best_by_validation {
        best_by_validation(&checkpoints.complete()?)
    } else {
        Vec::new()
    };
    checkpoints.prune(settings.keep_last.max(1), &|c| {
        keep(c) || best.contains(&c.dir)
    })?;
    trainer.checkpoint_estimate = started.elapsed().mul_f64(1.5);
    // Every checkpoint is reported here, whichever path wrote it (periodic, stop, end).
    observer.checkpoint(&info, progress);
    Ok(Some(info))
}

/// Time kept free between the end of the stop checkpoint and the job's time limit: the exit,
/// the requeue command and Slurm's kill signal delivery.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(15);

/// Run optimizer steps until `settings.total_steps`, the data ends, a stop is agreed, or the
/// run diverges.
#[allow(clippy::too_many_arguments)]
pub fn run<M: PackedLm, S: BatchSource, O: Observer>(
    trainer: &mut Trainer<M>,
    source: &mut S,
    mut progress: Progress,
    checkpoints: &Checkpoints,
    weights: &dyn WeightsIo<M>,
    settings: &LoopSettings,
    collective: &mut dyn Collective,
    stop: &StopSignal,
    observer: &mut O,
) -> Result<RunOutcome, LoopError> {
    let mut last: Option<StepStats> = None;
    // A checkpoint of the current step may exist already (just resumed from it): never rewrite
    // a complete checkpoint, a crash half-way through the rewrite would lose it.
    let mut last_saved_step: Option<u64> = checkpoints
        .latest_resumable()?
        .map(|c| c.marker.step)
        .filter(|&s| s == trainer.step);
    let mut last_validated_step: Option<u64> = None;
    let mut last_validation: Option<f64> = None;
    // The slowest recent step, decaying: what the next step is expected to take at most.
    let mut step_estimate = Duration::ZERO;
    // Every rank must start from the same parameters (and stay so: checked every N steps).
    crate::collective::replicas::verify(&trainer.model, collective, trainer.step)?;
    loop {
        // Near the job's time limit (rank 0 knows it under Slurm), stop while one more step
        // and a checkpoint, at their measured times, still fit.
        stop.check_deadline(
            step_estimate.mul_f64(1.5) + trainer.checkpoint_estimate + DEADLINE_MARGIN,
        );
        // The agreed stop check at the step boundary.
        let local = stop.requested();
        if collective.any(local.is_some())? {
            if last_saved_step == Some(trainer.step) {
                return Ok(RunOutcome::Stopped {
                    reason: local.unwrap_or(StopReason::Requested),
                    checkpoint: checkpoints.latest_resumable()?,
                });
            }
            let sampler = source.state();
            let checkpoint = save(
                trainer,
                observer,
                weights,
                sampler,
                &progress,
                checkpoints,
                settings,
                collective,
                None,
            )?;
            return Ok(RunOutcome::Stopped {
                reason: local.unwrap_or(StopReason::Requested),
                checkpoint,
            });
        }
        if trainer.step >= settings.total_steps {
            break;
        }
        let before = source.state();
        let epoch = source.epoch();
        let Some(batch) = source.next_step() else {
            break;
        };
        match trainer.step(&batch.micro_batches, batch.agree_points, collective, stop)? {
            StepOutcome::Completed(stats) => {
                step_estimate = step_estimate
                    .mul_f64(0.95)
                    .max(Duration::from_secs_f64(stats.seconds.max(0.0)));
                let prev_samples = progress.samples_seen;
                progress.step = trainer.step;
                progress.samples_seen += stats.samples;
                progress.tokens_seen += stats.tokens;
                progress.epoch = epoch;
                observer.step(&stats, &progress);
                crate::collective::replicas::verify_if_due(
                    &trainer.model,
                    collective,
                    trainer.step,
                )?;
                if let Some(every) = settings.validate_every_steps
                    && every > 0
                    && trainer.step.is_multiple_of(every)
                {
                    last_validation = validate(trainer, source, collective, observer)?;
                    last_validated_step = Some(trainer.step);
                }
                if let Some(every) = settings.checkpoint_every_samples
                    && every > 0
                    && prev_samples / every < progress.samples_seen / every
                {
                    if settings.best_by_validation && last_validated_step != Some(trainer.step) {
                        last_validation = validate(trainer, source, collective, observer)?;
                        last_validated_step = Some(trainer.step);
                    }
                    let sampler = source.state();
                    let loss =
                        last_validation.filter(|_| last_validated_step == Some(trainer.step));
                    save(
                        trainer,
                        observer,
                        weights,
                        sampler,
                        &progress,
                        checkpoints,
                        settings,
                        collective,
                        loss,
                    )?;
                    last_saved_step = Some(trainer.step);
                }
                last = Some(stats);
            }
            StepOutcome::Abandoned => {
                let checkpoint = save(
                    trainer,
                    observer,
                    weights,
                    before,
                    &progress,
                    checkpoints,
                    settings,
                    collective,
                    None,
                )?;
                return Ok(RunOutcome::Stopped {
                    reason: stop.requested().unwrap_or(StopReason::Requested),
                    checkpoint,
                });
            }
            StepOutcome::Diverged { loss, grad_norm } => {
                return Ok(RunOutcome::Diverged {
                    step: trainer.step,
                    loss,
                    grad_norm,
                });
            }
        }
    }
    if settings.validate_every_steps.is_some() && last_validated_step != Some(trainer.step) {
        last_validation = validate(trainer, source, collective, observer)?;
        last_validated_step = Some(trainer.step);
    }
    let checkpoint = if last_saved_step == Some(trainer.step) {
        checkpoints.latest_resumable()?
    } else {
        let sampler = source.state();
        let loss = last_validation.filter(|_| last_validated_step == Some(trainer.step));
        save(
            trainer,
            observer,
            weights,
            sampler,
            &progress,
            checkpoints,
            settings,
            collective,
            loss,
        )?
    };
    Ok(RunOutcome::Completed { last, checkpoint })
}

/// The validation loss over every rank's share of the held-out set (`None` when it is empty).
fn validate<M: PackedLm, S: BatchSource, O: Observer>(
    trainer: &Trainer<M>,
    source: &S,
    collective: &mut dyn Collective,
    observer: &mut O,
) -> Result<Option<f64>, LoopError> {
    let (sum, count) = trainer.evaluate(source.validation());
    let sum = collective.all_reduce_sum_f64(sum)?;
    let count = collective.all_reduce_sum_u64(count)?;
    if count == 0 {
        return Ok(None);
    }
    let loss = sum / count as f64;
    observer.validation(trainer.step, loss, count);
    Ok(Some(loss))
}

/// Of each phase's checkpoints with a validation loss, the one with the lowest (the earliest of
/// equals): the directories, one per phase.
pub fn best_by_validation(complete: &[CheckpointInfo]) -> Vec<std::path::PathBuf> {
    let mut best: std::collections::BTreeMap<u32, (f64, &CheckpointInfo)> = Default::default();
    for c in complete {
        let Some(loss) = c.marker.validation_loss.filter(|l| l.is_finite()) else {
            continue;
        };
        match best.get(&c.marker.phase) {
            Some((b, _)) if *b <= loss => {}
            _ => {
                best.insert(c.marker.phase, (loss, c));
            }
        }
    }
    best.into_values().map(|(_, c)| c.dir.clone()).collect()
}
