//! Every record stored in the ledger, in one place: the boundary between the login node (`sftctl`),
//! the jobs (`sftctl-train`) and reports. Readers ignore unknown fields and default missing
//! optional ones, so a newer writer adding a field does not break an older reader.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A UTC instant, stored as RFC 3339 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(#[serde(with = "time::serde::rfc3339")] pub OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }
    /// Seconds since `self`, negative if `self` is in the future.
    pub fn age_s(&self) -> f64 {
        (OffsetDateTime::now_utc() - self.0).as_seconds_f64()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self
            .0
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| std::fmt::Error)?;
        f.write_str(&s)
    }
}

/// `<root>/ledger.json`: marks a directory as a ledger and states its format.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerInfo {
    pub format_version: u32,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// Where a sweep's jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    Slurm,
    Local,
}

/// The program a sweep's jobs run, copied into the ledger under its hash at submit time so that a
/// rebuild on the login node does not change jobs already queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeBinary {
    /// Hex SHA-256 of the binary.
    pub sha256: String,
    /// Its copy inside the ledger (`<sweep>/bin/<sha256>/<file name>`).
    pub path: String,
    /// Where it was copied from.
    pub source: String,
}

/// `<sweep>/sweep.json`: the sweep as last submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRecord {
    pub format_version: u32,
    pub name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Hex SHA-256 of the spec file's text at the last submit (the text is in `spec.toml`).
    pub spec_sha256: String,
    pub executor: Executor,
    /// Binaries used by submissions of this sweep, newest last.
    #[serde(default)]
    pub runtimes: Vec<RuntimeBinary>,
    /// Run ids of the sweep, in plan order; grows when axes gain values.
    pub runs: Vec<String>,
}

/// Resources of one job, as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub nodes: u32,
    pub gpus_per_node: u32,
    pub cpus_per_task: u32,
    pub time_limit_s: u64,
}

/// One phase of a run: its own batch script, submitted as its own job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseInfo {
    /// 0 for an unphased run, else 1, 2, …
    pub phase: u32,
    /// Script path relative to the run directory.
    pub script: String,
}

/// `<run>/run.json`: what sftctl planned for this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub format_version: u32,
    pub run_id: String,
    pub name: String,
    pub sweep: String,
    /// The canonical values the id hashes (explicit settings that differ from defaults).
    pub identity: serde_json::Value,
    pub resources: Resources,
    pub phases: Vec<PhaseInfo>,
    pub created_at: Timestamp,
    pub sftctl_version: String,
}

/// `<sweep>/batches/<token>.json`: one `sbatch` call (a single job or an array). Written as an
/// intent before `sbatch` runs and completed with the job id after; a batch left as an intent by a
/// killed submit is reconciled against Slurm through the job name, which carries the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    pub format_version: u32,
    pub token: String,
    pub executor: Executor,
    pub created_at: Timestamp,
    /// Runs in array-index order (index i runs `entries[i]`).
    pub entries: Vec<BatchEntry>,
    pub state: BatchState,
    /// The job id (`123`) or array job id (`123` for tasks `123_0…`), once known.
    #[serde(default)]
    pub job_id: Option<String>,
    /// The job ids this batch depends on (`afterok`/`aftercorr`).
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub argv: Vec<String>,
}

/// One run (and phase) inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEntry {
    pub run_id: String,
    pub phase: u32,
    /// Set when the entry runs this evaluation of the run (its `eval-<name>.sh`) rather than
    /// training (`phase` is then the run's last phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<String>,
}

/// Whether a [`Batch`] reached Slurm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Written before `sbatch`; the outcome is not known yet.
    Intent,
    /// `sbatch` succeeded (or reconciliation found the job); `job_id` is set.
    Submitted,
    /// `sbatch` failed or reconciliation found no job: the runs are free to submit again.
    Void,
}

/// One line of `<run>/submissions.jsonl`: a job that runs (a phase of) this run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// Slurm job id (`123` or `123_4`), or `local-<n>` for the local executor.
    pub job_id: String,
    pub batch: String,
    pub phase: u32,
    /// 1 for the first submission of this run (phase), 2 after one `--retry-failed`, …
    pub attempt: u32,
    pub executor: Executor,
    pub submitted_at: Timestamp,
    #[serde(default)]
    pub depends_on: Option<String>,
}

