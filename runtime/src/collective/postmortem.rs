//! What ended a data-parallel job whose launcher failed, found after the fact: the batch script
//! runs `sftctl-train post-mortem` when `mpirun` or `srun` exits non-zero, and this module reads
//! the job log written since the launcher started (the launcher's own report of the lost rank,
//! the heartbeat watcher's line, the ranks' `rank N: error:` lines) and the heartbeat files, and
//! turns them into one sentence that rank 0's event log records as an `error` event, so that
//! `sftctl status` shows which rank was lost, on which node, and how. A rank killed by a signal
//! cannot say so itself, and `mpirun` kills rank 0 before rank 0 could.
//!
//! Pure parsing ([`findings`]) is separate from reading files ([`examine`]) and writing the
//! event ([`record`]). It never guesses: a log that names no rank yields no finding.

use std::path::{Path, PathBuf};

use sftctl_ledger::RunWriter;
use sftctl_ledger::records::EventKind;

use crate::collective::liveness::{Beat, heartbeat_path};

/// At most this much of the end of the job log is read.
pub const LOG_TAIL_BYTES: u64 = 1 << 20;

/// The program that reported a lost rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// Open MPI's `mpirun`.
    Mpirun,
    /// Slurm's `srun`.
    Srun,
}

impl Reporter {
    fn name(self) -> &'static str {
        match self {
            Reporter::Mpirun => "mpirun",
            Reporter::Srun => "srun",
        }
    }
}

/// One thing the log says about a rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The heartbeat watcher of rank `watcher` saw no heartbeat of `rank` for `seconds` and
    /// aborted the job (the rank was stopped, hung, or died without the launcher noticing).
    Silent {
        rank: usize,
        node: Option<String>,
        seconds: u64,
        watcher: usize,
    },
    /// A collective of rank `watcher` did not return for `seconds` while its peers still beat;
    /// `behind` is the rank (and node) that never joined it, when the watcher saw one.
    Stuck {
        watcher: usize,
        op: String,
        seconds: u64,
        behind: Option<(usize, String)>,
    },
    /// The launcher saw `rank` end on a signal.
    Signal {
        rank: usize,
        node: Option<String>,
        signal: Option<i32>,
        /// The launcher's word for it (`Killed`, `Segmentation fault`).
        what: String,
        by: Reporter,
    },
    /// The launcher saw `rank` exit with a non-zero status.
    Exit {
        rank: usize,
        node: Option<String>,
        code: i32,
        by: Reporter,
    },
}

impl Finding {
    /// The lost rank and its node, for a launcher's report (the watchers' lines name both).
    fn launcher_rank(&mut self) -> Option<(usize, &mut Option<String>)> {
        match self {
            Finding::Signal { rank, node, .. } | Finding::Exit { rank, node, .. } => {
                Some((*rank, node))
            }
            Finding::Silent { .. } | Finding::Stuck { .. } => None,
        }
    }
}

/// Every finding in `log`, in log order. Lines may carry `mpirun --tag-output`'s
/// `[job,rank]<stderr>:` or `srun --label`'s `N: ` prefix.
pub fn findings(log: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let lines: Vec<&str> = log.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(f) = silent(line).or_else(|| stuck(line)) {
            out.push(f);
        } else if let Some(f) = mpirun_signal(line) {
            out.push(f);
        } else if line.contains("mpirun detected that one or more processes exited with non-zero")
            && let Some(f) = mpirun_exit(&lines[i..lines.len().min(i + 8)])
        {
            out.push(f);
        } else if let Some(f) = srun_task(line) {
            out.extend(f);
        }
    }
    out
}

