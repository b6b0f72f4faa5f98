//! The LLaMA learning-rate schedule: linear warmup from 0 to the peak, then cosine decay to a floor
//! (10% of the peak in the paper) at the last step.

use serde::{Deserialize, Serialize};

/// Warmup then cosine decay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    pub peak: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    /// The final learning rate as a fraction of the peak.
    pub final_fraction: f64,
}

impl CosineSchedule {
    /// A schedule whose warmup is at most a tenth of a short run (so short runs still spend most steps at a
    /// useful rate), and at least one step.
    pub fn new(peak: f64, warmup_steps: usize, total_steps: usize, final_fraction: f64) -> Self {
        let warmup_steps = warmup_steps.min(total_steps / 10).max(1);
        CosineSchedule {
            peak,
            warmup_steps,
            total_steps: total_steps.max(1),
            final_fraction,
        }
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = (self.total_steps - 1)
            .saturating_sub(self.warmup_steps)
            .max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let floor = self.peak * self.final_fraction;
        floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_peak_midpoint_and_floor() {
        let s = CosineSchedule::new(1e-3, 50, 1000, 0.1);
        assert_eq!(s.warmup_steps, 50);
        assert!((s.lr(0) - 1e-3 / 50.0).abs() < 1e-15);
        assert!((s.lr(49) - 1e-3).abs() < 1e-15);
        // Halfway through the decay the cosine is at the middle of peak and floor.
        let mid = 50 + (999 - 50) / 2;
        assert!((s.lr(mid) - 0.55e-3).abs() < 2e-6, "{}", s.lr(mid));
        assert!((s.lr(999) - 1e-4).abs() < 1e-12);
        assert!((s.lr(5000) - 1e-4).abs() < 1e-12);
        // Short runs: warmup is capped at a tenth of the run.
        assert_eq!(CosineSchedule::new(1e-3, 50, 100, 0.1).warmup_steps, 10);
    }

    #[test]
    fn the_first_step_after_warmup_is_the_peak_and_the_decay_only_falls() {
        let s = CosineSchedule::new(2e-3, 10, 200, 0.1);
        assert_eq!(s.lr(10), 2e-3, "the decay starts at the peak, not past it");
        let lrs: Vec<f64> = (9..200).map(|t| s.lr(t)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "{lrs:?}");
    }
}
