//! Convolution, batch normalization and activation as one candle custom op: the layer both
//! models are made of (`Conv2d → BatchNorm2d → ReLU [→ 2×2 max-pool]`).
//!
//! Built from the same kernels as [`super::conv2d`], [`super::batch_norm_train`] and
//! [`super::relu_max_pool2d`], with the same values, but as a single node of candle's autograd
//! graph. Every node of the unfused chain costs a pass over the activations in each direction,
//! plus, in candle 0.11's backward, a zero-filled gradient buffer and an addition into it for each
//! intermediate tensor: at 64 images of 32×64×64 that is 33 MB written three times per layer
//! for nothing. Fused, the intermediates live only inside the op:
//! - training forward: GEMM convolution → per-channel statistics → one pass that normalizes,
//!   applies the ReLU and pools; only the convolution output is kept for the backward pass;
//! - training backward: one pass per plane that recomputes the normalized values, routes the
//!   gradient through the pool and ReLU and sums what BatchNorm's closed form needs, one pass for
//!   the BatchNorm input gradient, then the convolution's two GEMM gradients;
//! - inference: the convolution with the BatchNorm's scale and shift and the ReLU applied to each
//!   image's output right after its GEMM, while it is in cache (no weight copy, no extra pass).

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::batchnorm::{backward_coefficients, channel_stats, sum8, sum8_2};
use super::conv::{self, Geom};
use super::maxpool::{pool2x2_grad_plane, pool2x2_plane, relu1, PoolGeom};
use super::{f32_data, is_cpu_f32, uninit_f32};

/// What follows the normalization in [`conv_bn_train`] and [`conv_affine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Nothing: the normalized values themselves.
    Identity,
    /// ReLU (NaN kept, as PyTorch).
    Relu,
    /// ReLU then a 2×2 max-pool with stride 2 (floor mode), PyTorch's gradient rule
    /// ([`super::relu_max_pool2d`]). Training only.
    ReluMaxPool2,
}

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
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &gb, op)?;
    let saved = saved
        .lock()
        .map_err(|_| candle_core::Error::Msg("conv_bn_train: poisoned state".into()))?
        .clone()
        .ok_or_else(|| candle_core::Error::Msg("conv_bn_train: forward saved nothing".into()))?;
    let mean = Tensor::from_slice(&saved.mean, g.o, x.device())?;
    let var = Tensor::from_slice(&saved.var, g.o, x.device())?;
    Ok((y, mean, var))
}

/// Convolution followed by a per-output-channel affine map and optional ReLU:
/// `act(conv(x, w)·scale + shift)`, with `ss` (2, O) holding `scale` then `shift`: a BatchNorm in
/// inference mode, or a bias (`scale` = 1). `act` must not be [`Activation::ReluMaxPool2`].
///
/// The affine map and ReLU run on each image's output right after its GEMM. The gradient
/// reaches `x`, `w` and `ss` (built from candle operations: this is the inference path).
pub fn conv_affine(
    x: &Tensor,
    w: &Tensor,
    ss: &Tensor,
    stride: usize,
    padding: (usize, usize),
    act: Activation,
) -> Result<Tensor> {
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    if ss.dims() != [2, g.o] {
        candle_core::bail!(
            "conv_affine: expects scale and shift as (2, {}), got {:?}",
            g.o,
            ss.dims()
        )
    }
    let relu = match act {
        Activation::Identity => false,
        Activation::Relu => true,
        Activation::ReluMaxPool2 => {
            candle_core::bail!("conv_affine: pooling is not fused at inference")
        }
    };
    if !([x, w, ss].iter().all(|t| is_cpu_f32(t))) {
        let o = g.o;
        let y = super::conv2d(x, w, stride, padding)?
            .broadcast_mul(&ss.get(0)?.reshape((1, o, 1, 1))?)?
            .broadcast_add(&ss.get(1)?.reshape((1, o, 1, 1))?)?;
        return if relu { super::relu(&y) } else { Ok(y) };
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &ss.contiguous()?,
        ConvEpilogueOp {
            stride,
            padding,
            epilogue: Epilogue::Affine { relu },
        },
    )
}

