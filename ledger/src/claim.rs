//! A claim file created with `O_EXCL`: the only mutual exclusion in the ledger. It cannot hang
//! (no `flock`/`fcntl`, which block on some NFS servers); a claim left by a dead process is
//! broken: at once when its pid is gone on this host, after `stale_after` from another host.

use crate::io::read_json;
use crate::records::Timestamp;
use crate::{Error, Result};
use fs_err as fs;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    at: Timestamp,
}

/// A held claim; dropping it removes the file.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn pid_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(p) => !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None),
            Err(nix::errno::Errno::ESRCH)
        ),
        Err(_) => false,
    }
}

impl Claim {
    /// Tries once: `Ok(Some)` when claimed, `Ok(None)` when a live holder has it.
    pub fn try_acquire(path: &Path, stale_after: Duration) -> Result<Option<Self>> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        for _ in 0..3 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    let holder = Holder {
                        pid: std::process::id(),
                        host: hostname(),
                        at: Timestamp::now(),
                    };
                    let body = serde_json::to_vec(&holder).map_err(|source| Error::Json {
                        path: path.to_owned(),
                        source,
                    })?;
                    f.write_all(&body)?;
                    f.sync_all()?;
                    return Ok(Some(Self {
                        path: path.to_owned(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !Self::is_stale(path, stale_after)? {
                        return Ok(None);
                    }
                    // Break it by renaming to a unique name: of several breakers only one rename
                    // succeeds, and a claim created meanwhile by someone else is not touched
                    // because its content is re-checked on the next round.
                    let aside = path.with_extension(format!(
                        "stale.{}.{}",
                        std::process::id(),
                        Timestamp::now().0.unix_timestamp_nanos()
                    ));
                    if fs::rename(path, &aside).is_ok() {
                        let _ = fs::remove_file(&aside);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    fn is_stale(path: &Path, stale_after: Duration) -> Result<bool> {
        let holder: Option<Holder> = match read_json(path) {
            Ok(h) => h,
            // Half-written by a holder that died between create and write: judge by age.
            Err(Error::Json { .. }) => None,
            Err(e) => return Err(e),
        };
        match holder {
            Some(h) if h.host == hostname() => Ok(!pid_alive(h.pid)),
            Some(h) => Ok(h.at.age_s() > stale_after.as_secs_f64()),
            None => {
                let age = fs::metadata(path)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .unwrap_or_default();
                Ok(age > Duration::from_secs(5).min(stale_after))
            }
        }
    }

    /// Polls until claimed or `wait` has passed, then reports who holds it.
    pub fn acquire(path: &Path, stale_after: Duration, wait: Duration) -> Result<Self> {
        let start = Instant::now();
        loop {
            if let Some(c) = Self::try_acquire(path, stale_after)? {
                return Ok(c);
            }
            if start.elapsed() >= wait {
                let h: Option<Holder> = read_json(path).ok().flatten();
                return Err(Error::Claimed {
                    path: path.to_owned(),
                    pid: h.as_ref().map_or(0, |h| h.pid),
                    host: h.as_ref().map_or_else(String::new, |h| h.host.clone()),
                    since: h.map_or_else(String::new, |h| h.at.to_string()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn one_of_many_threads_wins_and_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = Arc::new(dir.path().join("lock"));
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (p, b) = (p.clone(), barrier.clone());
                std::thread::spawn(move || {
                    b.wait();
                    Claim::try_acquire(&p, Duration::from_secs(60))
                        .unwrap()
                        .map(std::mem::forget)
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(Option::is_some)
            .count();
        assert_eq!(wins, 1);
    }

    #[test]
    fn claim_of_a_dead_pid_on_this_host_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        // A pid that cannot be alive (above pid_max).
        let h = Holder {
            pid: 4_000_000_000,
            host: hostname(),
            at: Timestamp::now(),
        };
        fs::write(&p, serde_json::to_vec(&h).unwrap()).unwrap();
        let c = Claim::try_acquire(&p, Duration::from_secs(3600)).unwrap();
        assert!(c.is_some());
        drop(c);
        assert!(!p.exists());
    }

    #[test]
    fn live_claim_from_another_host_is_respected_until_stale() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let h = Holder {
            pid: 1,
            host: "elsewhere".into(),
            at: Timestamp::now(),
        };
        fs::write(&p, serde_json::to_vec(&h).unwrap()).unwrap();
        assert!(
            Claim::try_acquire(&p, Duration::from_secs(3600))
                .unwrap()
                .is_none()
        );
        let e =
            Claim::acquire(&p, Duration::from_secs(3600), Duration::from_millis(100)).unwrap_err();
        assert!(e.to_string().contains("elsewhere"), "{e}");
        assert!(
            Claim::try_acquire(&p, Duration::from_secs(0))
                .unwrap()
                .is_some()
        );
    }
}
