//! Gathers what the report needs about every run of a sweep, reading run directories in
//! parallel: the plan (`config.json`), the outcome, the full metric log (only the fields the
//! report uses), validation losses and evaluation results.

use serde::{Deserialize, Serialize};
use sftctl_ledger::io::{read_json, read_jsonl};
use sftctl_ledger::results::{read_checkpoints, read_evals, read_validation};
use sftctl_ledger::{EvalResult, ResultStatus, RunDir, SweepDir, read_run};
use std::path::Path;

/// What became of a run, from the ledger alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    /// No result yet, but the run was submitted (queued, training, or lost).
    Running,
    Failed,
    Diverged,
    /// In the sweep's plan, but never submitted.
    NotSubmitted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Running => "running",
            Outcome::Failed => "failed",
            Outcome::Diverged => "diverged",
            Outcome::NotSubmitted => "not submitted",
        }
    }
}

/// The fields of a metric line the report uses; the others are skipped without being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
pub struct MetricPoint {
    pub step: u64,
    pub samples_seen: u64,
    pub loss: f64,
    pub grad_norm: f64,
}

/// One run as the report sees it.
#[derive(Debug, Clone)]
pub struct RunData {
    pub run_id: String,
    pub name: String,
    /// `config.json` (`Null` when absent).
    pub config: serde_json::Value,
    pub outcome: Outcome,
    /// The failure message of a failed or diverged run.
    pub message: Option<String>,
    /// Metric lines in step order (a resumed run's repeated steps keep their last line).
    pub metrics: Vec<MetricPoint>,
    /// `(step, validation loss)`, in step order.
    pub validation: Vec<(u64, f64)>,
    pub evals: Vec<EvalResult>,
    /// `(step, samples seen)` of complete checkpoints.
    pub checkpoints: Vec<(u64, u64)>,
}

impl RunData {
    /// Samples seen after `step`, from the metric log, else from the checkpoint marker.
    pub fn samples_at(&self, step: u64) -> Option<u64> {
        match self.metrics.binary_search_by_key(&step, |m| m.step) {
            Ok(i) => Some(self.metrics[i].samples_seen),
            Err(_) => self.checkpoints.iter().find(|c| c.0 == step).map(|c| c.1),
        }
    }
    /// The newest samples-seen count.
    pub fn samples_seen(&self) -> u64 {
        self.metrics.last().map_or(0, |m| m.samples_seen)
    }
    /// A setting of this run: `train.<key>` of its configuration, or a dotted path into it.
    pub fn setting(&self, key: &str) -> Option<&serde_json::Value> {
        if let Some(v) = self.config.get("train").and_then(|t| t.get(key)) {
            return Some(v);
        }
        let mut v = &self.config;
        for part in key.split('.') {
            v = match v {
                serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                other => other.get(part)?,
            };
        }
        Some(v)
    }
}

/// Every run of the sweep's plan (`sweep.json`) plus any other run directory, in plan order.
pub fn collect_sweep(sweep: &SweepDir) -> anyhow::Result<Vec<RunData>> {
    let mut ids = sweep.read_sweep()?.map(|r| r.runs).unwrap_or_default();
    for id in sweep.run_ids()? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16);
    let chunk = ids.len().div_ceil(threads).max(1);
    let results: Vec<anyhow::Result<Vec<RunData>>> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|id| read_one(sweep.run(id).path(), id))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(ids.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// Reads one run directory (a missing one is a run never submitted).
pub fn read_one(dir: &Path, run_id: &str) -> anyhow::Result<RunData> {
    let d = RunDir::at(dir);
    let snap = read_run(dir, false)?;
    let config: serde_json::Value = read_json(&d.config_json())?.unwrap_or_default();
    let name = snap
        .record
        .as_ref()
        .map(|r| r.name.clone())
        .or_else(|| {
            config
                .get("name")
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| run_id.to_owned());
    let (mut metrics, _) = read_jsonl::<MetricPoint>(&d.metrics())?;
    // A resumed attempt repeats the steps after its checkpoint: keep each step's last line.
    if metrics.windows(2).any(|w| w[1].step <= w[0].step) {
        let mut by_step = std::collections::BTreeMap::new();
        for m in metrics {
            by_step.insert(m.step, m);
        }
        metrics = by_step.into_values().collect();
    }
    let mut validation: Vec<(u64, f64)> = read_validation(dir)?
        .into_iter()
        .map(|v| (v.step, v.loss))
        .collect();
    validation.sort_by_key(|v| v.0);
    let (outcome, message) = match &snap.result {
        Some(r) => (
            match r.status {
                ResultStatus::Completed => Outcome::Completed,
                ResultStatus::Failed => Outcome::Failed,
                ResultStatus::Diverged => Outcome::Diverged,
            },
            r.message.clone(),
        ),
        None if snap.submissions.is_empty() && metrics.is_empty() => (Outcome::NotSubmitted, None),
        None => (Outcome::Running, None),
    };
    Ok(RunData {
        run_id: run_id.to_owned(),
        name,
        config,
        outcome,
        message,
        metrics,
        validation,
        evals: read_evals(dir)?,
        checkpoints: read_checkpoints(dir)?
            .into_iter()
            .map(|c| (c.step, c.samples_seen))
            .collect(),
    })
}
