//! The only code that runs Slurm commands (sbatch, squeue, sacct, scancel) and parses their
//! output. Knows nothing about sweeps, runs or the ledger: it speaks job ids, states and argv.

pub mod cmd;
pub mod ids;
pub mod parse;
pub mod state;

pub use cmd::{CmdError, CmdOutput, Exit, run_cmd, run_cmd_timeout};
pub use ids::{ArrayPart, JobId};
pub use parse::{AcctRow, QueueRow};
pub use state::JobState;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The environment variable that bounds each Slurm command, in seconds (`0`: no limit).
pub const TIMEOUT_ENV: &str = "SFTCTL_SLURM_TIMEOUT_S";
/// The time limit of a Slurm command when [`TIMEOUT_ENV`] is unset: long enough for squeue's
/// own retries against a controller that is down (about 20 s), short enough that `status` on
/// a wedged login node returns.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors from Slurm commands.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error("`{argv}` printed `{output}`, which is not a job id")]
    BadJobId { argv: String, output: String },
    #[error("{0} (the limit is {TIMEOUT_ENV}, in seconds; 0 for none)")]
    TimedOut(CmdError),
    #[error("{TIMEOUT_ENV} = `{value}` is not a number of seconds (0 for no limit)")]
    BadTimeout { value: String },
}

impl Error {
    /// True when a Slurm command was killed for running past its time limit.
    pub fn timed_out(&self) -> bool {
        matches!(self, Error::TimedOut(_))
    }
}

/// Result alias for Slurm operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `sacct` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Accounting {
    /// One row per job and per step.
    Rows(Vec<AcctRow>),
    /// The cluster runs without accounting storage (`sacct` refuses).
    Disabled,
}

/// Runs Slurm's client commands. `bin_dir` (tests: stand-in scripts) prefixes program names;
/// `env` is added to each command's environment (e.g. `SLURM_CONF`); a command running longer
/// than `timeout` is killed and reported ([`CmdError::TimedOut`]).
#[derive(Debug, Clone)]
pub struct Slurm {
    pub bin_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Time limit of each command (`None`: wait as long as it takes).
    pub timeout: Option<Duration>,
    /// A [`TIMEOUT_ENV`] value that did not parse: every command then fails naming it.
    bad_timeout: Option<String>,
}

impl Default for Slurm {
    fn default() -> Self {
        Self {
            bin_dir: None,
            env: Vec::new(),
            timeout: Some(DEFAULT_TIMEOUT),
            bad_timeout: None,
        }
    }
}

/// Parses a [`TIMEOUT_ENV`] value: whole or fractional seconds, `0` for no limit.
pub fn parse_timeout(v: &str) -> Option<Option<Duration>> {
    let s: f64 = v.trim().parse().ok()?;
    if !s.is_finite() || !(0.0..=1e9).contains(&s) {
        return None;
    }
    Some((s > 0.0).then(|| Duration::from_secs_f64(s)))
}

impl Slurm {
    /// Reads `SFTCTL_SLURM_BIN` (a directory of stand-in commands) and [`TIMEOUT_ENV`] (the
    /// time limit of each command, default [`DEFAULT_TIMEOUT`]) from the environment.
    pub fn from_env() -> Self {
        let mut s = Self {
            bin_dir: std::env::var_os("SFTCTL_SLURM_BIN").map(PathBuf::from),
            ..Self::default()
        };
        if let Ok(v) = std::env::var(TIMEOUT_ENV) {
            match parse_timeout(&v) {
                Some(t) => s.timeout = t,
                None => s.bad_timeout = Some(v),
            }
        }
        s
    }

    fn program(&self, name: &str) -> String {
        match &self.bin_dir {
            Some(d) => d.join(name).to_string_lossy().into_owned(),
            None => name.to_owned(),
        }
    }

    fn run(&self, name: &str, args: &[String], cwd: Option<&Path>) -> Result<CmdOutput> {
        if let Some(value) = &self.bad_timeout {
            return Err(Error::BadTimeout {
                value: value.clone(),
            });
        }
        let mut argv = vec![self.program(name)];
        argv.extend(args.iter().cloned());
        run_cmd_timeout(&argv, cwd, &self.env, None, self.timeout).map_err(|e| {
            if e.timed_out() {
                Error::TimedOut(e)
            } else {
                Error::Cmd(e)
            }
        })
    }

    /// `sbatch --parsable ARGS SCRIPT`: the new job id (for an array, the array's job id).
    pub fn sbatch(&self, args: &[String], script: &Path, cwd: &Path) -> Result<JobId> {
        let mut a = vec!["--parsable".to_owned()];
        a.extend(args.iter().cloned());
        a.push(script.to_string_lossy().into_owned());
        let out = self.run("sbatch", &a, Some(cwd))?.success()?;
        parse::sbatch_parsable(&out.stdout).ok_or_else(|| Error::BadJobId {
            argv: out.argv.join(" "),
            output: out.stdout.trim().to_owned(),
        })
    }

