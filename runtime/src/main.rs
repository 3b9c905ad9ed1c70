//! `sftctl-train`: the runtime binary run inside an allocation. Argument parsing only; every
//! subcommand is one call into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::config::Arch;
use sftctl_runtime::tiny::TokenizerSource;

#[derive(Parser, Debug)]
#[command(
    name = "sftctl-train",
    version,
    about = "The sftctl runtime: model and training"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train one run (phase) of a sweep: reads `RUN_DIR/config.json`, resumes from the newest
    /// checkpoint, writes metrics, checkpoints and the result into RUN_DIR. Exit status: 0 done,
    /// 1 bad configuration, 2 internal error, 3 diverged, 75 stopped by a signal (requeue me).
    Run(RunCli),
    /// Check glibc, libtorch, the NVIDIA driver, GPUs, NCCL and MPI; exit 1 on a problem the
    /// backend needs (a `cuda:N` run does this itself before loading anything).
    Doctor {
        /// `flex`, `tch-cpu` or `cuda:N`.
        #[arg(long, default_value = "cuda:0")]
        backend: String,
        /// Ranks of the job (more than one needs MPI, and NCCL on GPUs).
        #[arg(long, default_value_t = 1)]
        world_size: usize,
    },
    /// Write a small random model (Hugging Face layout) with the project's tiny tokenizer (or the
    /// tokenizer files of `--tokenizer`).
    MakeTinyModel {
        /// `llama`, `mistral` or `granite`.
        #[arg(long, default_value = "llama")]
        arch: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Directory holding `tokenizer.json` (and the other tokenizer files to copy).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Score an MMLU-format multiple-choice set (dev.jsonl + test.jsonl) by log-likelihood, as
    /// lm-evaluation-harness does, on a model directory or on a run's checkpoints (results go
    /// into the run's ledger directory).
    Eval(EvalArgs),
    /// Run one of the evaluations in `RUN_DIR/config.json` (the spec's `[[eval]]`) on the
    /// checkpoints it has not scored, record the scores in RUN_DIR, then drop the checkpoint
    /// weights no evaluation needs any more. What an evaluation job runs.
    EvalJob {
        /// The run's directory in the ledger.
        run_dir: PathBuf,
        /// The evaluation's name.
        #[arg(long)]
        eval: String,
        /// `flex`, `tch-cpu` or `cuda:N` when the evaluation names none.
        #[arg(long)]
        backend: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// Directory holding `dev.jsonl` and `test.jsonl`.
    #[arg(long)]
    data: PathBuf,
    /// A model directory (Hugging Face layout) to score; prints the report as JSON.
    #[arg(long, conflicts_with = "run_dir")]
    model: Option<PathBuf>,
    /// A run directory whose checkpoints to score (default: `$SFTCTL_RUN_DIR`).
    #[arg(long, env = "SFTCTL_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Checkpoint steps to score (default: the newest).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<u64>,
    /// Score every complete checkpoint.
    #[arg(long, conflicts_with = "steps")]
    all_checkpoints: bool,
    /// Name of the evaluation in the ledger.
    #[arg(long, default_value = "mmlu")]
    name: String,
    /// Few-shot examples per question.
    #[arg(long, default_value_t = 5)]
    shots: usize,
    /// Longest model input (default: the model's `max_position_embeddings`, as lm-eval).
    #[arg(long)]
    max_length: Option<usize>,
    /// Add the tokenizer's special tokens (a BOS) to contexts, like lm-eval's `add_bos_token`.
    #[arg(long)]
    add_special_tokens: bool,
    /// Tokenizer directory (default: the model's or the checkpoint's).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// `flex`, `tch-cpu` or `cuda:N`.
    #[arg(long, default_value = "flex")]
    backend: String,
}

#[derive(clap::Args, Debug)]
struct RunCli {
    /// The run's directory in the ledger.
    run_dir: PathBuf,
    /// Phase of a phased run (default: `$SFTCTL_PHASE`, else 0).
    #[arg(long)]
    phase: Option<u32>,
    /// `flex`, `tch-cpu` or `cuda:N`.
    #[arg(long, default_value = "flex")]
    backend: String,
    /// Seconds from a stop signal to the end of the checkpoint (default: the batch script's
    /// `--signal` lead time, `$SFTCTL_SIGNAL_SECONDS`, less 15 s; 60 without it).
    #[arg(long)]
    stop_grace_s: Option<u64>,
    /// Held-out chat file(s) for the validation loss (default: `eval.jsonl` beside the data).
    #[arg(long)]
    validation: Vec<PathBuf>,
    /// Directory for tokenized data caches (default: `RUN_DIR/cache`).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Resumable checkpoints to keep.
    #[arg(long, default_value_t = 2)]
    keep_last: usize,
    /// Draw (or not) a progress bar; default: when stderr is a terminal.
    #[arg(long)]
    progress: Option<bool>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Command::Run(a) = cli.command {
        let backend = match a.backend.parse::<BackendChoice>() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return std::process::ExitCode::from(1);
            }
        };
        if matches!(backend, BackendChoice::TchCuda(_)) && !doctor(backend, 1) {
            return std::process::ExitCode::from(1);
        }
        let run_dir = a.run_dir.clone();
        let phase = a.phase.unwrap_or_else(|| {
            std::env::var("SFTCTL_PHASE")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        });
        let backend_name = a.backend.clone();
        let exit = sftctl_runtime::train::job::main(sftctl_runtime::train::job::RunArgs {
            run_dir: a.run_dir,
            phase: a.phase,
            backend,
            stop_grace: a.stop_grace_s.map_or_else(
                sftctl_runtime::train::job::default_stop_grace,
                std::time::Duration::from_secs,
            ),
            validation: a.validation,
            cache_dir: a.cache_dir,
            keep_last: a.keep_last,
            progress: a.progress,
        });
        // Evaluations placed in the training job run after its last phase, on rank 0.
        let rank0 =
            sftctl_runtime::collective::launch::RankEnv::from_env().is_ok_and(|r| r.rank == 0);
        if exit == sftctl_runtime::train::job::JobExit::Completed
            && rank0
            && let Err(e) =
                sftctl_runtime::eval::required::run_in_training_job(&run_dir, phase, &backend_name)
        {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
        return std::process::ExitCode::from(exit.code());
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Eval(a) => eval(a),
        Command::EvalJob {
            run_dir,
            eval,
            backend,
        } => {
            use sftctl_runtime::eval::required::{find, run_one};
            let e = find(&run_dir, &eval)?;
            let steps = run_one(&run_dir, &e, backend.as_deref())?;
            eprintln!(
                "evaluation `{eval}`: scored {} checkpoint(s) {steps:?}",
                steps.len()
            );
            Ok(())
        }
        Command::Run(_) => unreachable!("handled in main"),
        Command::Doctor {
            backend,
            world_size,
        } => {
            let backend: BackendChoice = backend.parse()?;
            anyhow::ensure!(
                doctor(backend, world_size),
                "the environment cannot run `{backend}`"
            );
            Ok(())
        }
        Command::MakeTinyModel {
            arch,
            out,
            tokenizer,
            seed,
        } => {
            let arch = Arch::from_name(&arch).with_context(|| {
                format!("unknown architecture `{arch}` (expected llama, mistral or granite)")
            })?;
            let device = BackendChoice::compiled()[0].device()?;
            let tokenizer = tokenizer.map_or(TokenizerSource::Tiny, TokenizerSource::Dir);
            let config =
                sftctl_runtime::tiny::make_tiny_model(arch, &out, &tokenizer, seed, &device)
                    .with_context(|| {
                        format!("making a tiny {} in `{}`", arch.model_type(), out.display())
                    })?;
            eprintln!(
                "wrote a tiny {} ({} layers, hidden {}, vocab {}) to {}",
                arch.hf_class(),
                config.num_hidden_layers,
                config.hidden_size,
                config.vocab_size,
                out.display()
            );
            Ok(())
        }
    }
}

