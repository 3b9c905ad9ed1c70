//! One optimizer step: exact loss normalisation over the global batch, gradient accumulation
//! over micro-batches, the cross-rank reduction, global-norm clipping, divergence detection and
//! the AdamW update. Owns no I/O: the loop around it reads data and writes records.

use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::collective::{Collective, CollectiveError};
use crate::model::LeanOptions;
use crate::train::optim::{AdamWSettings, clip_by_global_norm, clip_factor};
use crate::train::preempt::StopSignal;
use crate::train::schedule::LrSchedule;
use crate::train::zero::ZeroAdamW;

/// Target value of a position that the loss ignores (prompt tokens, sample ends).
pub const IGNORE: i32 = -100;

/// A causal language model the trainer can train: one packed row in, logits out.
pub trait PackedLm: Module + Clone {
    /// Logits `[1, T, vocab]` for one packed row of `T` tokens.
    ///
    /// `tokens` and `positions` are `[1, T]`; positions restart at 0 at each sample, and
    /// `sample_lengths` (summing to `T`) says where the samples are, so that no token attends
    /// across a sample boundary.
    fn forward_packed(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        sample_lengths: &[usize],
    ) -> Tensor<3>;

    /// Summed loss of `batch` and the gradients of that sum divided by `denominator`. The default is the plain
    /// graph; a model may trade compute for memory as `lean` asks (see `crate::model::lean`).
    fn loss_and_grads(
        &self,
        batch: &MicroBatch,
        denominator: f64,
        device: &Device,
        lean: LeanOptions,
    ) -> (f64, GradientsParams) {
        let _ = lean;
        plain_loss_and_grads(self, batch, denominator, device)
    }
}

/// The plain graph: [`loss_sum`], then one backward of it divided by `denominator`.
pub fn plain_loss_and_grads<M: PackedLm>(
    model: &M,
    batch: &MicroBatch,
    denominator: f64,
    device: &Device,
) -> (f64, GradientsParams) {
    let sum = loss_sum(model, batch, device);
    let loss = sum.clone().div_scalar(denominator);
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (f64::from(sum.into_scalar::<f32>()), grads)
}

/// One micro-batch on the host: whole samples concatenated into one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicroBatch {
    /// Input token ids.
    pub tokens: Vec<u32>,
    /// Position of each token inside its sample.
    pub positions: Vec<u32>,
    /// The token each position must predict (already shifted), or [`IGNORE`].
    pub targets: Vec<i32>,
    /// Length of each sample, in order; sums to `tokens.len()`.
    pub sample_lengths: Vec<usize>,
}

impl MicroBatch {
    /// Positions that count in the loss.
    pub fn loss_tokens(&self) -> u64 {
        self.targets.iter().filter(|&&t| t != IGNORE).count() as u64
    }

    /// Number of samples.
    pub fn samples(&self) -> u64 {
        self.sample_lengths.len() as u64
    }
}

/// Summed token cross-entropy of `model` on `batch` over the positions with a target (a
/// `[1]` tensor on `device`, tracked for backward).
pub fn loss_sum<M: PackedLm>(model: &M, batch: &MicroBatch, device: &Device) -> Tensor<1> {
    let t = batch.tokens.len();
    let as_i64 = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    let tokens =
        Tensor::<2, Int>::from_data(TensorData::new(as_i64(&batch.tokens), [1, t]), device);
    let positions =
        Tensor::<2, Int>::from_data(TensorData::new(as_i64(&batch.positions), [1, t]), device);
    let logits = model.forward_packed(tokens, positions, &batch.sample_lengths);
    let vocab = logits.dims()[2];
    // fp32 whatever the compute dtype (mixed precision, train/precision.rs).
    let log_probs = log_softmax(crate::model::to_f32(logits.reshape([t, vocab])), 1);
    let index: Vec<i64> = batch
        .targets
        .iter()
        .map(|&x| if x == IGNORE { 0 } else { i64::from(x) })
        .collect();
    let mask: Vec<f32> = batch
        .targets
        .iter()
        .map(|&x| if x == IGNORE { 0.0 } else { 1.0 })
        .collect();
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [t, 1]), device);
    let mask = Tensor::<1>::from_data(TensorData::new(mask, [t]), device);
    let picked = log_probs.gather(1, index).reshape([t]);
    picked.mul(mask).sum().neg()
}

