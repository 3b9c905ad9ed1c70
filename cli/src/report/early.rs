//! Early dynamics: statistics of the first S samples seen (a window in samples, not steps, since
//! batch sizes differ many-fold), their Spearman correlation with a final metric over finished
//! runs, and the ranking of points by a predictor (the paper's rule: lower early gradient norm
//! and higher early loss rank higher; or a linear fit of the final metric on both statistics over
//! finished runs). `prune` cancels from the bottom of this ranking.

use super::collect::{Outcome, RunData};
use super::stats::{RhoInterval, ranks, spearman_bootstrap};
use super::table::{Checkpoint, MetricKey, chosen};
use serde::Serialize;

/// Mean gradient norm and mean loss over the steps whose samples seen are at most the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EarlyStats {
    pub mean_grad_norm: f64,
    pub mean_loss: f64,
    pub steps: usize,
}

/// The run's early statistics, once it has seen at least `window` samples.
pub fn early_stats(run: &RunData, window: u64) -> Option<EarlyStats> {
    if run.samples_seen() < window {
        return None;
    }
    let early: Vec<_> = run
        .metrics
        .iter()
        .take_while(|m| m.samples_seen <= window)
        .collect();
    if early.is_empty() {
        return None;
    }
    let n = early.len() as f64;
    Some(EarlyStats {
        mean_grad_norm: early.iter().map(|m| m.grad_norm).sum::<f64>() / n,
        mean_loss: early.iter().map(|m| m.loss).sum::<f64>() / n,
        steps: early.len(),
    })
}

/// How points are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Predictor {
    /// Lower early gradient norm and higher early loss: the mean of the two ranks.
    Paper,
    /// Lower early gradient norm ranks higher.
    GradNorm,
    /// Higher early loss ranks higher.
    Loss,
    /// The final metric predicted by a [`Fit`] over finished runs; higher ranks higher.
    Fitted,
}

impl Predictor {
    pub fn as_str(self) -> &'static str {
        match self {
            Predictor::Paper => "paper",
            Predictor::GradNorm => "grad-norm",
            Predictor::Loss => "loss",
            Predictor::Fitted => "fitted",
        }
    }
}

/// A least-squares fit `metric ≈ intercept + grad_norm_coef × mean_grad_norm + loss_coef ×
/// mean_loss` of a final metric on the early statistics of finished runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    /// The metric fitted (`name:metric`).
    pub metric: String,
    pub intercept: f64,
    pub grad_norm_coef: f64,
    pub loss_coef: f64,
    /// Finished runs it was fitted on.
    pub n: usize,
    /// Coefficient of determination on those runs.
    pub r2: f64,
}

impl Fit {
    /// The predicted metric for early statistics `s`.
    pub fn predict(&self, s: &EarlyStats) -> f64 {
        self.intercept + self.grad_norm_coef * s.mean_grad_norm + self.loss_coef * s.mean_loss
    }
}

/// Fits `metric` (at `checkpoint`) on the early statistics of the completed runs of `runs` that
/// have both. Needs at least four such runs whose statistics are not collinear.
pub fn fit(
    runs: &[&RunData],
    window: u64,
    metric: &MetricKey,
    checkpoint: Checkpoint,
) -> Result<Fit, String> {
    let rows: Vec<(f64, f64, f64)> = runs
        .iter()
        .filter(|r| r.outcome == Outcome::Completed)
        .filter_map(|r| {
            let s = early_stats(r, window)?;
            let (_, y) = chosen(r, metric, checkpoint)?;
            Some((s.mean_grad_norm, s.mean_loss, y))
        })
        .filter(|(g, l, y)| g.is_finite() && l.is_finite() && y.is_finite())
        .collect();
    let n = rows.len();
    if n < 4 {
        return Err(format!(
            "a fitted predictor needs at least 4 finished runs with `{}` and {window} samples of \
             metrics; found {n}",
            metric.label()
        ));
    }
    // Centred normal equations of the two slopes, then the intercept.
    let nf = n as f64;
    let (mg, ml, my) = rows.iter().fold((0.0, 0.0, 0.0), |a, r| {
        (a.0 + r.0 / nf, a.1 + r.1 / nf, a.2 + r.2 / nf)
    });
    let (mut sgg, mut sll, mut sgl, mut sgy, mut sly, mut syy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for &(g, l, y) in &rows {
        let (g, l, y) = (g - mg, l - ml, y - my);
        sgg += g * g;
        sll += l * l;
        sgl += g * l;
        sgy += g * y;
        sly += l * y;
        syy += y * y;
    }
    let det = sgg * sll - sgl * sgl;
    if det.abs() <= 1e-12 * (sgg * sll).max(f64::MIN_POSITIVE) {
        return Err(format!(
            "the early gradient norm and loss of the {n} finished runs are collinear (or \
             constant): nothing to fit `{}` on",
            metric.label()
        ));
    }
    let b = (sgy * sll - sly * sgl) / det;
    let c = (sly * sgg - sgy * sgl) / det;
    let a = my - b * mg - c * ml;
    let sse: f64 = rows
        .iter()
        .map(|&(g, l, y)| (y - (a + b * g + c * l)).powi(2))
        .sum();
    Ok(Fit {
        metric: metric.label(),
        intercept: a,
        grad_norm_coef: b,
        loss_coef: c,
        n,
        r2: if syy > 0.0 { 1.0 - sse / syy } else { 1.0 },
    })
}

/// One ranked point.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    pub rank: usize,
    pub run_id: String,
    pub name: String,
    pub outcome: Outcome,
    #[serde(flatten)]
    pub early: EarlyStats,
    /// Predicted quality (higher is better), comparable only within one ranking.
    pub score: f64,
}

