//! Slurm job ids as squeue and sacct print them: `123`, `123_4`, `123_[1-5%2]`, `123.batch`,
//! `123_4.0`, `123;cluster` from `sbatch --parsable`.

use std::fmt;
use std::str::FromStr;

/// The array part of a job id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArrayPart {
    /// One task: `123_4`.
    Task(u32),
    /// Tasks not yet split off a pending array: the text inside `[...]`, e.g. `1-5%2`.
    Pending(String),
}

impl ArrayPart {
    /// The task indices this part covers (`1-5%2` -> 1..=5; `1,3,7-8` -> 1,3,7,8).
    pub fn tasks(&self) -> Vec<u32> {
        match self {
            ArrayPart::Task(t) => vec![*t],
            ArrayPart::Pending(spec) => {
                let body = spec.split('%').next().unwrap_or("");
                let mut out = Vec::new();
                for piece in body.split(',') {
                    // `a-b:step` is legal in sbatch --array; squeue prints plain ranges.
                    let (range, step) = match piece.split_once(':') {
                        Some((r, s)) => (r, s.parse().unwrap_or(1)),
                        None => (piece, 1),
                    };
                    match range.split_once('-') {
                        Some((a, b)) => {
                            if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                                out.extend((a..=b).step_by(step.max(1)));
                            }
                        }
                        None => out.extend(range.parse::<u32>().ok()),
                    }
                }
                out
            }
        }
    }
}

/// A parsed job id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId {
    /// The job id, or the array's job id (`%A`).
    pub job: u64,
    pub array: Option<ArrayPart>,
    /// `batch`, `extern`, `0`, … for a step line of sacct.
    pub step: Option<String>,
}

impl JobId {
    /// A plain job id.
    pub fn job(job: u64) -> Self {
        Self {
            job,
            array: None,
            step: None,
        }
    }
    /// Task `task` of array job `job`.
    pub fn task(job: u64, task: u32) -> Self {
        Self {
            job,
            array: Some(ArrayPart::Task(task)),
            step: None,
        }
    }
    /// The id without its step.
    pub fn without_step(&self) -> Self {
        Self {
            step: None,
            ..self.clone()
        }
    }
}

/// A job id that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a Slurm job id")]
pub struct BadJobId(pub String);

impl FromStr for JobId {
    type Err = BadJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadJobId(s.to_owned());
        let t = s.trim();
        let t = t.split(';').next().unwrap_or(t); // `id;cluster`
        // The step follows the first `.` that is outside brackets.
        let (head, step) = match t.find('.') {
            Some(i) if !t[..i].contains('[') || t[..i].contains(']') => {
                (&t[..i], Some(t[i + 1..].to_owned()))
            }
            _ => (t, None),
        };
        let (job, array) = match head.split_once('_') {
            Some((j, rest)) => {
                let part = if let Some(inner) = rest.strip_prefix('[') {
                    ArrayPart::Pending(inner.strip_suffix(']').ok_or_else(bad)?.to_owned())
                } else {
                    ArrayPart::Task(rest.parse().map_err(|_| bad())?)
                };
                (j, Some(part))
            }
            None => (head, None),
        };
        // Heterogeneous job components print as `123+0`: the leader's id identifies the job.
        let job = job.split('+').next().unwrap_or(job);
        Ok(JobId {
            job: job.parse().map_err(|_| bad())?,
            array,
            step: step.filter(|s| !s.is_empty()),
        })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.job)?;
        match &self.array {
            Some(ArrayPart::Task(t)) => write!(f, "_{t}")?,
            Some(ArrayPart::Pending(p)) => write!(f, "_[{p}]")?,
            None => {}
        }
        if let Some(s) = &self.step {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_slurm_prints_them() {
        let p = |job, array: Option<ArrayPart>, step: Option<&str>| JobId {
            job,
            array,
            step: step.map(str::to_owned),
        };
        use ArrayPart::*;
        let table: &[(&str, JobId)] = &[
            ("7", p(7, None, None)),
            ("7;local", p(7, None, None)),
            ("7.batch", p(7, None, Some("batch"))),
            ("7.extern", p(7, None, Some("extern"))),
            ("7.0", p(7, None, Some("0"))),
            ("123_4", p(123, Some(Task(4)), None)),
            ("123_4.batch", p(123, Some(Task(4)), Some("batch"))),
            ("123_[1-5%2]", p(123, Some(Pending("1-5%2".into())), None)),
            ("123_[0,3-4]", p(123, Some(Pending("0,3-4".into())), None)),
            ("55+0", p(55, None, None)),
            ("55+1.batch", p(55, None, Some("batch"))),
        ];
        for (text, want) in table {
            assert_eq!(&text.parse::<JobId>().unwrap(), want, "{text}");
        }
        for bad in ["", "abc", "12_", "12_[1-3", "_4", "x.batch"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["7", "123_4", "123_[1-5%2]", "123_4.batch", "9.0"] {
            assert_eq!(s.parse::<JobId>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn pending_ranges_expand() {
        let table: &[(&str, &[u32])] = &[
            ("1-5%2", &[1, 2, 3, 4, 5]),
            ("0,3-4", &[0, 3, 4]),
            ("7", &[7]),
            ("0-6:3%1", &[0, 3, 6]),
        ];
        for (spec, want) in table {
            assert_eq!(ArrayPart::Pending((*spec).into()).tasks(), *want, "{spec}");
        }
    }
}