/// `scale · (conv(x, w) + bias)` with a constant `scale`: the scaled residual branch of the
/// Inception-ResNet blocks (`bias` (O) trainable). The bias and scale are applied to each image's
/// output right after its GEMM; the backward pass scales the incoming gradient once and sums it
/// per channel for the bias, with no second convolution.
pub fn conv_bias_scaled(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    scale: f64,
    stride: usize,
    padding: (usize, usize),
) -> Result<Tensor> {
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    if bias.dims() != [g.o] {
        candle_core::bail!(
            "conv_bias_scaled: {} output channels but bias {:?}",
            g.o,
            bias.dims()
        )
    }
    if !([x, w, bias].iter().all(|t| is_cpu_f32(t))) {
        let y = super::conv2d(x, w, stride, padding)?;
        return y.broadcast_add(&bias.reshape((1, g.o, 1, 1))?)? * scale;
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &bias.contiguous()?,
        ConvEpilogueOp {
            stride,
            padding,
            epilogue: Epilogue::BiasScaled {
                scale: scale as f32,
            },
        },
    )
}

/// `prelu(conv(x, w) + bias)` with a per-output-channel PReLU `slope` (PyTorch's
/// `nn.PReLU(O)`: `max(0, v) + slope·min(0, v)`), for inference (MTCNN): `bs` (2, O) holds the
/// bias then the slopes, both applied to each image's output right after its GEMM. A slope of 1
/// gives the plain biased convolution. There is no backward pass: training through it is an
/// error.
pub fn conv_bias_prelu(
    x: &Tensor,
    w: &Tensor,
    bs: &Tensor,
    stride: usize,
    padding: (usize, usize),
) -> Result<Tensor> {
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    if bs.dims() != [2, g.o] {
        candle_core::bail!(
            "conv_bias_prelu: expects bias and slopes as (2, {}), got {:?}",
            g.o,
            bs.dims()
        )
    }
    if !([x, w, bs].iter().all(|t| is_cpu_f32(t))) {
        let o = g.o;
        let y = super::conv2d(x, w, stride, padding)?
            .broadcast_add(&bs.get(0)?.reshape((1, o, 1, 1))?)?;
        let slope = bs.get(1)?.reshape((1, o, 1, 1))?;
        return y.relu()? + y.minimum(0f32)?.broadcast_mul(&slope)?;
    }
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &bs.contiguous()?,
        ConvEpilogueOp {
            stride,
            padding,
            epilogue: Epilogue::BiasPrelu,
        },
    )
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

impl CustomOp3 for ConvBnTrainOp {
    fn name(&self) -> &'static str {
        "candle-face-conv-bn-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let gb = f32_data(s3, l3, self.name())?;
        if gb.len() != 2 * g.o {
            candle_core::bail!("{}: gamma/beta do not have {} entries", self.name(), g.o)
        }
        let (c, s) = (g.o, g.p());
        let y = conv::forward_with(x, w, &g, None);
        let (mean, var, invstd) = channel_stats(&y, (g.n, c, s), self.eps);
        let ab: Vec<(f32, f32)> = (0..c)
            .map(|ch| {
                let a = gb[ch] * invstd[ch];
                (a, gb[c + ch] - mean[ch] * a)
            })
            .collect();
        let dims = out_dims(&g, self.act);
        let plane_out = dims.2 * dims.3;
        // SAFETY: each output plane is written whole below (the 2×2 pool writes every pooled
        // value; the other activations write every element), and `scratch` by `normalize`
        // before the pool reads it.
        let mut z = unsafe { uninit_f32(dims.0 * dims.1 * plane_out) };
        match self.act {
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
        let mut saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("conv_bn_train: poisoned state".into()))?;
        *saved = Some(Arc::new(Saved {
            y,
            mean,
            var,
            invstd,
            gamma: gb[..c].to_vec(),
            ab,
        }));
        Ok((CpuStorage::F32(z), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("conv_bn_train: poisoned state".into()))?
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
        let out = x.apply_op3_no_bwd(&grad.contiguous()?, w, &op)?;
        let (nx, nw, o) = (
            if need_dx { x.elem_count() } else { 0 },
            w.elem_count(),
            gb.dim(1)?,
        );
        let dx = need_dx
            .then(|| out.narrow(0, 0, nx)?.reshape(x.shape()))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| out.narrow(0, nx, nw)?.reshape(w.shape()))
            .transpose()?;
        let dgb = gb
            .track_op()
            .then(|| out.narrow(0, nx + nw, 2 * o)?.reshape((2, o)))
            .transpose()?;
        Ok((dx, dw, dgb))
    }
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

