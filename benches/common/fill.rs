//! Closed-form, language-independent parameter fill for parity tests and benchmarks (the
//! integration tests include this file too).
//!
//! Every value comes from SplitMix64 seeded by the FNV-1a hash of the tensor's name, so PyTorch and candle fill the same network with the same
//! weights from the names alone, in any order, with integer arithmetic.
//!
//! ```text
//! seed = fnv1a64(name)
//! z_j  = seed + (j + 1) * 0x9E3779B97F4A7C15            (mod 2^64), j = flat row-major index
//! z_j  = (z_j ^ (z_j >> 30)) * 0xBF58476D1CE4E5B9        (mod 2^64)
//! z_j  = (z_j ^ (z_j >> 27)) * 0x94D049BB133111EB        (mod 2^64)
//! z_j  =  z_j ^ (z_j >> 31)
//! u_j  = (z_j >> 11) / 2^53          s_j = 2 u_j - 1
//! ```
//!
//! Value rules (computed in f64, rounded to f32): rank ≥ 2 → `s·sqrt(6/fan_in)`;
//! `running_mean` → `0.1·s`; `running_var` → `1 + 0.5·s`; BatchNorm `.weight` → `1 + 0.2·s`;
//! BatchNorm `.bias` → `0.2·s`; other rank-1 `.bias` → `0.1·s`; other rank-1 `.weight` (PReLU)
//! → `0.25 + 0.05·s`. A tensor belongs to a BatchNorm when its module also has a `running_mean`.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor};

/// 64-bit FNV-1a hash of the UTF-8 bytes of `name`.
pub fn fnv1a64(name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The SplitMix64 uniforms `u_j ∈ [0, 1)` for `j` in `0..n`, seeded by `fnv1a64(name)`.
pub fn uniform(name: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a64(name);
    (1..=n as u64)
        .map(|j| {
            let mut z = seed.wrapping_add(j.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// The fill values of the float tensor `name` with `shape`, row-major.
///
/// `in_batch_norm` says whether the tensor's module is a BatchNorm (it also has a
/// `running_mean`); it decides the rule for rank-1 `.weight` and `.bias` tensors.
pub fn fill_tensor(name: &str, shape: &[usize], in_batch_norm: bool) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let s = uniform(name, n).into_iter().map(|u| 2.0 * u - 1.0);
    let v: Vec<f64> = if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let a = (6.0 / fan_in as f64).sqrt();
        s.map(|s| s * a).collect()
    } else if name.ends_with("running_mean") {
        s.map(|s| 0.1 * s).collect()
    } else if name.ends_with("running_var") {
        s.map(|s| 1.0 + 0.5 * s).collect()
    } else if name.ends_with(".weight") {
        if in_batch_norm {
            s.map(|s| 1.0 + 0.2 * s).collect()
        } else {
            s.map(|s| 0.25 + 0.05 * s).collect()
        }
    } else if name.ends_with(".bias") && in_batch_norm {
        s.map(|s| 0.2 * s).collect()
    } else {
        s.map(|s| 0.1 * s).collect()
    };
    v.into_iter().map(|v| v as f32).collect()
}

/// Fills every named tensor of a state dict (names and shapes) by the closed-form rule.
///
/// BatchNorm membership is decided from the names themselves, as `fill.py` does: a rank-1
/// `.weight`/`.bias` belongs to a BatchNorm when `<module>.running_mean` is among `specs`.
pub fn fill_state_dict(
    specs: &[(String, Vec<usize>)],
    device: &Device,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let names: HashSet<&str> = specs.iter().map(|(n, _)| n.as_str()).collect();
    let mut out = HashMap::with_capacity(specs.len());
    for (name, shape) in specs {
        let module = name.rsplit_once('.').map_or("", |(m, _)| m);
        let in_bn = names.contains(format!("{module}.running_mean").as_str());
        let data = fill_tensor(name, shape, in_bn);
        out.insert(
            name.clone(),
            Tensor::from_vec(data, shape.as_slice(), device)?,
        );
    }
    Ok(out)
}
