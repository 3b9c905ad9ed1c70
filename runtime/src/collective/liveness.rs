//! Per-rank liveness through heartbeat files on the shared filesystem, so that a rank that dies
//! or is stopped (SIGSTOP, a hung node) fails the whole job within a bounded time instead of
//! leaving its peers blocked in a collective until the time limit.
//!
//! Each rank's thread rewrites `rank-<r>` in a directory every `period` with `<beat> <node> <pid>
//! <collectives>` (node and pid let a watcher, a post-mortem and a test name the rank); rank 0
//! watches every
//! other rank and every other rank watches rank 0 (O(world) file reads, not O(world²)). A peer
//! whose file has not changed for `timeout` (measured by the watcher's own clock, so clock skew
//! between nodes does not matter) is declared dead and `on_dead` runs: the engine aborts the job.
//! A rank that ends normally writes `done`, which is never stale. No network code: only files.
//!
//! The same thread times this rank's collectives ([`CollectiveClock`], fed by the engine): a
//! collective that has not returned for `collective_timeout` while every peer still beats means
//! a peer is alive but never joined it (a computation that spins, a deadlock outside MPI); the
//! heartbeat carries each rank's count of collectives entered, so the watcher names the rank
//! that is behind, and `on_dead` aborts the job.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Content of a heartbeat file once its rank has finished cleanly.
pub const DONE: &str = "done";

/// Default time without a heartbeat after which a peer counts as dead (env
/// `SFTCTL_RANK_TIMEOUT_S` overrides it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a heartbeat is written and peers are checked.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(1);

/// Default time one collective may take before the job is aborted (env
/// `SFTCTL_COLLECTIVE_TIMEOUT_S` overrides it). Generous: the other ranks wait in a collective
/// while rank 0 writes a checkpoint, which takes minutes for a 7B model and its optimizer state.
pub const DEFAULT_COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(1800);

/// This rank's collectives as its heartbeat thread sees them: how many were entered and which
/// one is running since when. The engine calls [`CollectiveClock::enter`] and
/// [`CollectiveClock::leave`] around every collective.
#[derive(Debug, Default)]
pub struct CollectiveClock {
    state: Mutex<ClockState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ClockState {
    entered: u64,
    current: Option<(&'static str, Instant)>,
}

impl CollectiveClock {
    /// A collective `op` starts.
    pub fn enter(&self, op: &'static str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.entered += 1;
        s.current = Some((op, Instant::now()));
    }

    /// The running collective returned.
    pub fn leave(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).current = None;
    }

    /// [`CollectiveClock::enter`] now, [`CollectiveClock::leave`] when the guard drops (also
    /// on an early return).
    pub fn guard(&self, op: &'static str) -> ClockGuard<'_> {
        self.enter(op);
        ClockGuard(self)
    }

    fn snapshot(&self) -> ClockState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Leaves the collective when dropped ([`CollectiveClock::guard`]).
#[derive(Debug)]
pub struct ClockGuard<'a>(&'a CollectiveClock);

impl Drop for ClockGuard<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

fn seconds_from_env(name: &str, default: Duration) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(v) => {
            let secs: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .ok_or_else(|| format!("{name}=`{v}` is not a positive number of seconds"))?;
            Ok(Duration::from_secs_f64(secs))
        }
        Err(_) => Ok(default),
    }
}

/// Heartbeat settings.
#[derive(Debug, Clone)]
pub struct LivenessConfig {
    /// Directory shared by all ranks of this attempt (on the shared filesystem).
    pub dir: PathBuf,
    /// How often to write and check.
    pub period: Duration,
    /// Time without change after which a peer is dead.
    pub timeout: Duration,
    /// Time one collective of this rank may take.
    pub collective_timeout: Duration,
    /// This rank's collectives, fed by the engine.
    pub clock: Arc<CollectiveClock>,
}

impl LivenessConfig {
    /// Settings for `dir` with the default period, the timeout from `SFTCTL_RANK_TIMEOUT_S`
    /// (seconds, may be fractional) or [`DEFAULT_TIMEOUT`], and the collective timeout from
    /// `SFTCTL_COLLECTIVE_TIMEOUT_S` or [`DEFAULT_COLLECTIVE_TIMEOUT`].
    pub fn from_env(dir: PathBuf) -> Result<Self, String> {
        let timeout = seconds_from_env("SFTCTL_RANK_TIMEOUT_S", DEFAULT_TIMEOUT)?;
        let collective_timeout =
            seconds_from_env("SFTCTL_COLLECTIVE_TIMEOUT_S", DEFAULT_COLLECTIVE_TIMEOUT)?;
        Ok(Self {
            dir,
            period: DEFAULT_PERIOD.min(timeout / 4).min(collective_timeout / 4),
            timeout,
            collective_timeout,
            clock: Arc::default(),
        })
    }
}

