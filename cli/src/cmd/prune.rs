//! `sftctl prune SWEEP --after S --keep K`: ranks the running points by their early dynamics
//! and cancels all but the best K through `sftctl cancel`'s path. A dry run unless `--yes`.

use crate::args::{CancelArgs, LedgerArg, PruneArgs};
use crate::cmd::report::{checkpoint, fitted, predictor, sweep};
use crate::report::early::{Predictor, rank_runs, text};
use crate::report::{Outcome, RunData, collect_sweep};
use serde_json::json;

pub fn run(a: &PruneArgs) -> anyhow::Result<()> {
    let sw = sweep(&a.sweep, &a.ledger.ledger)?;
    let runs = collect_sweep(&sw.dir)?;
    let running: Vec<&RunData> = runs
        .iter()
        .filter(|r| r.outcome == Outcome::Running)
        .collect();
    let p = predictor(a.predictor);
    let fit = match p {
        Predictor::Fitted => Some(fitted(
            &a.fit,
            &runs,
            a.after,
            checkpoint(a.checkpoint),
            &a.ledger.ledger,
        )?),
        _ => None,
    };
    let (ranked, waiting) = rank_runs(&running, a.after, p, fit.as_ref());
    let cancel: Vec<String> = ranked
        .iter()
        .filter(|r| r.rank > a.keep)
        .map(|r| r.run_id.clone())
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "window_samples": a.after,
                "predictor": p,
                "fit": fit,
                "keep": a.keep,
                "ranking": ranked,
                "not_ranked": waiting,
                "cancel": cancel,
                "dry_run": !a.yes,
            }))?
        );
    } else {
        print!(
            "{}",
            text(
                a.after,
                p,
                fit.as_ref(),
                &[],
                &ranked,
                &waiting,
                Some(a.keep)
            )
        );
    }
    if cancel.is_empty() {
        eprintln!("sftctl: nothing to cancel");
        return Ok(());
    }
    if !a.yes {
        eprintln!(
            "sftctl: dry run; `--yes` cancels {} run(s): {}",
            cancel.len(),
            cancel.join(" ")
        );
        return Ok(());
    }
    crate::cmd::cancel::run(&CancelArgs {
        targets: cancel,
        ledger: LedgerArg {
            ledger: sw.ledger.root().to_owned(),
        },
    })
}
