//! `sftctl-train run RUN_DIR`: one attempt of one run (phase) inside an allocation. Reads the
//! resolved configuration sftctl wrote into the run's ledger directory, builds model, data and
//! optimizer, resumes from the newest checkpoint, trains, and records attempts, metrics,
//! heartbeats, events, checkpoints and the result through `sftctl-ledger`'s `RunWriter`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use sftctl_data::cache::TokenCache;
use sftctl_data::pack::{BatchConfig, TailPolicy};
use sftctl_data::samples::TokenizeOptions;
use sftctl_data::tokenizer::ChatTokenizer;
use sftctl_ledger::RunWriter;
use sftctl_ledger::records::{
    Attempt, EventKind, MetricRecord, Provenance, ResultStatus, RunResult, Timestamp,
};

use crate::backend::BackendChoice;
use crate::collective::launch::{RankEnv, connect};
use crate::model::CausalLm;
use crate::train::WeightsIo;
use crate::train::checkpoint::{CheckpointInfo, Checkpoints, read_state};
use crate::train::data::{PackedSource, pack_all};
use crate::train::llama::HfWeights;
use crate::train::optim::{AdamWSettings, with_stable_param_ids};
use crate::train::precision::{Precision, with_precision};
use crate::train::preempt::StopSignal;
use crate::train::run::{
    DEADLINE_MARGIN, LoopSettings, Observer, Progress, RunOutcome, resume, run,
};
use crate::train::schedule::{LrSchedule, ScheduleKind};
use crate::train::step::{StepSettings, StepStats, Trainer};
use crate::train::zero::OptimizerSharding;

/// How the process ends; the numbers are the exit status (documented in docs/training.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobExit {
    /// Training finished and the final checkpoint is written.
    Completed,
    /// The configuration, model or data is unusable (nothing trained).
    UserError,
    /// An I/O or internal failure.
    Internal,
    /// The loss or gradient norm became NaN/inf; the run is over.
    Diverged,
    /// Stopped on a signal after writing a checkpoint: requeue the job to continue.
    Requeue,
}

impl JobExit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            JobExit::Completed => 0,
            JobExit::UserError => 1,
            JobExit::Internal => 2,
            JobExit::Diverged => 3,
            JobExit::Requeue => REQUEUE_EXIT,
        }
    }
}

/// The stop grace when `--stop-grace-s` is not given: the batch script's `--signal` lead time
/// (`SFTCTL_SIGNAL_SECONDS`, exported by the template) less [`DEADLINE_MARGIN`], at least half
/// of it; 60 s outside such a script or when it sends no warning (`signal_seconds = 0`).
pub fn default_stop_grace() -> Duration {
    match std::env::var("SFTCTL_SIGNAL_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&lead| lead > 0)
    {
        Some(lead) => {
            let lead = Duration::from_secs(lead);
            lead.saturating_sub(DEADLINE_MARGIN).max(lead / 2)
        }
        None => Duration::from_secs(60),
    }
}

/// A first checkpoint's write time before any was measured: weights and both Adam moments in
/// fp32 (12 bytes a parameter) at 200 MB/s, a conservative rate for a shared filesystem.
fn checkpoint_estimate_for(params: usize) -> Duration {
    Duration::from_secs_f64((params as f64 * 12.0 / 200e6).max(5.0))
}

/// Under Slurm, the job's end (now + `squeue -o %L`), asked by rank 0 once at start: the loop
/// stops on its own while a step and a checkpoint still fit (`StopReason::Deadline`).
fn slurm_deadline() -> Option<Instant> {
    let job: sftctl_slurm::JobId = std::env::var("SLURM_JOB_ID").ok()?.parse().ok()?;
    let asked = Instant::now();
    match sftctl_slurm::Slurm::from_env().time_left(&job) {
        Ok(Some(left)) => {
            tracing::info!(job = %job, left_s = left.as_secs(), "time limit");
            Some(asked + left)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(
                "time left of job {job} unknown (only the --signal warning stops it): {e}"
            );
            None
        }
    }
}

/// Exit status that asks the batch script to requeue the job (`EX_TEMPFAIL`).
pub const REQUEUE_EXIT: u8 = 75;

/// The checked arguments of `sftctl-train run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// The run's directory in the ledger.
    pub run_dir: PathBuf,
    /// Phase to train (default: `SFTCTL_PHASE`, else 0).
    pub phase: Option<u32>,
    /// Backend to train on.
    pub backend: BackendChoice,
    /// Time between a stop signal and the end of the checkpoint.
    pub stop_grace: Duration,
    /// Held-out chat files for the validation loss (default: `eval.jsonl` beside each data set).
    pub validation: Vec<PathBuf>,
    /// Where tokenized data caches go (default: `<run_dir>/cache`).
    pub cache_dir: Option<PathBuf>,
    /// Resumable checkpoints to keep.
    pub keep_last: usize,
    /// Draw a progress bar (default: when stderr is a terminal).
    pub progress: Option<bool>,
}

