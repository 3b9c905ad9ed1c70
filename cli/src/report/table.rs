//! The paper-style table: one row per setting of the named axes (runs that differ only in other
//! settings, typically seeds, are pooled), one column per benchmark metric and per "samples to
//! peak"; each cell is the mean ± standard deviation over the row's completed runs, at the
//! checkpoint the user chose. Pure: builds from [`RunData`], renders nothing.

use super::collect::{Outcome, RunData};
use super::stats::mean_std;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Which checkpoint's score counts for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checkpoint {
    /// The last evaluated checkpoint.
    Final,
    /// The evaluated checkpoint with the lowest validation loss.
    BestValLoss,
    /// Each benchmark's best checkpoint.
    Peak,
}

impl Checkpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Checkpoint::Final => "final",
            Checkpoint::BestValLoss => "best-val-loss",
            Checkpoint::Peak => "peak",
        }
    }
}

/// A benchmark metric: evaluation `name` (file `eval/<name>.step-<n>.json`), key `metric`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MetricKey {
    pub name: String,
    pub metric: String,
}

impl MetricKey {
    /// Parses `name:metric`, or `name` alone for its `acc`.
    pub fn parse(s: &str) -> Self {
        match s.split_once(':') {
            Some((n, m)) => Self {
                name: n.into(),
                metric: m.into(),
            },
            None => Self {
                name: s.into(),
                metric: "acc".into(),
            },
        }
    }
    pub fn label(&self) -> String {
        format!("{}:{}", self.name, self.metric)
    }
}

/// How the table is laid out.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Axes whose settings make the rows (`train.<key>` or a dotted path into `config.json`).
    pub rows: Vec<String>,
    /// Benchmark columns; empty: every metric found whose key has no `/` and is no stderr.
    pub metrics: Vec<MetricKey>,
    pub checkpoint: Checkpoint,
    /// Add a "samples to peak" column per benchmark.
    pub samples_to_peak: bool,
    /// Let unfinished runs contribute their latest evaluations.
    pub include_running: bool,
}

/// What a column holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ColumnKind {
    Score,
    SamplesToPeak,
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub label: String,
    pub metric: MetricKey,
    #[serde(flatten)]
    pub kind: ColumnKind,
    /// Every value lies in [0, 1]: shown as a percentage.
    pub percent: bool,
    /// Whether the best cell is the largest (benchmarks) or none is marked (samples to peak).
    pub marks_best: bool,
}

/// Mean ± std of one column over a row's runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cell {
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// Runs that had a value.
    pub n: usize,
    pub best: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Axis name -> the setting, as text.
    pub axes: Vec<(String, String)>,
    pub run_ids: Vec<String>,
    /// Runs counted (completed, or with `include_running` also running) / runs in the row.
    pub counted: usize,
    pub total: usize,
    pub cells: Vec<Cell>,
}

/// A run left out of the table, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub run_id: String,
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub checkpoint: Checkpoint,
    pub row_axes: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    pub excluded: Vec<Excluded>,
}

