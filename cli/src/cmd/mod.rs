//! One file per subcommand: each turns checked arguments into calls of library code.

pub mod cancel;
pub mod data;
pub mod doctor;
pub mod import;
pub mod local;
pub mod logs;
pub mod plan;
pub mod prune;
pub mod report;
pub mod status;
pub mod submit;

use crate::UserError;
use sftctl_ledger::{Ledger, SweepDir};
use std::path::{Path, PathBuf};

/// A sweep named on the command line: a spec file, or a sweep name in `--ledger`.
pub struct SweepRef {
    pub dir: SweepDir,
    pub ledger: Ledger,
    pub stale_after_s: f64,
}

/// Resolves `target` (spec path or sweep name) to a sweep directory.
pub fn resolve_sweep(target: &str, ledger: &Path) -> anyhow::Result<Option<SweepRef>> {
    let p = PathBuf::from(target);
    if target.ends_with(".toml") && p.is_file() {
        let spec = crate::spec::Spec::load(&p)?;
        let root = std::path::absolute(&spec.ledger)?;
        let l = Ledger::at(root);
        return Ok(Some(SweepRef {
            dir: l.sweep(&spec.name),
            ledger: l,
            stale_after_s: spec.stale_after_s as f64,
        }));
    }
    let l = Ledger::at(ledger);
    if l.sweeps()?.iter().any(|s| s == target) {
        let stale_after_s = stale_from_spec(&l.sweep(target));
        return Ok(Some(SweepRef {
            dir: l.sweep(target),
            ledger: l,
            stale_after_s,
        }));
    }
    Ok(None)
}

/// The heartbeat threshold from the spec kept in the sweep's directory (600 s if unreadable).
pub fn stale_from_spec(dir: &SweepDir) -> f64 {
    let p = dir.path().join("spec.toml");
    fs_err::read_to_string(&p)
        .ok()
        .and_then(|t| crate::spec::Spec::parse(&p, t).ok())
        .map_or(600.0, |s| s.stale_after_s as f64)
}

/// Finds a run by id, id prefix or name across the sweeps of a ledger.
pub fn find_run(ledger: &Ledger, key: &str) -> anyhow::Result<(SweepDir, String)> {
    let mut hits = Vec::new();
    for s in ledger.sweeps()? {
        let dir = ledger.sweep(&s);
        for id in dir.run_ids()? {
            let by_id = id.starts_with(key);
            let by_name = !by_id
                && dir
                    .run(&id)
                    .read_run()?
                    .is_some_and(|r| r.name == key || format!("{}/{}", s, r.name) == key);
            if by_id || by_name {
                hits.push((dir.clone(), id));
            }
        }
    }
    match hits.len() {
        1 => Ok(hits.pop().expect("one hit")),
        0 => Err(UserError(format!(
            "no run `{key}` in the ledger `{}`",
            ledger.root().display()
        ))
        .into()),
        n => Err(UserError(format!("`{key}` matches {n} runs; give more of the run id")).into()),
    }
}
