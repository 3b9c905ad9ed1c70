//! `sftctl report SWEEP`: the results table (or, with `--early`, the early-dynamics ranking) from
//! the ledger alone. The table goes to stdout; runs left out of it are listed on stderr.

use crate::args::{CheckpointArg, PredictorArg, ReportArgs, ReportFormat};
use crate::cmd::{SweepRef, resolve_sweep};
use crate::report::early::{self, Predictor};
use crate::report::render::{Format, excluded_text, render};
use crate::report::table::MetricKey;
use crate::report::{Checkpoint, Outcome, RunData, TableOptions, build_table, collect_sweep};
use crate::user_err;
use std::io::Write;

pub fn run(a: &ReportArgs) -> anyhow::Result<()> {
    let sweep = sweep(&a.sweep, &a.ledger.ledger)?;
    let runs = collect_sweep(&sweep.dir)?;
    let opts = TableOptions {
        rows: a.rows.clone(),
        metrics: a.metrics.iter().map(|m| MetricKey::parse(m)).collect(),
        checkpoint: checkpoint(a.checkpoint),
        samples_to_peak: !a.no_samples_to_peak,
        include_running: a.include_running,
    };
    let mut out = std::io::stdout().lock();
    if let Some(window) = a.early {
        let text = early_report(&runs, &opts, window, predictor(a.predictor), a.format)?;
        out.write_all(text.as_bytes())?;
        return Ok(());
    }
    let t = build_table(&runs, &opts);
    out.write_all(render(&t, format(a.format)).as_bytes())?;
    if a.format != ReportFormat::Json {
        eprint!("{}", excluded_text(&t));
    }
    Ok(())
}

/// The early-dynamics report: correlations over finished runs, and the ranking of the running
/// points (of every point when none is running).
pub fn early_report(
    runs: &[RunData],
    opts: &TableOptions,
    window: u64,
    p: Predictor,
    f: ReportFormat,
) -> anyhow::Result<String> {
    let t = build_table(runs, opts);
    let corr = match t.columns.first() {
        Some(c) => early::correlations(runs, window, &c.metric, opts.checkpoint),
        None => Vec::new(),
    };
    let running: Vec<&RunData> = runs
        .iter()
        .filter(|r| r.outcome == Outcome::Running)
        .collect();
    let pool = if running.is_empty() {
        runs.iter().collect()
    } else {
        running
    };
    let (ranked, waiting) = early::rank_runs(&pool, window, p);
    Ok(if f == ReportFormat::Json {
        let mut s = serde_json::to_string_pretty(&serde_json::json!({
            "window_samples": window,
            "predictor": p,
            "correlations": corr,
            "ranking": ranked,
            "not_ranked": waiting,
        }))?;
        s.push('\n');
        s
    } else {
        early::text(window, p, &corr, &ranked, &waiting, None)
    })
}

/// Resolves a sweep argument or fails with a user error.
pub fn sweep(target: &str, ledger: &std::path::Path) -> anyhow::Result<SweepRef> {
    match resolve_sweep(target, ledger)? {
        Some(s) => Ok(s),
        None => user_err(format!(
            "no sweep `{target}` in the ledger `{}`",
            ledger.display()
        )),
    }
}

pub fn checkpoint(c: CheckpointArg) -> Checkpoint {
    match c {
        CheckpointArg::Final => Checkpoint::Final,
        CheckpointArg::BestValLoss => Checkpoint::BestValLoss,
        CheckpointArg::Peak => Checkpoint::Peak,
    }
}

pub fn predictor(p: PredictorArg) -> Predictor {
    match p {
        PredictorArg::Paper => Predictor::Paper,
        PredictorArg::GradNorm => Predictor::GradNorm,
        PredictorArg::Loss => Predictor::Loss,
    }
}

fn format(f: ReportFormat) -> Format {
    match f {
        ReportFormat::Terminal => Format::Terminal,
        ReportFormat::Markdown => Format::Markdown,
        ReportFormat::Latex => Format::Latex,
        ReportFormat::Csv => Format::Csv,
        ReportFormat::Json => Format::Json,
    }
}