/// `config.json` as sftctl's plan writes it (only what the trainer reads).
#[derive(Debug, Deserialize)]
struct RunConfig {
    run_id: String,
    model: ModelRef,
    #[serde(default)]
    data: Vec<DataRef>,
    #[serde(default)]
    train: TrainKeys,
    #[serde(default)]
    phases: Vec<u32>,
}

#[derive(Debug, Deserialize)]
struct ModelRef {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
struct DataRef {
    name: String,
    path: PathBuf,
    #[serde(default)]
    phase: Option<u32>,
}

/// The `[train]` keys with sftctl's defaults (cli/src/spec.rs `TRAIN_KEYS`).
#[derive(Debug, Deserialize)]
#[serde(default)]
struct TrainKeys {
    batch_size: u64,
    micro_batch_size: u64,
    lr: f64,
    min_lr_ratio: f64,
    warmup_steps: u64,
    schedule: String,
    seed: u64,
    epochs: f64,
    max_steps: u64,
    token_budget_per_gpu: u64,
    max_seq_len: u64,
    weight_decay: f64,
    adam_beta1: f64,
    adam_beta2: f64,
    adam_epsilon: f64,
    grad_clip: f64,
    checkpoint_every: u64,
    // Samples between checkpoints; wins over `checkpoint_every` when > 0.
    checkpoint_every_samples: u64,
    eval_every: u64,
    // issue 9 (docs/gpu.md): memory-saving switches of the step.
    ce_chunk_tokens: u64,
    activation_checkpointing: String,
    // issue 9: `auto` (fused attention on tch) or `plain` (model::AttentionKernel).
    attention: String,
    // phase k's starting point: `final` or `best-val-loss`.
    phase_init: String,
    // issue 9: `none` or `zero1` (train/zero.rs).
    optimizer_sharding: String,
    // issue 9: `fp32` or `bf16` (train/precision.rs).
    precision: String,
}

impl Default for TrainKeys {
    fn default() -> Self {
        Self {
            batch_size: 8,
            micro_batch_size: 1,
            lr: 2e-5,
            min_lr_ratio: 0.0,
            warmup_steps: 0,
            schedule: "cosine".into(),
            seed: 0,
            epochs: 1.0,
            max_steps: 0,
            token_budget_per_gpu: 0,
            max_seq_len: 2048,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.95,
            adam_epsilon: 1e-8,
            grad_clip: 1.0,
            checkpoint_every: 0,
            checkpoint_every_samples: 0,
            eval_every: 0,
            ce_chunk_tokens: 0,
            activation_checkpointing: "none".into(),
            attention: "auto".into(),
            phase_init: "final".into(),
            optimizer_sharding: "none".into(),
            precision: "fp32".into(),
        }
    }
}

/// A user-facing failure (exit 1) as opposed to an internal one (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UserError(String);

/// Run `sftctl-train run` and map every outcome to its exit status. Errors are printed and
/// recorded as an `error` event when the ledger can be written.
pub fn main(args: RunArgs) -> JobExit {
    // Colour only on a terminal and without NO_COLOR: job logs are files.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let rank_env = RankEnv::from_env();
    let rank = rank_env.as_ref().map_or(0, |e| e.rank);
    // Every rank's lines reach the job log; ranks other than 0 log only warnings and errors
    // unless RUST_LOG says otherwise (rank 0's step lines stand for all).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if rank == 0 { "info" } else { "warn" })
            }),
        )
        .try_init();
    // Errors name their rank when there are several.
    let prefix = match &rank_env {
        Ok(e) if e.world_size > 1 => format!("rank {rank}: "),
        _ => String::new(),
    };
    let rank_env = match rank_env {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return JobExit::UserError;
        }
    };
    // Rank 0 alone writes the run's ledger records.
    let mut writer = if rank == 0 {
        match RunWriter::open(&args.run_dir, 0, job_id()) {
            Ok(w) => Records(Some(w)),
            Err(e) => {
                stderr_line(&format!(
                    "{prefix}error: cannot open run directory `{}`: {e}",
                    args.run_dir.display()
                ));
                return JobExit::UserError;
            }
        }
    } else {
        Records(None)
    };
    match train_run(&args, &rank_env, &mut writer) {
        Ok(JobExit::Requeue) => {
            if rank == 0 {
                requeue_self();
            }
            JobExit::Requeue
        }
        Ok(exit) => exit,
        Err(e) => {
            stderr_line(&format!("{prefix}error: {e:#}"));
            let _ = writer.event(EventKind::Error {
                message: format!("{prefix}{e:#}"),
            });
            if e.downcast_ref::<UserError>().is_some() {
                JobExit::UserError
            } else {
                JobExit::Internal
            }
        }
    }
}

