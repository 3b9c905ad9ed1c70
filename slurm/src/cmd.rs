//! The one way to run an external program: records argv, working directory, exit status (naming
//! a signal), stdout and stderr, so a failure shows the program's own message.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
}

impl CmdError {
    /// The output of a command that ran and failed.
    pub fn output(&self) -> Option<&CmdOutput> {
        match self {
            CmdError::Failed(o) => Some(o),
            CmdError::Spawn { .. } => None,
        }
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
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    let exit = match (out.status.code(), out.status.signal()) {
        (Some(c), _) => Exit::Code(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Code(-1),
    };
    Ok(CmdOutput {
        argv: argv.to_vec(),
        cwd: cwd.map(Path::to_path_buf),
        exit,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
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