impl CustomOp3 for ConvBnTrainGrad {
    fn name(&self) -> &'static str {
        "candle-face-conv-bn-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l3.dims(), self.stride, self.padding)?;
        let (n, c, s) = (g.n, g.o, g.p());
        let dims = out_dims(&g, self.act);
        if l2.dims() != [dims.0, dims.1, dims.2, dims.3] || self.saved.y.len() != n * c * s {
            candle_core::bail!(
                "{}: gradient shape {:?} does not fit",
                self.name(),
                l2.dims()
            )
        }
        let x = f32_data(s1, l1, self.name())?;
        let dz = f32_data(s2, l2, self.name())?;
        let w = f32_data(s3, l3, self.name())?;
        let sv = &*self.saved;
        let plane_out = dims.2 * dims.3;
        let pool = match self.act {
            Activation::ReluMaxPool2 => Some(PoolGeom::new(g.oh, g.ow, 2, 2)?),
            _ => None,
        };
        // Gradient w.r.t. the normalized values, and per plane Σg and Σg·(y − μ).
        // The pool's backward leaves an odd last row or column untouched (it must be zero);
        // every other path writes each element of `d`.
        let covered = match &pool {
            Some(_) => g.oh % 2 == 0 && g.ow % 2 == 0,
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
        let nx = if self.need_dx { x.len() } else { 0 };
        let dw = conv::weight_grad(x, &dy, &g);
        // SAFETY: every element is written below: `input_grad_into` writes the whole input
        // gradient, then the weight and BatchNorm gradients are copied in.
        let mut out = unsafe { uninit_f32(nx + dw.len() + 2 * c) };
        if self.need_dx {
            conv::input_grad_into(&dy, w, &g, &mut out[..nx]);
        }
        out[nx..nx + dw.len()].copy_from_slice(&dw);
        out[nx + dw.len()..].copy_from_slice(&dgb);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// What the inference epilogue of [`ConvEpilogueOp`] does to an output value `v` of channel
/// `o`, with the op's parameter tensor `p` (third input).
#[derive(Debug, Clone, Copy)]
enum Epilogue {
    /// `v·p[0][o] + p[1][o]`, then ReLU if `relu`: a folded BatchNorm ([`conv_affine`]).
    Affine { relu: bool },
    /// `scale·(v + p[o])` ([`conv_bias_scaled`]).
    BiasScaled { scale: f32 },
    /// PReLU of `v + p[0][o]` with slope `p[1][o]` ([`conv_bias_prelu`]).
    BiasPrelu,
}

impl Epilogue {
    /// Rows of the parameter tensor.
    fn param_rows(self) -> usize {
        match self {
            Epilogue::BiasScaled { .. } => 1,
            _ => 2,
        }
    }

    /// Applies the epilogue to one image's output `y` (O planes of `s` values).
    fn apply(self, y: &mut [f32], p: &[f32], s: usize) {
        let c = y.len() / s.max(1);
        for (ch, plane) in y.chunks_exact_mut(s).enumerate() {
            match self {
                Epilogue::Affine { relu } => {
                    let (a, b) = (p[ch], p[c + ch]);
                    if relu {
                        plane.iter_mut().for_each(|v| *v = relu1(a * *v + b));
                    } else {
                        plane.iter_mut().for_each(|v| *v = a * *v + b);
                    }
                }
                Epilogue::BiasScaled { scale } => {
                    let b = p[ch];
                    plane.iter_mut().for_each(|v| *v = scale * (*v + b));
                }
                Epilogue::BiasPrelu => {
                    let (b, a) = (p[ch], p[c + ch]);
                    plane.iter_mut().for_each(|v| {
                        let t = *v + b;
                        *v = if t < 0.0 { a * t } else { t };
                    });
                }
            }
        }
    }
}

/// A convolution whose per-channel [`Epilogue`] runs on each image's output right after its
/// GEMM: `(x, w, params) → y`.
struct ConvEpilogueOp {
    stride: usize,
    padding: (usize, usize),
    epilogue: Epilogue,
}

impl CustomOp3 for ConvEpilogueOp {
    fn name(&self) -> &'static str {
        "candle-face-conv-epilogue"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let p = f32_data(s3, l3, self.name())?;
        if p.len() != self.epilogue.param_rows() * g.o {
            candle_core::bail!(
                "{}: {} parameters for {} channels",
                self.name(),
                p.len(),
                g.o
            )
        }
        let epilogue = self.epilogue;
        let apply = move |y: &mut [f32], s: usize| epilogue.apply(y, p, s);
        let y = conv::forward_with(x, w, &g, Some(&apply));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        p: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (stride, padding) = (self.stride, self.padding);
        match self.epilogue {
            Epilogue::Affine { relu } => {
                let o = p.dim(1)?;
                let grad = if relu {
                    (grad * res.gt(0.0)?.to_dtype(DType::F32)?)?
                } else {
                    grad.clone()
                };
                let scaled = grad.broadcast_mul(&p.get(0)?.reshape((1, o, 1, 1))?)?;
                let (dx, dw) = conv::conv_grads(x, w, &scaled, stride, padding)?;
                let dp = p
                    .track_op()
                    .then(|| {
                        let conv = super::conv2d(&x.detach(), &w.detach(), stride, padding)?;
                        let dscale = channel_sums(&(&grad * conv)?)?;
                        Tensor::stack(&[dscale, channel_sums(&grad)?], 0)
                    })
                    .transpose()?;
                Ok((dx, dw, dp))
            }
            Epilogue::BiasScaled { scale } => {
                let scaled = (grad * scale as f64)?.contiguous()?;
                let (dx, dw) = conv::conv_grads(x, w, &scaled, stride, padding)?;
                let db = p.track_op().then(|| channel_sums(&scaled)).transpose()?;
                Ok((dx, dw, db))
            }
            Epilogue::BiasPrelu => {
                candle_core::bail!("conv_bias_prelu: inference only, no backward pass")
            }
        }
    }
}

/// Per-channel sums of an (N, C, H, W) tensor, as a (C) tensor, read in place on the CPU.
fn channel_sums(t: &Tensor) -> Result<Tensor> {
    if !is_cpu_f32(t) {
        return t.sum((0, 2, 3));
    }
    t.contiguous()?.apply_op1_no_bwd(&ChannelSums)
}

/// `(N, C, H, W) → (C)`: the sum over images and pixels of each channel.
struct ChannelSums;

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "candle-face-channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let v = f32_data(s, l, self.name())?;
        if h * w == 0 {
            return Ok((CpuStorage::F32(vec![0.0; c]), Shape::from(c)));
        }
        let per_plane: Vec<f64> = v.par_chunks(h * w).map(|p| sum8(p, |x| x)).collect();
        let sums: Vec<f32> = (0..c)
            .map(|ch| (0..n).map(|i| per_plane[i * c + ch]).sum::<f64>() as f32)
            .collect();
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        // A fixed pseudo-random fill (xorshift), independent of candle's generator.
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