/// Under Slurm, rank 0 asks Slurm to requeue this job once its checkpoint is complete (the batch
/// script carries `--requeue`); the requeued job resumes from that checkpoint. Elsewhere (the
/// local executor) the exit status alone says "requeue me". A failed requeue is logged: the run
/// then ends as failed and `sftctl submit --retry-failed` resumes it from the same checkpoint.
fn requeue_self() {
    let Ok(job) = std::env::var("SLURM_JOB_ID") else {
        return;
    };
    let job = match job.parse::<sftctl_slurm::JobId>() {
        Ok(j) => j,
        Err(e) => {
            tracing::error!("cannot requeue: SLURM_JOB_ID `{job}`: {e}");
            return;
        }
    };
    match sftctl_slurm::Slurm::from_env().requeue(&job) {
        Ok(()) => tracing::info!("requeued job {job}"),
        // After a node failure Slurm has requeued the job itself before the trainer asks.
        Err(e) if e.to_string().contains("pending execution") => {
            tracing::info!("job {job} is already requeued by Slurm: {e}")
        }
        Err(e) => tracing::error!("requeue of job {job} failed: {e}"),
    }
}

/// The ledger writer of rank 0; the other ranks of a data-parallel job write no records.
struct Records(Option<RunWriter>);

impl Records {
    fn begin_attempt(&mut self, a: &Attempt) -> sftctl_ledger::Result<()> {
        self.0.as_mut().map_or(Ok(()), |w| w.begin_attempt(a))
    }

    fn metric(&mut self, m: &MetricRecord) -> sftctl_ledger::Result<()> {
        self.0.as_mut().map_or(Ok(()), |w| w.metric(m))
    }

    fn event(&mut self, kind: EventKind) -> sftctl_ledger::Result<()> {
        self.0.as_mut().map_or(Ok(()), |w| w.event(kind))
    }

    fn heartbeat(&mut self, step: u64) -> sftctl_ledger::Result<()> {
        self.0.as_mut().map_or(Ok(()), |w| w.heartbeat(step))
    }

    fn write_result(&mut self, r: &RunResult) -> sftctl_ledger::Result<()> {
        self.0.as_mut().map_or(Ok(()), |w| w.write_result(r))
    }
}

