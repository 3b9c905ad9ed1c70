//! The `--signal` lead time of a job whose spec sets no `signal_seconds`: derived from the step
//! and checkpoint times that earlier runs of the sweep measured (docs/training.md, "Preemption
//! and requeue"). A run's own history wins; else runs of the same model scaled by batch size
//! (time per sample); else [`DEFAULT_LEAD_S`].

use sftctl_ledger::SweepDir;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Lead time when nothing was measured yet.
pub const DEFAULT_LEAD_S: u32 = 120;
/// The trainer's margin between the end of its stop checkpoint and the kill
/// (`sftctl_runtime::train::run::DEADLINE_MARGIN`).
const MARGIN_S: f64 = 15.0;
/// Metrics lines read from the end of each run's `metrics.jsonl`.
const TAIL_BYTES: u64 = 64 * 1024;

/// What one run of the sweep measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Median seconds per optimizer step over its last steps.
    pub step_s: f64,
    /// Samples per step (its batch size).
    pub batch: f64,
    /// Longest checkpoint write, seconds (0 when none was written).
    pub checkpoint_s: f64,
}

/// Measurements of a sweep's runs, by run id, with each run's model path.
#[derive(Debug, Default)]
pub struct SweepTimes {
    runs: BTreeMap<String, (String, Measured)>,
}

impl SweepTimes {
    /// Reads every run of the sweep that has metrics. Unreadable runs are skipped: this only
    /// sets a default.
    pub fn read(sweep: &SweepDir) -> Self {
        let mut runs = BTreeMap::new();
        for id in sweep.run_ids().unwrap_or_default() {
            let dir = sweep.run(&id);
            if let Some(m) = measure(dir.path()) {
                runs.insert(id, m);
            }
        }
        Self { runs }
    }

    /// The lead time for run `id` of `model` with `batch` samples per step, capped at half the
    /// job's time limit `time_s`.
    pub fn lead_s(&self, id: &str, model: &str, batch: f64, time_s: u64) -> u32 {
        let estimate = match self.runs.get(id) {
            Some((_, m)) => Some((m.step_s, m.checkpoint_s)),
            None => {
                // Same model: seconds per sample scale with the batch; the slowest run decides.
                let same: Vec<&Measured> = self
                    .runs
                    .values()
                    .filter(|(p, _)| p == model)
                    .map(|(_, m)| m)
                    .collect();
                (!same.is_empty()).then(|| {
                    let per_sample = same
                        .iter()
                        .map(|m| m.step_s / m.batch.max(1.0))
                        .fold(0.0, f64::max);
                    let ckpt = same.iter().map(|m| m.checkpoint_s).fold(0.0, f64::max);
                    (per_sample * batch, ckpt)
                })
            }
        };
        let Some((step_s, ckpt_s)) = estimate else {
            return DEFAULT_LEAD_S.min(cap(time_s));
        };
        lead_for(step_s, ckpt_s).min(cap(time_s))
    }
}

/// Margin, two steps and one and a half checkpoint writes, rounded up to 10 s, at least 30 s.
pub fn lead_for(step_s: f64, checkpoint_s: f64) -> u32 {
    let s = MARGIN_S + 2.0 * step_s.max(0.0) + 1.5 * checkpoint_s.max(0.0);
    let rounded = ((s / 10.0).ceil() * 10.0).min(f64::from(u32::MAX));
    (rounded as u32).max(30)
}

fn cap(time_s: u64) -> u32 {
    u32::try_from(time_s / 2).unwrap_or(u32::MAX).max(30)
}

/// A run's model path and measurements; `None` without metrics.
fn measure(run: &Path) -> Option<(String, Measured)> {
    let config: serde_json::Value =
        serde_json::from_slice(&fs_err::read(run.join("config.json")).ok()?).ok()?;
    let model = config["model"]["path"].as_str()?.to_owned();
    let batch = config["train"]["batch_size"].as_f64().unwrap_or(1.0);
    let mut steps: Vec<f64> = tail(&run.join("metrics.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step_time_s"].as_f64())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .collect();
    if steps.is_empty() {
        return None;
    }
    steps.sort_by(f64::total_cmp);
    let step_s = steps[steps.len() / 2];
    let checkpoint_s = fs_err::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| fs_err::read(e.path().join("COMPLETE")).ok())
                .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter_map(|v| v["write_seconds"].as_f64())
                .filter(|s| s.is_finite())
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    Some((
        model,
        Measured {
            step_s,
            batch,
            checkpoint_s,
        },
    ))
}

/// The last [`TAIL_BYTES`] of a file, from its first whole line.
fn tail(path: &Path) -> Option<String> {
    let mut f = fs_err::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some(if from > 0 {
        text.split_once('\n')
            .map(|(_, r)| r.to_owned())
            .unwrap_or_default()
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_table() {
        // (step s, checkpoint s, lead)
        let table = [
            (0.05, 0.1, 30),
            (1.0, 2.0, 30),
            (5.0, 10.0, 40),
            (30.0, 120.0, 260),
            (120.0, 600.0, 1160),
        ];
        for (step, ckpt, want) in table {
            assert_eq!(lead_for(step, ckpt), want, "{step} {ckpt}");
        }
    }

    fn run(root: &Path, id: &str, model: &str, batch: u64, step_s: &[f64], ckpt_s: Option<f64>) {
        let dir = root.join("runs").join(id);
        fs_err::create_dir_all(&dir).unwrap();
        fs_err::write(
            dir.join("config.json"),
            serde_json::json!({"model": {"path": model}, "train": {"batch_size": batch}})
                .to_string(),
        )
        .unwrap();
        let lines: String = step_s
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{{\"step\":{},\"step_time_s\":{s}}}\n", i + 1))
            .collect();
        fs_err::write(dir.join("metrics.jsonl"), lines).unwrap();
        if let Some(c) = ckpt_s {
            let ck = dir.join("checkpoints/step-3");
            fs_err::create_dir_all(&ck).unwrap();
            fs_err::write(
                ck.join("COMPLETE"),
                serde_json::json!({"step": 3, "write_seconds": c}).to_string(),
            )
            .unwrap();
        }
    }

    #[test]
    fn own_history_then_same_model_scaled_by_batch_then_default() {
        let tmp = tempfile::tempdir().unwrap();
        let sweep_root = tmp.path().join("sweeps/s");
        // Run a: 128 samples a step, median 30 s a step, a 100 s checkpoint.
        run(
            &sweep_root,
            "a",
            "/m/7b",
            128,
            &[29.0, 30.0, 31.0, 500.0, 30.0],
            Some(100.0),
        );
        let times = SweepTimes::read(&sftctl_ledger::Ledger::at(tmp.path()).sweep("s"));
        // Its own history: 15 + 60 + 150 = 225 -> 230.
        assert_eq!(times.lead_s("a", "/m/7b", 128.0, 86_400), 230);
        // A new point of the same model with 4x the batch: 15 + 2*120 + 150 = 405 -> 410.
        assert_eq!(times.lead_s("b", "/m/7b", 512.0, 86_400), 410);
        // Capped at half the time limit.
        assert_eq!(times.lead_s("b", "/m/7b", 512.0, 600), 300);
        // Another model: nothing measured.
        assert_eq!(times.lead_s("c", "/m/3b", 128.0, 86_400), DEFAULT_LEAD_S);
    }
}
