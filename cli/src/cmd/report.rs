//! `sftctl report SWEEP`: the results table (or, with `--early`, the early-dynamics ranking) from
//! the ledger alone. The table goes to stdout; runs left out of it are listed on stderr.

use crate::args::{CheckpointArg, FitArgs, PredictorArg, ReportArgs, ReportFormat};
use crate::cmd::{SweepRef, resolve_sweep};
use crate::report::early::{self, Predictor};
use crate::report::plot::{self, Curve, Series, group_series, run_series};
use crate::report::render::{Format, excluded_text, render};
use crate::report::table::MetricKey;
use crate::report::{Checkpoint, Outcome, RunData, TableOptions, build_table, collect_sweep};
use crate::report::{Table, html};
use crate::user_err;
use std::io::Write;
use std::path::Path;

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
        let p = predictor(a.predictor);
        let fit = match p {
            Predictor::Fitted => Some(fitted(
                &a.fit,
                &runs,
                window,
                opts.checkpoint,
                &a.ledger.ledger,
            )?),
            _ => None,
        };
        let text = early_report(&runs, &opts, window, p, fit.as_ref(), a.format)?;
        out.write_all(text.as_bytes())?;
        return Ok(());
    }
    let t = build_table(&runs, &opts);
    out.write_all(render(&t, format(a.format)).as_bytes())?;
    if a.format != ReportFormat::Json {
        eprint!("{}", excluded_text(&t));
    }
    if let Some(dir) = &a.plots {
        let n = write_plots(dir, &runs, &t)?;
        eprintln!("sftctl: wrote {n} charts to {}", dir.display());
    }
    if let Some(file) = &a.html {
        let sections = html_sections(&runs, &t)?;
        let page = html::page(sweep.dir.name(), &t, &excluded_text(&t), None, &sections);
        fs_err::write(file, page)?;
        eprintln!("sftctl: wrote {}", file.display());
    }
    Ok(())
}

/// Row label and runs of each table row.
fn groups<'a>(runs: &'a [RunData], t: &Table) -> Vec<(String, Vec<&'a RunData>)> {
    t.rows
        .iter()
        .map(|r| {
            let label = r
                .axes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let members = runs
                .iter()
                .filter(|x| r.run_ids.contains(&x.run_id))
                .collect();
            (label, members)
        })
        .collect()
}

const SIZE: (u32, u32) = (900, 520);

/// Charts per group, over all runs, and per run: `<curve>.groups`, `<curve>.runs`,
/// `runs/<run id>.<curve>`, each as `.svg` and `.png`. Returns how many files were written.
fn write_plots(dir: &Path, runs: &[RunData], t: &Table) -> anyhow::Result<usize> {
    fs_err::create_dir_all(dir.join("runs"))?;
    let all: Vec<&RunData> = runs.iter().collect();
    let g = groups(runs, t);
    let mut charts: Vec<(std::path::PathBuf, String, Curve, Vec<Series>)> = Vec::new();
    for c in [Curve::Loss, Curve::GradNorm] {
        charts.push((
            dir.join(format!("{}.groups", c.name())),
            format!("{} per group", c.name()),
            c,
            group_series(&g, c),
        ));
        charts.push((
            dir.join(format!("{}.runs", c.name())),
            format!("{} per run", c.name()),
            c,
            run_series(&all, c),
        ));
        for r in &all {
            if !r.metrics.is_empty() {
                charts.push((
                    dir.join("runs").join(format!("{}.{}", r.run_id, c.name())),
                    format!("{} {}", r.name, c.name()),
                    c,
                    run_series(&[r], c),
                ));
            }
        }
    }
    let mut n = 0;
    for (base, title, c, series) in &charts {
        let svg = plot::svg(title, *c, series, SIZE).map_err(anyhow::Error::msg)?;
        fs_err::write(base.with_extension(format!("{}.svg", ext_of(base))), svg)?;
        plot::png(
            &base.with_extension(format!("{}.png", ext_of(base))),
            title,
            *c,
            series,
            SIZE,
        )
        .map_err(anyhow::Error::msg)?;
        n += 2;
    }
    Ok(n)
}

/// The part of a chart's base name after its first dot (`loss.groups` -> `groups`).
fn ext_of(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn html_sections(runs: &[RunData], t: &Table) -> anyhow::Result<Vec<(String, String)>> {
    let all: Vec<&RunData> = runs.iter().collect();
    let g = groups(runs, t);
    let mut out = Vec::new();
    for c in [Curve::Loss, Curve::GradNorm] {
        for (title, series) in [
            (
                format!("{} per group (mean of the row's runs)", c.name()),
                group_series(&g, c),
            ),
            (format!("{} per run", c.name()), run_series(&all, c)),
        ] {
            out.push((
                title.clone(),
                plot::svg(&title, c, &series, SIZE).map_err(anyhow::Error::msg)?,
            ));
        }
    }
    Ok(out)
}

/// The early-dynamics report: correlations over finished runs, and the ranking of the running
/// points (of every point when none is running).
pub fn early_report(
    runs: &[RunData],
    opts: &TableOptions,
    window: u64,
    p: Predictor,
    fit: Option<&early::Fit>,
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
    let (ranked, waiting) = early::rank_runs(&pool, window, p, fit);
    Ok(if f == ReportFormat::Json {
        let mut s = serde_json::to_string_pretty(&serde_json::json!({
            "window_samples": window,
            "predictor": p,
            "fit": fit,
            "correlations": corr,
            "ranking": ranked,
            "not_ranked": waiting,
        }))?;
        s.push('\n');
        s
    } else {
        early::text(window, p, fit, &corr, &ranked, &waiting, None)
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
        PredictorArg::Fitted => Predictor::Fitted,
    }
}

/// The `fitted` predictor: fitted on the finished runs of the `--fit-from` sweeps (default: of
/// `own`), for `--fit-metric` (default: the first benchmark those runs have).
pub fn fitted(
    a: &FitArgs,
    own: &[RunData],
    window: u64,
    checkpoint: Checkpoint,
    ledger: &Path,
) -> anyhow::Result<early::Fit> {
    let mut loaded = Vec::new();
    for s in &a.fit_from {
        loaded.extend(collect_sweep(&sweep(s, ledger)?.dir)?);
    }
    let pool: Vec<&RunData> = if a.fit_from.is_empty() {
        own.iter().collect()
    } else {
        loaded.iter().collect()
    };
    let metric = match &a.fit_metric {
        Some(m) => MetricKey::parse(m),
        None => {
            let finished: Vec<RunData> = pool
                .iter()
                .filter(|r| r.outcome == Outcome::Completed)
                .map(|r| (*r).clone())
                .collect();
            let t = build_table(
                &finished,
                &TableOptions {
                    rows: Vec::new(),
                    metrics: Vec::new(),
                    checkpoint,
                    samples_to_peak: false,
                    include_running: false,
                },
            );
            match t.columns.first() {
                Some(c) => c.metric.clone(),
                None => {
                    return user_err(
                        "the fitted predictor found no evaluated finished run to learn from \
                         (evaluate finished runs, or name other sweeps with --fit-from)",
                    );
                }
            }
        }
    };
    early::fit(&pool, window, &metric, checkpoint).or_else(user_err)
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