/// Writes one line to stderr in a single write: the ranks of a job share one log, and
/// `eprintln!` writes a formatted line piecewise, so lines of two ranks could interleave.
fn stderr_line(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn job_id() -> Option<String> {
    sftctl_ledger::writer::job_id_from_env()
}

fn user(msg: String) -> anyhow::Error {
    UserError(msg).into()
}

/// Resident memory of this process (CPU training), from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = fs_err::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut fs_err::File::open(path)?, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Default validation files: `eval.jsonl` beside each training file (the quickstart's
/// held-out split), when it is not the training file itself.
fn default_validation(data: &[&DataRef]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for d in data {
        if let Some(dir) = d.path.parent() {
            let eval = dir.join("eval.jsonl");
            if eval.is_file() && eval != d.path && !out.contains(&eval) {
                out.push(eval);
            }
        }
    }
    out
}

struct Prepared {
    /// The event that links a new phase to the checkpoint it starts from.
    phase_start: Option<EventKind>,
    trainer: Trainer<CausalLm>,
    source: PackedSource,
    weights: HfWeights,
    checkpoints: Checkpoints,
    settings: LoopSettings,
    progress: Progress,
    resumed_from: u64,
    /// Seconds the newest checkpoint took to write, when there is one.
    checkpoint_measured: Option<f64>,
    last_phase: bool,
    data_sha: std::collections::BTreeMap<String, String>,
}

fn prepare(
    args: &RunArgs,
    config: &RunConfig,
    phase: u32,
    rank: usize,
    world_size: usize,
) -> anyhow::Result<Prepared> {
    let t = &config.train;
    let model_dir = &config.model.path;
    let device = args
        .backend
        .device()
        .map_err(|e| user(e.to_string()))?
        .autodiff();
    device.seed(t.seed);

    let tokenizer = ChatTokenizer::from_dir(model_dir)
        .map_err(|e| user(format!("tokenizer of `{}`: {e}", model_dir.display())))?;
    let template = tokenizer
        .chat_template(None)
        .map_err(|e| user(format!("chat template of `{}`: {e}", model_dir.display())))?;
    let opts = TokenizeOptions {
        max_len: t.max_seq_len as usize,
        skip_malformed: false,
    };
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| args.run_dir.join("cache"));
    let datasets: Vec<&DataRef> = config
        .data
        .iter()
        .filter(|d| phase == 0 || d.phase.is_none() || d.phase == Some(phase))
        .collect();
    if datasets.is_empty() {
        bail!(user(format!(
            "phase {phase} of run `{}` has no data sets",
            config.run_id
        )));
    }
    let mut caches = Vec::new();
    let mut sources = Vec::new();
    let mut data_sha = std::collections::BTreeMap::new();
    for d in &datasets {
        let cache = TokenCache::open_or_build(&cache_dir, &d.path, &tokenizer, &template, &opts)
            .map_err(|e| {
                user(format!(
                    "data set `{}` (`{}`): {e}",
                    d.name,
                    d.path.display()
                ))
            })?;
        sources.push(sftctl_data::batch::source_from_cache(&d.name, &cache, 1.0));
        data_sha.insert(d.name.clone(), sha256_file(&d.path)?);
        caches.push(cache);
    }
    let token_budget = if t.token_budget_per_gpu > 0 {
        t.token_budget_per_gpu
    } else {
        t.micro_batch_size * t.max_seq_len
    } as usize;
    let batch_config = BatchConfig {
        batch_size: t.batch_size as usize,
        world_size,
        token_budget,
        seed: t.seed,
        tail: TailPolicy::Continue,
    };
    let validation_files = if args.validation.is_empty() {
        default_validation(&datasets)
    } else {
        args.validation.clone()
    };
    let mut vcaches = Vec::new();
    let mut vsources = Vec::new();
    for p in &validation_files {
        let cache = TokenCache::open_or_build(&cache_dir, p, &tokenizer, &template, &opts)
            .map_err(|e| user(format!("validation data `{}`: {e}", p.display())))?;
        vsources.push(sftctl_data::batch::source_from_cache(
            "validation",
            &cache,
            1.0,
        ));
        vcaches.push(cache);
    }
    let validation = pack_all(&vcaches, &vsources, token_budget, world_size, rank)
        .map_err(|e| user(format!("validation data: {e}")))?;
    let source = PackedSource::new(batch_config, sources, caches, rank, validation)
        .map_err(|e| user(format!("data of run `{}`: {e}", config.run_id)))?;

    let epoch_len = source.epoch_len() as u64;
    let mut phase_steps = ((t.epochs * epoch_len as f64) / t.batch_size as f64).ceil() as u64;
    if t.max_steps > 0 {
        phase_steps = phase_steps.min(t.max_steps);
    }
    let phase_steps = phase_steps.max(1);
    let schedule_kind: ScheduleKind = t.schedule.parse().map_err(user)?;
    let step_settings = StepSettings {
        adamw: AdamWSettings {
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            epsilon: t.adam_epsilon,
            weight_decay: t.weight_decay,
        },
        schedule: LrSchedule {
            kind: schedule_kind,
            peak_lr: t.lr,
            warmup_steps: t.warmup_steps,
            total_steps: phase_steps,
            min_lr_ratio: t.min_lr_ratio,
        },
        max_grad_norm: (t.grad_clip > 0.0).then_some(t.grad_clip),
    };
    let weights = HfWeights {
        tokenizer_dir: model_dir.clone(),
        device: device.clone(),
    };
    let checkpoints = Checkpoints::open(args.run_dir.join("checkpoints"))?;

    // Where to start: this phase's newest checkpoint (resume), the previous phase's final one
    // (a new phase), or the base model.
    let latest = checkpoints.latest_resumable()?;
    let latest_state = latest.as_ref().map(read_state).transpose()?;
    let checkpoint_measured = latest.as_ref().map(|c| c.marker.write_seconds);
    let mut phase_start = None;
    // ZeRO-1 (docs/distributed.md): each rank keeps the AdamW state of its shard only; set up
    // before a resume, which loads this rank's shard of the moments.
    let sharding: OptimizerSharding = t.optimizer_sharding.parse().map_err(user)?;
    // bf16 keeps its fp32 master weights and moments in the same flat optimizer
    // (train/precision.rs).
    let precision: Precision = t.precision.parse().map_err(user)?;
    let flat = sharding == OptimizerSharding::Zero1 || precision == Precision::Bf16;
    let shard = |trainer: Trainer<CausalLm>| {
        if flat && trainer.zero.is_none() {
            trainer.with_zero1(rank, world_size)
        } else {
            trainer
        }
    };
    let (trainer, source, progress, resumed_from) = match (latest, latest_state) {
        (Some(info), Some(state)) if state.phase == phase => {
            let model = with_stable_param_ids(
                weights
                    .load(&info.dir)
                    .map_err(|e| anyhow::anyhow!("checkpoint `{}`: {e}", info.dir.display()))?,
            );
            let mut trainer = shard(Trainer::new(model, step_settings, device.clone()));
            let mut source = source;
            let (progress, info) = resume(&mut trainer, &mut source, &checkpoints, &weights)?
                .context("the checkpoint vanished while resuming")?;
            tracing::info!(step = progress.step, dir = %info.dir.display(), "resumed");
            let from = progress.step;
            (trainer, source, progress, from)
        }
        (Some(info), Some(state)) if state.phase < phase => {
            // The weights: the previous phase's final checkpoint, or its best by validation
            // loss. The counters (step, samples, tokens) continue from its end either way: they
            // count the work done, and step numbers never repeat in the ledger.
            let from = match t.phase_init.as_str() {
                "best-val-loss" => {
                    let complete = checkpoints.complete()?;
                    let best = crate::train::run::best_by_validation(&complete);
                    complete
                        .into_iter()
                        .find(|c| c.marker.phase == state.phase && best.contains(&c.dir))
                        .with_context(|| {
                            format!(
                                "phase {phase} starts from phase {}'s best checkpoint by \
                                 validation loss, but none of its checkpoints in `{}` has one",
                                state.phase,
                                checkpoints.root().display()
                            )
                        })?
                }
                _ => info.clone(),
            };
            let model = with_stable_param_ids(
                weights
                    .load(&from.dir)
                    .map_err(|e| anyhow::anyhow!("checkpoint `{}`: {e}", from.dir.display()))?,
            );
            let mut trainer = Trainer::new(model, step_settings, device.clone());
            trainer.step = state.step;
            trainer.schedule_offset = state.step;
            tracing::info!(
                from_phase = state.phase,
                step = state.step,
                init = %t.phase_init,
                "phase {phase} starts from `{}`",
                from.dir.display()
            );
            phase_start = Some(EventKind::PhaseStarted {
                phase,
                step: state.step,
                from: from
                    .dir
                    .strip_prefix(&args.run_dir)
                    .unwrap_or(&from.dir)
                    .display()
                    .to_string(),
                init: t.phase_init.clone(),
            });
            let progress = Progress {
                step: state.step,
                samples_seen: state.samples_seen,
                tokens_seen: state.tokens_seen,
                epoch: 0,
                phase,
            };
            (trainer, source, progress, state.step)
        }
        (Some(info), Some(state)) => {
            bail!(user(format!(
                "checkpoint `{}` belongs to phase {}, after phase {phase}",
                info.dir.display(),
                state.phase
            )))
        }
        _ => {
            let model = crate::weights::load_model(model_dir, &device)
                .map_err(|e| user(format!("model `{}`: {e}", model_dir.display())))?;
            let trainer = Trainer::new(with_stable_param_ids(model), step_settings, device.clone());
            let progress = Progress {
                phase,
                ..Progress::default()
            };
            (trainer, source, progress, 0)
        }
    };
    let mut trainer = with_precision(shard(trainer), precision, rank, world_size);
    if let Some(w) = checkpoint_measured {
        trainer.checkpoint_estimate = Duration::from_secs_f64(w.max(0.01) * 1.5);
    }
    trainer.model.attention = t.attention.parse().map_err(user)?;
    trainer.lean = crate::model::LeanOptions {
        ce_chunk_tokens: (t.ce_chunk_tokens > 0).then_some(t.ce_chunk_tokens as usize),
        checkpoint_blocks: t.activation_checkpointing == "blocks",
    };
    let settings = LoopSettings {
        total_steps: trainer.schedule_offset + phase_steps,
        checkpoint_every_samples: if t.checkpoint_every_samples > 0 {
            Some(t.checkpoint_every_samples)
        } else {
            (t.checkpoint_every > 0).then(|| t.checkpoint_every * t.batch_size)
        },
        keep_last: args.keep_last.max(1),
        validate_every_steps: if source_has_validation(&validation_files) {
            Some(t.eval_every)
        } else {
            None
        },
        best_by_validation: false,
    };
    let last_phase = config.phases.iter().max().is_none_or(|&p| p <= phase);
    let mut settings = settings;
    if t.phase_init == "best-val-loss" && !last_phase {
        if settings.validate_every_steps.is_none() {
            bail!(user(format!(
                "phase_init = \"best-val-loss\" needs validation data for phase {phase} \
                 (an eval.jsonl beside its data, or --validation)"
            )));
        }
        settings.best_by_validation = true;
    }
    Ok(Prepared {
        phase_start,
        trainer,
        source,
        weights,
        checkpoints,
        settings,
        progress,
        resumed_from,
        checkpoint_measured,
        last_phase,
        data_sha,
    })
}

