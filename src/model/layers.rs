//! Small building blocks shared by the models: L2 normalisation, a max-pool with a correct
//! gradient, and convolution / BatchNorm layers on the fast kernels of [`crate::ops`].
//!
//! candle 0.11's `max_pool2d` backward is wrong (a unique maximum of a 2×2 window receives a quarter
//! of its gradient), so the 2×2 pool here is built from a reshape and a `max` reduction, whose
//! gradient goes to the maximum in full. The models themselves use [`crate::ops::max_pool2d`],
//! which follows PyTorch's rule and is faster.

use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::ops::Activation;

/// A 2-D convolution without bias on [`crate::ops::conv2d`] (im2col + GEMM on the CPU,
/// candle's own convolution elsewhere). Parameter: `weight` (O, C, kh, kw).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: (usize, usize),
}

impl Conv2d {
    /// A `c_in → c_out` convolution with a `kh`×`kw` kernel, taking (or creating, with
    /// Kaiming-normal initialisation) `weight` from `vb`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints(
            (c_out, c_in, kernel.0, kernel.1),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        Ok(Self {
            weight,
            stride,
            padding,
        })
    }

    /// The weight tensor (O, C, kh, kw).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Whether this is a 1×1 convolution with stride 1 and no padding (a per-pixel matrix
    /// product over the channels).
    pub fn is_pointwise(&self) -> bool {
        let k = self.weight.dims();
        k.len() == 4 && k[2..] == [1, 1] && self.stride == 1 && self.padding == (0, 0)
    }

    /// Output height and width for an `h`×`w` input (floored, as PyTorch's).
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (_, _, kh, kw) = self.weight.dims4()?;
        let (ph, pw) = self.padding;
        Ok((
            (h + 2 * ph - kh) / self.stride + 1,
            (w + 2 * pw - kw) / self.stride + 1,
        ))
    }

    /// Applies the convolution to `x` (N, C, H, W).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::conv2d(x, &self.weight, self.stride, self.padding)
    }
}

/// Batch normalisation over the channels (dim 1) of a (N, C, …) tensor, PyTorch's
/// `BatchNorm2d`: parameters `weight`, `bias`, and the persisted running statistics
/// `running_mean`, `running_var`.
///
/// In training mode it normalises with the batch's statistics through the fused
/// [`crate::ops::batch_norm_train`] and updates the running statistics in place (PyTorch's
/// momentum rule, unbiased variance); in inference mode it applies the running statistics as one
/// per-channel scale and shift. When `vb` is backed by a `VarMap` the running statistics are the
/// map's own variables, so saving the map saves them.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm2d {
    /// A BatchNorm over `channels` channels with PyTorch's `eps` and `momentum`.
    pub fn new(channels: usize, eps: f64, momentum: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
        let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            eps,
            momentum,
        })
    }

    /// The per-channel `(scale, shift)` that inference-mode normalisation applies:
    /// `y = x·scale + shift` with `scale = γ/√(running_var + ε)`, `shift = β − running_mean·scale`.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (self.running_var.as_tensor() + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// [`scale_shift`](Self::scale_shift) as one (2, C) tensor, scale then shift, the form
    /// [`crate::ops::conv_affine`] takes. Computed directly from the parameters' values when
    /// none of them takes part in autograd (a loaded model), else from tensor operations so
    /// that gradients reach `weight` and `bias`.
    pub fn scale_shift_packed(&self) -> Result<Tensor> {
        let params = [
            &self.weight,
            &self.bias,
            self.running_mean.as_tensor(),
            self.running_var.as_tensor(),
        ];
        let plain = params
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
            && !self.weight.track_op()
            && !self.bias.track_op();
        if !plain {
            let (scale, shift) = self.scale_shift()?;
            return Tensor::stack(&[scale, shift], 0);
        }
        let [g, b, m, v] = params.map(|t| t.to_vec1::<f32>());
        let (g, b, m, v) = (g?, b?, m?, v?);
        let c = g.len();
        let mut ss = vec![0f32; 2 * c];
        for i in 0..c {
            let scale = g[i] / (v[i] + self.eps as f32).sqrt();
            ss[i] = scale;
            ss[c + i] = b[i] - m[i] * scale;
        }
        Tensor::from_vec(ss, (2, c), self.weight.device())
    }

    /// A convolution followed by this BatchNorm in inference mode and `act`, as one
    /// convolution whose output is scaled and shifted per channel (and rectified) right after
    /// its GEMM ([`crate::ops::conv_affine`]).
    pub fn conv_folded(&self, conv: &Conv2d, x: &Tensor, act: Activation) -> Result<Tensor> {
        let ss = self.scale_shift_packed()?;
        let fused = if act == Activation::Identity {
            Activation::Identity
        } else {
            Activation::Relu
        };
        let y = crate::ops::conv_affine(x, &conv.weight, &ss, conv.stride, conv.padding, fused)?;
        if act == Activation::ReluMaxPool2 {
            crate::ops::max_pool2d(&y, 2, 2)
        } else {
            Ok(y)
        }
    }

    /// `conv`, then this BatchNorm, then `act`: batch statistics in training (one fused op,
    /// [`crate::ops::conv_bn_train`], updating the running statistics), the running ones folded
    /// into the convolution ([`conv_folded`](Self::conv_folded)) in inference.
    pub fn conv_bn_act(
        &self,
        conv: &Conv2d,
        x: &Tensor,
        train: bool,
        act: Activation,
    ) -> Result<Tensor> {
        if !train {
            return self.conv_folded(conv, x, act);
        }
        let (y, mean, var) = crate::ops::conv_bn_train(
            x,
            &conv.weight,
            &self.weight,
            &self.bias,
            conv.stride,
            conv.padding,
            self.eps,
            act,
        )?;
        // Values per channel of the convolution output: N·oh·ow.
        let (n, _, h, w) = x.dims4()?;
        let (oh, ow) = conv.output_size(h, w)?;
        crate::ops::update_running_stats(
            &self.running_mean,
            &self.running_var,
            &mean,
            &var,
            n * oh * ow,
            self.momentum,
        )?;
        Ok(y)
    }

    /// `conv` then this BatchNorm, no activation: [`conv_bn_act`](Self::conv_bn_act) with
    /// [`Activation::Identity`].
    pub fn conv_bn(&self, conv: &Conv2d, x: &Tensor, train: bool) -> Result<Tensor> {
        self.conv_bn_act(conv, x, train, Activation::Identity)
    }

    /// Normalises `x` (N, C, …); `train` selects batch statistics (and updates the running ones).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        if x.rank() < 2 || x.dim(1)? != c {
            candle_core::bail!("batch_norm: expected (N, {c}, …) input, got {:?}", x.dims())
        }
        if train {
            let count = x.elem_count() / c;
            let (y, mean, var) =
                crate::ops::batch_norm_train(x, &self.weight, &self.bias, self.eps)?;
            crate::ops::update_running_stats(
                &self.running_mean,
                &self.running_var,
                &mean,
                &var,
                count,
                self.momentum,
            )?;
            Ok(y)
        } else {
            let (scale, shift) = self.scale_shift()?;
            let mut shape = vec![1usize; x.rank()];
            shape[1] = c;
            x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
                .broadcast_add(&shift.reshape(shape.as_slice())?)
        }
    }
}

