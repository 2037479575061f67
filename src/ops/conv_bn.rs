//! Convolution, batch normalization and activation as one candle custom op for training: the
//! layer both models are made of (`Conv2d → BatchNorm2d → ReLU [→ 2×2 max-pool]`).
//!
//! Built from the same kernels as [`super::conv2d`], [`super::batch_norm_train`] and
//! [`super::relu_max_pool2d`], with the same values, but as a single node of candle's autograd
//! graph. Every node of the unfused chain costs a pass over the activations in each direction,
//! plus a gradient tensor of its own in candle's backward for each intermediate tensor (33 MB
//! each at 64 images of 32×64×64). Fused, the intermediates live only inside the op:
//! - forward: GEMM convolution → per-channel statistics → one pass that normalizes, applies the
//!   ReLU and pools; only the convolution output is kept for the backward pass;
//! - backward: one pass per plane that recomputes the normalized values, routes the gradient
//!   through the pool and ReLU and sums what BatchNorm's closed form needs, one pass for the
//!   BatchNorm input gradient, then the convolution's two GEMM gradients.
//!
//! The inference counterpart, with the BatchNorm folded into a per-channel affine map, is
//! [`super::conv_affine`].

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, Result, Shape, Tensor};
use rayon::prelude::*;

use super::batchnorm::{backward_coefficients, channel_stats, sum8, sum8_2};
use super::conv::{self, Geom};
use super::kernel::{
    check_grad_shape, lock_saved, unpack_grads, Grads3, Input, Kernel3, Op3, Output,
};
use super::maxpool::{pool2x2_grad_plane, pool2x2_plane, relu1, PoolGeom};
use super::{is_cpu_f32, uninit_f32, Activation};

/// Convolution (`x` (N, C, H, W), `w` (O, C, kh, kw), no bias) followed by training-mode batch
/// normalization with `gamma`, `beta` (O) and `eps`, then `act`.
///
/// Returns `(y, mean, var)` like [`super::batch_norm_train`]: the batch mean and biased variance
/// of the convolution output per channel, detached, for [`super::update_running_stats`]. The
/// gradient reaches `x` (when it takes part in autograd), `w`, `gamma` and `beta`. Values equal
/// those of `conv2d`, `batch_norm_train` and `relu`/`relu_max_pool2d` in sequence; on other
/// devices or dtypes that sequence is what runs.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_train(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stride: usize,
    padding: (usize, usize),
    eps: f64,
    act: Activation,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    if gamma.dims() != [g.o] || beta.dims() != [g.o] {
        candle_core::bail!(
            "conv_bn_train: {} output channels but gamma {:?}, beta {:?}",
            g.o,
            gamma.dims(),
            beta.dims()
        )
    }
    if act == Activation::ReluMaxPool2 {
        PoolGeom::new(g.oh, g.ow, 2, 2)?;
    }
    let fast = [x, w, gamma, beta].iter().all(|t| is_cpu_f32(t));
    if !fast || g.n * g.p() == 0 {
        let y = super::conv2d(x, w, stride, padding)?;
        let (y, mean, var) = super::batch_norm_train(&y, gamma, beta, eps)?;
        let y = match act {
            Activation::Identity => y,
            Activation::Relu => super::relu(&y)?,
            Activation::ReluMaxPool2 => super::relu_max_pool2d(&y, 2, 2)?,
        };
        return Ok((y, mean, var));
    }
    let saved = Arc::new(Mutex::new(None));
    let op = ConvBnTrainOp {
        stride,
        padding,
        eps,
        act,
        saved: saved.clone(),
    };
    let gb = Tensor::stack(&[gamma, beta], 0)?;
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &gb, Op3(op))?;
    let saved = lock_saved(&saved, POISONED)?
        .clone()
        .ok_or_else(|| candle_core::Error::Msg("conv_bn_train: forward saved nothing".into()))?;
    let mean = Tensor::from_slice(&saved.mean, g.o, x.device())?;
    let var = Tensor::from_slice(&saved.var, g.o, x.device())?;
    Ok((y, mean, var))
}