fn source_has_validation(files: &[PathBuf]) -> bool {
    !files.is_empty()
}

/// Writes metrics, heartbeats, validation losses and checkpoint events as the loop runs.
struct LedgerObserver<'a> {
    writer: &'a mut Records,
    bar: Option<indicatif::ProgressBar>,
    run_dir: PathBuf,
    epoch_len: u64,
    last_loss: Option<f64>,
    last_progress: Option<Progress>,
}

impl Observer for LedgerObserver<'_> {
    fn step(&mut self, stats: &StepStats, progress: &Progress) {
        let record = MetricRecord {
            step: progress.step,
            epoch: progress.samples_seen as f64 / self.epoch_len.max(1) as f64,
            samples_seen: progress.samples_seen,
            tokens: stats.tokens,
            loss_tokens: stats.loss_tokens,
            loss: stats.loss,
            grad_norm: stats.grad_norm,
            lr: stats.lr,
            step_time_s: stats.seconds,
            tokens_per_s: stats.tokens as f64 / stats.seconds.max(1e-9),
            mem_bytes: resident_bytes(),
            at: Timestamp::now(),
        };
        if let Err(e) = self.writer.metric(&record) {
            tracing::warn!("cannot write metrics: {e}");
        }
        if let Err(e) = self.writer.heartbeat(progress.step) {
            tracing::warn!("cannot write heartbeat: {e}");
        }
        self.last_loss = Some(stats.loss);
        self.last_progress = Some(*progress);
        match &self.bar {
            Some(bar) => {
                bar.set_position(progress.step);
                bar.set_message(format!(
                    "loss {:.4} gnorm {:.3} lr {:.2e} {:.0} tok/s",
                    stats.loss, stats.grad_norm, stats.lr, record.tokens_per_s
                ));
            }
            None => tracing::info!(
                step = progress.step,
                loss = stats.loss,
                grad_norm = stats.grad_norm,
                lr = stats.lr,
                tokens_per_s = record.tokens_per_s,
                samples_seen = progress.samples_seen,
                "step"
            ),
        }
    }

    fn validation(&mut self, step: u64, loss: f64, loss_tokens: u64) {
        tracing::info!(step, loss, loss_tokens, "validation");
        let record = serde_json::json!({
            "step": step,
            "loss": loss,
            "loss_tokens": loss_tokens,
            "at": Timestamp::now(),
        });
        if let Err(e) =
            sftctl_ledger::io::append_jsonl(&self.run_dir.join("validation.jsonl"), &record, false)
        {
            tracing::warn!("cannot write validation loss: {e}");
        }
    }

    fn checkpoint(&mut self, info: &CheckpointInfo, _progress: &Progress) {
        tracing::info!(
            step = info.marker.step,
            seconds = info.marker.write_seconds,
            "checkpoint"
        );
        let rel = info
            .dir
            .strip_prefix(&self.run_dir)
            .unwrap_or(&info.dir)
            .display()
            .to_string();
        if let Err(e) = self.writer.event(EventKind::Checkpoint {
            step: info.marker.step,
            path: rel,
        }) {
            tracing::warn!("cannot record checkpoint: {e}");
        }
    }
}

