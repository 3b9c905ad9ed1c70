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
    /// Results table of a sweep (mean ± std over seeds), or with `--early` the early-dynamics
    /// ranking.
    Report(ReportArgs),
    /// Attach scores computed elsewhere (lm-evaluation-harness JSON, named scores) to a run.
    Import(ImportArgs),
    /// Cancel the points of a sweep predicted worst by their early dynamics (dry run by default).
    Prune(PruneArgs),
    /// Look at training data as the runtime will see it.
    #[command(subcommand)]
    Data(DataCommand),
    /// Run a local batch's queue (started by `submit --executor local`).
    #[command(hide = true)]
    LocalWorker(LocalWorkerArgs),
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// A rendered sample with its loss mask, the length histogram and the dropped samples (and
    /// why), for a chat JSONL file and a model's tokenizer and chat template.
    Inspect(DataInspectArgs),
}

#[derive(Debug, Args)]
pub struct DataInspectArgs {
    /// The chat data (JSONL: `{"messages": [...]}` or prompt/completion per line).
    pub data: PathBuf,
    /// The model directory (its `tokenizer.json`, `tokenizer_config.json`, chat template).
    #[arg(long)]
    pub model: PathBuf,
    /// Samples longer than this many tokens are dropped (and counted).
    #[arg(long, default_value_t = 4096)]
    pub max_len: usize,
    /// Which sample (0-based, among the kept ones) to render with its mask.
    #[arg(long, default_value_t = 0)]
    pub sample: usize,
    /// Name of the chat template when the model carries several.
    #[arg(long)]
    pub template: Option<String>,
    /// Skip (and count) malformed lines instead of stopping at the first.
    #[arg(long)]
    pub skip_malformed: bool,
    /// Print JSON instead of the report.
    #[arg(long)]
    pub json: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Terminal,
    Markdown,
    Latex,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckpointArg {
    /// The last evaluated checkpoint.
    Final,
    /// The evaluated checkpoint with the lowest validation loss.
    BestValLoss,
    /// Each benchmark's best checkpoint.
    Peak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PredictorArg {
    /// Lower early gradient norm and higher early loss rank higher.
    Paper,
    /// Lower early gradient norm ranks higher.
    GradNorm,
    /// Higher early loss ranks higher.
    Loss,
    /// The final metric predicted by a least-squares fit on early gradient norm and loss over
    /// finished runs (`--fit-from`; default: the sweep's own finished runs).
    Fitted,
}

/// Where the `fitted` predictor learns from.
#[derive(Debug, Args)]
pub struct FitArgs {
    /// Sweeps (names or spec files) whose finished runs train the `fitted` predictor
    /// (default: this sweep's finished runs).
    #[arg(long, value_delimiter = ',', value_name = "SWEEP")]
    pub fit_from: Vec<String>,
    /// The metric the `fitted` predictor predicts, `name:metric` (default: the first benchmark
    /// of the fitting runs).
    #[arg(long, value_name = "NAME[:METRIC]")]
    pub fit_metric: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A spec file or a sweep name.
    pub sweep: String,
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Axes whose settings make the rows (e.g. `batch_size,lr`); other settings (seeds) pool.
    #[arg(long, value_delimiter = ',', default_value = "batch_size,lr")]
    pub rows: Vec<String>,
    /// Benchmark columns as `name:metric` (`name` alone means `name:acc`); default: all found.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Which checkpoint's score counts.
    #[arg(long, value_enum, default_value = "final")]
    pub checkpoint: CheckpointArg,
    /// Leave out the "samples to peak" columns.
    #[arg(long)]
    pub no_samples_to_peak: bool,
    /// Let unfinished runs contribute their latest evaluations.
    #[arg(long)]
    pub include_running: bool,
    #[arg(long, value_enum, default_value = "terminal")]
    pub format: ReportFormat,
    /// Early dynamics instead of the table: correlations and the ranking of points over the
    /// first SAMPLES samples seen.
    #[arg(long, value_name = "SAMPLES")]
    pub early: Option<u64>,
    /// Predictor for `--early`.
    #[arg(long, value_enum, default_value = "paper")]
    pub predictor: PredictorArg,
    #[command(flatten)]
    pub fit: FitArgs,
    /// Also write loss and gradient-norm charts (SVG and PNG) per group and per run into DIR.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Also write a self-contained HTML report (table and charts) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Run id (or a unique prefix) or run name.
    pub run: String,
    /// The results file (lm-evaluation-harness JSON, or a JSON object of named scores).
    pub file: PathBuf,
    /// The checkpoint the scores belong to: a step, `step-<n>`, or `final` (newest complete).
    #[arg(long)]
    pub checkpoint: String,
    /// Evaluation name for a file of named scores (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Also import the subtasks of lm-eval groups (every MMLU subject, for example).
    #[arg(long)]
    pub all_tasks: bool,
    #[command(flatten)]
    pub ledger: LedgerArg,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// A spec file or a sweep name.
    pub sweep: String,
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Early window: rank on the first SAMPLES samples seen.
    #[arg(long, value_name = "SAMPLES")]
    pub after: u64,
    /// How many running points to keep.
    #[arg(long)]
    pub keep: usize,
    #[arg(long, value_enum, default_value = "paper")]
    pub predictor: PredictorArg,
    #[command(flatten)]
    pub fit: FitArgs,
    /// Which checkpoint's score the `fitted` predictor learns from.
    #[arg(long, value_enum, default_value = "final")]
    pub checkpoint: CheckpointArg,
    /// Cancel for real (default: show the prediction and what would be cancelled).
    #[arg(long)]
    pub yes: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