/// What the training forward keeps for the backward pass.
#[derive(Debug)]
struct Saved {
    /// Convolution output (N, O, oh, ow).
    y: Vec<f32>,
    mean: Vec<f32>,
    /// Biased variance.
    var: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    /// Per-channel `(a, b)` with normalized value `a·y + b`.
    ab: Vec<(f32, f32)>,
}

struct ConvBnTrainOp {
    stride: usize,
    padding: (usize, usize),
    eps: f64,
    act: Activation,
    saved: Arc<Mutex<Option<Arc<Saved>>>>,
}

/// Output shape of the op for convolution geometry `g`.
fn out_dims(g: &Geom, act: Activation) -> (usize, usize, usize, usize) {
    match act {
        Activation::ReluMaxPool2 => (g.n, g.o, g.oh / 2, g.ow / 2),
        _ => (g.n, g.o, g.oh, g.ow),
    }
}

/// The error when a thread panicked while holding the saved state.
const POISONED: &str = "conv_bn_train: poisoned state";

impl Kernel3 for ConvBnTrainOp {
    fn name(&self) -> &'static str {
        "candle-face-conv-bn-train"
    }

    fn cpu_fwd(&self, (x, l1): Input, (w, l2): Input, (gb, _): Input) -> Output {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        if gb.len() != 2 * g.o {
            candle_core::bail!("{}: gamma/beta do not have {} entries", self.name(), g.o)
        }
        let c = g.o;
        let y = conv::forward_with(x, w, &g, None);
        let (mean, var, invstd) = channel_stats(&y, (g.n, c, g.p()), self.eps);
        let ab: Vec<(f32, f32)> = (0..c)
            .map(|ch| {
                let a = gb[ch] * invstd[ch];
                (a, gb[c + ch] - mean[ch] * a)
            })
            .collect();
        let dims = out_dims(&g, self.act);
        let z = normalize_activate(&y, &ab, &g, self.act)?;
        *lock_saved(&self.saved, POISONED)? = Some(Arc::new(Saved {
            y,
            mean,
            var,
            invstd,
            gamma: gb[..c].to_vec(),
            ab,
        }));
        Ok((CpuStorage::F32(z), Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, gb: &Tensor, _res: &Tensor, grad: &Tensor) -> Grads3 {
        let saved = lock_saved(&self.saved, POISONED)?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("conv_bn_train: no saved forward".into()))?;
        let need_dx = x.track_op();
        let op = ConvBnTrainGrad {
            stride: self.stride,
            padding: self.padding,
            act: self.act,
            need_dx,
            saved,
        };
        // One flat output: [dx…], dw…, dγ…, dβ….
        let out = x.apply_op3_no_bwd(&grad.contiguous()?, w, &Op3(op))?;
        let nx = if need_dx { x.elem_count() } else { 0 };
        let o = gb.dim(1)?;
        unpack_grads(
            &out,
            [
                (need_dx, nx, x.shape().clone()),
                (w.track_op(), w.elem_count(), w.shape().clone()),
                (gb.track_op(), 2 * o, Shape::from((2, o))),
            ],
        )
    }
}

/// The activation of the normalized convolution output `y`: per plane `a·y + b` with its
/// channel's `ab`, then `act` (the 2×2 pool writes its pooled planes).
fn normalize_activate(y: &[f32], ab: &[(f32, f32)], g: &Geom, act: Activation) -> Result<Vec<f32>> {
    let (c, s) = (g.o, g.p());
    let dims = out_dims(g, act);
    let plane_out = dims.2 * dims.3;
    // SAFETY: each output plane is written whole below (the 2×2 pool writes every pooled
    // value; the other activations write every element), and `scratch` by `normalize`
    // before the pool reads it.
    let mut z = unsafe { uninit_f32(dims.0 * dims.1 * plane_out) };
    match act {
        Activation::ReluMaxPool2 => {
            let pg = PoolGeom::new(g.oh, g.ow, 2, 2)?;
            z.par_chunks_mut(plane_out)
                .zip(y.par_chunks(s))
                .enumerate()
                .for_each_init(
                    || unsafe { uninit_f32(s) },
                    |scratch, (row, (out, plane))| {
                        let (a, b) = ab[row % c];
                        normalize(plane, scratch, a, b);
                        pool2x2_plane(scratch, out, &pg, true);
                    },
                );
        }
        act => {
            z.par_chunks_mut(s)
                .zip(y.par_chunks(s))
                .enumerate()
                .for_each(|(row, (out, plane))| {
                    let (a, b) = ab[row % c];
                    normalize(plane, out, a, b);
                    if act == Activation::Relu {
                        out.iter_mut().for_each(|v| *v = relu1(*v));
                    }
                });
        }
    }
    Ok(z)
}