/// Text of a setting: integers and strings as written, floats in the shortest round-trip form.
pub fn setting_text(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "-".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => match n.as_f64() {
            Some(f) if n.is_f64() && f != 0.0 && !(1e-3..1e6).contains(&f.abs()) => {
                format!("{f:e}")
            }
            Some(f) if n.is_f64() => format!("{f}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// Order of settings: numbers numerically, then text.
fn setting_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        _ => a.cmp(b),
    }
}

/// `(step, value)` of every evaluation of `key` in a run, by step.
pub fn series(run: &RunData, key: &MetricKey) -> Vec<(u64, f64)> {
    run.evals
        .iter()
        .filter(|e| e.name == key.name)
        .filter_map(|e| e.metrics.get(&key.metric).map(|v| (e.step, *v)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// The peak of a series: the highest value, the earliest step on a tie.
pub fn peak(s: &[(u64, f64)]) -> Option<(u64, f64)> {
    s.iter()
        .copied()
        .fold(None, |best: Option<(u64, f64)>, (st, v)| match best {
            Some((_, bv)) if bv >= v => best,
            _ => Some((st, v)),
        })
}

/// The step whose checkpoint counts for a run under `choice` (for [`Checkpoint::Peak`], the
/// benchmark's own peak).
pub fn chosen(run: &RunData, key: &MetricKey, choice: Checkpoint) -> Option<(u64, f64)> {
    let s = series(run, key);
    match choice {
        Checkpoint::Final => s.last().copied(),
        Checkpoint::Peak => peak(&s),
        Checkpoint::BestValLoss => s
            .iter()
            .filter_map(|&(st, v)| {
                let vl = run.validation.iter().rev().find(|x| x.0 == st)?.1;
                Some((vl, st, v))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, st, v)| (st, v)),
    }
}

fn default_metrics(runs: &[RunData]) -> Vec<MetricKey> {
    let mut set = BTreeSet::new();
    for r in runs {
        for e in &r.evals {
            for m in e.metrics.keys() {
                if !m.contains('/') && !m.contains("stderr") {
                    set.insert(MetricKey {
                        name: e.name.clone(),
                        metric: m.clone(),
                    });
                }
            }
        }
    }
    set.into_iter().collect()
}

/// Builds the table.
pub fn build_table(runs: &[RunData], o: &TableOptions) -> Table {
    let metrics = if o.metrics.is_empty() {
        default_metrics(runs)
    } else {
        o.metrics.clone()
    };
    let mut columns = Vec::new();
    for m in &metrics {
        columns.push(Column {
            label: m.label(),
            metric: m.clone(),
            kind: ColumnKind::Score,
            percent: false,
            marks_best: true,
        });
    }
    if o.samples_to_peak {
        for m in &metrics {
            columns.push(Column {
                label: format!("samples to peak ({})", m.label()),
                metric: m.clone(),
                kind: ColumnKind::SamplesToPeak,
                percent: false,
                marks_best: false,
            });
        }
    }
    let counts = |r: &RunData| {
        r.outcome == Outcome::Completed || (o.include_running && r.outcome == Outcome::Running)
    };
    let mut groups: BTreeMap<Vec<String>, Vec<&RunData>> = BTreeMap::new();
    let mut excluded = Vec::new();
    for r in runs {
        // A run never submitted has no configuration to place it in a row; it is only listed.
        if !r.config.is_null() {
            let key: Vec<String> = o.rows.iter().map(|a| setting_text(r.setting(a))).collect();
            groups.entry(key).or_default().push(r);
        }
        if !counts(r) {
            let detail = match r.outcome {
                Outcome::Running => format!(
                    "step {}, {} samples seen",
                    r.metrics.last().map_or(0, |m| m.step),
                    r.samples_seen()
                ),
                Outcome::Failed | Outcome::Diverged => r.message.clone().unwrap_or_default(),
                _ => String::new(),
            };
            excluded.push(Excluded {
                run_id: r.run_id.clone(),
                name: r.name.clone(),
                outcome: r.outcome,
                detail,
            });
        }
    }
    let mut keys: Vec<Vec<String>> = groups.keys().cloned().collect();
    keys.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| setting_order(x, y))
            .find(|c| c.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut all_values: Vec<Vec<f64>> = vec![Vec::new(); columns.len()];
    let mut rows = Vec::new();
    for k in keys {
        let members = &groups[&k];
        let counted: Vec<&RunData> = members.iter().copied().filter(|r| counts(r)).collect();
        let mut cells = Vec::new();
        for (ci, c) in columns.iter().enumerate() {
            let vals: Vec<f64> = counted
                .iter()
                .filter_map(|r| match c.kind {
                    ColumnKind::Score => chosen(r, &c.metric, o.checkpoint).map(|x| x.1),
                    ColumnKind::SamplesToPeak => {
                        let (st, _) = peak(&series(r, &c.metric))?;
                        r.samples_at(st).map(|s| s as f64)
                    }
                })
                .collect();
            all_values[ci].extend(&vals);
            let (mean, std) = mean_std(&vals);
            cells.push(Cell {
                mean,
                std,
                n: vals.len(),
                best: false,
            });
        }
        rows.push(Row {
            axes: o.rows.iter().cloned().zip(k).collect(),
            run_ids: members.iter().map(|r| r.run_id.clone()).collect(),
            counted: counted.len(),
            total: members.len(),
            cells,
        });
    }
    for (ci, c) in columns.iter_mut().enumerate() {
        c.percent = c.kind == ColumnKind::Score
            && !all_values[ci].is_empty()
            && all_values[ci].iter().all(|v| (0.0..=1.0).contains(v));
        if c.marks_best {
            let best = rows
                .iter()
                .filter_map(|r| r.cells[ci].mean)
                .fold(f64::NEG_INFINITY, f64::max);
            for r in &mut rows {
                r.cells[ci].best = r.cells[ci].mean == Some(best);
            }
        }
    }
    Table {
        checkpoint: o.checkpoint,
        row_axes: o.rows.clone(),
        columns,
        rows,
        excluded,
    }
}
