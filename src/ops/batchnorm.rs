//! Training-mode batch normalization (Ioffe & Szegedy, 2015, "Batch Normalization: Accelerating
//! Deep Network Training by Reducing Internal Covariate Shift") as one fused candle custom op.
//!
//! Forward: per channel `c`, over the `M = N·H·W` values, `μ = mean(x)`, `σ² = mean((x−μ)²)`
//! (biased), `y = γ (x − μ)/√(σ² + ε) + β`: one pass for the statistics, one to write `y`.
//! Backward: the closed form `dx = γ/σ̂ · (g − mean(g) − x̂ · mean(g·x̂))`, `dγ = Σ g·x̂`,
//! `dβ = Σ g` (`x̂ = (x−μ)/σ̂`, `σ̂ = √(σ²+ε)`), again two passes, using the forward's saved
//! `μ` and `1/σ̂` as PyTorch does. candle-nn's `BatchNorm::forward_train` builds the same thing
//! from about a dozen tensor ops, each a pass over the activations in both directions.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, Result, Shape, Tensor, Var};
use rayon::prelude::*;

use super::is_cpu_f32;
use super::kernel::{lock_saved, unpack_grads, Grads3, Input, Kernel3, Op3, Output};

/// Batch normalization in training mode of `x` (N, C, …) with the batch's own statistics.
///
/// `gamma` and `beta` have shape (C). Returns `(y, mean, var)`: `y` like `x`, and the batch mean
/// and *biased* variance per channel (the ones used to normalize), detached from autograd, for
/// [`update_running_stats`]. The gradient flows to `x`, `gamma` and `beta`. On other devices
/// or dtypes this is built from candle tensor ops (same values, slower).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = x.dims();
    if dims.len() < 2 {
        candle_core::bail!("batch_norm_train: expects (N, C, …), got {dims:?}")
    }
    let c = dims[1];
    if gamma.dims() != [c] || beta.dims() != [c] {
        candle_core::bail!(
            "batch_norm_train: {c} channels but gamma {:?}, beta {:?}",
            gamma.dims(),
            beta.dims()
        )
    }
    if x.elem_count() == 0 {
        candle_core::bail!("batch_norm_train: empty input {dims:?}")
    }
    if !(is_cpu_f32(x) && is_cpu_f32(gamma) && is_cpu_f32(beta)) {
        return fallback(x, gamma, beta, eps);
    }
    let saved = Arc::new(Mutex::new(Stats::default()));
    let op = BatchNormOp {
        eps,
        saved: saved.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, Op3(op))?;
    let stats = lock_saved(&saved, POISONED)?.clone();
    let var = Tensor::from_vec(stats.var_biased, c, x.device())?;
    let mean = Tensor::from_vec(stats.mean, c, x.device())?;
    Ok((y, mean, var))
}

/// PyTorch's running-statistics update after a training-mode batch:
/// `running_mean ← (1−momentum)·running_mean + momentum·mean` and
/// `running_var ← (1−momentum)·running_var + momentum·var·count/(count−1)` (the unbiased batch
/// variance), where `count = N·H·W` is the number of values per channel. `momentum` is PyTorch's
/// (0.1 by default).
pub fn update_running_stats(
    running_mean: &Var,
    running_var: &Var,
    mean: &Tensor,
    var: &Tensor,
    count: usize,
    momentum: f64,
) -> Result<()> {
    let unbias = if count > 1 {
        count as f64 / (count as f64 - 1.0)
    } else {
        1.0
    };
    let m = ((running_mean.as_tensor() * (1.0 - momentum))? + (mean.detach() * momentum)?)?;
    let v =
        ((running_var.as_tensor() * (1.0 - momentum))? + (var.detach() * (momentum * unbias))?)?;
    running_mean.set(&m)?;
    running_var.set(&v)
}

