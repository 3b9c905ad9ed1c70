//! Learning-rate schedules (constant, cosine decay, linear decay) with linear warmup.
//! The formulas are those of Hugging Face `transformers`' schedulers, which the recipe's
//! reference library uses, so a run here follows the same learning-rate curve step for step.

use serde::{Deserialize, Serialize};

/// The shape of the curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// The peak learning rate until the end.
    Constant,
    /// Half a cosine from the peak to zero at `total_steps`.
    Cosine,
    /// A straight line from the peak to zero at `total_steps`.
    Linear,
}

impl std::str::FromStr for ScheduleKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(Self::Constant),
            "cosine" => Ok(Self::Cosine),
            "linear" => Ok(Self::Linear),
            other => Err(format!(
                "unknown schedule `{other}`; expected `constant`, `cosine` or `linear`"
            )),
        }
    }
}

/// A learning-rate schedule over a run of `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The curve after warmup.
    pub kind: ScheduleKind,
    /// The learning rate reached at the end of warmup.
    pub peak_lr: f64,
    /// Steps of linear warmup from 0 to `peak_lr`.
    pub warmup_steps: u64,
    /// Optimizer steps in the whole run (the decay reaches its floor there).
    pub total_steps: u64,
    /// The decay's floor as a fraction of the peak (0: decay to zero).
    #[serde(default)]
    pub min_lr_ratio: f64,
}

impl LrSchedule {
    /// The learning rate of the optimizer update with index `step` (0 for the first update).
    ///
    /// As in `transformers`, the first warmup update uses a learning rate of 0 and update
    /// `warmup_steps` is the first at the peak.
    pub fn lr(&self, step: u64) -> f64 {
        self.peak_lr * self.factor(step)
    }

    fn factor(&self, step: u64) -> f64 {
        let warmup = self.warmup_steps;
        if step < warmup {
            return step as f64 / warmup.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(warmup).max(1) as f64;
        let decay = match self.kind {
            ScheduleKind::Constant => return 1.0,
            ScheduleKind::Linear => {
                (self.total_steps.saturating_sub(step) as f64 / decay_steps).max(0.0)
            }
            ScheduleKind::Cosine => {
                let progress = ((step - warmup) as f64 / decay_steps).min(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        };
        self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1e-30)
    }

    /// Hand-computed: peak 1e-4, 4 warmup steps, 10 steps in all.
    /// Warmup: 0, 1/4, 2/4, 3/4 of the peak; decay over the remaining 6 steps.
    #[test]
    fn schedules_match_hand_computed_values() {
        let peak = 1e-4;
        let mk = |kind| LrSchedule {
            kind,
            peak_lr: peak,
            warmup_steps: 4,
            total_steps: 10,
            min_lr_ratio: 0.0,
        };
        let pi = std::f64::consts::PI;
        #[rustfmt::skip]
        let table: &[(ScheduleKind, u64, f64)] = &[
            (ScheduleKind::Constant, 0, 0.0),
            (ScheduleKind::Constant, 1, 0.25e-4),
            (ScheduleKind::Constant, 3, 0.75e-4),
            (ScheduleKind::Constant, 4, 1e-4),
            (ScheduleKind::Constant, 9, 1e-4),
            (ScheduleKind::Linear,   2, 0.5e-4),
            (ScheduleKind::Linear,   4, 1e-4),
            (ScheduleKind::Linear,   7, 1e-4 * 3.0 / 6.0),
            (ScheduleKind::Linear,   9, 1e-4 * 1.0 / 6.0),
            (ScheduleKind::Linear,  10, 0.0),
            (ScheduleKind::Linear,  12, 0.0),
            (ScheduleKind::Cosine,   3, 0.75e-4),
            (ScheduleKind::Cosine,   4, 1e-4),
            (ScheduleKind::Cosine,   7, 0.5e-4),
            (ScheduleKind::Cosine,   5, 1e-4 * 0.5 * (1.0 + (pi / 6.0).cos())),
            (ScheduleKind::Cosine,   9, 1e-4 * 0.5 * (1.0 + (pi * 5.0 / 6.0).cos())),
            (ScheduleKind::Cosine,  10, 0.0),
        ];
        for &(kind, step, want) in table {
            let got = mk(kind).lr(step);
            assert!(
                close(got, want) || (want == 0.0 && got.abs() < 1e-20),
                "{kind:?} step {step}: {got} != {want}"
            );
        }
    }

    #[test]
    fn no_warmup_starts_at_the_peak() {
        for kind in [
            ScheduleKind::Constant,
            ScheduleKind::Cosine,
            ScheduleKind::Linear,
        ] {
            let s = LrSchedule {
                kind,
                peak_lr: 2e-5,
                warmup_steps: 0,
                total_steps: 100,
                min_lr_ratio: 0.0,
            };
            assert_eq!(s.lr(0), 2e-5, "{kind:?}");
        }
    }

    /// With a floor of 10%: linear halfway is 0.1 + 0.9 * 0.5 of the peak; the end is the floor.
    #[test]
    fn decay_stops_at_the_floor() {
        let s = LrSchedule {
            kind: ScheduleKind::Linear,
            peak_lr: 1.0,
            warmup_steps: 0,
            total_steps: 10,
            min_lr_ratio: 0.1,
        };
        assert!((s.lr(5) - 0.55).abs() < 1e-15);
        assert!((s.lr(10) - 0.1).abs() < 1e-15);
        assert!((s.lr(20) - 0.1).abs() < 1e-15);
        let c = LrSchedule {
            kind: ScheduleKind::Cosine,
            ..s
        };
        assert!((c.lr(10) - 0.1).abs() < 1e-15);
        assert!((c.lr(5) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn parses_names() {
        assert_eq!(
            "cosine".parse::<ScheduleKind>().unwrap(),
            ScheduleKind::Cosine
        );
        assert!("exp".parse::<ScheduleKind>().is_err());
    }
}