/// Training hyperparameters the step needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepSettings {
    /// AdamW hyperparameters.
    pub adamw: AdamWSettings,
    /// Learning-rate schedule.
    pub schedule: LrSchedule,
    /// Global-norm clipping threshold; `None` disables clipping.
    pub max_grad_norm: Option<f64>,
}

/// What one call of [`Trainer::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// The update was applied.
    Completed(StepStats),
    /// A stop was agreed mid-accumulation and there was no time to finish the step: nothing
    /// was applied; the step's data must be replayed after resume.
    Abandoned,
    /// The loss or gradient norm was not finite; nothing was applied.
    Diverged {
        /// The step's loss.
        loss: f64,
        /// The step's global gradient norm.
        grad_norm: f64,
    },
}

/// Figures of one completed optimizer step, over all ranks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Index of the update (0 for the first).
    pub step: u64,
    /// Loss-token-weighted mean cross-entropy over the whole optimizer batch.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate applied.
    pub lr: f64,
    /// Samples in the batch, all ranks.
    pub samples: u64,
    /// Tokens in the batch, all ranks.
    pub tokens: u64,
    /// Loss tokens in the batch, all ranks.
    pub loss_tokens: u64,
    /// Micro-batches this rank ran.
    pub micro_batches: usize,
    /// Wall time of the step on this rank.
    pub seconds: f64,
}