/// Batch normalization from candle ops, for devices and dtypes without the fused op.
fn fallback(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let mut bshape = vec![1usize; x.rank()];
    bshape[1] = c;
    let xt = x.transpose(0, 1)?.flatten_from(1)?.contiguous()?;
    let mean = xt.mean_keepdim(1)?;
    let centered = xt.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(1)?;
    let mean_b = mean.reshape(bshape.as_slice())?;
    let var_b = var.reshape(bshape.as_slice())?;
    let y = x
        .broadcast_sub(&mean_b)?
        .broadcast_div(&(var_b + eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape(bshape.as_slice())?)?
        .broadcast_add(&beta.reshape(bshape.as_slice())?)?;
    Ok((y, mean.flatten_all()?.detach(), var.flatten_all()?.detach()))
}

/// Per-channel statistics saved by the forward pass for the backward pass.
#[derive(Debug, Clone, Default)]
struct Stats {
    mean: Vec<f32>,
    var_biased: Vec<f32>,
    invstd: Vec<f32>,
}

/// `(N, C, S)` view of an `(N, C, …)` shape.
fn ncs(dims: &[usize]) -> Result<(usize, usize, usize)> {
    match dims {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => candle_core::bail!("batch_norm_train: expects (N, C, …), got {dims:?}"),
    }
}

/// Per-channel mean, biased variance and `1/√(var + eps)` of `x` viewed as `(N, C, S)`, one
/// channel per task, shifted by the channel's first value for accuracy.
pub(super) fn channel_stats(
    x: &[f32],
    (n, c, s): (usize, usize, usize),
    eps: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (n * s) as f64;
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let shift = x[ch * s];
            let (mut s1, mut s2) = (0f64, 0f64);
            for img in 0..n {
                let row = &x[(img * c + ch) * s..(img * c + ch + 1) * s];
                s1 += sum8(row, |v| v - shift);
                s2 += sum8(row, |v| (v - shift) * (v - shift));
            }
            let mean_shifted = s1 / m;
            let var = (s2 / m - mean_shifted * mean_shifted).max(0.0);
            ((mean_shifted + shift as f64) as f32, var as f32)
        })
        .collect();
    let mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
    let var_biased: Vec<f32> = stats.iter().map(|s| s.1).collect();
    let invstd: Vec<f32> = var_biased
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    (mean, var_biased, invstd)
}

/// BatchNorm's closed-form backward per channel from `sums[ch] = (Σg, Σg·(x − μ))` over the
/// channel's `m` values: the coefficients `(k1, k2, k3)` of `dx = k1·g + k2·(x − μ) + k3`, with
/// `dγ` written to `dgb[ch]` and `dβ` to `dgb[C + ch]`.
pub(super) fn backward_coefficients(
    sums: &[(f64, f64)],
    invstd: &[f32],
    gamma: &[f32],
    m: f64,
    dgb: &mut [f32],
) -> Vec<(f32, f32, f32)> {
    let c = sums.len();
    (0..c)
        .map(|ch| {
            let (sg, sgx) = sums[ch];
            let is = invstd[ch] as f64;
            let dgamma = sgx * is;
            let k1 = gamma[ch] as f64 * is;
            let k2 = -k1 * is * dgamma / m;
            let k3 = -k1 * sg / m;
            dgb[ch] = dgamma as f32;
            dgb[c + ch] = sg as f32;
            (k1 as f32, k2 as f32, k3 as f32)
        })
        .collect()
}

/// Sum of a slice with 8 independent accumulators (vectorizable), in f64 at the end.
#[inline]
pub(super) fn sum8(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for ch in chunks {
        for (a, &x) in acc.iter_mut().zip(ch) {
            *a += f(x);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + rest.iter().map(|&x| f(x) as f64).sum::<f64>()
}

/// Sum of `f(a_i, b_i)` with 8 accumulators.
#[inline]
pub(super) fn sum8_2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for ((a, &x), &y) in acc.iter_mut().zip(xa).zip(xb) {
            *a += f(x, y);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>()
        + ra.iter()
            .zip(rb)
            .map(|(&x, &y)| f(x, y) as f64)
            .sum::<f64>()
}

/// The error when a thread panicked while holding the saved statistics.
const POISONED: &str = "batch_norm_train: poisoned statistics";

struct BatchNormOp {
    eps: f64,
    saved: Arc<Mutex<Stats>>,
}

impl Kernel3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "candle-face-batch-norm-train"
    }

    fn cpu_fwd(&self, (x, l1): Input, (gamma, _): Input, (beta, _): Input) -> Output {
        let (n, c, s) = ncs(l1.dims())?;
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("{}: gamma/beta do not have {c} entries", self.name())
        }
        let (mean, var_biased, invstd) = channel_stats(x, (n, c, s), self.eps);
        // SAFETY: every plane of y is written from the same plane of x below.
        let mut y = unsafe { super::uninit_f32(x.len()) };
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .for_each(|(row, (y, x))| {
                let ch = row % c;
                let a = gamma[ch] * invstd[ch];
                let b = beta[ch] - mean[ch] * a;
                y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * a + b);
            });
        *lock_saved(&self.saved, POISONED)? = Stats {
            mean,
            var_biased,
            invstd,
        };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Grads3 {
        let stats = lock_saved(&self.saved, POISONED)?.clone();
        let op = BatchNormGrad { stats };
        // One flat output: dx, then dγ, then dβ.
        let out = x.apply_op3_no_bwd(&grad.contiguous()?, gamma, &Op3(op))?;
        let (total, c) = (x.elem_count(), gamma.elem_count());
        unpack_grads(
            &out,
            [
                (x.track_op(), total, x.shape().clone()),
                (gamma.track_op(), c, Shape::from(c)),
                (beta.track_op(), c, Shape::from(c)),
            ],
        )
    }
}