    /// `sbatch --test-only ARGS SCRIPT`: Slurm's verdict without submitting.
    pub fn sbatch_test_only(&self, args: &[String], script: &Path, cwd: &Path) -> Result<()> {
        let mut a = vec!["--test-only".to_owned()];
        a.extend(args.iter().cloned());
        a.push(script.to_string_lossy().into_owned());
        self.run("sbatch", &a, Some(cwd))?.success()?;
        Ok(())
    }

    /// One `squeue` call for every job of `jobs` (array tasks expanded with `-r`). Jobs squeue
    /// has forgotten are simply absent.
    pub fn squeue(&self, jobs: &[JobId]) -> Result<Vec<QueueRow>> {
        let mut base: Vec<String> = jobs.iter().map(|j| j.job.to_string()).collect();
        base.sort();
        base.dedup();
        if base.is_empty() {
            return Ok(Vec::new());
        }
        self.squeue_args(vec!["-j".into(), base.join(",")])
    }

    /// One `squeue` call for the jobs with any of these names (reconciliation).
    pub fn squeue_by_name(&self, names: &[String]) -> Result<Vec<QueueRow>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        self.squeue_args(vec!["--name".into(), names.join(",")])
    }

    fn squeue_args(&self, mut args: Vec<String>) -> Result<Vec<QueueRow>> {
        let mut a = vec![
            "-h".into(),
            "-r".into(),
            "-o".into(),
            parse::SQUEUE_FORMAT.into(),
        ];
        a.append(&mut args);
        let out = self.run("squeue", &a, None)?;
        // One unknown id alone makes squeue fail instead of printing nothing.
        if !out.exit.ok() && out.stderr.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        Ok(parse::squeue(&out.success()?.stdout))
    }

    /// One `sacct` call for `jobs` (base ids, every task and step included).
    pub fn sacct(&self, jobs: &[JobId]) -> Result<Accounting> {
        let mut base: Vec<String> = jobs.iter().map(|j| j.job.to_string()).collect();
        base.sort();
        base.dedup();
        if base.is_empty() {
            return Ok(Accounting::Rows(Vec::new()));
        }
        self.sacct_args(vec!["-j".into(), base.join(",")])
    }

    /// One `sacct` call for jobs with these names since `since` (a Slurm time, e.g. `now-7days`).
    pub fn sacct_by_name(&self, names: &[String], since: &str) -> Result<Accounting> {
        if names.is_empty() {
            return Ok(Accounting::Rows(Vec::new()));
        }
        self.sacct_args(vec![
            "--name".into(),
            names.join(","),
            "-S".into(),
            since.into(),
        ])
    }

    fn sacct_args(&self, mut args: Vec<String>) -> Result<Accounting> {
        let mut a = vec![
            "-P".into(),
            "-n".into(),
            format!("--format={}", parse::SACCT_FORMAT),
        ];
        a.append(&mut args);
        let out = self.run("sacct", &a, None)?;
        if !out.exit.ok() && parse::accounting_disabled(&out.stderr) {
            return Ok(Accounting::Disabled);
        }
        Ok(Accounting::Rows(parse::sacct(&out.success()?.stdout)))
    }

    /// `scontrol requeue` of one job: used by a job on itself after it checkpointed on a stop
    /// signal (the batch script carries `--requeue`), so it comes back and resumes.
    pub fn requeue(&self, job: &JobId) -> Result<()> {
        self.run("scontrol", &["requeue".to_owned(), job.to_string()], None)?
            .success()?;
        Ok(())
    }

    /// Time left before `job` reaches its time limit (`squeue -o %L`); `None` when the job has
    /// no limit or squeue no longer knows it.
    pub fn time_left(&self, job: &JobId) -> Result<Option<std::time::Duration>> {
        let a = vec![
            "-h".to_owned(),
            "-j".to_owned(),
            job.to_string(),
            "-o".to_owned(),
            "%L".to_owned(),
        ];
        let out = self.run("squeue", &a, None)?;
        if !out.exit.ok() && out.stderr.contains("Invalid job id") {
            return Ok(None);
        }
        let out = out.success()?;
        Ok(out.stdout.lines().find_map(parse::duration))
    }

    /// `scancel` of these jobs, in one call.
    pub fn scancel(&self, jobs: &[JobId]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let a: Vec<String> = jobs.iter().map(JobId::to_string).collect();
        self.run("scancel", &a, None)?.success()?;
        Ok(())
    }
}
