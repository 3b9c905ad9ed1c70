//! `sftctl-train`: the runtime binary run inside an allocation. Argument parsing only; every
//! subcommand is one call into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sftctl_runtime::backend::BackendChoice;
use sftctl_runtime::config::Arch;

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
    /// Write a small random model (Hugging Face layout) with the tokenizer of `--tokenizer`.
    MakeTinyModel {
        /// `llama`, `mistral` or `granite`.
        #[arg(long, default_value = "llama")]
        arch: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Directory holding `tokenizer.json` (and the other tokenizer files to copy).
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
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
    /// Seconds from a stop signal to the end of the checkpoint (the template's
    /// `--signal` lead time minus a margin).
    #[arg(long, default_value_t = 60)]
    stop_grace_s: u64,
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
        let exit = sftctl_runtime::train::job::main(sftctl_runtime::train::job::RunArgs {
            run_dir: a.run_dir,
            phase: a.phase,
            backend,
            stop_grace: std::time::Duration::from_secs(a.stop_grace_s),
            validation: a.validation,
            cache_dir: a.cache_dir,
            keep_last: a.keep_last,
            progress: a.progress,
        });
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