/// `(x, dY, γ) → [dx…, dγ…, dβ…]` for [`BatchNormOp`].
struct BatchNormGrad {
    stats: Stats,
}

impl Kernel3 for BatchNormGrad {
    fn name(&self) -> &'static str {
        "candle-face-batch-norm-train-grad"
    }

    fn cpu_fwd(&self, (x, l1): Input, (g, l2): Input, (gamma, _): Input) -> Output {
        let (n, c, s) = ncs(l1.dims())?;
        if l2.dims() != l1.dims() || self.stats.mean.len() != c {
            candle_core::bail!("{}: shapes do not fit", self.name())
        }
        let Stats { mean, invstd, .. } = &self.stats;
        let m = (n * s) as f64;
        // Per channel: Σg and Σg·(x−μ).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mu = mean[ch];
                let (mut sg, mut sgx) = (0f64, 0f64);
                for img in 0..n {
                    let r = (img * c + ch) * s..(img * c + ch + 1) * s;
                    sg += sum8(&g[r.clone()], |v| v);
                    sgx += sum8_2(&g[r.clone()], &x[r], |g, x| g * (x - mu));
                }
                (sg, sgx)
            })
            .collect();
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, dgb) = out.split_at_mut(x.len());
        let coef = backward_coefficients(&sums, invstd, gamma, m, dgb);
        dx.par_chunks_mut(s)
            .zip(x.par_chunks(s).zip(g.par_chunks(s)))
            .enumerate()
            .for_each(|(row, (dx, (x, g)))| {
                let ch = row % c;
                let (k1, k2, k3) = coef[ch];
                let mu = mean[ch];
                for ((d, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                    *d = k1 * g + k2 * (x - mu) + k3;
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_close, to_f64};
    use candle_core::{DType, Device, ModuleT};
    use candle_nn::{VarBuilder, VarMap};

    /// f64 reference: `Σ y·r` for batch norm of x (N, C, S).
    fn loss_ref(
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        r: &[f64],
        (n, c, s): (usize, usize, usize),
        eps: f64,
    ) -> f64 {
        let mut l = 0.0;
        for ch in 0..c {
            let idx = |i: usize, j: usize| (i * c + ch) * s + j;
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| (0..s).map(move |j| idx(i, j)))
                .map(|k| x[k])
                .collect();
            let mu = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / vals.len() as f64;
            for i in 0..n {
                for j in 0..s {
                    let k = idx(i, j);
                    l += (gamma[ch] * (x[k] - mu) / (var + eps).sqrt() + beta[ch]) * r[k];
                }
            }
        }
        l
    }

    /// candle-nn's BatchNorm with weight `gamma` and bias `beta`, and the map holding its Vars.
    fn candle_nn_batch_norm(
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> (candle_nn::BatchNorm, VarMap) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, gamma.device());
        let cfg = candle_nn::BatchNormConfig {
            eps,
            ..Default::default()
        };
        let bn = candle_nn::batch_norm(gamma.elem_count(), cfg, vb).unwrap();
        for (name, value) in [("weight", gamma), ("bias", beta)] {
            vm.data()
                .lock()
                .unwrap()
                .get(name)
                .unwrap()
                .set(value)
                .unwrap();
        }
        (bn, vm)
    }

    #[test]
    fn matches_candle_nn_batch_norm_values_stats_and_gradients() {
        let dev = Device::Cpu;
        let (n, c, h, w) = (4, 3, 5, 6);
        let eps = 1e-5;
        // A non-zero mean so centring matters.
        let x = (Tensor::randn(0f32, 2., (n, c, h, w), &dev).unwrap() + 3.0).unwrap();
        let gamma = Tensor::randn(1f32, 0.3, c, &dev).unwrap();
        let beta = Tensor::randn(0f32, 0.3, c, &dev).unwrap();
        let r = Tensor::randn(0f32, 1., (n, c, h, w), &dev).unwrap();

        let (xv, gv, bv) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&gamma).unwrap(),
            Var::from_tensor(&beta).unwrap(),
        );
        let (y, mean, var) = batch_norm_train(&xv, &gv, &bv, eps).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();

        // candle-nn BatchNorm in training mode, same γ/β.
        let (bn, vm) = candle_nn_batch_norm(&gamma, &beta, eps);
        let xv2 = Var::from_tensor(&x).unwrap();
        let yc = bn.forward_t(&xv2, true).unwrap();
        assert_close(&to_f64(&y), &to_f64(&yc), 1e-5, "y");
        let gc = (&yc * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(
            &to_f64(grads.get(&xv).unwrap()),
            &to_f64(gc.get(&xv2).unwrap()),
            1e-4,
            "dx",
        );
        let data = vm.data().lock().unwrap();
        assert_close(
            &to_f64(grads.get(&gv).unwrap()),
            &to_f64(gc.get(data.get("weight").unwrap()).unwrap()),
            1e-4,
            "dgamma",
        );
        assert_close(
            &to_f64(grads.get(&bv).unwrap()),
            &to_f64(gc.get(data.get("bias").unwrap()).unwrap()),
            1e-4,
            "dbeta",
        );

        // Running statistics: candle-nn updated its Vars from the defaults (0, 1) with momentum 0.1.
        let (rm, rv) = (
            Var::zeros(c, DType::F32, &dev).unwrap(),
            Var::ones(c, DType::F32, &dev).unwrap(),
        );
        update_running_stats(&rm, &rv, &mean, &var, n * h * w, 0.1).unwrap();
        assert_close(
            &to_f64(&rm),
            &to_f64(bn.running_mean()),
            1e-5,
            "running mean",
        );
        assert_close(&to_f64(&rv), &to_f64(bn.running_var()), 1e-5, "running var");
        // And the biased variance itself against a direct computation.
        let xs = to_f64(&x);
        for ch in 0..c {
            let v: Vec<f64> = (0..n)
                .flat_map(|i| xs[(i * c + ch) * h * w..(i * c + ch + 1) * h * w].to_vec())
                .collect();
            let mu = v.iter().sum::<f64>() / v.len() as f64;
            let var_ref = v.iter().map(|a| (a - mu) * (a - mu)).sum::<f64>() / v.len() as f64;
            assert!(
                (to_f64(&mean)[ch] - mu).abs() < 1e-5
                    && (to_f64(&var)[ch] - var_ref).abs() < 1e-4 * var_ref
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let (n, c, s) = (3, 2, 4);
        let eps = 1e-3;
        let x = Tensor::randn(0.5f32, 1.5, (n, c, 2, 2), &dev).unwrap();
        let gamma = Tensor::randn(1f32, 0.5, c, &dev).unwrap();
        let beta = Tensor::randn(0f32, 0.5, c, &dev).unwrap();
        let r = Tensor::randn(0f32, 1., (n, c, 2, 2), &dev).unwrap();
        let (xv, gv, bv) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&gamma).unwrap(),
            Var::from_tensor(&beta).unwrap(),
        );
        let (y, _, _) = batch_norm_train(&xv, &gv, &bv, eps).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let (xs, gs, bs, rs) = (to_f64(&x), to_f64(&gamma), to_f64(&beta), to_f64(&r));
        let h = 1e-5;
        let fd = |which: usize, i: usize| {
            let mut a = [xs.clone(), gs.clone(), bs.clone()];
            a[which][i] += h;
            let lp = loss_ref(&a[0], &a[1], &a[2], &rs, (n, c, s), eps);
            a[which][i] -= 2. * h;
            let lm = loss_ref(&a[0], &a[1], &a[2], &rs, (n, c, s), eps);
            (lp - lm) / (2. * h)
        };
        for (which, var, len) in [(0, &xv, xs.len()), (1, &gv, c), (2, &bv, c)] {
            let want: Vec<f64> = (0..len).map(|i| fd(which, i)).collect();
            assert_close(
                &to_f64(grads.get(var).unwrap()),
                &want,
                1e-3,
                &format!("grad {which}"),
            );
        }
    }

    #[test]
    fn rejects_mismatched_parameters() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 2, 2), DType::F32, &dev).unwrap();
        let g = Tensor::ones(4, DType::F32, &dev).unwrap();
        assert!(batch_norm_train(&x, &g, &g, 1e-5).is_err());
    }
}