/// Several `conv → BatchNorm → act` units that read the same input `x`, run as one convolution
/// with their weights stacked along the output channels: one pass over `x`, one GEMM instead of
/// several narrow ones and, in training, one input gradient (with one gradient addition into `x`
/// instead of one per unit). Each BatchNorm normalises (and in training updates the running
/// statistics of) its own channels, so the outputs, gradients and running statistics equal those
/// of the units run one by one ([`BatchNorm2d::conv_bn_act`]). Returns one output per unit, in
/// order: channel views of the stacked output.
///
/// The units must share kernel size, stride, padding and BatchNorm settings. With fewer than two
/// units, or [`Activation::ReluMaxPool2`] in inference, each unit runs on its own.
pub fn conv_bn_act_stacked(
    units: &[(&Conv2d, &BatchNorm2d)],
    x: &Tensor,
    train: bool,
    act: Activation,
) -> Result<Vec<Tensor>> {
    let (conv0, bn0) = match units {
        [first, _, ..] if train || act != Activation::ReluMaxPool2 => *first,
        _ => {
            return units
                .iter()
                .map(|(conv, bn)| bn.conv_bn_act(conv, x, train, act))
                .collect()
        }
    };
    let (_, _, kh, kw) = conv0.weight.dims4()?;
    for (conv, bn) in units {
        let (_, _, h, w) = conv.weight.dims4()?;
        if (h, w, conv.stride, conv.padding) != (kh, kw, conv0.stride, conv0.padding)
            || bn.eps != bn0.eps
            || bn.momentum != bn0.momentum
        {
            candle_core::bail!("conv_bn_act_stacked: the units differ in kernel, stride, padding or BatchNorm settings")
        }
    }
    let cat = |f: &dyn Fn(&(&Conv2d, &BatchNorm2d)) -> Tensor| {
        Tensor::cat(&units.iter().map(f).collect::<Vec<_>>(), 0)
    };
    let w = cat(&|(c, _)| c.weight.clone())?;
    // Each unit's channels of the stacked output: (first, count).
    let mut spans = Vec::with_capacity(units.len());
    for (_, bn) in units {
        let first = spans.last().map_or(0, |&(f, c)| f + c);
        spans.push((first, bn.weight.dim(0)?));
    }
    let outs = |y: Tensor| {
        spans
            .iter()
            .map(|&(first, c)| y.narrow(1, first, c))
            .collect::<Result<Vec<_>>>()
    };
    if !train {
        let ss = Tensor::cat(
            &units
                .iter()
                .map(|(_, bn)| bn.scale_shift_packed())
                .collect::<Result<Vec<_>>>()?,
            1,
        )?;
        let y = crate::ops::conv_affine(x, &w, &ss, conv0.stride, conv0.padding, act)?;
        return outs(y);
    }
    let gamma = cat(&|(_, b)| b.weight.clone())?;
    let beta = cat(&|(_, b)| b.bias.clone())?;
    let (y, mean, var) = crate::ops::conv_bn_train(
        x,
        &w,
        &gamma,
        &beta,
        conv0.stride,
        conv0.padding,
        bn0.eps,
        act,
    )?;
    // Values per channel of the convolution output (before any pooling): N·oh·ow.
    let (n, _, h, w) = x.dims4()?;
    let (oh, ow) = conv0.output_size(h, w)?;
    for ((_, bn), &(first, c)) in units.iter().zip(&spans) {
        crate::ops::update_running_stats(
            &bn.running_mean,
            &bn.running_var,
            &mean.narrow(0, first, c)?,
            &var.narrow(0, first, c)?,
            n * oh * ow,
            bn.momentum,
        )?;
    }
    outs(y)
}

