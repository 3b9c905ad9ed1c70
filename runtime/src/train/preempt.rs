//! Stop requests: SIGUSR1 (Slurm's warning before the time limit) and SIGTERM (preemption,
//! cancel, node shutdown) set a flag; the loop polls it at safe points and decides, from the
//! time left, whether to finish the current step or abandon it before checkpointing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGTERM, SIGUSR1};

/// Why the run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// SIGUSR1: the batch script's warning before the time limit; the run requeues itself.
    Warning,
    /// SIGTERM: Slurm preempts, cancels or kills the job; Slurm decides what happens next.
    Terminate,
    /// Asked by code (tests, a step budget).
    Requested,
    /// The job's time limit is near: another step plus a checkpoint, at their measured times,
    /// would not fit before it (docs/training.md, "Preemption and requeue").
    Deadline,
}

impl StopReason {
    /// The name recorded in the `preempted` event.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Warning => "USR1",
            StopReason::Terminate => "TERM",
            StopReason::Requested => "request",
            StopReason::Deadline => "deadline",
        }
    }
}

const NONE: usize = 0;
const WARNING: usize = 1;
const TERMINATE: usize = 2;
const REQUESTED: usize = 3;
const DEADLINE: usize = 4;

/// A stop flag set by signals (or by code) and the time the loop has left to act on it.
#[derive(Debug, Clone)]
pub struct StopSignal {
    flag: Arc<AtomicUsize>,
    seen: Arc<Mutex<Option<Instant>>>,
    grace: Duration,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl StopSignal {
    /// A flag that only code can set; `grace` is the time allowed between the request and the
    /// end of the checkpoint.
    pub fn manual(grace: Duration) -> Self {
        Self {
            flag: Arc::new(AtomicUsize::new(NONE)),
            seen: Arc::new(Mutex::new(None)),
            grace,
            deadline: Arc::new(Mutex::new(None)),
        }
    }

    /// A flag that SIGUSR1 and SIGTERM set. The handlers only store to an atomic.
    pub fn install(grace: Duration) -> std::io::Result<Self> {
        let stop = Self::manual(grace);
        signal_hook::flag::register_usize(SIGUSR1, Arc::clone(&stop.flag), WARNING)?;
        signal_hook::flag::register_usize(SIGTERM, Arc::clone(&stop.flag), TERMINATE)?;
        Ok(stop)
    }

    /// Request a stop from code.
    pub fn request(&self) {
        let _ = self
            .flag
            .compare_exchange(NONE, REQUESTED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The job ends (is killed) at `at`: from now on [`StopSignal::check_deadline`] requests a
    /// stop when the work still to do would not fit before it.
    pub fn set_deadline(&self, at: Instant) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Requests a stop (reason [`StopReason::Deadline`]) when `needed` from now would pass the
    /// deadline; true when a stop is pending for any reason.
    pub fn check_deadline(&self, needed: Duration) -> bool {
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = deadline
            && Instant::now() + needed >= at
        {
            let _ = self
                .flag
                .compare_exchange(NONE, DEADLINE, Ordering::SeqCst, Ordering::SeqCst);
        }
        self.flag.load(Ordering::SeqCst) != NONE
    }

    /// The pending request, if any. The first call that sees it starts the grace period.
    pub fn requested(&self) -> Option<StopReason> {
        let reason = match self.flag.load(Ordering::SeqCst) {
            WARNING => StopReason::Warning,
            TERMINATE => StopReason::Terminate,
            REQUESTED => StopReason::Requested,
            DEADLINE => StopReason::Deadline,
            _ => return None,
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get_or_insert_with(Instant::now);
        Some(reason)
    }

    /// True when a stop is pending and finishing the current work (`to_finish`, including the
    /// checkpoint) would overrun the grace period.
    pub fn should_abandon(&self, to_finish: Duration) -> bool {
        if self.requested().is_none() {
            return false;
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match *seen {
            Some(at) => Instant::now() + to_finish > at + self.grace,
            None => false,
        }
    }
}
