//! The sftctl command line: sweep specs, plans, batch scripts, submission, status. Only this
//! crate knows clap and the terminal; the ledger and Slurm are reached through their crates.

pub mod args;
pub mod cmd;
pub mod grid;
pub mod identity;
pub mod lead;
pub mod memory;
pub mod plan;
pub mod quote;
pub mod ranks;
pub mod report;
pub mod spec;
pub mod status;
pub mod template;

use clap::Parser;

/// An error caused by the user's input (a bad spec, an unknown run, Slurm refusing a job):
/// exit code 1. Any other error is internal: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Shorthand for returning a [`UserError`].
pub fn user_err<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(UserError(msg.into()).into())
}

/// Runs the command line and returns the process exit code.
pub fn run() -> i32 {
    // Nothing sftctl writes, nor the jobs it starts (they inherit the umask; sbatch passes it on
    // as SLURM_UMASK), is world-writable, whatever the umask; group and other read follow it.
    // Set before any thread exists, so the set-and-restore cannot race.
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::S_IWGRP | Mode::S_IWOTH);
    umask(old | Mode::S_IWOTH);
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    let result = match cli.command {
        args::Command::Plan(a) => cmd::plan::run(&a),
        args::Command::Doctor(a) => cmd::doctor::run(&a),
        args::Command::Submit(a) => cmd::submit::run(&a),
        args::Command::Status(a) => cmd::status::run(&a),
        args::Command::Logs(a) => cmd::logs::run(&a),
        args::Command::Cancel(a) => cmd::cancel::run(&a),
        args::Command::Report(a) => cmd::report::run(&a),
        args::Command::Import(a) => cmd::import::run(&a),
        args::Command::Prune(a) => cmd::prune::run(&a),
        args::Command::Data(args::DataCommand::Inspect(a)) => cmd::data::inspect(&a),
        args::Command::LocalWorker(a) => cmd::local::worker(&a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return 0;
            }
            let user = e
                .chain()
                .any(|c| c.is::<UserError>() || c.is::<spec::SpecError>());
            eprintln!("error: {e:#}");
            if user { 1 } else { 2 }
        }
    }
}
