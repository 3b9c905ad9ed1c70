//! The results side of a run directory: validation losses (`validation.jsonl`), evaluation
//! results (`eval/<name>.step-<n>.json`, one per benchmark and checkpoint) and the markers of
//! complete checkpoints. Readers tolerate missing files like the rest of the ledger.

use crate::Result;
use crate::io::{read_json, read_jsonl, write_json_atomic};
use crate::layout::RunDir;
use crate::records::{CheckpointMarker, EvalResult, Timestamp};
use fs_err as fs;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One line of `<run>/validation.jsonl`: the held-out loss after a step, written by rank 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub step: u64,
    pub loss: f64,
    #[serde(default)]
    pub loss_tokens: u64,
    #[serde(default)]
    pub at: Option<Timestamp>,
}

impl RunDir {
    /// `validation.jsonl`.
    pub fn validation(&self) -> PathBuf {
        self.path().join("validation.jsonl")
    }
    /// Where the evaluation `name` of the checkpoint at `step` is kept.
    pub fn eval_at(&self, name: &str, step: u64) -> PathBuf {
        self.eval_dir().join(format!("{name}.step-{step}.json"))
    }
}

/// Every validation record of a run, in file order.
pub fn read_validation(run_dir: &Path) -> Result<Vec<ValidationRecord>> {
    Ok(read_jsonl(&RunDir::at(run_dir).validation())?.0)
}

/// Writes an evaluation result to `eval/<name>.step-<step>.json` (replacing an earlier one of the
/// same benchmark and checkpoint) and returns the path.
pub fn write_eval_at(run_dir: &Path, r: &EvalResult) -> Result<PathBuf> {
    let p = RunDir::at(run_dir).eval_at(&r.name, r.step);
    write_json_atomic(&p, r)?;
    Ok(p)
}

/// Every evaluation result of a run (any `eval/*.json`, whatever its file name), sorted by
/// benchmark name, then step.
pub fn read_evals(run_dir: &Path) -> Result<Vec<EvalResult>> {
    let mut out = Vec::new();
    for p in json_files(&RunDir::at(run_dir).eval_dir())? {
        if let Some(r) = read_json::<EvalResult>(&p)? {
            out.push(r);
        }
    }
    out.sort_by(|a, b| (&a.name, a.step).cmp(&(&b.name, b.step)));
    Ok(out)
}

/// Markers of the complete checkpoints of a run, by step.
pub fn read_checkpoints(run_dir: &Path) -> Result<Vec<CheckpointMarker>> {
    let dir = RunDir::at(run_dir).checkpoints();
    let mut out = Vec::new();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for e in rd {
        let p = e?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
            && let Some(m) = read_json::<CheckpointMarker>(&p.join("COMPLETE"))?
        {
            out.push(m);
        }
    }
    out.sort_by_key(|m| m.step);
    Ok(out)
}

fn json_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let p = e?.path();
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                if name.is_some_and(|n| !n.starts_with('.') && n.ends_with(".json")) {
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
    use std::collections::BTreeMap;

    #[test]
    fn evals_of_several_checkpoints_are_kept_apart_and_read_back_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for step in [20, 10] {
            let r = EvalResult {
                name: "mmlu".into(),
                step,
                metrics: BTreeMap::from([("acc".into(), step as f64 / 100.0)]),
                at: Timestamp::now(),
            };
            write_eval_at(dir.path(), &r).unwrap();
        }
        fs::write(dir.path().join("eval/notes.txt"), "x").unwrap();
        let evals = read_evals(dir.path()).unwrap();
        assert_eq!(evals.iter().map(|e| e.step).collect::<Vec<_>>(), [10, 20]);
        assert!(read_validation(dir.path()).unwrap().is_empty());
        assert!(read_checkpoints(dir.path()).unwrap().is_empty());
    }
}
