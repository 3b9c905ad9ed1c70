//! Readers the CLI uses: a run's records gathered into one snapshot, reading only the tails of
//! the logs. Missing files are absent values, never errors.

use crate::Result;
use crate::io::{last_jsonl, read_json, read_jsonl};
use crate::layout::RunDir;
use crate::records::*;
use fs_err as fs;
use std::path::Path;

/// What the ledger knows about one run.
#[derive(Debug, Clone, Default)]
pub struct RunSnapshot {
    pub record: Option<RunRecord>,
    pub submissions: Vec<Submission>,
    pub last_attempt: Option<Attempt>,
    pub last_metric: Option<MetricRecord>,
    /// The newest event of each rank's log.
    pub last_events: Vec<Event>,
    /// Error events of every rank (per-rank failures).
    pub errors: Vec<Event>,
    /// The newest heartbeat over all ranks.
    pub heartbeat: Option<Heartbeat>,
    pub result: Option<RunResult>,
    /// Documents that exist but do not parse (`path: error`); read as absent so that one
    /// damaged file does not hide the rest of the sweep.
    pub unreadable: Vec<String>,
}

/// Reads a run directory. With `full_events`, every event log is read to collect errors;
/// otherwise only each log's last record.
pub fn read_run(run_dir: &Path, full_events: bool) -> Result<RunSnapshot> {
    let d = RunDir::at(run_dir);
    fn doc<T>(r: Result<Option<T>>, unreadable: &mut Vec<String>) -> Result<Option<T>> {
        match r {
            Err(e @ crate::Error::Json { .. }) => {
                unreadable.push(e.to_string());
                Ok(None)
            }
            r => r,
        }
    }
    let mut unreadable = Vec::new();
    let record = doc(d.read_run(), &mut unreadable)?;
    let result = doc(read_json(&d.result()), &mut unreadable)?;
    let mut s = RunSnapshot {
        record,
        submissions: read_jsonl(&d.submissions())?.0,
        last_attempt: last_jsonl(&d.attempts())?,
        last_metric: last_jsonl(&d.metrics())?,
        result,
        unreadable,
        ..Default::default()
    };
    for p in list(&d.events_dir())? {
        if full_events {
            let (evs, _) = read_jsonl::<Event>(&p)?;
            s.errors.extend(
                evs.iter()
                    .filter(|e| matches!(e.kind, EventKind::Error { .. }))
                    .cloned(),
            );
            s.last_events.extend(evs.last().cloned());
        } else if let Some(e) = last_jsonl::<Event>(&p)? {
            if matches!(e.kind, EventKind::Error { .. }) {
                s.errors.push(e.clone());
            }
            s.last_events.push(e);
        }
    }
    for p in list(&d.heartbeat_dir())? {
        // A heartbeat being replaced is read whole or not at all; a foreign file is skipped.
        if let Ok(Some(h)) = read_json::<Heartbeat>(&p)
            && s.heartbeat.as_ref().is_none_or(|b| h.at > b.at)
        {
            s.heartbeat = Some(h);
        }
    }
    Ok(s)
}

fn list(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let p = e?.path();
                if !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{RunWriter, latest_checkpoint};

    fn metric(step: u64) -> MetricRecord {
        MetricRecord {
            step,
            epoch: 0.5,
            samples_seen: step * 8,
            tokens: step * 1000,
            loss_tokens: step * 400,
            loss: 2.0 / (step as f64 + 1.0),
            grad_norm: 1.5,
            lr: 2e-5,
            step_time_s: 0.1,
            tokens_per_s: 10_000.0,
            mem_bytes: Some(1 << 30),
            at: Timestamp::now(),
        }
    }

    #[test]
    fn what_a_job_writes_the_reader_sees() {
        let dir = tempfile::tempdir().unwrap();
        let mut w0 = RunWriter::open(dir.path(), 0, Some("12_3".into())).unwrap();
        let mut w1 = RunWriter::open(dir.path(), 1, Some("12_3".into())).unwrap();
        let attempt = Attempt {
            job_id: "12_3".into(),
            attempt: 1,
            started_at: Timestamp::now(),
            nodes: vec!["n1".into(), "n2".into()],
            world_size: 2,
            provenance: Provenance::default(),
            total_steps: Some(10),
            total_samples: Some(80),
            resumed_from_step: 0,
        };
        w0.begin_attempt(&attempt).unwrap();
        w1.begin_attempt(&attempt).unwrap();
        for step in 1..=4 {
            w0.metric(&metric(step)).unwrap();
            w1.metric(&metric(step)).unwrap();
        }
        w1.heartbeat(4).unwrap();
        let stage = w0.checkpoint_staging(4).unwrap();
        fs::write(stage.join("model.safetensors"), b"weights").unwrap();
        w0.commit_checkpoint(4, 32).unwrap();
        // An interrupted checkpoint must not count.
        fs::write(
            w0.checkpoint_staging(6).unwrap().join("model.safetensors"),
            b"half",
        )
        .unwrap();
        w1.event(EventKind::Error {
            message: "CUDA error on rank 1".into(),
        })
        .unwrap();
        w0.heartbeat(4).unwrap();

        let s = read_run(dir.path(), true).unwrap();
        assert_eq!(s.last_attempt.unwrap().nodes, vec!["n1", "n2"]);
        assert_eq!(s.last_metric.unwrap().step, 4);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].rank, 1);
        assert_eq!(s.heartbeat.unwrap().rank, 0);
        assert!(s.result.is_none());
        let (step, p) = latest_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!(step, 4);
        assert!(p.ends_with("checkpoints/step-4"));
        // Only rank 0 wrote metrics.
        let (m, _) = read_jsonl::<MetricRecord>(&RunDir::at(dir.path()).metrics()).unwrap();
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn empty_directory_is_an_empty_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let s = read_run(&dir.path().join("missing"), true).unwrap();
        assert!(s.record.is_none() && s.submissions.is_empty() && s.heartbeat.is_none());
    }
}