fn train_run(args: &RunArgs, rank_env: &RankEnv, writer: &mut Records) -> anyhow::Result<JobExit> {
    let started = Instant::now();
    let config_path = args.run_dir.join("config.json");
    let text = fs_err::read_to_string(&config_path)
        .map_err(|e| user(format!("cannot read the run's configuration: {e}")))?;
    let config: RunConfig = serde_json::from_str(&text)
        .map_err(|e| user(format!("`{}`: {e}", config_path.display())))?;
    let phase = match args.phase {
        Some(p) => p,
        None => std::env::var("SFTCTL_PHASE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    let stop = StopSignal::install(args.stop_grace).context("installing signal handlers")?;
    // One rank: `SingleProcess`; under `mpirun` (feature `mpi`) or `srun` on CUDA (feature
    // `nccl`): the engine of docs/distributed.md.
    let cuda_ordinal = match args.backend {
        BackendChoice::TchCuda(n) => Some(n),
        _ => None,
    };
    let mut collective = connect(rank_env, &args.run_dir, cuda_ordinal)
        .map_err(|e| user(format!("starting rank {}: {e}", rank_env.rank)))?;
    let (rank, world_size) = (collective.rank(), collective.world_size());

    let mut p = prepare(args, &config, phase, rank, world_size)?;
    if p.checkpoint_measured.is_none() {
        p.trainer.checkpoint_estimate = checkpoint_estimate_for(p.trainer.model.param_count());
    }
    if rank == 0
        && let Some(deadline) = slurm_deadline()
    {
        stop.set_deadline(deadline);
    }
    let job = job_id().unwrap_or_else(|| format!("pid-{}", std::process::id()));
    let attempt: u32 = std::env::var("SLURM_RESTART_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        + 1;
    let binary = std::env::current_exe().context("locating this binary")?;
    writer.begin_attempt(&Attempt {
        job_id: job.clone(),
        attempt,
        started_at: Timestamp::now(),
        nodes: vec![
            std::env::var("SLURM_JOB_NODELIST")
                .unwrap_or_else(|_| sftctl_ledger::claim::hostname()),
        ],
        world_size: collective.world_size() as u32,
        provenance: Provenance {
            sftctl_version: env!("CARGO_PKG_VERSION").into(),
            binary_sha256: sha256_file(&binary)?,
            model_sha256: None,
            data_sha256: p.data_sha.clone(),
        },
        total_steps: Some(p.settings.total_steps),
        total_samples: Some(
            p.progress.samples_seen
                + p.settings.total_steps.saturating_sub(p.progress.step) * config.train.batch_size,
        ),
        resumed_from_step: p.resumed_from,
    })?;
    if let Some(event) = p.phase_start.take() {
        writer.event(event)?;
    }
    writer.heartbeat(p.progress.step)?;
    tracing::info!(
        run = %config.run_id,
        phase,
        steps = p.settings.total_steps,
        params = p.trainer.model.param_count(),
        "training"
    );

    let show_bar = rank == 0
        && args
            .progress
            .unwrap_or_else(|| std::io::stderr().is_terminal());
    let bar = show_bar.then(|| {
        let bar = indicatif::ProgressBar::new(p.settings.total_steps);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(p.progress.step);
        bar
    });
    let epoch_len = p.source.epoch_len() as u64;
    let mut observer = LedgerObserver {
        writer,
        bar,
        run_dir: args.run_dir.clone(),
        epoch_len,
        last_loss: None,
        last_progress: None,
    };
    let start_progress = p.progress;
    let outcome = run(
        &mut p.trainer,
        &mut p.source,
        p.progress,
        &p.checkpoints,
        &p.weights,
        &p.settings,
        collective.as_mut(),
        &stop,
        &mut observer,
    )?;
    if let Some(bar) = &observer.bar {
        bar.finish_and_clear();
    }
    let last_loss = observer.last_loss;
    let end = observer.last_progress.unwrap_or(start_progress);
    let writer = observer.writer;
    match outcome {
        RunOutcome::Completed {
            last,
            checkpoint: _,
        } => {
            let samples = end.samples_seen;
            tracing::info!(step = p.trainer.step, samples, "finished");
            if p.last_phase {
                writer.write_result(&RunResult {
                    status: ResultStatus::Completed,
                    job_id: job,
                    final_step: p.trainer.step,
                    samples_seen: samples,
                    tokens: end.tokens_seen,
                    final_loss: last.map(|s| s.loss).or(last_loss),
                    wall_s: started.elapsed().as_secs_f64(),
                    at: Timestamp::now(),
                    message: None,
                })?;
            } else {
                writer.event(EventKind::Finished {
                    step: p.trainer.step,
                })?;
            }
            writer.heartbeat(p.trainer.step)?;
            Ok(JobExit::Completed)
        }
        RunOutcome::Stopped { reason, checkpoint } => {
            let signal = reason.name();
            tracing::warn!(
                step = p.trainer.step,
                signal,
                checkpoint = ?checkpoint.as_ref().map(|c| c.dir.display().to_string()),
                "stopped; exit {REQUEUE_EXIT} asks for a requeue"
            );
            writer.event(EventKind::Preempted {
                step: p.trainer.step,
                signal: signal.into(),
            })?;
            Ok(JobExit::Requeue)
        }
        RunOutcome::Diverged {
            step,
            loss,
            grad_norm,
        } => {
            tracing::error!(step, loss, grad_norm, "diverged");
            writer.event(EventKind::Diverged { step, loss })?;
            writer.write_result(&RunResult {
                status: ResultStatus::Diverged,
                job_id: job,
                final_step: step,
                samples_seen: end.samples_seen,
                tokens: end.tokens_seen,
                final_loss: Some(loss),
                wall_s: started.elapsed().as_secs_f64(),
                at: Timestamp::now(),
                message: Some(format!(
                    "loss {loss} / gradient norm {grad_norm} at step {step}"
                )),
            })?;
            Ok(JobExit::Diverged)
        }
    }
}