/// 2×2 max-pooling with stride 2 (floor mode: an odd last row/column is dropped), with the gradient
/// sent to the maximum of each window (to every maximum when several tie).
pub fn max_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / 2, w / 2);
    let x = if h % 2 != 0 || w % 2 != 0 {
        x.narrow(2, 0, ho * 2)?.narrow(3, 0, wo * 2)?
    } else {
        x.clone()
    };
    x.contiguous()?
        .reshape((n, c, ho, 2, wo, 2))?
        .max(5)?
        .max(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn folded_conv_bn_equals_conv_then_bn() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev);
        let conv = Conv2d::new(3, 5, (3, 3), 1, (1, 1), vb.pp("conv")).unwrap();
        let bn = BatchNorm2d::new(5, 1e-3, 0.1, vb.pp("bn")).unwrap();
        // Non-trivial statistics and affine parameters.
        let x = Tensor::randn(0f32, 2.0, (4, 3, 6, 6), &dev).unwrap();
        for _ in 0..3 {
            bn.forward_t(&(conv.forward(&x).unwrap() + 1.5).unwrap(), true)
                .unwrap();
        }
        let data = vm.data().lock().unwrap();
        data["bn.weight"]
            .set(&Tensor::new(&[0.5f32, 1.5, -1.0, 2.0, 0.1], &dev).unwrap())
            .unwrap();
        data["bn.bias"]
            .set(&Tensor::new(&[0.2f32, -0.3, 0.0, 1.0, -2.0], &dev).unwrap())
            .unwrap();
        drop(data);
        let bn = BatchNorm2d::new(5, 1e-3, 0.1, vb.pp("bn")).unwrap();
        let want = bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap();
        let got = bn.conv_bn(&conv, &x, false).unwrap();
        let err = max_abs_diff(&want, &got);
        assert!(err < 1e-4, "max abs difference {err}");

        // The same parameters loaded as plain tensors (a model folder): the scale and shift are
        // computed from their values, and each activation matches the unfused layers.
        let tensors: std::collections::HashMap<String, Tensor> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap().detach()))
            .collect();
        let vbt = VarBuilder::from_tensors(tensors, candle_core::DType::F32, &dev);
        let conv = Conv2d::new(3, 5, (3, 3), 1, (1, 1), vbt.pp("conv")).unwrap();
        let bn = BatchNorm2d::new(5, 1e-3, 0.1, vbt.pp("bn")).unwrap();
        assert!(!bn.weight.track_op());
        let normalized = bn.forward_t(&conv.forward(&x).unwrap(), false).unwrap();
        for act in [
            Activation::Identity,
            Activation::Relu,
            Activation::ReluMaxPool2,
        ] {
            let want = match act {
                Activation::Identity => normalized.clone(),
                Activation::Relu => normalized.relu().unwrap(),
                Activation::ReluMaxPool2 => crate::ops::relu_max_pool2d(&normalized, 2, 2).unwrap(),
            };
            let got = bn.conv_bn_act(&conv, &x, false, act).unwrap();
            assert_eq!(got.dims(), want.dims());
            let err = max_abs_diff(&want, &got);
            assert!(err < 1e-4, "{act:?}: max abs difference {err}");
        }
    }

    /// Three units (2, 3 and 4 output channels, each with its own BatchNorm parameters) run
    /// stacked and one by one from the same starting state, in training and inference: outputs,
    /// the gradients of the input, weights and BatchNorm parameters, and the running statistics
    /// all agree.
    #[test]
    fn stacked_units_equal_units_one_by_one() {
        let dev = Device::Cpu;
        let x0 = Tensor::randn(0f32, 1.0, (3, 4, 5, 5), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (3, 9, 5, 5), &dev).unwrap();
        let cases = [true, false].into_iter().flat_map(|train| {
            [
                Activation::Relu,
                Activation::Identity,
                Activation::ReluMaxPool2,
            ]
            .map(|act| (train, act))
        });
        for (train, act) in cases {
            let mut runs = Vec::new();
            for stacked in [false, true] {
                let vm = candle_nn::VarMap::new();
                let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &dev);
                let chans = [2usize, 3, 4];
                let units: Vec<(Conv2d, BatchNorm2d)> = chans
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let vb = vb.pp(i);
                        let conv = Conv2d::new(4, c, (1, 1), 1, (0, 0), vb.pp("conv")).unwrap();
                        let bn = BatchNorm2d::new(c, 1e-3, 0.1, vb.pp("bn")).unwrap();
                        (conv, bn)
                    })
                    .collect();
                // Same deterministic parameters in both runs.
                for (name, var) in vm.data().lock().unwrap().iter() {
                    let n = var.elem_count();
                    let seed = name.bytes().map(|b| b as usize).sum::<usize>();
                    let v: Vec<f32> = (0..n)
                        .map(|i| (((i * 7 + seed) % 11) as f32 - 5.0) * 0.1 + 0.05)
                        .collect();
                    let v = if name.ends_with("running_var") {
                        v.iter().map(|a| a.abs() + 0.5).collect()
                    } else {
                        v
                    };
                    var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                        .unwrap();
                }
                let x = Var::from_tensor(&x0).unwrap();
                let refs: Vec<(&Conv2d, &BatchNorm2d)> =
                    units.iter().map(|(c, b)| (c, b)).collect();
                let outs = if stacked {
                    conv_bn_act_stacked(&refs, x.as_tensor(), train, act).unwrap()
                } else {
                    refs.iter()
                        .map(|(c, b)| b.conv_bn_act(c, x.as_tensor(), train, act).unwrap())
                        .collect()
                };
                let y = Tensor::cat(&outs, 1).unwrap();
                let loss = (&y
                    * r.narrow(2, 0, y.dim(2).unwrap())
                        .unwrap()
                        .narrow(3, 0, y.dim(3).unwrap())
                        .unwrap())
                .unwrap()
                .sum_all()
                .unwrap();
                let grads = loss.backward().unwrap();
                let mut got = vec![
                    ("y".to_string(), y),
                    ("dx".to_string(), grads.get(&x).unwrap().clone()),
                ];
                for (name, var) in vm.data().lock().unwrap().iter() {
                    got.push((name.clone(), var.as_tensor().clone()));
                    if let Some(g) = grads.get(var) {
                        got.push((format!("d {name}"), g.clone()));
                    }
                }
                got.sort_by(|a, b| a.0.cmp(&b.0));
                runs.push(got);
            }
            assert_eq!(runs[0].len(), runs[1].len());
            assert!(
                runs[0].len() > 2 + 3 * 4 + 3 * 3,
                "{act:?}, train {train}: too few gradients compared"
            );
            for ((name, want), (name2, got)) in runs[0].iter().zip(&runs[1]) {
                assert_eq!(name, name2);
                assert_eq!(want.dims(), got.dims(), "{act:?}, train {train}: {name}");
                let err = max_abs_diff(want, got);
                assert!(
                    err < 1e-4,
                    "{act:?}, train {train}: {name}: max abs difference {err}"
                );
            }
        }
    }

    #[test]
    fn max_pool_value_and_full_gradient() {
        // The candle 0.11 bug gives d/dx = [0, 0, 0, 0.25] here; the correct gradient is [0, 0, 0, 1].
        let x = Var::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &Device::Cpu).unwrap();
        let y = max_pool2x2(x.as_tensor()).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![4.0]
        );
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g
            .get(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(gx, vec![0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn max_pool_matches_brute_force() {
        let (n, c, h, w) = (2, 3, 6, 5);
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 7919) % 101) as f32 - 50.0)
            .collect();
        let x = Tensor::from_vec(data.clone(), (n, c, h, w), &Device::Cpu).unwrap();
        let y = max_pool2x2(&x).unwrap();
        assert_eq!(y.dims4().unwrap(), (n, c, 3, 2));
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut k = 0;
        for b in 0..n * c {
            for i in 0..3 {
                for j in 0..2 {
                    let at = |di: usize, dj: usize| data[b * h * w + (2 * i + di) * w + 2 * j + dj];
                    let m = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
                    assert_eq!(y[k], m);
                    k += 1;
                }
            }
        }
    }
}