/// `rank 0: rank 1 has not written a heartbeat for 30 s (on n2, pid 7; dead, ...`
/// (`collective::liveness`).
fn silent(line: &str) -> Option<Finding> {
    let (at, phrase) = [
        "has not written a heartbeat for ",
        "has written no heartbeat at all for ",
    ]
    .iter()
    .find_map(|p| Some((line.find(p)?, *p)))?;
    // `... rank W: rank P ` before the phrase.
    let mut words = line[..at].split_whitespace().rev();
    let rank: usize = words.next()?.parse().ok()?;
    (words.next()? == "rank").then_some(())?;
    let watcher: usize = words.next()?.trim_end_matches(':').parse().ok()?;
    (words.next()? == "rank").then_some(())?;
    let tail = &line[at + phrase.len()..];
    let seconds = tail.split_whitespace().next()?.parse::<f64>().ok()? as u64;
    let node = tail
        .find("(on ")
        .and_then(|i| tail[i + 4..].split([',', ';']).next())
        .map(str::to_owned);
    Some(Finding::Silent {
        rank,
        node,
        seconds,
        watcher,
    })
}

/// `rank 0: collective `any` (call 57) has not returned for 20 s (...); rank 1 (on n2, pid 77)
/// is alive but has entered only 56 collective(s): aborting the job` (`collective::liveness`).
fn stuck(line: &str) -> Option<Finding> {
    let at = line.find(": collective `")?;
    let watcher: usize = line[..at].rsplit(' ').next()?.parse().ok()?;
    let rest = &line[at + ": collective `".len()..];
    let op = rest.split('`').next()?.to_owned();
    let t = rest.find("has not returned for ")?;
    let seconds = rest[t + "has not returned for ".len()..]
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()? as u64;
    let behind = rest.find("); rank ").and_then(|i| {
        let who = &rest[i + "); rank ".len()..];
        let rank = who.split_whitespace().next()?.parse().ok()?;
        let node = who
            .find("(on ")
            .and_then(|j| who[j + 4..].split([',', ')']).next())?
            .to_owned();
        Some((rank, node))
    });
    Some(Finding::Stuck {
        watcher,
        op,
        seconds,
        behind,
    })
}

/// `mpirun noticed that process rank 1 with PID 123 on node n2 exited on signal 9 (Killed).`
fn mpirun_signal(line: &str) -> Option<Finding> {
    let at = line.find("noticed that process rank ")?;
    let rest = &line[at + "noticed that process rank ".len()..];
    let rank: usize = rest.split_whitespace().next()?.parse().ok()?;
    let node = rest
        .find(" on node ")
        .and_then(|i| rest[i + 9..].split_whitespace().next())
        .map(str::to_owned);
    let sig_at = rest.find("exited on signal ")?;
    let sig_text = &rest[sig_at + "exited on signal ".len()..];
    let signal = sig_text.split_whitespace().next()?.parse().ok();
    let what = sig_text
        .find('(')
        .and_then(|i| sig_text[i + 1..].split(')').next())
        .unwrap_or_default()
        .to_owned();
    Some(Finding::Signal {
        rank,
        node,
        signal,
        what,
        by: Reporter::Mpirun,
    })
}

/// The lines after `mpirun detected that one or more processes exited with non-zero status`:
/// `Process name: [[41234,1],1]` and `Exit code:    2`.
fn mpirun_exit(lines: &[&str]) -> Option<Finding> {
    let mut rank = None;
    let mut code = None;
    for l in lines {
        if let Some(i) = l.find("Process name:") {
            // `[[jobid,1],rank]`: the number after the last comma.
            let name = l[i + "Process name:".len()..].trim();
            rank = name
                .trim_end_matches(']')
                .rsplit(',')
                .next()
                .and_then(|r| r.parse::<usize>().ok());
        }
        if let Some(i) = l.find("Exit code:") {
            code = l[i + "Exit code:".len()..].trim().parse::<i32>().ok();
        }
    }
    Some(Finding::Exit {
        rank: rank?,
        node: None,
        code: code?,
        by: Reporter::Mpirun,
    })
}

