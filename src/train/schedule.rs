//! Learning-rate schedule: linear warm-up then cosine decay (Loshchilov & Hutter, SGDR, 2017).

use serde::{Deserialize, Serialize};

/// Linear warm-up from `base_lr × warmup_start` to `base_lr` over `warmup_steps`, then cosine
/// decay to `base_lr × final_fraction` at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub base_lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Total number of steps; the cosine reaches its floor there.
    pub total_steps: u64,
    /// Floor of the cosine, as a fraction of `base_lr`.
    pub final_fraction: f64,
}

impl LrSchedule {
    /// The learning rate for step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = (step.saturating_sub(self.warmup_steps) as f64 / span as f64).min(1.0);
        let floor = self.base_lr * self.final_fraction;
        floor + (self.base_lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            final_fraction: 0.0,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.5).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
        assert!(s.lr(500).abs() < 1e-12);
    }
}