/// Provenance of one attempt, written by the runtime when a job (re)starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub sftctl_version: String,
    /// Hex SHA-256 of the running runtime binary.
    pub binary_sha256: String,
    #[serde(default)]
    pub model_sha256: Option<String>,
    /// Data set name -> hex SHA-256 of its file.
    #[serde(default)]
    pub data_sha256: BTreeMap<String, String>,
}

/// One line of `<run>/attempts.jsonl`, written by rank 0 at the start of every attempt (first
/// start, requeue, resubmission).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Slurm job id (`SLURM_JOB_ID`, or `<array>_<task>`), or `local-<n>`.
    pub job_id: String,
    /// `SLURM_RESTART_COUNT + 1`.
    pub attempt: u32,
    pub started_at: Timestamp,
    /// Nodes of the allocation (`SLURM_JOB_NODELIST` expanded, or the host name).
    pub nodes: Vec<String>,
    pub world_size: u32,
    pub provenance: Provenance,
    /// Planned totals, for progress and ETA.
    #[serde(default)]
    pub total_steps: Option<u64>,
    #[serde(default)]
    pub total_samples: Option<u64>,
    /// Step this attempt resumed from (0 for a fresh start).
    #[serde(default)]
    pub resumed_from_step: u64,
}

/// One line of `<run>/metrics.jsonl`: an optimizer step, written by rank 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    pub step: u64,
    pub epoch: f64,
    pub samples_seen: u64,
    /// Tokens processed (input positions incl. padding-free packing).
    pub tokens: u64,
    /// Tokens that carried loss (assistant tokens).
    pub loss_tokens: u64,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub step_time_s: f64,
    pub tokens_per_s: f64,
    #[serde(default)]
    pub mem_bytes: Option<u64>,
    pub at: Timestamp,
}

/// What happened, in `<run>/events/rank-<r>.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    Started {
        job_id: String,
        attempt: u32,
    },
    Checkpoint {
        step: u64,
        /// Relative to the run directory.
        path: String,
    },
    Diverged {
        step: u64,
        loss: f64,
    },
    Preempted {
        step: u64,
        signal: String,
    },
    Finished {
        step: u64,
    },
    /// A phase of a phased run began from a checkpoint of the previous one.
    PhaseStarted {
        phase: u32,
        /// The step counter the phase continues from.
        step: u64,
        /// The checkpoint whose weights it starts from, relative to the run directory.
        from: String,
        /// `final` or `best-val-loss` (the spec's `phase_init`).
        init: String,
    },
    Error {
        message: String,
    },
}

/// One line of an events log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: Timestamp,
    pub rank: u32,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// `<run>/heartbeat/rank-<r>.json`, rewritten periodically by each rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub at: Timestamp,
    pub rank: u32,
    pub step: u64,
    pub pid: u32,
    pub host: String,
    #[serde(default)]
    pub job_id: Option<String>,
}

/// `<run>/checkpoints/step-<n>/COMPLETE`: present only in a checkpoint written in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMarker {
    pub step: u64,
    pub samples_seen: u64,
    /// Files of the checkpoint, relative to its directory.
    pub files: Vec<String>,
    pub written_at: Timestamp,
}

/// `<run>/eval/<name>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub name: String,
    pub step: u64,
    pub metrics: BTreeMap<String, f64>,
    pub at: Timestamp,
}

/// Final outcome a job reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Completed,
    Failed,
    Diverged,
}

/// `<run>/result.json`, written once at the end of the last phase (or on a definitive failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub status: ResultStatus,
    pub job_id: String,
    pub final_step: u64,
    pub samples_seen: u64,
    pub tokens: u64,
    #[serde(default)]
    pub final_loss: Option<f64>,
    pub wall_s: f64,
    pub at: Timestamp,
    #[serde(default)]
    pub message: Option<String>,
}

/// State of a job run by the local executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// `<run>/local/<job_id>.json`: the local executor's record of one job (what Slurm would know).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalJob {
    pub job_id: String,
    pub state: LocalState,
    /// Pid of the queue worker that owns the job.
    pub worker_pid: u32,
    pub host: String,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub signal: Option<String>,
    /// Times the job exited 75 ("requeue me") and was started again.
    #[serde(default)]
    pub requeues: u32,
    pub updated_at: Timestamp,
}
