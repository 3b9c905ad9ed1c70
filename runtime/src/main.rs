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
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
