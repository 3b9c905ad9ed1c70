//! Small statistics for the report: mean and sample standard deviation, average ranks,
//! Spearman's rho and a percentile bootstrap interval with a seeded generator (so a report is
//! reproducible).

/// Mean and sample standard deviation (`None` below two values).
pub fn mean_std(xs: &[f64]) -> (Option<f64>, Option<f64>) {
    if xs.is_empty() {
        return (None, None);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (Some(mean), None);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (Some(mean), Some(var.sqrt()))
}

/// Ranks 1..=n, ties sharing their average rank.
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation; `None` when either side is constant or there are fewer than 2 pairs.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 2 || x.len() != y.len() {
        return None;
    }
    let (mx, _) = mean_std(x);
    let (my, _) = mean_std(y);
    let (mx, my) = (mx?, my?);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman's rho: Pearson correlation of the average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    pearson(&ranks(x), &ranks(y))
}

/// SplitMix64: a tiny, well-mixed generator; enough for resampling indices.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Spearman's rho with a percentile bootstrap interval at `level` (e.g. 0.95): pairs are
/// resampled with replacement `resamples` times; resamples where rho is undefined (all ties)
/// are skipped.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RhoInterval {
    pub rho: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

pub fn spearman_bootstrap(
    x: &[f64],
    y: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<RhoInterval> {
    let rho = spearman(x, y)?;
    let n = x.len();
    let mut rng = SplitMix64(seed);
    let mut rhos = Vec::with_capacity(resamples);
    let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..resamples {
        for i in 0..n {
            let k = rng.below(n);
            bx[i] = x[k];
            by[i] = y[k];
        }
        if let Some(r) = spearman(&bx, &by) {
            rhos.push(r);
        }
    }
    if rhos.is_empty() {
        return Some(RhoInterval {
            rho,
            lo: f64::NAN,
            hi: f64::NAN,
            n,
        });
    }
    rhos.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (rhos.len() - 1) as f64;
        let (i, f) = (pos.floor() as usize, pos.fract());
        let j = (i + 1).min(rhos.len() - 1);
        rhos[i] * (1.0 - f) + rhos[j] * f
    };
    let alpha = (1.0 - level) / 2.0;
    Some(RhoInterval {
        rho,
        lo: q(alpha),
        hi: q(1.0 - alpha),
        n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_cases() {
        // (x, y, rho) — values from pandas: Series.rank() then Pearson corr().
        let cases: &[(&[f64], &[f64], f64)] = &[
            (
                &[1., 2., 3., 4., 5.],
                &[5., 6., 7., 8., 7.],
                0.820_782_681_668_123_3,
            ),
            (&[1., 2., 3.], &[3., 2., 1.], -1.0),
            (
                &[1., 1., 2., 3.],
                &[1., 2., 3., 4.],
                0.948_683_298_050_513_8,
            ),
            (&[10., 20., 30., 40.], &[1., 100., 2., 200.], 0.8),
        ];
        for (x, y, want) in cases {
            let got = spearman(x, y).unwrap();
            assert!((got - want).abs() < 1e-12, "{x:?} {y:?}: {got} != {want}");
        }
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_none());
        assert_eq!(mean_std(&[1.0, 3.0]), (Some(2.0), Some(2f64.sqrt())));
        assert_eq!(mean_std(&[4.0]), (Some(4.0), None));
    }

    #[test]
    fn bootstrap_interval_holds_rho_and_is_reproducible() {
        let x: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..30)
            .map(|i| (i as f64) + ((i * 7) % 5) as f64 * 3.0)
            .collect();
        let a = spearman_bootstrap(&x, &y, 500, 0.95, 7).unwrap();
        let b = spearman_bootstrap(&x, &y, 500, 0.95, 7).unwrap();
        assert_eq!(a, b);
        assert!(
            a.lo <= a.rho && a.rho <= a.hi && a.hi <= 1.0 && a.lo > 0.5,
            "{a:?}"
        );
    }
}