/// `srun: error: n2: task 1: Killed`, `srun: error: n1: tasks 0-1: Exited with exit code 2`.
fn srun_task(line: &str) -> Option<Vec<Finding>> {
    let at = line.find("srun: error: ")?;
    let mut parts = line[at + "srun: error: ".len()..].splitn(3, ": ");
    let node = parts.next()?.trim().to_owned();
    let tasks = parts.next()?.trim();
    let what = parts.next()?.trim();
    let ranks: Vec<usize> = if let Some(t) = tasks.strip_prefix("tasks ") {
        let mut v = Vec::new();
        for part in t.split(',') {
            match part.split_once('-') {
                Some((a, b)) => v.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
                None => v.push(part.trim().parse().ok()?),
            }
        }
        v
    } else {
        vec![tasks.strip_prefix("task ")?.trim().parse().ok()?]
    };
    let finding = |rank| {
        if let Some(code) = what.strip_prefix("Exited with exit code ") {
            Some(Finding::Exit {
                rank,
                node: Some(node.clone()),
                code: code.trim().parse().ok()?,
                by: Reporter::Srun,
            })
        } else {
            Some(Finding::Signal {
                rank,
                node: Some(node.clone()),
                signal: signal_number(what),
                what: what.to_owned(),
                by: Reporter::Srun,
            })
        }
    };
    ranks.into_iter().map(finding).collect()
}

/// Linux signal numbers of the words `srun` and `mpirun` print.
fn signal_number(what: &str) -> Option<i32> {
    Some(match what {
        "Killed" => 9,
        "Terminated" => 15,
        "Segmentation fault" => 11,
        "Aborted" => 6,
        "Bus error" => 7,
        _ => return None,
    })
}