/// The step failed for a reason other than divergence.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A collective failed.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// The micro-batch is malformed.
    #[error("micro-batch {index} is malformed: {message}")]
    BadBatch {
        /// Index of the micro-batch in the step.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// The model, its optimizer state and the update counter: everything one step changes.
pub struct Trainer<M> {
    /// The model being trained (on an autodiff device).
    pub model: M,
    /// Burn's AdamW with its per-parameter moments.
    pub optimizer: ModuleOptimizer,
    /// Hyperparameters.
    pub settings: StepSettings,
    /// Updates applied so far (across phases).
    pub step: u64,
    /// The step the current phase's schedule starts at (0 for an unphased run).
    pub schedule_offset: u64,
    /// The device the batches are placed on.
    pub device: Device,
    /// Measured (or estimated) time to write a checkpoint, used to decide whether a stop
    /// request leaves time to finish the current step.
    pub checkpoint_estimate: Duration,
    /// Memory-saving options of the loss and backward (chunked cross-entropy, checkpointing).
    pub lean: LeanOptions,
    /// ZeRO-1: when set, this rank's shard of the AdamW state, used instead of `optimizer`
    /// (see [`Trainer::with_zero1`]).
    pub zero: Option<ZeroAdamW>,
}

impl<M: PackedLm> Trainer<M> {
    /// A trainer at step 0 with fresh optimizer state.
    pub fn new(model: M, settings: StepSettings, device: Device) -> Self {
        Self {
            optimizer: settings.adamw.build(),
            model,
            settings,
            step: 0,
            schedule_offset: 0,
            device,
            checkpoint_estimate: Duration::from_secs(5),
            lean: LeanOptions::default(),
            zero: None,
        }
    }

    /// Shard the optimizer state as rank `rank` of `world` (ZeRO stage 1, `train/zero.rs`):
    /// the master weights of this rank's shard come from the current model. Every rank of the
    /// job must do the same.
    pub fn with_zero1(mut self, rank: usize, world: usize) -> Self {
        self.zero = Some(ZeroAdamW::new(
            &self.model,
            self.settings.adamw,
            rank,
            world,
        ));
        self
    }

    /// Run one optimizer step over this rank's micro-batches.
    ///
    /// `agree_points` is the largest number of micro-batches any rank holds this step (the
    /// packing plan is known to every rank): every rank takes part in that many stop
    /// agreements, so the collectives line up although ranks hold different counts.
    pub fn step(
        &mut self,
        micro_batches: &[MicroBatch],
        agree_points: usize,
        collective: &mut dyn Collective,
        stop: &StopSignal,
    ) -> Result<StepOutcome, StepError> {
        let started = Instant::now();
        for (index, mb) in micro_batches.iter().enumerate() {
            check_batch(mb).map_err(|message| StepError::BadBatch { index, message })?;
        }
        let local_loss_tokens: u64 = micro_batches.iter().map(MicroBatch::loss_tokens).sum();
        let local_samples: u64 = micro_batches.iter().map(MicroBatch::samples).sum();
        let local_tokens: u64 = micro_batches.iter().map(|m| m.tokens.len() as u64).sum();
        let loss_tokens = collective.all_reduce_sum_u64(local_loss_tokens)?;
        // A batch without loss tokens has no gradient; dividing by 1 keeps it finite.
        let denominator = loss_tokens.max(1) as f64;

        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut local_loss_sum = 0.0f64;
        let rounds = agree_points.max(micro_batches.len());
        for round in 0..rounds {
            if let Some(mb) = micro_batches.get(round) {
                let (sum, grads) =
                    self.model
                        .loss_and_grads(mb, denominator, &self.device, self.lean);
                accumulator.accumulate(&self.model, grads);
                local_loss_sum += sum;
            }
            if round + 1 < rounds {
                let done = (round + 1).min(micro_batches.len()).max(1);
                let per_mb = started.elapsed() / done as u32;
                let left = micro_batches.len().saturating_sub(round + 1) as u32;
                let to_finish = per_mb * left + self.checkpoint_estimate;
                if collective.any(stop.should_abandon(to_finish))? {
                    return Ok(StepOutcome::Abandoned);
                }
            }
        }

        // Replicated: all-reduce the whole gradient and clip it. ZeRO-1: reduce-scatter it into
        // shards; the shard's gradient is clipped inside the sharded update.
        let (grads, grad_norm) = match &mut self.zero {
            None => {
                let grads = reduce_gradients(&self.model, accumulator.grads(), collective)?;
                let (grads, norm) =
                    clip_by_global_norm(&self.model, grads, self.settings.max_grad_norm);
                (Some(grads), norm)
            }
            Some(zero) => (
                None,
                zero.reduce_scatter(&self.model, accumulator.grads(), collective)?,
            ),
        };
        let loss = collective.all_reduce_sum_f64(local_loss_sum)? / denominator;
        let samples = collective.all_reduce_sum_u64(local_samples)?;
        let tokens = collective.all_reduce_sum_u64(local_tokens)?;
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Ok(StepOutcome::Diverged { loss, grad_norm });
        }
        let lr = self
            .settings
            .schedule
            .lr(self.step.saturating_sub(self.schedule_offset));
        if let Some(grads) = grads {
            self.model = self.optimizer.step(lr, self.model.clone(), grads);
        } else if let Some(zero) = &mut self.zero {
            let clip = self
                .settings
                .max_grad_norm
                .map(|max| clip_factor(grad_norm, max))
                .filter(|&f| f < 1.0);
            self.model = zero.apply(self.model.clone(), lr, clip, collective)?;
        }
        let stats = StepStats {
            step: self.step,
            loss,
            grad_norm,
            lr,
            samples,
            tokens,
            loss_tokens,
            micro_batches: micro_batches.len(),
            seconds: started.elapsed().as_secs_f64(),
        };
        self.step += 1;
        Ok(StepOutcome::Completed(stats))
    }

    /// Summed loss and loss-token count over `batches` without gradients (validation).
    pub fn evaluate(&self, batches: &[MicroBatch]) -> (f64, u64) {
        let model = self.model.valid();
        let device = self.device.clone().inner();
        let mut sum = 0.0;
        let mut count = 0;
        for mb in batches {
            sum += f64::from(loss_sum(&model, mb, &device).into_scalar::<f32>());
            count += mb.loss_tokens();
        }
        (sum, count)
    }
}