    fn vals(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
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
    fn same_gradients(
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
    fn affine_op_equals_conv_scale_shift_relu_in_values_and_gradients() {
        for (relu, stride, pad) in [(true, 1, (1, 1)), (false, 2, (0, 1))] {
            let x = Var::from_tensor(&rand(&[3, 4, 7, 6], 21)).unwrap();
            let w = Var::from_tensor(&rand(&[5, 4, 3, 3], 22)).unwrap();
            let ss = Var::from_tensor(&rand(&[2, 5], 23)).unwrap();
            let act = if relu {
                Activation::Relu
            } else {
                Activation::Identity
            };
            let z = conv_affine(&x, &w, &ss, stride, pad, act).unwrap();
            let y = super::super::conv2d(&x, &w, stride, pad)
                .unwrap()
                .broadcast_mul(&ss.get(0).unwrap().reshape((1, 5, 1, 1)).unwrap())
                .unwrap()
                .broadcast_add(&ss.get(1).unwrap().reshape((1, 5, 1, 1)).unwrap())
                .unwrap();
            let z2 = if relu { y.relu().unwrap() } else { y };
            close(&vals(&z), &vals(&z2), 1e-5, "output");
            let vars = [("x", &x), ("w", &w), ("ss", &ss)];
            same_gradients(&z, &z2, &vars, 24, 1e-4, &format!("relu {relu}"));
        }
    }

    #[test]
    fn scaled_bias_op_equals_conv_plus_bias_times_scale_in_values_and_gradients() {
        let x = Var::from_tensor(&rand(&[3, 6, 4, 5], 31)).unwrap();
        let w = Var::from_tensor(&rand(&[4, 6, 1, 1], 32)).unwrap();
        let b = Var::from_tensor(&rand(&[4], 33)).unwrap();
        let z = conv_bias_scaled(&x, &w, &b, 0.17, 1, (0, 0)).unwrap();
        let z2 = ((super::super::conv2d(&x, &w, 1, (0, 0))
            .unwrap()
            .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
            .unwrap())
            * 0.17)
            .unwrap();
        close(&vals(&z), &vals(&z2), 1e-5, "output");
        same_gradients(&z, &z2, &[("x", &x), ("w", &w), ("bias", &b)], 34, 1e-4, "");
    }

    #[test]
    fn bias_prelu_op_equals_conv_plus_bias_then_prelu() {
        let x = rand(&[2, 3, 9, 8], 41);
        let w = rand(&[5, 3, 3, 3], 42);
        let bias = rand(&[5], 43);
        // Slopes of both signs, zero and one (the plain biased convolution).
        let slope = Tensor::new(&[0.25f32, -0.5, 0.0, 1.0, 2.0], &Device::Cpu).unwrap();
        let bs = Tensor::stack(&[&bias, &slope], 0).unwrap();
        let got = conv_bias_prelu(&x, &w, &bs, 2, (1, 0)).unwrap();
        let y = super::super::conv2d(&x, &w, 2, (1, 0)).unwrap();
        let (dims, yv) = (y.dims().to_vec(), vals(&y));
        let (bv, sv) = (vals(&bias), vals(&slope));
        let plane = dims[2] * dims[3];
        let want: Vec<f32> = yv
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = (i / plane) % 5;
                let t = v + bv[ch];
                t.max(0.0) + sv[ch] * t.min(0.0)
            })
            .collect();
        assert_eq!(got.dims(), &dims[..]);
        close(&vals(&got), &want, 1e-6, "conv + bias + prelu");
        let nn = candle_nn::PReLU::new(slope.clone(), false);
        let via_nn = candle_core::Module::forward(
            &nn,
            &y.broadcast_add(&bias.reshape((1, 5, 1, 1)).unwrap())
                .unwrap(),
        )
        .unwrap();
        close(&vals(&got), &vals(&via_nn), 1e-6, "vs candle-nn PReLU");
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
        assert!(conv_affine(&x, &w, &rand(&[2, 2], 6), 1, (1, 1), act).is_err());
        assert!(conv_affine(&x, &w, &rand(&[2, 3], 6), 1, (1, 1), pool).is_err());
    }
}
