//! Timing helpers shared by the benchmark binaries.
#![allow(dead_code)]

use std::time::Instant;

pub mod fill;

/// The crate's result type.
pub type Res<T> = candle_face::Result<T>;

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// `n` scaled by the `RUNS` environment variable (default 1.0), at least 1.
pub fn runs(n: usize) -> usize {
    let scale: f64 = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as usize).max(1)
}

/// Seconds of each of `runs` calls of `f` after `warmup` calls.
pub fn timed_all(warmup: usize, runs: usize, mut f: impl FnMut() -> Res<()>) -> Res<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ts = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    Ok(ts)
}

/// Median seconds of `f` over `runs` calls after `warmup` calls.
pub fn timed(warmup: usize, runs: usize, f: impl FnMut() -> Res<()>) -> Res<f64> {
    Ok(median(timed_all(warmup, runs, f)?))
}
