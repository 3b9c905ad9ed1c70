//! Slurm job states, long (`COMPLETED`) or short (`CD`), with `CANCELLED by N` and the `+` that
//! unformatted sacct appends to truncated values.

use std::fmt;

/// Every job state in Slurm's documentation, plus whatever a newer Slurm may add.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Configuring,
    Running,
    Completing,
    Completed,
    Failed,
    /// `CANCELLED by N`: N is the uid that cancelled, when Slurm says.
    Cancelled {
        by: Option<u32>,
    },
    Timeout,
    Preempted,
    NodeFail,
    OutOfMemory,
    BootFail,
    Deadline,
    Requeued,
    RequeueHold,
    RequeueFed,
    Resizing,
    Revoked,
    Signaling,
    SpecialExit,
    StageOut,
    Stopped,
    Suspended,
    /// A state this code does not know; shown as Slurm printed it.
    Other(String),
}

impl JobState {
    /// Parses `squeue`'s `%T`/`%t` or `sacct`'s `State`.
    pub fn parse(text: &str) -> Self {
        let t = text.trim();
        let mut words = t.split_whitespace();
        let first = words.next().unwrap_or("").trim_end_matches('+');
        use JobState::*;
        match first {
            "PENDING" | "PD" => Pending,
            "CONFIGURING" | "CF" => Configuring,
            "RUNNING" | "R" => Running,
            "COMPLETING" | "CG" => Completing,
            "COMPLETED" | "CD" => Completed,
            "FAILED" | "F" => Failed,
            "CANCELLED" | "CA" => {
                let by = match (words.next(), words.next()) {
                    (Some("by"), Some(n)) => n.parse().ok(),
                    _ => None,
                };
                Cancelled { by }
            }
            "TIMEOUT" | "TO" => Timeout,
            "PREEMPTED" | "PR" => Preempted,
            "NODE_FAIL" | "NF" => NodeFail,
            "OUT_OF_MEMORY" | "OOM" => OutOfMemory,
            "BOOT_FAIL" | "BF" => BootFail,
            "DEADLINE" | "DL" => Deadline,
            "REQUEUED" | "RQ" => Requeued,
            "REQUEUE_HOLD" | "RH" => RequeueHold,
            "REQUEUE_FED" | "RF" => RequeueFed,
            "RESIZING" | "RS" => Resizing,
            "REVOKED" | "RV" => Revoked,
            "SIGNALING" | "SI" => Signaling,
            "SPECIAL_EXIT" | "SE" => SpecialExit,
            "STAGE_OUT" | "SO" => StageOut,
            "STOPPED" | "ST" => Stopped,
            "SUSPENDED" | "S" => Suspended,
            _ => Other(t.to_owned()),
        }
    }

    /// True when the job will not run (again) by itself. With `--requeue` (`requeue`), a
    /// preempted or requeued job comes back, so those are not final.
    pub fn is_final(&self, requeue: bool) -> bool {
        use JobState::*;
        match self {
            Completed
            | Failed
            | Cancelled { .. }
            | Timeout
            | NodeFail
            | OutOfMemory
            | BootFail
            | Deadline
            | Revoked => true,
            Preempted => !requeue,
            Pending | Configuring | Running | Completing | Requeued | RequeueHold | RequeueFed
            | Resizing | Signaling | SpecialExit | StageOut | Stopped | Suspended => false,
            Other(_) => false,
        }
    }

    /// True for a final state that is not success.
    pub fn is_failure(&self, requeue: bool) -> bool {
        self.is_final(requeue) && *self != JobState::Completed
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use JobState::*;
        let s = match self {
            Pending => "PENDING",
            Configuring => "CONFIGURING",
            Running => "RUNNING",
            Completing => "COMPLETING",
            Completed => "COMPLETED",
            Failed => "FAILED",
            Cancelled { by: Some(n) } => return write!(f, "CANCELLED by {n}"),
            Cancelled { by: None } => "CANCELLED",
            Timeout => "TIMEOUT",
            Preempted => "PREEMPTED",
            NodeFail => "NODE_FAIL",
            OutOfMemory => "OUT_OF_MEMORY",
            BootFail => "BOOT_FAIL",
            Deadline => "DEADLINE",
            Requeued => "REQUEUED",
            RequeueHold => "REQUEUE_HOLD",
            RequeueFed => "REQUEUE_FED",
            Resizing => "RESIZING",
            Revoked => "REVOKED",
            Signaling => "SIGNALING",
            SpecialExit => "SPECIAL_EXIT",
            StageOut => "STAGE_OUT",
            Stopped => "STOPPED",
            Suspended => "SUSPENDED",
            Other(s) => s,
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::{self, *};

    #[test]
    fn every_documented_state_parses_long_and_short() {
        // (long, short, final without --requeue, final with --requeue)
        let table: &[(&str, &str, JobState, bool, bool)] = &[
            ("PENDING", "PD", Pending, false, false),
            ("CONFIGURING", "CF", Configuring, false, false),
            ("RUNNING", "R", Running, false, false),
            ("COMPLETING", "CG", Completing, false, false),
            ("COMPLETED", "CD", Completed, true, true),
            ("FAILED", "F", Failed, true, true),
            ("CANCELLED", "CA", Cancelled { by: None }, true, true),
            ("TIMEOUT", "TO", Timeout, true, true),
            ("PREEMPTED", "PR", Preempted, true, false),
            ("NODE_FAIL", "NF", NodeFail, true, true),
            ("OUT_OF_MEMORY", "OOM", OutOfMemory, true, true),
            ("BOOT_FAIL", "BF", BootFail, true, true),
            ("DEADLINE", "DL", Deadline, true, true),
            ("REQUEUED", "RQ", Requeued, false, false),
            ("REQUEUE_HOLD", "RH", RequeueHold, false, false),
            ("REQUEUE_FED", "RF", RequeueFed, false, false),
            ("RESIZING", "RS", Resizing, false, false),
            ("REVOKED", "RV", Revoked, true, true),
            ("SIGNALING", "SI", Signaling, false, false),
            ("SPECIAL_EXIT", "SE", SpecialExit, false, false),
            ("STAGE_OUT", "SO", StageOut, false, false),
            ("STOPPED", "ST", Stopped, false, false),
            ("SUSPENDED", "S", Suspended, false, false),
        ];
        for (long, short, want, fin, fin_rq) in table {
            assert_eq!(&JobState::parse(long), want, "{long}");
            assert_eq!(&JobState::parse(short), want, "{short}");
            assert_eq!(want.to_string(), *long);
            assert_eq!(want.is_final(false), *fin, "{long}");
            assert_eq!(want.is_final(true), *fin_rq, "{long} with requeue");
        }
    }

    #[test]
    fn cancelled_by_and_truncation() {
        assert_eq!(JobState::parse("CANCELLED by 0"), Cancelled { by: Some(0) });
        assert_eq!(
            JobState::parse("CANCELLED by 1001"),
            Cancelled { by: Some(1001) }
        );
        assert_eq!(JobState::parse("CANCELLED+"), Cancelled { by: None });
        assert_eq!(
            JobState::parse("CANCELLED by 0").to_string(),
            "CANCELLED by 0"
        );
        assert_eq!(JobState::parse("NEW_STATE"), Other("NEW_STATE".into()));
        assert!(!Other("X".into()).is_final(false));
        assert!(Failed.is_failure(true) && !Completed.is_failure(true));
    }
}