/// `SIGKILL` for 9 (the signals a lost rank dies of; Linux numbering).
pub fn signal_name(n: i32) -> Option<&'static str> {
    Some(match n {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// The last `rank R: error: ...` line of `log` (the rank's own words), without the prefix.
fn rank_error(log: &str, rank: usize) -> Option<String> {
    let needle = format!("rank {rank}: error: ");
    log.lines().rev().find_map(|l| {
        let i = l.find(&needle)?;
        let msg = l[i + needle.len()..].trim();
        (!msg.is_empty()).then(|| msg.chars().take(300).collect())
    })
}

/// The sentence for the run's ledger. The finding that explains the others wins: a watcher's
/// "no heartbeat" (the launcher's report that follows is its consequence), else the first rank
/// the launcher reports.
pub fn explain(findings: &[Finding], log: &str, exit_status: i32) -> Option<String> {
    let chosen = findings
        .iter()
        .find(|f| matches!(f, Finding::Silent { .. } | Finding::Stuck { .. }))
        .or_else(|| findings.first());
    let place = |rank: usize, node: &Option<String>| match node {
        Some(n) => format!("rank {rank} on {n}"),
        None => format!("rank {rank}"),
    };
    match chosen {
        Some(Finding::Silent {
            rank,
            node,
            seconds,
            watcher,
        }) => Some(format!(
            "{} stopped answering: no heartbeat for {seconds} s (stopped, hung or dead); rank {watcher} aborted the job",
            place(*rank, node)
        )),
        Some(Finding::Stuck {
            watcher,
            op,
            seconds,
            behind: Some((rank, node)),
        }) => Some(format!(
            "rank {rank} on {node} hung: alive (heartbeats) but it never joined collective `{op}`, which rank {watcher} waited {seconds} s for (SFTCTL_COLLECTIVE_TIMEOUT_S); rank {watcher} aborted the job"
        )),
        Some(Finding::Stuck {
            watcher,
            op,
            seconds,
            behind: None,
        }) => Some(format!(
            "collective `{op}` of rank {watcher} did not return for {seconds} s (SFTCTL_COLLECTIVE_TIMEOUT_S) while its peers were alive; rank {watcher} aborted the job"
        )),
        Some(Finding::Signal {
            rank,
            node,
            signal,
            what,
            by,
        }) => {
            let how = match (signal, signal.and_then(signal_name)) {
                (Some(n), Some(name)) => format!("signal {n} ({name})"),
                (Some(n), None) => format!("signal {n} ({what})"),
                (None, _) => format!("`{what}`"),
            };
            Some(format!(
                "{} was killed by {how}; {} ended the job",
                place(*rank, node),
                by.name()
            ))
        }
        Some(Finding::Exit {
            rank,
            node,
            code,
            by,
        }) => {
            let why = rank_error(log, *rank)
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            Some(format!(
                "{} exited with status {code}{why}; {} ended the job",
                place(*rank, node),
                by.name()
            ))
        }
        // Nothing names a rank; a status above 128 is bash's word for a command killed by a
        // signal (a single rank killed by the OOM killer, say).
        None if exit_status > 128 => {
            let n = exit_status - 128;
            let name = signal_name(n).unwrap_or("?");
            Some(format!(
                "the training process was killed by signal {n} ({name})"
            ))
        }
        None => None,
    }
}

/// The newest `dist/heartbeat-*` directory of `run_dir` (the failed attempt's).
fn newest_heartbeat_dir(run_dir: &Path) -> Option<PathBuf> {
    fs_err::read_dir(run_dir.join("dist"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("heartbeat-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// Reads the job log from `offset` (at most its last [`LOG_TAIL_BYTES`]) and the heartbeat
/// files, and returns the sentence, if the log names a lost rank (or the status says the one
/// process was killed).
pub fn examine(
    run_dir: &Path,
    log: Option<&Path>,
    offset: u64,
    exit_status: i32,
) -> std::io::Result<Option<String>> {
    let text = match log {
        Some(p) => read_from(p, offset)?,
        None => String::new(),
    };
    let mut found = findings(&text);
    // The node of a rank the launcher did not place: from its last heartbeat.
    if let Some(dir) = newest_heartbeat_dir(run_dir) {
        for f in &mut found {
            if let Some((rank, node)) = f.launcher_rank()
                && node.is_none()
            {
                *node = fs_err::read_to_string(heartbeat_path(&dir, rank))
                    .ok()
                    .and_then(|c| Beat::parse(&c))
                    .map(|b| b.node);
            }
        }
    }
    Ok(explain(&found, &text, exit_status))
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = fs_err::File::open(path)?;
    let len = f.metadata()?.len();
    let start = offset.min(len).max(len.saturating_sub(LOG_TAIL_BYTES));
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// [`examine`], then record the sentence as an `error` event in rank 0's event log of
/// `run_dir` (rank 0 writes the run's records; every rank has ended when this runs).
pub fn record(
    run_dir: &Path,
    log: Option<&Path>,
    offset: u64,
    exit_status: i32,
) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let Some(message) = examine(run_dir, log, offset, exit_status).with_context(|| {
        format!(
            "reading the job log for the post-mortem of `{}`",
            run_dir.display()
        )
    })?
    else {
        return Ok(None);
    };
    let mut writer = RunWriter::open(run_dir, 0, sftctl_ledger::writer::job_id_from_env())
        .with_context(|| format!("opening run directory `{}`", run_dir.display()))?;
    writer.event(EventKind::Error {
        message: message.clone(),
    })?;
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_from_launcher_and_watcher_lines() {
        let n2 = || Some("n2".to_string());
        // (log line(s), findings)
        let cases: Vec<(&str, Vec<Finding>)> = vec![
            (
                "mpirun noticed that process rank 1 with PID 0 on node n2 exited on signal 9 (Killed).",
                vec![Finding::Signal {
                    rank: 1,
                    node: n2(),
                    signal: Some(9),
                    what: "Killed".into(),
                    by: Reporter::Mpirun,
                }],
            ),
            (
                "mpirun detected that one or more processes exited with non-zero status, thus causing\n\
                 the job to be terminated. The first process to do so was:\n\n  Process name: [[4711,1],1]\n  Exit code:    2",
                vec![Finding::Exit {
                    rank: 1,
                    node: None,
                    code: 2,
                    by: Reporter::Mpirun,
                }],
            ),
            (
                "[1,0]<stderr>:error: rank 0: rank 1 has not written a heartbeat for 30 s (on n2, pid 77; dead, stopped or hung; `/r/dist/h/rank-1`): aborting the job",
                vec![Finding::Silent {
                    rank: 1,
                    node: n2(),
                    seconds: 30,
                    watcher: 0,
                }],
            ),
            (
                "1: error: rank 1: rank 0 has written no heartbeat at all for 31 s (dead, stopped or hung; `x`): aborting the job",
                vec![Finding::Silent {
                    rank: 0,
                    node: None,
                    seconds: 31,
                    watcher: 1,
                }],
            ),
            (
                "srun: error: n2: task 1: Killed",
                vec![Finding::Signal {
                    rank: 1,
                    node: n2(),
                    signal: Some(9),
                    what: "Killed".into(),
                    by: Reporter::Srun,
                }],
            ),
            (
                "srun: error: n2: tasks 2-3: Exited with exit code 70",
                vec![
                    Finding::Exit {
                        rank: 2,
                        node: n2(),
                        code: 70,
                        by: Reporter::Srun,
                    },
                    Finding::Exit {
                        rank: 3,
                        node: n2(),
                        code: 70,
                        by: Reporter::Srun,
                    },
                ],
            ),
            (
                "[1,0]<stderr>:error: rank 0: collective `any` (call 57) has not returned for 20 s (SFTCTL_COLLECTIVE_TIMEOUT_S); rank 1 (on n2, pid 77) is alive but has entered only 56 collective(s): aborting the job",
                vec![Finding::Stuck {
                    watcher: 0,
                    op: "any".into(),
                    seconds: 20,
                    behind: Some((1, "n2".into())),
                }],
            ),
            (
                "error: rank 1: collective `barrier` (call 3) has not returned for 25 s (SFTCTL_COLLECTIVE_TIMEOUT_S); every watched rank has joined it: aborting the job",
                vec![Finding::Stuck {
                    watcher: 1,
                    op: "barrier".into(),
                    seconds: 25,
                    behind: None,
                }],
            ),
            ("rank 0: error: data set `x`: no such file", vec![]),
            ("srun: error: Unable to create step for job 12", vec![]),
        ];
        for (log, want) in cases {
            assert_eq!(findings(log), want, "{log}");
        }
    }

    #[test]
    fn the_watcher_explains_before_the_launcher_and_exits_quote_the_rank() {
        let log = "[1,0]<stderr>:error: rank 0: rank 1 has not written a heartbeat for 30 s (on n2, pid 77; dead, stopped or hung; `p`): aborting the job\n\
                   srun: error: n2: task 1: Killed\n";
        assert_eq!(
            explain(&findings(log), log, 137).unwrap(),
            "rank 1 on n2 stopped answering: no heartbeat for 30 s (stopped, hung or dead); rank 0 aborted the job"
        );
        let log = "[1,1]<stderr>:rank 1: error: parameters differ across ranks at step 0\n\
                   mpirun detected that one or more processes exited with non-zero status, thus causing\n\
                   the job to be terminated. The first process to do so was:\n\n  Process name: [[9,1],1]\n  Exit code:    2\n";
        assert_eq!(
            explain(&findings(log), log, 2).unwrap(),
            "rank 1 exited with status 2: parameters differ across ranks at step 0; mpirun ended the job"
        );
        assert_eq!(
            explain(&[], "", 137).unwrap(),
            "the training process was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(explain(&[], "rank 0: error: bad data", 1), None);
    }

    #[test]
    fn record_writes_an_error_event_naming_the_rank_and_node() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        // The launcher did not place rank 1; its heartbeat file did.
        let hb = run.join("dist/heartbeat-1-2");
        fs_err::create_dir_all(&hb).unwrap();
        fs_err::write(hb.join("rank-1"), "12 n2 4242").unwrap();
        let log = run.join("job.log");
        let old = "mpirun noticed that process rank 0 with PID 0 on node n1 exited on signal 9 (Killed).\n";
        let new = "mpirun detected that one or more processes exited with non-zero status, thus causing\n\
                   the job to be terminated. The first process to do so was:\n\n  Process name: [[9,1],1]\n  Exit code:    3\n";
        fs_err::write(&log, format!("{old}{new}")).unwrap();
        // Only what the failed attempt wrote counts: the earlier attempt's line is before the offset.
        let msg = record(run, Some(&log), old.len() as u64, 3)
            .unwrap()
            .unwrap();
        assert_eq!(
            msg,
            "rank 1 on n2 exited with status 3; mpirun ended the job"
        );
        let snap = sftctl_ledger::read_run(run, true).unwrap();
        assert_eq!(snap.errors.len(), 1);
        assert_eq!(snap.errors[0].rank, 0);
        assert!(
            matches!(&snap.errors[0].kind, EventKind::Error { message } if *message == msg),
            "{:?}",
            snap.errors
        );
    }
}