/// The watcher's line for a collective (`op`, this rank's `entered`-th) that has not returned
/// for `waited`; `seen` holds each watched peer's last heartbeat. The post-mortem
/// (`collective::postmortem`) parses it.
fn stuck_message(
    rank: usize,
    op: &str,
    entered: u64,
    waited: Duration,
    seen: &[(usize, Option<String>, Instant)],
) -> String {
    let behind: Vec<String> = seen
        .iter()
        .filter_map(|(peer, last, _)| {
            let b = Beat::parse(last.as_deref()?)?;
            (b.collectives < entered).then(|| {
                format!(
                    "rank {peer} (on {}, pid {}) is alive but has entered only {} collective(s)",
                    b.node, b.pid, b.collectives
                )
            })
        })
        .collect();
    let who = if behind.is_empty() {
        "every watched rank has joined it".to_string()
    } else {
        behind.join(", ")
    };
    format!(
        "rank {rank}: collective `{op}` (call {entered}) has not returned for {:.0} s (SFTCTL_COLLECTIVE_TIMEOUT_S); {who}: aborting the job",
        waited.as_secs_f64()
    )
}

/// The running heartbeat of this rank; [`Liveness::finish`] marks it done.
#[derive(Debug)]
pub struct Liveness {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    own: PathBuf,
}

/// The heartbeat file of `rank` in `dir`.
pub fn heartbeat_path(dir: &Path, rank: usize) -> PathBuf {
    dir.join(format!("rank-{rank}"))
}

/// Where this process runs: the Slurm node name (`SLURMD_NODENAME`, set inside every step, also
/// under `mpirun`'s daemons), else the host name. On the local cluster both nodes are one host,
/// so only the Slurm name tells them apart.
pub fn node_name() -> String {
    std::env::var("SLURMD_NODENAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            fs_err::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into())
}

/// A heartbeat file's content as written by a live rank: `<beat> <node> <pid> <collectives>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// Counter, increased at every write.
    pub beat: u64,
    /// [`node_name`] of the rank.
    pub node: String,
    /// Process id of the rank on its node.
    pub pid: u32,
    /// Collectives the rank has entered so far.
    pub collectives: u64,
}

impl Beat {
    /// Parses a live heartbeat; `None` for [`DONE`] or anything else.
    pub fn parse(content: &str) -> Option<Self> {
        let mut w = content.split_whitespace();
        let beat = w.next()?.parse().ok()?;
        let node = w.next()?.to_owned();
        let pid = w.next()?.parse().ok()?;
        let collectives = w.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        Some(Self {
            beat,
            node,
            pid,
            collectives,
        })
    }
}

impl std::fmt::Display for Beat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.beat, self.node, self.pid, self.collectives
        )
    }
}

fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs_err::write(&tmp, content)?;
    fs_err::rename(&tmp, path)
}

