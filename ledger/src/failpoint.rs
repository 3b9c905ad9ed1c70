//! Named failpoints in the write protocol, for crash tests: with the cargo feature `failpoints`
//! and `SFTCTL_FAILPOINT=<name>[@<n>]` in the environment, the process kills itself with SIGKILL
//! (as `kill -9` would) at the `n`-th time (default 1) it reaches `<name>`; with
//! `SFTCTL_FAILPOINT=<name>[@<n>]:enospc` the write fails there with ENOSPC instead (a full
//! disk). Without the feature every call compiles to nothing. The names are listed in [`NAMES`]
//! and `docs/reliability.md`.

/// Every failpoint, in the order a write reaches them.
pub const NAMES: &[&str] = &[
    // io::write_atomic
    "atomic.tmp_created",
    "atomic.tmp_half_written",
    "atomic.tmp_synced",
    "atomic.renamed",
    // io::JsonlWriter::append
    "jsonl.half_line",
    "jsonl.line_written",
    // writer::RunWriter::commit_checkpoint
    "checkpoint.files_synced",
    "checkpoint.marker_written",
    "checkpoint.renamed",
];

/// Reaches failpoint `name`; when it fires, `before` runs first (to leave a partial write, as a
/// kill in the middle of it would), then the process is killed, or ENOSPC is returned.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &str, before: impl FnOnce()) -> std::io::Result<()> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: OnceLock<Option<(String, u64, bool)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("SFTCTL_FAILPOINT").ok()?;
        let (v, enospc) = match v.strip_suffix(":enospc") {
            Some(v) => (v.to_owned(), true),
            None => (v, false),
        };
        match v.split_once('@') {
            Some((n, k)) => Some((n.to_owned(), k.parse().ok()?, enospc)),
            None => Some((v, 1, enospc)),
        }
    });
    if let Some((armed, nth, enospc)) = armed
        && armed == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        before();
        if *enospc {
            return Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
        }
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        // SIGKILL cannot be caught; nothing after this line runs.
        std::process::abort();
    }
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str, _before: impl FnOnce()) -> std::io::Result<()> {
    Ok(())
}