fn eval(a: EvalArgs) -> anyhow::Result<()> {
    use sftctl_runtime::eval::job::{Which, eval_dir, eval_run};
    use sftctl_runtime::eval::score::EvalOptions;
    let device = a.backend.parse::<BackendChoice>()?.device()?;
    let probe = match (&a.model, &a.run_dir) {
        (Some(m), _) => m.clone(),
        (None, Some(r)) => sftctl_ledger::writer::latest_checkpoint(r)?
            .map(|c| c.1)
            .with_context(|| format!("run `{}` has no complete checkpoint", r.display()))?,
        (None, None) => anyhow::bail!("give `--model DIR` or `--run-dir DIR`"),
    };
    let max_length = match a.max_length {
        Some(n) => n,
        None => {
            sftctl_runtime::config::ModelConfig::from_file(&probe.join("config.json"))?
                .max_position_embeddings
        }
    };
    let o = EvalOptions {
        shots: a.shots,
        max_length,
        add_special_tokens: a.add_special_tokens,
    };
    if let Some(m) = &a.model {
        let r = eval_dir(m, a.tokenizer.as_deref(), &a.data, &o, &device)?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let run_dir = a.run_dir.expect("checked above");
    let which = if a.all_checkpoints {
        Which::All
    } else if a.steps.is_empty() {
        Which::Latest
    } else {
        Which::Steps(a.steps.clone())
    };
    for (step, r) in eval_run(
        &run_dir,
        &which,
        &a.name,
        a.tokenizer.as_deref(),
        &a.data,
        &o,
        &device,
    )? {
        eprintln!(
            "{} step {step}: acc {:.4} (subject mean {:.4}) over {} questions",
            a.name,
            r.acc,
            r.acc_subject_mean,
            r.questions.len()
        );
    }
    Ok(())
}

/// Runs the environment checks for `backend` and prints them to stderr; `false` on a problem.
fn doctor(backend: BackendChoice, world_size: usize) -> bool {
    let cuda = matches!(backend, BackendChoice::TchCuda(_));
    let needs = sftctl_doctor::Needs {
        libtorch: backend != BackendChoice::Flex,
        cuda,
        nccl: cuda && world_size > 1,
        mpi: world_size > 1,
    };
    let findings = sftctl_doctor::check(&sftctl_doctor::Probe::system(), needs);
    eprint!("{}", sftctl_doctor::render(&findings));
    !findings.iter().any(|f| f.problem)
}