/// Ranks the runs that have reached the window, best predicted first; also returns the ids of
/// those that have not (they cannot be ranked yet). [`Predictor::Fitted`] needs `fit`.
pub fn rank_runs(
    runs: &[&RunData],
    window: u64,
    p: Predictor,
    fit: Option<&Fit>,
) -> (Vec<Ranked>, Vec<String>) {
    let mut ready = Vec::new();
    let mut waiting = Vec::new();
    for r in runs {
        match early_stats(r, window) {
            Some(s) => ready.push((*r, s)),
            None => waiting.push(r.run_id.clone()),
        }
    }
    let neg_g: Vec<f64> = ready.iter().map(|(_, s)| -s.mean_grad_norm).collect();
    let loss: Vec<f64> = ready.iter().map(|(_, s)| s.mean_loss).collect();
    let n = ready.len().max(1) as f64;
    let score: Vec<f64> = match p {
        Predictor::GradNorm => neg_g.clone(),
        Predictor::Loss => loss.clone(),
        Predictor::Fitted => ready
            .iter()
            .map(|(_, s)| fit.map_or(f64::NAN, |f| f.predict(s)))
            .collect(),
        Predictor::Paper => ranks(&neg_g)
            .iter()
            .zip(ranks(&loss))
            .map(|(a, b)| (a + b) / (2.0 * n))
            .collect(),
    };
    let mut order: Vec<usize> = (0..ready.len()).collect();
    // Best first; ties go to the lower gradient norm, then the run id, so the order is stable.
    order.sort_by(|&a, &b| {
        score[b]
            .total_cmp(&score[a])
            .then(neg_g[b].total_cmp(&neg_g[a]))
            .then(ready[a].0.run_id.cmp(&ready[b].0.run_id))
    });
    let ranked = order
        .iter()
        .enumerate()
        .map(|(i, &k)| Ranked {
            rank: i + 1,
            run_id: ready[k].0.run_id.clone(),
            name: ready[k].0.name.clone(),
            outcome: ready[k].0.outcome,
            early: ready[k].1,
            score: score[k],
        })
        .collect();
    (ranked, waiting)
}

/// Correlation of one early statistic with the final metric.
#[derive(Debug, Clone, Serialize)]
pub struct Correlation {
    pub statistic: &'static str,
    pub metric: String,
    pub interval: Option<RhoInterval>,
}

/// Spearman's rho (95 % bootstrap interval, 2,000 resamples, fixed seed) between each early
/// statistic and `metric` at `checkpoint`, over completed runs that have both.
pub fn correlations(
    runs: &[RunData],
    window: u64,
    metric: &MetricKey,
    checkpoint: Checkpoint,
) -> Vec<Correlation> {
    let mut g = Vec::new();
    let mut l = Vec::new();
    let mut y = Vec::new();
    for r in runs.iter().filter(|r| r.outcome == Outcome::Completed) {
        if let (Some(s), Some((_, v))) = (early_stats(r, window), chosen(r, metric, checkpoint)) {
            g.push(s.mean_grad_norm);
            l.push(s.mean_loss);
            y.push(v);
        }
    }
    [("mean_grad_norm", &g), ("mean_loss", &l)]
        .into_iter()
        .map(|(statistic, x)| Correlation {
            statistic,
            metric: metric.label(),
            interval: spearman_bootstrap(x, &y, 2000, 0.95, 0x005f_7c71),
        })
        .collect()
}

/// Text for the terminal: correlations, then the ranking with the cut after `keep` if given.
#[allow(clippy::too_many_arguments)]
pub fn text(
    window: u64,
    p: Predictor,
    fit: Option<&Fit>,
    corr: &[Correlation],
    ranked: &[Ranked],
    waiting: &[String],
    keep: Option<usize>,
) -> String {
    let mut out = format!("early window: first {window} samples seen\n");
    for c in corr {
        match &c.interval {
            Some(i) => out.push_str(&format!(
                "spearman({}, {}) = {:.3}  95% CI [{:.3}, {:.3}]  n={}\n",
                c.statistic, c.metric, i.rho, i.lo, i.hi, i.n
            )),
            None => out.push_str(&format!(
                "spearman({}, {}): too few finished runs with both values\n",
                c.statistic, c.metric
            )),
        }
    }
    out.push_str(&format!("ranking by predictor `{}`:\n", p.as_str()));
    if let Some(f) = fit {
        out.push_str(&format!(
            "fitted on {} finished run(s): {} = {:.4} {:+.4} x grad_norm {:+.4} x loss (R^2 {:.3})\n",
            f.n, f.metric, f.intercept, f.grad_norm_coef, f.loss_coef, f.r2
        ));
    }
    out.push_str(&format!(
        "{:>4}  {:<12}  {:<28}  {:>9}  {:>10}  {:>8}  {}\n",
        "rank", "run", "name", "state", "grad_norm", "loss", "action"
    ));
    for r in ranked {
        let action = match keep {
            Some(k) if r.rank > k => "cancel",
            Some(_) => "keep",
            None => "",
        };
        out.push_str(
            format!(
                "{:>4}  {:<12}  {:<28}  {:>9}  {:>10.4}  {:>8.4}  {}",
                r.rank,
                r.run_id,
                r.name,
                r.outcome.as_str(),
                r.early.mean_grad_norm,
                r.early.mean_loss,
                action
            )
            .trim_end(),
        );
        out.push('\n');
    }
    for w in waiting {
        out.push_str(&format!(
            "not ranked yet (fewer than {window} samples): {w}\n"
        ));
    }
    out
}
