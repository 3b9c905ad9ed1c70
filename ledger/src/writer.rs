//! `RunWriter`: the API a job (the runtime, or a test payload) uses to record its progress in its
//! run directory. Each rank writes only its own files; rank 0 also writes the run-wide logs.

use crate::io::{JsonlWriter, append_jsonl, read_json, write_json_atomic};
use crate::layout::RunDir;
use crate::records::*;
use crate::{Error, Result, failpoint};
use fs_err as fs;
use std::path::{Path, PathBuf};

/// Writes one rank's records into a run directory.
#[derive(Debug)]
pub struct RunWriter {
    dir: RunDir,
    rank: u32,
    job_id: Option<String>,
    events: JsonlWriter,
    metrics: Option<JsonlWriter>,
}

impl RunWriter {
    /// Opens the run directory `run_dir` for `rank`; `job_id` is stamped on heartbeats.
    pub fn open(run_dir: &Path, rank: u32, job_id: Option<String>) -> Result<Self> {
        let dir = RunDir::at(run_dir);
        let events = JsonlWriter::open(&dir.events(rank), false)?;
        let metrics = if rank == 0 {
            Some(JsonlWriter::open(&dir.metrics(), false)?)
        } else {
            None
        };
        Ok(Self {
            dir,
            rank,
            job_id,
            events,
            metrics,
        })
    }

    /// Opens from the job's environment: `SFTCTL_RUN_DIR`, rank from `SLURM_PROCID` (else
    /// `RANK`, else 0), job id from `SLURM_ARRAY_JOB_ID`/`SLURM_ARRAY_TASK_ID` or `SLURM_JOB_ID`
    /// (else `SFTCTL_JOB_ID`, set by the local executor).
    pub fn from_env() -> Result<Self> {
        let dir = std::env::var_os("SFTCTL_RUN_DIR").ok_or(Error::MissingEnv("SFTCTL_RUN_DIR"))?;
        let rank = ["SLURM_PROCID", "RANK"]
            .iter()
            .find_map(|k| std::env::var(k).ok()?.parse().ok())
            .unwrap_or(0);
        Self::open(Path::new(&dir), rank, job_id_from_env())
    }

    pub fn rank(&self) -> u32 {
        self.rank
    }
    pub fn run_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The resolved training configuration sftctl wrote for this run.
    pub fn config(&self) -> Result<serde_json::Value> {
        let p = self.dir.config_json();
        read_json(&p)?.ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("`{}` does not exist", p.display()),
            ))
        })
    }

    /// Records the start of an attempt (rank 0 only; other ranks return `Ok` and write nothing)
    /// and a `started` event.
    pub fn begin_attempt(&mut self, a: &Attempt) -> Result<()> {
        if self.rank == 0 {
            append_jsonl(&self.dir.attempts(), a, true)?;
        }
        self.event(EventKind::Started {
            job_id: a.job_id.clone(),
            attempt: a.attempt,
        })
    }

    /// Appends a step's metrics (rank 0 only; other ranks write nothing).
    pub fn metric(&mut self, m: &MetricRecord) -> Result<()> {
        match &mut self.metrics {
            Some(w) => w.append(m),
            None => Ok(()),
        }
    }

    /// Appends an event to this rank's event log.
    pub fn event(&mut self, kind: EventKind) -> Result<()> {
        self.events.append(&Event {
            at: Timestamp::now(),
            rank: self.rank,
            kind,
        })
    }

    /// Rewrites this rank's heartbeat; `sftctl status` shows a run whose newest heartbeat is
    /// older than its threshold as stalled.
    pub fn heartbeat(&mut self, step: u64) -> Result<()> {
        write_json_atomic(
            &self.dir.heartbeat(self.rank),
            &Heartbeat {
                at: Timestamp::now(),
                rank: self.rank,
                step,
                pid: std::process::id(),
                host: crate::claim::hostname(),
                job_id: self.job_id.clone(),
            },
        )
    }

    /// A fresh, empty staging directory for the checkpoint of `step`; write its files there,
    /// then call [`RunWriter::commit_checkpoint`].
    pub fn checkpoint_staging(&self, step: u64) -> Result<PathBuf> {
        let p = self.dir.checkpoints().join(format!(".step-{step}.partial"));
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
        fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// Seals the staged checkpoint: writes its `COMPLETE` marker (listing its files), renames it
    /// to `checkpoints/step-<n>` and records a `checkpoint` event. Returns the final directory.
    pub fn commit_checkpoint(&mut self, step: u64, samples_seen: u64) -> Result<PathBuf> {
        let staging = self.dir.checkpoints().join(format!(".step-{step}.partial"));
        let mut files = Vec::new();
        for e in fs::read_dir(&staging)? {
            files.push(e?.file_name().to_string_lossy().into_owned());
        }
        files.sort();
        for f in &files {
            fs::File::open(staging.join(f))?.sync_all()?;
        }
        failpoint::hit("checkpoint.files_synced", || {})?;
        write_json_atomic(
            &staging.join("COMPLETE"),
            &CheckpointMarker {
                step,
                samples_seen,
                files,
                written_at: Timestamp::now(),
            },
        )?;
        failpoint::hit("checkpoint.marker_written", || {})?;
        let dest = self.dir.checkpoints().join(format!("step-{step}"));
        if dest.exists() {
            fs::remove_dir_all(&dest)?;
        }
        fs::rename(&staging, &dest)?;
        failpoint::hit("checkpoint.renamed", || {})?;
        self.event(EventKind::Checkpoint {
            step,
            path: format!("checkpoints/step-{step}"),
        })?;
        Ok(dest)
    }

    /// Writes `eval/<name>.json`.
    pub fn write_eval(&self, r: &EvalResult) -> Result<()> {
        write_json_atomic(&self.dir.eval_dir().join(format!("{}.json", r.name)), r)
    }

    /// Writes `result.json` and a `finished` (or `error`) event.
    pub fn write_result(&mut self, r: &RunResult) -> Result<()> {
        write_json_atomic(&self.dir.result(), r)?;
        match r.status {
            ResultStatus::Completed => self.event(EventKind::Finished { step: r.final_step }),
            _ => self.event(EventKind::Error {
                message: r
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{:?}", r.status)),
            }),
        }
    }
}

/// The job id as sftctl's records spell it: `<array>_<task>` for array tasks.
pub fn job_id_from_env() -> Option<String> {
    let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(a), Some(t)) => Some(format!("{a}_{t}")),
        _ => var("SLURM_JOB_ID").or_else(|| var("SFTCTL_JOB_ID")),
    }
}

/// The newest complete checkpoint of a run: `(step, directory)`. Staging directories and
/// checkpoints without a `COMPLETE` marker are ignored.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<(u64, PathBuf)>> {
    let dir = RunDir::at(run_dir).checkpoints();
    let mut best: Option<(u64, PathBuf)> = None;
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for e in rd {
        let p = e?.path();
        let Some(step) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        if p.join("COMPLETE").is_file() && best.as_ref().is_none_or(|(s, _)| step > *s) {
            best = Some((step, p));
        }
    }
    Ok(best)
}
