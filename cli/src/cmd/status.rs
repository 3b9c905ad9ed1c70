//! `sftctl status`: a table (or JSON) of each run's state, progress and Slurm's reason.

use crate::args::StatusArgs;
use crate::cmd::{SweepRef, resolve_sweep, stale_from_spec};
use crate::status::{EvalState, EvalStatus, RunState, RunStatus, collect, reconcile};
use crate::user_err;
use sftctl_ledger::{Claim, Ledger};
use sftctl_slurm::Slurm;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn fmt_eta(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s >= 3600.0 => format!("{:.1}h", s / 3600.0),
        Some(s) if s >= 60.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{s:.0}s"),
    }
}

/// The evaluation jobs of a run in a few characters: `-`, `2 done`, `1 done,1 failed`.
fn eval_summary(evals: &[EvalStatus]) -> String {
    if evals.is_empty() {
        return "-".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in evals {
        *counts.entry(e.state.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Statuses of one sweep; reconciles leftover intents when no submit holds the sweep.
pub fn sweep_status(sw: &SweepRef, slurm: &Slurm) -> anyhow::Result<(Vec<RunStatus>, bool)> {
    // Reconcile only an existing sweep (status must not create one) that no submit holds.
    if sw.dir.path().join("sweep.json").exists()
        && let Ok(Some(_c)) = Claim::try_acquire(&sw.dir.lock_path(), Duration::from_secs(600))
    {
        reconcile(&sw.dir, slurm)?;
    }
    let ids = sw.dir.read_sweep()?.map(|r| r.runs).unwrap_or_default();
    let (st, view) = collect(&sw.dir, &ids, slurm, sw.stale_after_s)?;
    Ok((st, view.accounting_disabled))
}

pub fn run(a: &StatusArgs) -> anyhow::Result<()> {
    let slurm = Slurm::from_env();
    let sweeps: Vec<SweepRef> = match &a.sweep {
        Some(t) => match resolve_sweep(t, &a.ledger.ledger)? {
            Some(s) => vec![s],
            None => {
                return user_err(format!(
                    "no sweep `{t}` (neither a spec file nor a sweep in ledger `{}`)",
                    a.ledger.ledger.display()
                ));
            }
        },
        None => {
            let l = Ledger::at(&a.ledger.ledger);
            l.sweeps()?
                .into_iter()
                .map(|n| SweepRef {
                    dir: l.sweep(&n),
                    ledger: l.clone(),
                    stale_after_s: stale_from_spec(&l.sweep(&n)),
                })
                .collect()
        }
    };
    loop {
        let mut all_final = true;
        let mut docs = Vec::new();
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for sw in &sweeps {
            let (st, no_acct) = sweep_status(sw, &slurm)?;
            all_final &= st.iter().all(|s| {
                (s.state.is_final() || s.state == RunState::Unsubmitted)
                    && s.evals
                        .iter()
                        .all(|e| e.state.is_final() || e.state == EvalState::Unsubmitted)
            });
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for s in &st {
                *counts.entry(s.state.as_str()).or_default() += 1;
            }
            if a.json {
                docs.push(serde_json::json!({
                    "sweep": sw.dir.name(), "accounting": if no_acct { "disabled" } else { "enabled" },
                    "counts": counts, "runs": st,
                }));
                continue;
            }
            writeln!(
                out,
                "sweep {}  ({})",
                sw.dir.name(),
                counts
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
            writeln!(
                out,
                "{:<12} {:<24} {:<11} {:<14} {:>15} {:>8} {:>7} {:>9} {:>6}  {:<14} REASON",
                "RUN", "NAME", "STATE", "JOB", "SAMPLES", "LOSS", "GNORM", "TOK/S", "ETA", "EVALS"
            )?;
            for s in &st {
                let progress = match (s.samples_seen, s.total_samples) {
                    (Some(a), Some(t)) => format!("{a}/{t}"),
                    (Some(a), None) => a.to_string(),
                    _ => "-".into(),
                };
                let failed_evals: Vec<String> = s
                    .evals
                    .iter()
                    .filter(|e| e.state == EvalState::Failed)
                    .map(|e| {
                        format!(
                            "evaluation `{}` failed (job {})",
                            e.name,
                            e.job_id.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                // A finished run's reason is its failed evaluations, if any.
                let reason = if s.state.is_final() && !failed_evals.is_empty() {
                    failed_evals.join("; ")
                } else {
                    s.reason
                        .clone()
                        .or_else(|| s.error.clone())
                        .unwrap_or_default()
                };
                let slurm_note = match (&s.slurm_state, s.state) {
                    (Some(raw), RunState::Cancelled) if raw.contains(" by ") => format!(" [{raw}]"),
                    _ => String::new(),
                };
                let mut name = s.name.clone();
                if name.chars().count() > 24 {
                    name = name.chars().take(23).collect::<String>() + "…";
                }
                writeln!(
                    out,
                    "{:<12} {:<24} {:<11} {:<14} {:>15} {:>8} {:>7} {:>9} {:>6}  {:<14} {reason}{slurm_note}",
                    s.run_id,
                    name,
                    s.state.as_str(),
                    fmt_opt(s.job_id.as_deref()),
                    progress,
                    s.loss.map_or("-".into(), |l| format!("{l:.4}")),
                    s.grad_norm.map_or("-".into(), |g| format!("{g:.3}")),
                    s.tokens_per_s.map_or("-".into(), |t| format!("{t:.0}")),
                    fmt_eta(s.eta_s),
                    eval_summary(&s.evals),
                )?;
            }
            if no_acct {
                writeln!(
                    out,
                    "note: Slurm accounting is disabled; jobs squeue has forgotten are judged from the ledger"
                )?;
            }
        }
        if a.json {
            let doc = if docs.len() == 1 {
                docs.pop().expect("one")
            } else {
                serde_json::Value::Array(docs)
            };
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        out.flush()?;
        if !a.watch || all_final {
            return Ok(());
        }
        std::thread::sleep(Duration::from_secs(a.interval.max(1)));
        if !a.json {
            eprintln!("---");
        }
    }
}