/// `out = a·y + b`, element-wise.
#[inline]
fn normalize(y: &[f32], out: &mut [f32], a: f32, b: f32) {
    out.iter_mut().zip(y).for_each(|(o, &v)| *o = a * v + b);
}

/// `(x, dZ, w) → [dx…], dw…, dγ…, dβ…` for [`ConvBnTrainOp`].
struct ConvBnTrainGrad {
    stride: usize,
    padding: (usize, usize),
    act: Activation,
    need_dx: bool,
    saved: Arc<Saved>,
}

impl Kernel3 for ConvBnTrainGrad {
    fn name(&self) -> &'static str {
        "candle-face-conv-bn-train-grad"
    }

    fn cpu_fwd(&self, (x, l1): Input, (dz, l2): Input, (w, l3): Input) -> Output {
        let g = Geom::new(l1.dims(), l3.dims(), self.stride, self.padding)?;
        let (n, c, s) = (g.n, g.o, g.p());
        let dims = out_dims(&g, self.act);
        let fits = l2.dims() == [dims.0, dims.1, dims.2, dims.3] && self.saved.y.len() == n * c * s;
        check_grad_shape(fits, self.name(), l2.dims())?;
        let sv = &*self.saved;
        let (mut dy, sums) = self.activation_grad(&g, dz)?;
        // Per channel over the images.
        let per_channel: Vec<(f64, f64)> = (0..c)
            .map(|ch| {
                (0..n).fold((0.0, 0.0), |(a, b), img| {
                    let (sg, sgy) = sums[img * c + ch];
                    (a + sg, b + sgy)
                })
            })
            .collect();
        let mut dgb = vec![0f32; 2 * c];
        let m = (n * s) as f64;
        let coef = backward_coefficients(&per_channel, &sv.invstd, &sv.gamma, m, &mut dgb);
        // BatchNorm's input gradient, in place: dy ← k1·dy + k2·(y − μ) + k3.
        dy.par_chunks_mut(s)
            .zip(sv.y.par_chunks(s))
            .enumerate()
            .for_each(|(row, (d, y))| {
                let ch = row % c;
                let (k1, k2, k3) = coef[ch];
                let mu = sv.mean[ch];
                for (d, &y) in d.iter_mut().zip(y) {
                    *d = k1 * *d + k2 * (y - mu) + k3;
                }
            });
        self.conv_grads(x, w, &dy, &g, &dgb)
    }
}

/// Σg and Σg·(y − μ) over one plane.
type PlaneSums = (f64, f64);

