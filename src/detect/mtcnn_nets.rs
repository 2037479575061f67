//! MTCNN's three networks (Zhang et al., "Joint Face Detection and Alignment using Multi-task
//! Cascaded Convolutional Networks", 2016) as facenet-pytorch's `models/mtcnn.py` builds them,
//! with its parameter names: [`PNet`] proposes 12×12 windows, [`RNet`] rescores and refines them
//! from 24×24 crops, [`ONet`] gives the final score, box and five landmarks from 48×48 crops.
//!
//! Every network starts with a trunk of stages `conv{i}` → `prelu{i}` (→ ceil-mode max pool),
//! `i = 1, 2, ...`; the building blocks are per-channel PReLU and PyTorch's
//! `MaxPool2d(..., ceil_mode=True)`.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Linear, PReLU, VarBuilder};

/// One trunk stage: `(in channels, out channels, kernel, max pool (kernel, stride) after)`.
type StageSpec = (usize, usize, usize, Option<(usize, usize)>);

/// A valid convolution `conv{i}`, its PReLU `prelu{i}` and an optional ceil-mode max pool.
#[derive(Debug, Clone)]
struct Stage {
    conv: Conv2d,
    prelu: PReLU,
    pool: Option<(usize, usize)>,
}

/// The convolution trunk shared by the three networks.
#[derive(Debug, Clone)]
struct Trunk(Vec<Stage>);

impl Trunk {
    /// Loads stage `i` (counting from 1) from `conv{i}.*` and `prelu{i}.weight`.
    fn new(specs: &[StageSpec], vb: &VarBuilder) -> Result<Self> {
        let stages = specs.iter().enumerate().map(|(i, &(cin, cout, k, pool))| {
            Ok(Stage {
                conv: conv(cin, cout, k, vb.pp(format!("conv{}", i + 1)))?,
                prelu: prelu(cout, vb.pp(format!("prelu{}", i + 1)))?,
                pool,
            })
        });
        Ok(Self(stages.collect::<Result<_>>()?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for s in &self.0 {
            x = conv_prelu(&x, &s.conv, &s.prelu)?;
            if let Some((k, stride)) = s.pool {
                x = max_pool_ceil(&x, k, stride)?;
            }
        }
        Ok(x)
    }
}

/// PNet: conv 3→10, PReLU, max-pool 2/2 (ceil), conv 10→16, PReLU, conv 16→32, PReLU, then
/// `conv4_1` (face/non-face, softmax over channels) and `conv4_2` (box regression): a fully
/// convolutional net that scores every 12×12 window (stride 2) of an image.
///
/// Parameter names follow facenet-pytorch (`conv1.weight`, `prelu1.weight`, `conv4_2.bias`...).
#[derive(Debug, Clone)]
pub struct PNet {
    trunk: Trunk,
    conv4_1: Conv2d,
    conv4_2: Conv2d,
}

impl PNet {
    /// Loads PNet's weights from `vb` (keys without prefix, as in facenet-pytorch's `pnet.pt`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let specs = [
            (3, 10, 3, Some((2, 2))),
            (10, 16, 3, None),
            (16, 32, 3, None),
        ];
        Ok(Self {
            trunk: Trunk::new(&specs, &vb)?,
            conv4_1: conv(32, 2, 1, vb.pp("conv4_1"))?,
            conv4_2: conv(32, 4, 1, vb.pp("conv4_2"))?,
        })
    }

    /// Runs PNet on a normalized `(N, 3, H, W)` batch (H, W ≥ 12).
    ///
    /// Returns `(reg, prob)`: `reg` `(N, 4, H', W')` box offsets and `prob` `(N, 2, H', W')`
    /// softmax probabilities (channel 1 = face), with `H' = ceil((H − 2) / 2) − 4`.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(x, "PNet")?;
        let x = self.trunk.forward(x)?;
        let prob = candle_nn::ops::softmax(&conv_bias(&x, &self.conv4_1)?, 1)?;
        let reg = conv_bias(&x, &self.conv4_2)?;
        Ok((reg, prob))
    }
}

/// The part RNet and ONet share: a trunk, permute (0, 3, 2, 1) + flatten, a dense layer
/// `dense{n}` with PReLU `prelu{n}`, and output layers `dense{n+1}_1`, `dense{n+1}_2`...; the
/// first output (face/non-face) goes through a softmax.
#[derive(Debug, Clone)]
struct DenseNet {
    trunk: Trunk,
    dense: Linear,
    prelu: PReLU,
    outputs: Vec<Linear>,
}

impl DenseNet {
    /// `n` is the index of the hidden dense layer (the trunk has `n − 1` stages).
    fn new(
        specs: &[StageSpec],
        dense_in: usize,
        hidden: usize,
        outputs: &[usize],
        vb: &VarBuilder,
    ) -> Result<Self> {
        let n = specs.len() + 1;
        let outputs = outputs
            .iter()
            .enumerate()
            .map(|(j, &o)| dense(hidden, o, vb.pp(format!("dense{}_{}", n + 1, j + 1))));
        Ok(Self {
            trunk: Trunk::new(specs, vb)?,
            dense: dense(dense_in, hidden, vb.pp(format!("dense{n}")))?,
            prelu: prelu(hidden, vb.pp(format!("prelu{n}")))?,
            outputs: outputs.collect::<Result<_>>()?,
        })
    }

