//! Parsers for the text Slurm prints with `-P`/`--format`, not `--json` (whose schema changed
//! between Slurm releases). Pure functions, table-tested.

use crate::ids::JobId;
use crate::state::JobState;

/// `squeue -o`: the job name goes last because it may contain the separator.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r|%M|%N|%j";
/// `sacct --format` (with `-P`, `|`-separated): the name goes last for the same reason.
pub const SACCT_FORMAT: &str = "JobID,State,ExitCode,Elapsed,NodeList,JobName";

/// One line of `squeue`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub job_id: JobId,
    pub state: JobState,
    /// Why a job is pending (`Priority`, `Resources`, `Dependency`, `JobArrayTaskLimit`, …);
    /// `None` when Slurm says `None`.
    pub reason: Option<String>,
    pub elapsed: String,
    pub nodes: String,
    pub name: String,
}

/// One line of `sacct` (a job, an array task or a step).
#[derive(Debug, Clone, PartialEq)]
pub struct AcctRow {
    pub job_id: JobId,
    pub state: JobState,
    /// `(exit code, signal)` from `ExitCode` (`1:0`, `0:15`).
    pub exit_code: Option<(i32, i32)>,
    pub elapsed: String,
    pub nodes: String,
    pub name: String,
}

/// A Slurm duration as squeue/sacct print it: `[days-]hours:minutes:seconds`, `minutes:seconds`
/// or `days-hours[:minutes]`. `None` for `UNLIMITED`, `INVALID`, `NOT_SET` and anything else.
pub fn duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, text),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let (h, m, s) = match (text.contains('-'), parts.as_slice()) {
        (_, [h, m, s]) => (*h, *m, *s),
        (true, [h, m]) => (*h, *m, 0),
        (true, [h]) => (*h, 0, 0),
        (false, [m, s]) => (0, *m, *s),
        _ => return None,
    };
    if m >= 60 || s >= 60 {
        return None;
    }
    Some(std::time::Duration::from_secs(
        ((days * 24 + h) * 60 + m) * 60 + s,
    ))
}

/// The job id printed by `sbatch --parsable` (`7` or `7;cluster`).
pub fn sbatch_parsable(stdout: &str) -> Option<JobId> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id: JobId = line.parse().ok()?;
    (id.array.is_none() && id.step.is_none()).then_some(id)
}

/// Parses `squeue -h -o SQUEUE_FORMAT`; lines that do not parse are skipped.
pub fn squeue(stdout: &str) -> Vec<QueueRow> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(6, '|').collect();
            if f.len() < 6 {
                return None;
            }
            Some(QueueRow {
                job_id: f[0].parse().ok()?,
                state: JobState::parse(f[1]),
                reason: match f[2].trim() {
                    "" | "None" | "(null)" => None,
                    r => Some(r.to_owned()),
                },
                elapsed: f[3].to_owned(),
                nodes: f[4].to_owned(),
                name: f[5].to_owned(),
            })
        })
        .collect()
}

/// Parses `sacct -P -n --format=SACCT_FORMAT`; lines that do not parse are skipped.
pub fn sacct(stdout: &str) -> Vec<AcctRow> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.splitn(6, '|').collect();
            if f.len() < 6 {
                return None;
            }
            Some(AcctRow {
                job_id: f[0].parse().ok()?,
                state: JobState::parse(f[1]),
                exit_code: f[2]
                    .split_once(':')
                    .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?))),
                elapsed: f[3].to_owned(),
                nodes: f[4].to_owned(),
                name: f[5].to_owned(),
            })
        })
        .collect()
}

/// True when `sacct`'s stderr says the cluster has no accounting storage.
pub fn accounting_disabled(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("accounting storage is disabled") || s.contains("slurmdbd: no")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ArrayPart;

    #[test]
    fn duration_table() {
        let table: &[(&str, Option<u64>)] = &[
            ("0:45", Some(45)),
            ("4:59", Some(299)),
            ("1:00:00", Some(3600)),
            ("12:03:07", Some(43387)),
            ("2-00:00:00", Some(172_800)),
            ("1-02:03:04", Some(93784)),
            ("1-02", Some(93600)),
            ("1-02:30", Some(95400)),
            ("UNLIMITED", None),
            ("INVALID", None),
            ("NOT_SET", None),
            ("", None),
            ("1:75", None),
            ("-1:00", None),
        ];
        for (text, want) in table {
            assert_eq!(duration(text).map(|d| d.as_secs()), *want, "{text:?}");
        }
    }

    #[test]
    fn sbatch_output_table() {
        let table: &[(&str, Option<u64>)] = &[
            ("7\n", Some(7)),
            ("7;local\n", Some(7)),
            ("  12 \n", Some(12)),
            ("", None),
            ("Submitted batch job 7\n", None),
            ("7_1\n", None),
        ];
        for (out, want) in table {
            assert_eq!(sbatch_parsable(out).map(|j| j.job), *want, "{out:?}");
        }
    }

    #[test]
    fn squeue_lines() {
        let out = "\
12_[2-3%1]|PENDING|JobArrayTaskLimit|0:00||sft-ab12
12_1|RUNNING|None|0:03|n1|sft-ab12
13|PENDING|Dependency|0:00||a|name|with|bars
14|COMPLETING|None|1:00|n2|x
garbage line
";
        let rows = squeue(out);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0].job_id.array,
            Some(ArrayPart::Pending("2-3%1".into()))
        );
        assert_eq!(rows[0].reason.as_deref(), Some("JobArrayTaskLimit"));
        assert_eq!(rows[1].job_id, JobId::task(12, 1));
        assert_eq!(rows[1].state, JobState::Running);
        assert_eq!(rows[1].reason, None);
        assert_eq!(rows[2].name, "a|name|with|bars");
        assert_eq!(rows[3].state, JobState::Completing);
    }

    #[test]
    fn sacct_lines_with_steps_and_cancelled_by() {
        let out = "\
1|COMPLETED|0:0|00:00:01|n1|wrap
1.batch|COMPLETED|0:0|00:00:01|n1|batch
2_0|FAILED|3:0|00:00:00|n2|sft-x
2_0.batch|FAILED|3:0|00:00:00|n2|batch
3|CANCELLED by 0|0:15|00:00:05|n1|sft-y
4|OUT_OF_MEMORY|0:125|00:00:05|n1|z
";
        let rows = sacct(out);
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[1].job_id.step.as_deref(), Some("batch"));
        assert_eq!(rows[2].exit_code, Some((3, 0)));
        assert_eq!(rows[4].state, JobState::Cancelled { by: Some(0) });
        assert_eq!(rows[4].exit_code, Some((0, 15)));
        assert_eq!(rows[5].state, JobState::OutOfMemory);
    }

    #[test]
    fn disabled_accounting_is_recognized() {
        assert!(accounting_disabled(
            "Slurm accounting storage is disabled\n"
        ));
        assert!(!accounting_disabled("sacct: error: Invalid user id\n"));
    }
}
