//! The command line, declared with clap. No logic here: `lib.rs` hands each variant to its file
//! under `cmd/`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "sftctl",
    version,
    about = "Supervised fine-tuning sweeps on Slurm"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the grid: every run's id, hyperparameters, resources and GPU-hours. Writes nothing.
    Plan(PlanArgs),
    /// Check this machine for GPU training: glibc, libtorch, NVIDIA driver, GPUs, NCCL, MPI.
    Doctor(DoctorArgs),
    /// Write the ledger entries and batch scripts, submit them, print job ids and exit.
    Submit(SubmitArgs),
    /// Each run's state from the ledger and Slurm (one squeue and one sacct call).
    Status(StatusArgs),
    /// Print a run's job log.
    Logs(LogsArgs),
    /// Cancel the live jobs of a sweep or of some runs.
    Cancel(CancelArgs),
    /// Run a local batch's queue (started by `submit --executor local`).
    #[command(hide = true)]
    LocalWorker(LocalWorkerArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    Slurm,
    Local,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The sweep spec (TOML).
    pub spec: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Memory of one GPU in GiB: runs whose estimate exceeds it are flagged.
    #[arg(long, default_value_t = 80.0)]
    pub gpu_mem_gib: f64,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Require CUDA GPUs and libtorch (run inside an allocation).
    #[arg(long)]
    pub cuda: bool,
    /// Require NCCL and MPI (data parallel over several ranks).
    #[arg(long)]
    pub multi_rank: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The sweep spec (TOML).
    pub spec: PathBuf,
    /// Also resubmit runs that failed, timed out, were cancelled or were lost.
    #[arg(long)]
    pub retry_failed: bool,
    /// Where the jobs run; overrides the spec's `sweep.executor`.
    #[arg(long, value_enum)]
    pub executor: Option<ExecutorArg>,
    /// With the local executor: run the queue in the foreground until it is done.
    #[arg(long)]
    pub wait: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LedgerArg {
    /// Ledger root, when a sweep is named rather than given as a spec file.
    #[arg(long, env = "SFTCTL_LEDGER", default_value = "ledger")]
    pub ledger: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A spec file or a sweep name (default: every sweep in the ledger).
    pub sweep: Option<String>,
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every few seconds until every run is final.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with `--watch`.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Run id (or a unique prefix) or run name.
    pub run: String,
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Keep printing as the log grows, until the run is final.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// A spec file or sweep name, or run ids / names.
    #[arg(required = true)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub ledger: LedgerArg,
}

#[derive(Debug, Args)]
pub struct LocalWorkerArgs {
    #[arg(long)]
    pub ledger: PathBuf,
    #[arg(long)]
    pub sweep: String,
    #[arg(long)]
    pub batch: String,
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
}