    /// The outputs in order, the first one as softmax probabilities.
    fn forward(&self, x: &Tensor, what: &str) -> Result<Vec<Tensor>> {
        check_input(x, what)?;
        let x = flatten_whc(&self.trunk.forward(x)?)?;
        let x = self.prelu.forward(&self.dense.forward(&x)?)?;
        let mut out = self
            .outputs
            .iter()
            .map(|l| l.forward(&x))
            .collect::<Result<Vec<_>>>()?;
        out[0] = candle_nn::ops::softmax(&out[0], 1)?;
        Ok(out)
    }
}

/// RNet: conv 3→28, PReLU, pool 3/2 (ceil), conv 28→48, PReLU, pool 3/2 (ceil), conv 48→64 (2×2),
/// PReLU, permute (0, 3, 2, 1) + flatten, `dense4` 576→128, PReLU, then `dense5_1` (face/non-face,
/// softmax) and `dense5_2` (box regression): rescores and refines PNet's candidates.
#[derive(Debug, Clone)]
pub struct RNet(DenseNet);

impl RNet {
    /// Loads RNet's weights from `vb` (keys without prefix, as in facenet-pytorch's `rnet.pt`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let specs = [
            (3, 28, 3, Some((3, 2))),
            (28, 48, 3, Some((3, 2))),
            (48, 64, 2, None),
        ];
        Ok(Self(DenseNet::new(&specs, 576, 128, &[2, 4], &vb)?))
    }

    /// Runs RNet on a normalized `(N, 3, 24, 24)` batch.
    ///
    /// Returns `(reg, prob)`: `(N, 4)` box offsets and `(N, 2)` softmax probabilities
    /// (column 1 = face).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let out = self.0.forward(x, "RNet")?;
        Ok((out[1].clone(), out[0].clone()))
    }
}

/// ONet: conv 3→32, PReLU, pool 3/2, conv 32→64, PReLU, pool 3/2, conv 64→64, PReLU, pool 2/2,
/// conv 64→128 (2×2), PReLU (all pools ceil mode), permute (0, 3, 2, 1) + flatten, `dense5`
/// 1152→256, PReLU, then `dense6_1` (face/non-face, softmax), `dense6_2` (box regression) and
/// `dense6_3` (landmarks: five x then five y, relative to the box).
#[derive(Debug, Clone)]
pub struct ONet(DenseNet);

impl ONet {
    /// Loads ONet's weights from `vb` (keys without prefix, as in facenet-pytorch's `onet.pt`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let specs = [
            (3, 32, 3, Some((3, 2))),
            (32, 64, 3, Some((3, 2))),
            (64, 64, 3, Some((2, 2))),
            (64, 128, 2, None),
        ];
        Ok(Self(DenseNet::new(&specs, 1152, 256, &[2, 4, 10], &vb)?))
    }

    /// Runs ONet on a normalized `(N, 3, 48, 48)` batch.
    ///
    /// Returns `(reg, landmarks, prob)`: `(N, 4)` box offsets, `(N, 10)` landmarks (x1..x5,
    /// y1..y5 as fractions of the box) and `(N, 2)` softmax probabilities (column 1 = face).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let out = self.0.forward(x, "ONet")?;
        Ok((out[1].clone(), out[2].clone(), out[0].clone()))
    }
}

/// A valid (unpadded) convolution with a bias, loaded from `{name}.weight` / `{name}.bias`.
fn conv(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    candle_nn::conv2d(cin, cout, k, Default::default(), vb)
}

/// A dense layer with a bias, loaded from `{name}.weight` (out, in) / `{name}.bias`.
fn dense(cin: usize, cout: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(cin, cout, vb)
}

/// PyTorch's `nn.PReLU(c)`: one slope per channel (dimension 1), loaded from `{name}.weight`.
fn prelu(c: usize, vb: VarBuilder) -> Result<PReLU> {
    candle_nn::prelu(Some(c), vb)
}

/// Output length of a ceil-mode pooling window `k` with stride `s` over `n` inputs (no padding),
/// as PyTorch computes it: the last window must start inside the input.
fn ceil_pool_len(n: usize, k: usize, s: usize) -> usize {
    if n < k {
        return 1;
    }
    let mut out = (n - k).div_ceil(s) + 1;
    if (out - 1) * s >= n {
        out -= 1;
    }
    out
}

