//! The one way to run an external program: records argv, working directory, exit status (naming
//! a signal), stdout and stderr, so a failure shows the program's own message; with a time limit,
//! a program that does not finish in time is killed (with its process group) and reported.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn ok(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {} ({s})", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// `Ok(self)` if the exit status is 0, else the error with the command's stderr.
    pub fn success(self) -> Result<Self, CmdError> {
        if self.exit.ok() {
            Ok(self)
        } else {
            Err(CmdError::Failed(Box::new(self)))
        }
    }
}

/// A command that could not start or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("could not run `{argv}`{}: {source}", in_dir(.cwd))]
    Spawn {
        argv: String,
        cwd: Option<PathBuf>,
        source: std::io::Error,
    },
    #[error("`{}`{} ended with {}: {}", .0.argv.join(" "), in_dir(&.0.cwd), .0.exit, message(.0))]
    Failed(Box<CmdOutput>),
    /// The command ran past its time limit and was killed (SIGKILL to its process group).
    #[error(
        "`{argv}`{} did not finish within {} s and was killed{}",
        in_dir(.cwd),
        .timeout.as_secs_f64(),
        partial(.stderr)
    )]
    TimedOut {
        argv: String,
        cwd: Option<PathBuf>,
        timeout: Duration,
        /// What it had printed on stderr by then.
        stderr: String,
    },
}

impl CmdError {
    /// The output of a command that ran and failed.
    pub fn output(&self) -> Option<&CmdOutput> {
        match self {
            CmdError::Failed(o) => Some(o),
            CmdError::Spawn { .. } | CmdError::TimedOut { .. } => None,
        }
    }

    /// True when the command was killed for running past its time limit: it may or may not
    /// have done its work (an `sbatch` may have submitted the job).
    pub fn timed_out(&self) -> bool {
        matches!(self, CmdError::TimedOut { .. })
    }
}

fn partial(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(" (its stderr so far: {s})")
    }
}

fn in_dir(cwd: &Option<PathBuf>) -> String {
    cwd.as_ref()
        .map(|c| format!(" (in `{}`)", c.display()))
        .unwrap_or_default()
}

fn message(o: &CmdOutput) -> String {
    let s = o.stderr.trim();
    if s.is_empty() {
        format!("no message; stdout: `{}`", o.stdout.trim())
    } else {
        s.to_owned()
    }
}

/// Runs `argv` to completion, capturing its output. `stdin` is fed if given.
pub fn run_cmd(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    stdin: Option<&str>,
) -> Result<CmdOutput, CmdError> {
    run_cmd_timeout(argv, cwd, env, stdin, None)
}

/// [`run_cmd`] with a time limit: a command still running after `timeout` is killed with
/// SIGKILL, together with everything it started (it runs in a process group of its own), and
/// [`CmdError::TimedOut`] is returned. `None` waits as long as it takes.
pub fn run_cmd_timeout(
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    stdin: Option<&str>,
    timeout: Option<Duration>,
) -> Result<CmdOutput, CmdError> {
    let spawn_err = |source| CmdError::Spawn {
        argv: argv.join(" "),
        cwd: cwd.map(Path::to_path_buf),
        source,
    };
    let (program, args) = argv.split_first().ok_or_else(|| {
        spawn_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty argv",
        ))
    })?;
    #[allow(clippy::disallowed_methods)] // this is the one wrapper
    let mut c = Command::new(program);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if timeout.is_some() {
        // Its own process group, so that a kill on expiry reaches what it started too (a
        // wrapper script's children would otherwise keep the output pipes open).
        c.process_group(0);
    }
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().map_err(spawn_err)?;
    // stdin, stdout and stderr each on a thread of their own: a command that fills one pipe
    // while we wait on another cannot deadlock, and the clock keeps running.
    let feeder = match (stdin, child.stdin.take()) {
        (Some(text), Some(mut pipe)) => {
            let text = text.to_owned();
            Some(std::thread::spawn(move || {
                use std::io::Write;
                pipe.write_all(text.as_bytes())
            }))
        }
        _ => None,
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_reader = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(spawn_err)? {
            break Some(st);
        }
        if let Some(t) = timeout
            && started.elapsed() >= t
        {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = match status {
        Some(st) => st,
        None => {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = out_reader.join();
            let stderr = err_reader.join().unwrap_or_default();
            return Err(CmdError::TimedOut {
                argv: argv.join(" "),
                cwd: cwd.map(Path::to_path_buf),
                timeout: timeout.unwrap_or_default(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            });
        }
    };
    if let Some(f) = feeder {
        match f.join() {
            Ok(Ok(())) => {}
            // A command that exits without reading all of its input is not an error here.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Ok(Err(e)) => return Err(spawn_err(e)),
            Err(_) => {}
        }
    }
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(-1),
    };
    Ok(CmdOutput {
        argv: argv.to_vec(),
        cwd: cwd.map(Path::to_path_buf),
        exit,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn failure_names_argv_status_and_stderr() {
        let e = run_cmd(&sh("echo 'no partition' >&2; exit 3"), None, &[], None)
            .unwrap()
            .success()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("no partition"), "{msg}");
        assert!(msg.contains("sh -c"), "{msg}");
    }

    #[test]
    fn a_signal_is_named() {
        let o = run_cmd(&sh("kill -TERM $$"), None, &[], None).unwrap();
        assert_eq!(o.exit, Exit::Signal(15));
        assert!(o.success().unwrap_err().to_string().contains("SIGTERM"));
    }

    #[test]
    fn missing_program_names_argv_and_cwd() {
        let e = run_cmd(
            &["/nonexistent/sbatch".into()],
            Some(Path::new("/tmp")),
            &[],
            None,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/sbatch") && msg.contains("/tmp"),
            "{msg}"
        );
    }

    #[test]
    fn a_command_past_its_time_limit_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The shell and a child of it (what a wrapper script around squeue looks like).
        let script = format!(
            "echo partial >&2; sleep 30 & echo \"$$ $!\" > {}; wait",
            pids.display()
        );
        let t0 = Instant::now();
        let e = run_cmd_timeout(
            &sh(&script),
            None,
            &[],
            None,
            Some(Duration::from_millis(500)),
        )
        .unwrap_err();
        let took = t0.elapsed();
        assert!(e.timed_out(), "{e}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let msg = e.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("within 0.5 s and was killed"), "{msg}");
        assert!(msg.contains("partial"), "{msg}");
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
            // Reaped (the shell) or killed and reparented (the sleep): gone either way soon.
            let gone = (0..100).any(|_| {
                let dead = matches!(
                    nix::sys::signal::kill(pid, None),
                    Err(nix::errno::Errno::ESRCH)
                ) || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"));
                if !dead {
                    std::thread::sleep(Duration::from_millis(20));
                }
                dead
            });
            assert!(gone, "process {pid} survived the time limit");
        }
    }

    #[test]
    fn a_command_within_its_time_limit_is_unaffected() {
        let o = run_cmd_timeout(
            &sh("sleep 0.2; echo done; exit 4"),
            None,
            &[],
            Some("ignored"),
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(o.exit, Exit::Code(4));
        assert_eq!(o.stdout, "done\n");
    }

    #[test]
    fn stdin_env_and_cwd_are_passed() {
        let o = run_cmd(
            &sh("read x; echo \"$x $FOO $(pwd)\""),
            Some(Path::new("/")),
            &[("FOO".into(), "bar".into())],
            Some("hello\n"),
        )
        .unwrap();
        assert_eq!(o.stdout, "hello bar /\n");
    }
}
