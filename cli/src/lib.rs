//! The sftctl command line: sweep specs, plans, batch scripts, submission, status.

/// Runs the command line and returns the process exit code.
pub fn run() -> i32 {
    eprintln!("sftctl: not built yet");
    2
}
