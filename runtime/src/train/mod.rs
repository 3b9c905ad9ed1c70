//! The training loop that runs inside an allocation: exact large-batch steps with gradient
//! accumulation, AdamW with warmup schedules, global-norm clipping, checkpoints and preemption.
//! It talks to other ranks only through [`crate::collective::Collective`].

pub mod checkpoint;
pub mod data;
pub mod job;
pub mod llama;
pub mod optim;
pub mod precision;
pub mod preempt;
pub mod run;
pub mod schedule;
pub mod step;
pub mod toy;
pub mod zero;

pub use checkpoint::{CheckpointInfo, Checkpoints, TrainState, WeightsIo};
pub use optim::{AdamWSettings, clip_by_global_norm, global_grad_norm, with_stable_param_ids};
pub use precision::{Precision, cast_params, with_precision};
pub use preempt::{StopReason, StopSignal};
pub use run::{BatchSource, LoopSettings, Observer, Progress, RunOutcome, StepBatch};
pub use schedule::{LrSchedule, ScheduleKind};
pub use step::{IGNORE, MicroBatch, PackedLm, StepOutcome, StepSettings, StepStats, Trainer};
pub use zero::{FlatAdamW, OptimizerSharding, ShardLayout, ZeroAdamW};