/// `MaxPool2d(k, s, ceil_mode=True)` on an NCHW tensor.
///
/// candle's `max_pool2d` floors the output size, so the input is first padded on the right and
/// at the bottom with `-inf` until the floor formula gives PyTorch's ceil-mode size. A padded
/// cell never wins a window because every window keeps at least one real input.
fn max_pool_ceil(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (ceil_pool_len(h, k, s), ceil_pool_len(w, k, s));
    let ph = ((oh - 1) * s + k).saturating_sub(h);
    let pw = ((ow - 1) * s + k).saturating_sub(w);
    let mut x = x.clone();
    if pw > 0 {
        let pad =
            Tensor::full(f32::NEG_INFINITY, (n, c, h, pw), x.device())?.to_dtype(x.dtype())?;
        x = Tensor::cat(&[&x, &pad], D::Minus1)?;
    }
    if ph > 0 {
        let pad =
            Tensor::full(f32::NEG_INFINITY, (n, c, ph, w + pw), x.device())?.to_dtype(x.dtype())?;
        x = Tensor::cat(&[&x, &pad], 2)?;
    }
    crate::ops::max_pool2d(&x, k, s)
}

/// `{conv}.bias` and the per-channel slopes as one (2, O) tensor for
/// [`crate::ops::conv_bias_prelu`]; slopes of 1 when `act` is `None`.
fn bias_slopes(conv: &Conv2d, act: Option<&PReLU>) -> Result<Tensor> {
    let o = conv.weight().dim(0)?;
    let bias = match conv.bias() {
        Some(b) => b.clone(),
        None => Tensor::zeros(o, DType::F32, conv.weight().device())?,
    };
    let slopes = match act {
        Some(a) if a.is_scalar() => a.weight().reshape(())?.broadcast_as(o)?,
        Some(a) => a.weight().clone(),
        None => Tensor::ones(o, DType::F32, conv.weight().device())?,
    };
    Tensor::stack(&[bias, slopes], 0)
}

/// Applies `conv` (valid, stride 1, with bias) then a per-channel PReLU, as one convolution
/// with the bias and PReLU in its epilogue ([`crate::ops::conv_bias_prelu`]).
fn conv_prelu(x: &Tensor, conv: &Conv2d, act: &PReLU) -> Result<Tensor> {
    crate::ops::conv_bias_prelu(x, conv.weight(), &bias_slopes(conv, Some(act))?, 1, (0, 0))
}

/// Applies `conv` (valid, stride 1, with bias) on the crate's convolution kernel.
fn conv_bias(x: &Tensor, conv: &Conv2d) -> Result<Tensor> {
    crate::ops::conv_bias_prelu(x, conv.weight(), &bias_slopes(conv, None)?, 1, (0, 0))
}

/// facenet-pytorch flattens RNet/ONet features after `permute(0, 3, 2, 1)` (N, W, H, C), the
/// layout the original Caffe/TensorFlow weights were trained with.
fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 2, 1))?.contiguous()?.flatten_from(1)
}

/// Checks the input is an f32 NCHW batch with three channels.
fn check_input(x: &Tensor, what: &str) -> Result<()> {
    let (_, c, _, _) = x.dims4()?;
    if c != 3 || x.dtype() != DType::F32 {
        candle_core::bail!(
            "{what}: expected an f32 (N, 3, H, W) batch, got {:?} {:?}",
            x.dtype(),
            x.shape()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Brute-force ceil-mode max pooling, windows clipped at the border.
    fn brute(x: &[f32], h: usize, w: usize, k: usize, s: usize) -> (Vec<f32>, usize, usize) {
        let (oh, ow) = (ceil_pool_len(h, k, s), ceil_pool_len(w, k, s));
        let mut out = vec![f32::NEG_INFINITY; oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                for y in oy * s..(oy * s + k).min(h) {
                    for xx in ox * s..(ox * s + k).min(w) {
                        out[oy * ow + ox] = out[oy * ow + ox].max(x[y * w + xx]);
                    }
                }
            }
        }
        (out, oh, ow)
    }

    #[test]
    fn ceil_pool_sizes_match_pytorch() {
        // PyTorch: MaxPool2d(2, 2, ceil_mode=True) on 7 → 4; MaxPool2d(3, 2, ceil) on 22 → 11,
        // on 10 → 5 (RNet: 24 → 22 → 11 → 9 → 4 → 3).
        assert_eq!(ceil_pool_len(7, 2, 2), 4);
        assert_eq!(ceil_pool_len(8, 2, 2), 4);
        assert_eq!(ceil_pool_len(22, 3, 2), 11);
        assert_eq!(ceil_pool_len(9, 3, 2), 4);
        assert_eq!(ceil_pool_len(46, 3, 2), 23);
        assert_eq!(ceil_pool_len(21, 3, 2), 10);
        assert_eq!(ceil_pool_len(8, 2, 2), 4);
    }

    #[test]
    fn ceil_pool_matches_brute_force_on_negative_values() -> Result<()> {
        for &(h, w, k, s) in &[(7, 9, 2, 2), (22, 21, 3, 2), (9, 10, 3, 2), (5, 5, 3, 2)] {
            let data: Vec<f32> = (0..h * w).map(|i| -((i * 37 % 101) as f32) - 1.0).collect();
            let x = Tensor::from_vec(data.clone(), (1, 1, h, w), &Device::Cpu)?;
            let got = max_pool_ceil(&x, k, s)?;
            let (want, oh, ow) = brute(&data, h, w, k, s);
            assert_eq!(got.dims4()?, (1, 1, oh, ow));
            assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want);
        }
        Ok(())
    }
}