impl ConvBnTrainGrad {
    /// The gradient w.r.t. the normalized values (through the pool and ReLU), and per plane
    /// Σg and Σg·(y − μ).
    fn activation_grad(&self, g: &Geom, dz: &[f32]) -> Result<(Vec<f32>, Vec<PlaneSums>)> {
        let (n, c, s) = (g.n, g.o, g.p());
        let sv = &*self.saved;
        let dims = out_dims(g, self.act);
        let plane_out = dims.2 * dims.3;
        let pool = match self.act {
            Activation::ReluMaxPool2 => Some(PoolGeom::new(g.oh, g.ow, 2, 2)?),
            _ => None,
        };
        // The pool's backward leaves an odd last row or column untouched (it must be zero);
        // every other path writes each element of `d`.
        let covered = match &pool {
            Some(_) => g.oh.is_multiple_of(2) && g.ow.is_multiple_of(2),
            None => true,
        };
        let mut dy = if covered {
            // SAFETY: see above: every element is written by the per-plane pass below before
            // the sums read it.
            unsafe { uninit_f32(n * c * s) }
        } else {
            vec![0f32; n * c * s]
        };
        let sums: Vec<(f64, f64)> = dy
            .par_chunks_mut(s)
            .zip(sv.y.par_chunks(s).zip(dz.par_chunks(plane_out)))
            .enumerate()
            .map_init(
                // SAFETY: `normalize` writes the whole scratch plane before the pool reads it.
                || unsafe { uninit_f32(if pool.is_some() { s } else { 0 }) },
                |scratch, (row, (d, (y, dzp)))| {
                    let ch = row % c;
                    let (a, b) = sv.ab[ch];
                    match (self.act, &pool) {
                        (Activation::ReluMaxPool2, Some(pg)) => {
                            // `d` is zero on entry, so an odd last row or column stays zero.
                            normalize(y, scratch, a, b);
                            pool2x2_grad_plane(scratch, dzp, d, pg, true);
                        }
                        (Activation::Relu, _) => {
                            for ((d, &y), &gz) in d.iter_mut().zip(y).zip(dzp) {
                                *d = if a * y + b > 0.0 { gz } else { 0.0 };
                            }
                        }
                        _ => d.copy_from_slice(dzp),
                    }
                    let mu = sv.mean[ch];
                    (sum8(d, |v| v), sum8_2(d, y, |g, y| g * (y - mu)))
                },
            )
            .collect();
        Ok((dy, sums))
    }

