//! Helpers shared by the ops' tests: fixed pseudo-random inputs, conversions and tolerant
//! comparisons.

use candle_core::{Device, Tensor, Var};

/// A fixed pseudo-random tensor of `shape` in [−1, 1) (xorshift), independent of candle's
/// generator.
pub(super) fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The values of `t` (f32), flattened.
pub(super) fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Asserts `a ≈ b` elementwise within `tol` times the largest `|b|` (at least 1).
pub(super) fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: {x} vs {y} (scale {scale})"
        );
    }
}

/// The gradients of `Σ z·r` and `Σ z2·r` (`r` a fixed pseudo-random projection) agree for
/// every variable in `vars`.
pub(super) fn same_gradients(
    z: &Tensor,
    z2: &Tensor,
    vars: &[(&str, &Var)],
    seed: u64,
    tol: f32,
    what: &str,
) {
    let r = rand(z.dims(), seed);
    let g = (z * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (z2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, var) in vars {
        let a = g
            .get(var)
            .unwrap_or_else(|| panic!("{what}: no grad for {name}"));
        let b = g2.get(var).unwrap();
        close(&vals(a), &vals(b), tol, &format!("{what}: d{name}"));
    }
}

/// The values of `t` (f32) as f64, flattened.
pub(super) fn to_f64(t: &Tensor) -> Vec<f64> {
    vals(t).iter().map(|&v| v as f64).collect()
}

/// Asserts `got ≈ want` elementwise within `tol` times the largest `|want|` (at least 1e-3).
pub(super) fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}[{i}]: got {g}, want {w} (scale {scale})"
        );
    }
}
