//! Building blocks shared by the three MTCNN networks (Zhang et al., "Joint Face Detection and
//! Alignment using Multi-task Cascaded Convolutional Networks", 2016) as facenet-pytorch builds
//! them: per-channel PReLU and PyTorch's `MaxPool2d(..., ceil_mode=True)`.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Conv2d, Linear, PReLU, VarBuilder};

/// A valid (unpadded) convolution with a bias, loaded from `{name}.weight` / `{name}.bias`.
pub(crate) fn conv(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Conv2d> {
    candle_nn::conv2d(cin, cout, k, Default::default(), vb)
}

/// A dense layer with a bias, loaded from `{name}.weight` (out, in) / `{name}.bias`.
pub(crate) fn dense(cin: usize, cout: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(cin, cout, vb)
}

/// PyTorch's `nn.PReLU(c)`: one slope per channel (dimension 1), loaded from `{name}.weight`.
pub(crate) fn prelu(c: usize, vb: VarBuilder) -> Result<PReLU> {
    candle_nn::prelu(Some(c), vb)
}

/// Output length of a ceil-mode pooling window `k` with stride `s` over `n` inputs (no padding),
/// as PyTorch computes it: the last window must start inside the input.
pub(crate) fn ceil_pool_len(n: usize, k: usize, s: usize) -> usize {
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
pub(crate) fn max_pool_ceil(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
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
pub(crate) fn conv_prelu(x: &Tensor, conv: &Conv2d, act: &PReLU) -> Result<Tensor> {
    crate::ops::conv_bias_prelu(x, conv.weight(), &bias_slopes(conv, Some(act))?, 1, (0, 0))
}

/// Applies `conv` (valid, stride 1, with bias) on the crate's convolution kernel.
pub(crate) fn conv_bias(x: &Tensor, conv: &Conv2d) -> Result<Tensor> {
    crate::ops::conv_bias_prelu(x, conv.weight(), &bias_slopes(conv, None)?, 1, (0, 0))
}

/// facenet-pytorch flattens RNet/ONet features after `permute(0, 3, 2, 1)` (N, W, H, C), the
/// layout the original Caffe/TensorFlow weights were trained with.
pub(crate) fn flatten_whc(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 3, 2, 1))?.contiguous()?.flatten_from(1)
}

/// Checks the input is an f32 NCHW batch with three channels.
pub(crate) fn check_input(x: &Tensor, what: &str) -> Result<()> {
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