fn check_batch(mb: &MicroBatch) -> Result<(), String> {
    let t = mb.tokens.len();
    if t == 0 {
        return Err("it has no tokens".into());
    }
    if mb.positions.len() != t || mb.targets.len() != t {
        return Err(format!(
            "{t} tokens but {} positions and {} targets",
            mb.positions.len(),
            mb.targets.len()
        ));
    }
    let total: usize = mb.sample_lengths.iter().sum();
    if total != t {
        return Err(format!("sample lengths sum to {total}, not {t} tokens"));
    }
    Ok(())
}

/// Sum the gradients over all ranks, in buckets of at most `BUCKET` elements, so that every
/// rank holds the gradient of the whole optimizer batch. A no-op with one rank.
pub fn reduce_gradients<M: Module>(
    module: &M,
    grads: GradientsParams,
    collective: &mut dyn Collective,
) -> Result<GradientsParams, CollectiveError> {
    const BUCKET: usize = 1 << 24;
    if collective.world_size() == 1 {
        return Ok(grads);
    }
    struct Flatten {
        grads: GradientsParams,
        flat: Vec<Tensor<1>>,
        sizes: Vec<usize>,
    }
    impl ModuleVisitor for Flatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            // A parameter without a gradient on this rank (it held no micro-batch) contributes
            // zeros, so every rank sends buffers of the same layout.
            let shape = param.lazy_shape();
            let n = shape.num_elements();
            let grad = match self.grads.remove::<D>(param.id) {
                Some(g) => g.reshape([n]),
                None => Tensor::<1>::zeros([n], &param.lazy_device().inner()),
            };
            self.flat.push(grad);
            self.sizes.push(n);
        }
    }
    let mut flatten = Flatten {
        grads,
        flat: Vec::new(),
        sizes: Vec::new(),
    };
    module.visit(&mut flatten);

    let mut reduced: Vec<Tensor<1>> = Vec::with_capacity(flatten.flat.len());
    let mut bucket: Vec<Tensor<1>> = Vec::new();
    let mut bucket_sizes: Vec<usize> = Vec::new();
    let mut bucket_len = 0;
    let mut flush = |bucket: &mut Vec<Tensor<1>>,
                     sizes: &mut Vec<usize>,
                     collective: &mut dyn Collective|
     -> Result<(), CollectiveError> {
        if bucket.is_empty() {
            return Ok(());
        }
        let joined = collective.all_reduce_sum_tensor(Tensor::cat(std::mem::take(bucket), 0))?;
        let mut offset = 0;
        for n in sizes.drain(..) {
            reduced.push(joined.clone().slice(offset..offset + n));
            offset += n;
        }
        Ok(())
    };
    for (tensor, n) in flatten.flat.into_iter().zip(flatten.sizes) {
        if bucket_len + n > BUCKET && !bucket.is_empty() {
            flush(&mut bucket, &mut bucket_sizes, collective)?;
            bucket_len = 0;
        }
        bucket.push(tensor);
        bucket_sizes.push(n);
        bucket_len += n;
    }
    flush(&mut bucket, &mut bucket_sizes, collective)?;

    struct Unflatten {
        reduced: std::vec::IntoIter<Tensor<1>>,
        grads: GradientsParams,
    }
    impl ModuleVisitor for Unflatten {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(flat) = self.reduced.next() {
                let dims = param.lazy_shape().dims::<D>();
                self.grads.register::<D>(param.id, flat.reshape(dims));
            }
        }
    }
    let mut unflatten = Unflatten {
        reduced: reduced.into_iter(),
        grads: GradientsParams::new(),
    };
    module.visit(&mut unflatten);
    Ok(unflatten.grads)
}