    /// The flat output `[dx…], dw…, dγ…, dβ…` from the convolution output's gradient `dy`
    /// and the BatchNorm parameters' `dgb`.
    fn conv_grads(&self, x: &[f32], w: &[f32], dy: &[f32], g: &Geom, dgb: &[f32]) -> Output {
        let nx = if self.need_dx { x.len() } else { 0 };
        let dw = conv::weight_grad(x, dy, g);
        // SAFETY: every element is written below: `input_grad_into` writes the whole input
        // gradient, then the weight and BatchNorm gradients are copied in.
        let mut out = unsafe { uninit_f32(nx + dw.len() + dgb.len()) };
        if self.need_dx {
            conv::input_grad_into(dy, w, g, &mut out[..nx]);
        }
        out[nx..nx + dw.len()].copy_from_slice(&dw);
        out[nx + dw.len()..].copy_from_slice(dgb);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{close, rand, same_gradients, vals};
    use candle_core::{Device, Var};

    /// The unfused chain of ops, each tested on its own against brute force and finite
    /// differences.
    fn unfused(
        x: &Tensor,
        w: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        stride: usize,
        pad: (usize, usize),
        act: Activation,
    ) -> (Tensor, Tensor, Tensor) {
        let y = super::super::conv2d(x, w, stride, pad).unwrap();
        let (y, m, v) = super::super::batch_norm_train(&y, gamma, beta, 1e-3).unwrap();
        let y = match act {
            Activation::Identity => y,
            Activation::Relu => super::super::relu(&y).unwrap(),
            Activation::ReluMaxPool2 => super::super::relu_max_pool2d(&y, 2, 2).unwrap(),
        };
        (y, m, v)
    }

    #[test]
    fn training_op_equals_the_unfused_chain_in_values_and_gradients() {
        // Even and odd output sizes (the pool leaves an odd last row/column out), stride 2,
        // unequal padding, 1×1 kernels.
        type Case = ([usize; 4], [usize; 4], usize, (usize, usize));
        let cases: &[Case] = &[
            ([3, 4, 8, 8], [5, 4, 3, 3], 1, (1, 1)),
            ([2, 3, 7, 9], [4, 3, 3, 3], 1, (1, 1)),
            ([2, 3, 9, 8], [6, 3, 1, 3], 2, (0, 1)),
            ([4, 6, 5, 5], [3, 6, 1, 1], 1, (0, 0)),
        ];
        for (ci, &(xd, wd, stride, pad)) in cases.iter().enumerate() {
            for act in [
                Activation::Identity,
                Activation::Relu,
                Activation::ReluMaxPool2,
            ] {
                let what = format!("case {ci} {act:?}");
                let seed = ci as u64 * 10;
                let x = Var::from_tensor(&rand(&xd, seed + 1)).unwrap();
                let w = Var::from_tensor(&rand(&wd, seed + 2)).unwrap();
                let gamma = Var::from_tensor(&(rand(&[wd[0]], seed + 3) + 1.2).unwrap()).unwrap();
                let beta = Var::from_tensor(&rand(&[wd[0]], seed + 4)).unwrap();
                let (z, m, v) =
                    conv_bn_train(&x, &w, &gamma, &beta, stride, pad, 1e-3, act).unwrap();
                let (z2, m2, v2) = unfused(&x, &w, &gamma, &beta, stride, pad, act);
                assert_eq!(z.dims(), z2.dims(), "{what}");
                close(&vals(&z), &vals(&z2), 1e-5, &format!("{what}: output"));
                close(&vals(&m), &vals(&m2), 1e-6, &format!("{what}: mean"));
                close(&vals(&v), &vals(&v2), 1e-6, &format!("{what}: var"));
                let vars = [("x", &x), ("w", &w), ("gamma", &gamma), ("beta", &beta)];
                same_gradients(&z, &z2, &vars, seed + 5, 2e-4, &what);
            }
        }
    }

    #[test]
    fn training_op_gradient_matches_finite_differences() {
        // The fused op alone: central differences of a random projection of the output, in f32
        // with a step large enough to beat rounding.
        let x = Var::from_tensor(&rand(&[2, 2, 6, 6], 7)).unwrap();
        let w = Var::from_tensor(&rand(&[3, 2, 3, 3], 8)).unwrap();
        let gamma = Var::from_tensor(&(rand(&[3], 9) + 1.5).unwrap()).unwrap();
        let beta = Var::from_tensor(&rand(&[3], 10)).unwrap();
        // The activation's kinks would defeat finite differences; its gradient routing is
        // checked against the unfused ops above (and theirs against finite differences).
        for act in [Activation::Identity] {
            let f = |x: &Tensor, w: &Tensor, gm: &Tensor, bt: &Tensor| -> (Tensor, f64) {
                let (z, _, _) = conv_bn_train(x, w, gm, bt, 1, (1, 1), 1e-3, act).unwrap();
                let r = rand(z.dims(), 11);
                let l = (z * r).unwrap().sum_all().unwrap();
                let v = l.to_scalar::<f32>().unwrap() as f64;
                (l, v)
            };
            let (l, _) = f(&x, &w, &gamma, &beta);
            let grads = l.backward().unwrap();
            for (name, var) in [("x", &x), ("w", &w), ("gamma", &gamma), ("beta", &beta)] {
                let analytic = vals(grads.get(var).unwrap());
                let base = vals(var.as_tensor());
                for i in (0..base.len()).step_by(base.len().div_ceil(6)) {
                    let h = 1e-2f32;
                    let shifted = |d: f32| {
                        let mut b = base.clone();
                        b[i] += d;
                        Tensor::from_vec(b, var.dims(), &Device::Cpu).unwrap()
                    };
                    let eval = |d: f32| match name {
                        "x" => f(&shifted(d), &w, &gamma, &beta).1,
                        "w" => f(&x, &shifted(d), &gamma, &beta).1,
                        "gamma" => f(&x, &w, &shifted(d), &beta).1,
                        _ => f(&x, &w, &gamma, &shifted(d)).1,
                    };
                    let numeric = (eval(h) - eval(-h)) / (2.0 * h as f64);
                    let a = analytic[i] as f64;
                    assert!(
                        (a - numeric).abs() <= 2e-2 * (1.0 + numeric.abs()),
                        "{act:?} d{name}[{i}]: analytic {a}, numeric {numeric}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = rand(&[1, 2, 4, 4], 1);
        let w = rand(&[3, 2, 3, 3], 2);
        let c3 = rand(&[3], 3);
        let c2 = rand(&[2], 4);
        let act = Activation::Relu;
        assert!(conv_bn_train(&x, &w, &c2, &c3, 1, (1, 1), 1e-3, act).is_err());
        // A 1×1 output cannot be pooled 2×2.
        let x1 = rand(&[1, 2, 3, 3], 5);
        let pool = Activation::ReluMaxPool2;
        assert!(conv_bn_train(&x1, &w, &c3, &c3, 1, (0, 0), 1e-3, pool).is_err());
    }
}