impl Liveness {
    /// Write this rank's first heartbeat and start the thread. `on_dead` gets a message naming
    /// the silent peer; it is expected not to return (it aborts the job).
    pub fn start(
        config: LivenessConfig,
        rank: usize,
        world: usize,
        on_dead: Box<dyn Fn(String) + Send>,
    ) -> std::io::Result<Self> {
        fs_err::create_dir_all(&config.dir)?;
        let own = heartbeat_path(&config.dir, rank);
        let mut me = Beat {
            beat: 0,
            node: node_name(),
            pid: std::process::id(),
            collectives: config.clock.snapshot().entered,
        };
        write_atomic(&own, &me.to_string())?;
        let watched: Vec<usize> = if rank == 0 {
            (1..world).collect()
        } else {
            vec![0]
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let own_path = own.clone();
        let thread = std::thread::Builder::new()
            .name(format!("liveness-{rank}"))
            .spawn(move || {
                let started = Instant::now();
                // Per watched peer: the last content seen and when it changed.
                let mut seen: Vec<(usize, Option<String>, Instant)> =
                    watched.into_iter().map(|p| (p, None, started)).collect();
                while !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(config.period);
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    me.beat += 1;
                    let clock = config.clock.snapshot();
                    me.collectives = clock.entered;
                    if let Err(e) = write_atomic(&own_path, &me.to_string()) {
                        tracing::warn!("rank {rank}: cannot write heartbeat: {e}");
                    }
                    let now = Instant::now();
                    seen.retain_mut(|(peer, last, changed)| {
                        let content = fs_err::read_to_string(heartbeat_path(&config.dir, *peer))
                            .ok()
                            .map(|s| s.trim().to_string());
                        if content.as_deref() == Some(DONE) {
                            return false;
                        }
                        if content.is_some() && content != *last {
                            *last = content;
                            *changed = now;
                        }
                        true
                    });
                    if let Some((peer, last, changed)) = seen
                        .iter()
                        .find(|(_, _, changed)| now.duration_since(*changed) > config.timeout)
                    {
                        let what = if last.is_some() {
                            "has not written a heartbeat"
                        } else {
                            "has written no heartbeat at all"
                        };
                        // The post-mortem (`collective::postmortem`) parses this line.
                        let place = match last.as_deref().and_then(Beat::parse) {
                            Some(b) => format!("on {}, pid {}; ", b.node, b.pid),
                            None => String::new(),
                        };
                        on_dead(format!(
                            "rank {rank}: rank {peer} {what} for {:.0} s ({place}dead, stopped or hung; `{}`): aborting the job",
                            now.duration_since(*changed).as_secs_f64(),
                            heartbeat_path(&config.dir, *peer).display()
                        ));
                        break;
                    }
                    // Rank 0 watches every rank, so it names the one that is behind; the others
                    // wait a few periods longer, so that rank 0 speaks first.
                    let limit = if rank == 0 {
                        config.collective_timeout
                    } else {
                        config.collective_timeout + config.period * 5
                    };
                    if let Some((op, since)) = clock.current
                        && now.duration_since(since) > limit
                    {
                        on_dead(stuck_message(
                            rank,
                            op,
                            clock.entered,
                            now.duration_since(since),
                            &seen,
                        ));
                        break;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            own,
        })
    }

    /// Stop the thread and mark this rank done, so peers still finishing do not count it dead
    /// (the same as dropping it).
    pub fn finish(self) {}
}

impl Drop for Liveness {
    fn drop(&mut self) {
        // Also on an error path: a rank that returns an error exits non-zero, and the launcher
        // (mpirun, `srun --kill-on-bad-exit`) ends the job without the heartbeat's help.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = write_atomic(&self.own, DONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rank 0 of 2, with rank 1 played by the test: a collective that does not return while
    /// rank 1 beats but stays behind is reported, naming rank 1, its node and its count.
    #[test]
    fn a_collective_that_a_live_peer_never_joins_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let peer = heartbeat_path(dir.path(), 1);
        fs_err::write(&peer, "0 n2 77 3").unwrap();
        let config = LivenessConfig {
            dir: dir.path().to_owned(),
            period: Duration::from_millis(20),
            timeout: Duration::from_secs(30),
            collective_timeout: Duration::from_millis(300),
            clock: Arc::default(),
        };
        let clock = Arc::clone(&config.clock);
        let (tx, rx) = std::sync::mpsc::channel();
        let live = Liveness::start(
            config,
            0,
            2,
            Box::new(move |m| {
                let _ = tx.send(m);
            }),
        )
        .unwrap();
        // Three collectives together, then a fourth that rank 1 never enters.
        for _ in 0..3 {
            drop(clock.guard("any"));
        }
        let _waiting = clock.guard("all_reduce_sum_f32");
        let started = Instant::now();
        let mut beat = 0;
        let message = loop {
            if let Ok(m) = rx.try_recv() {
                break m;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no report");
            beat += 1;
            fs_err::write(&peer, format!("{beat} n2 77 3")).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(
            message.starts_with(
                "rank 0: collective `all_reduce_sum_f32` (call 4) has not returned for "
            ),
            "{message}"
        );
        assert!(
            message
                .contains("rank 1 (on n2, pid 77) is alive but has entered only 3 collective(s)"),
            "{message}"
        );
        // Our own heartbeat carries our count.
        let own = fs_err::read_to_string(heartbeat_path(dir.path(), 0)).unwrap();
        assert_eq!(Beat::parse(&own).map(|b| b.collectives), Some(4), "{own}");
        drop(live);
        assert_eq!(
            fs_err::read_to_string(heartbeat_path(dir.path(), 0)).unwrap(),
            DONE
        );
    }

    #[test]
    fn beats_parse_with_and_without_the_count() {
        // (content, parsed)
        let cases = [
            ("7 n2 42 19", Some((7, "n2", 42, 19))),
            ("7 n2 42", Some((7, "n2", 42, 0))),
            ("done", None),
            ("7", None),
        ];
        for (text, want) in cases {
            let got = Beat::parse(text);
            assert_eq!(
                got.as_ref()
                    .map(|b| (b.beat, b.node.as_str(), b.pid, b.collectives)),
                want,
                "{text}"
            );
        }
    }
}
