//! Convolution with a per-output-channel epilogue: a folded BatchNorm (affine map) with an
//! optional ReLU, a scaled bias (Inception-ResNet's residual branches), or a bias and PReLU.
//!
//! The epilogue runs on each image's output right after its GEMM (or on each band of it), while
//! it is in cache: no copy of the weights with the scale folded in, and no extra pass over the
//! activations. The backward passes route the gradient through the epilogue
//! and then run the convolution's two gradient ops; [`conv_bias_prelu`] (MTCNN) has none.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::batchnorm::sum8;
use super::conv::{self, Geom};
use super::kernel::{Grads3, Input, Kernel3, Op3, Output};
use super::maxpool::relu1;
use super::{f32_data, is_cpu_f32, Activation};

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
        Op3(ConvEpilogueOp {
            stride,
            padding,
            epilogue: ChannelEpilogue::Affine { relu },
        }),
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
        Op3(ConvEpilogueOp {
            stride,
            padding,
            epilogue: ChannelEpilogue::BiasScaled {
                scale: scale as f32,
            },
        }),
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
        Op3(ConvEpilogueOp {
            stride,
            padding,
            epilogue: ChannelEpilogue::BiasPrelu,
        }),
    )
}

/// What the inference epilogue of [`ConvEpilogueOp`] does to an output value `v` of channel
/// `o`, with the op's parameter tensor `p` (third input).
#[derive(Debug, Clone, Copy)]
enum ChannelEpilogue {
    /// `v·p[0][o] + p[1][o]`, then ReLU if `relu`: a folded BatchNorm ([`conv_affine`]).
    Affine { relu: bool },
    /// `scale·(v + p[o])` ([`conv_bias_scaled`]).
    BiasScaled { scale: f32 },
    /// PReLU of `v + p[0][o]` with slope `p[1][o]` ([`conv_bias_prelu`]).
    BiasPrelu,
}

impl ChannelEpilogue {
    /// Rows of the parameter tensor.
    fn param_rows(self) -> usize {
        match self {
            ChannelEpilogue::BiasScaled { .. } => 1,
            _ => 2,
        }
    }

    /// The epilogue as a per-channel `(scale, shift, relu)` of `o` channels, where it is one
    /// (for the direct kernel).
    fn as_affine(self, p: &[f32], o: usize) -> Option<(Vec<f32>, Vec<f32>, bool)> {
        match self {
            ChannelEpilogue::Affine { relu } => Some((p[..o].to_vec(), p[o..2 * o].to_vec(), relu)),
            ChannelEpilogue::BiasScaled { scale } => Some((
                vec![scale; o],
                p[..o].iter().map(|b| scale * b).collect(),
                false,
            )),
            ChannelEpilogue::BiasPrelu => None,
        }
    }

    /// Applies the epilogue to one image's output `y` (O planes of `s` values).
    fn apply(self, y: &mut [f32], p: &[f32], s: usize) {
        let c = y.len() / s.max(1);
        for (ch, plane) in y.chunks_exact_mut(s).enumerate() {
            match self {
                ChannelEpilogue::Affine { relu } => {
                    let (a, b) = (p[ch], p[c + ch]);
                    if relu {
                        plane.iter_mut().for_each(|v| *v = relu1(a * *v + b));
                    } else {
                        plane.iter_mut().for_each(|v| *v = a * *v + b);
                    }
                }
                ChannelEpilogue::BiasScaled { scale } => {
                    let b = p[ch];
                    plane.iter_mut().for_each(|v| *v = scale * (*v + b));
                }
                ChannelEpilogue::BiasPrelu => {
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

/// A convolution whose per-channel [`ChannelEpilogue`] runs on each image's output right after its
/// GEMM: `(x, w, params) → y`.
struct ConvEpilogueOp {
    stride: usize,
    padding: (usize, usize),
    epilogue: ChannelEpilogue,
}

impl Kernel3 for ConvEpilogueOp {
    fn name(&self) -> &'static str {
        "candle-face-conv-epilogue"
    }

    fn cpu_fwd(&self, (x, l1): Input, (w, l2): Input, (p, _): Input) -> Output {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        if p.len() != self.epilogue.param_rows() * g.o {
            candle_core::bail!(
                "{}: {} parameters for {} channels",
                self.name(),
                p.len(),
                g.o
            )
        }
        let epilogue = self.epilogue;
        if let Some((scale, shift, relu)) = epilogue.as_affine(p, g.o) {
            let ep = conv::Affine {
                scale: &scale,
                shift: &shift,
                residual: None,
                relu,
            };
            if let Some(y) = conv::forward_direct(x, w, &g, &ep) {
                return Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))));
            }
        }
        let apply = move |y: &mut [f32], s: usize| epilogue.apply(y, p, s);
        let y = conv::forward_with(x, w, &g, Some(&apply));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, p: &Tensor, res: &Tensor, grad: &Tensor) -> Grads3 {
        let (stride, padding) = (self.stride, self.padding);
        match self.epilogue {
            ChannelEpilogue::Affine { relu } => {
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
            ChannelEpilogue::BiasScaled { scale } => {
                let scaled = (grad * scale as f64)?.contiguous()?;
                let (dx, dw) = conv::conv_grads(x, w, &scaled, stride, padding)?;
                let db = p.track_op().then(|| channel_sums(&scaled)).transpose()?;
                Ok((dx, dw, db))
            }
            ChannelEpilogue::BiasPrelu => {
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
    use crate::ops::test_util::{close, rand, same_gradients, vals};
    use candle_core::{Device, Var};

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
        assert!(conv_affine(&x, &w, &rand(&[2, 2], 6), 1, (1, 1), Activation::Relu).is_err());
        let pool = Activation::ReluMaxPool2;
        assert!(conv_affine(&x, &w, &rand(&[2, 3], 6), 1, (1, 1), pool).is_err());
    }
}
