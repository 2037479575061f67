//! MTCNN's proposal network (PNet; Zhang et al. 2016), as facenet-pytorch's `models/mtcnn.py`
//! builds it: a fully convolutional net that scores every 12×12 window (stride 2) of an image.

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, PReLU, VarBuilder};

use super::layers::{check_input, conv, conv_bias, conv_prelu, max_pool_ceil, prelu};

/// PNet: conv 3→10, PReLU, max-pool 2/2 (ceil), conv 10→16, PReLU, conv 16→32, PReLU, then
/// `conv4_1` (face/non-face, softmax over channels) and `conv4_2` (box regression).
///
/// Parameter names follow facenet-pytorch (`conv1.weight`, `prelu1.weight`, `conv4_2.bias`...).
#[derive(Debug, Clone)]
pub struct PNet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    conv4_1: Conv2d,
    conv4_2: Conv2d,
}

impl PNet {
    /// Loads PNet's weights from `vb` (keys without prefix, as in facenet-pytorch's `pnet.pt`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(3, 10, 3, vb.pp("conv1"))?,
            prelu1: prelu(10, vb.pp("prelu1"))?,
            conv2: conv(10, 16, 3, vb.pp("conv2"))?,
            prelu2: prelu(16, vb.pp("prelu2"))?,
            conv3: conv(16, 32, 3, vb.pp("conv3"))?,
            prelu3: prelu(32, vb.pp("prelu3"))?,
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
        let x = conv_prelu(x, &self.conv1, &self.prelu1)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = conv_prelu(&x, &self.conv2, &self.prelu2)?;
        let x = conv_prelu(&x, &self.conv3, &self.prelu3)?;
        let prob = candle_nn::ops::softmax(&conv_bias(&x, &self.conv4_1)?, 1)?;
        let reg = conv_bias(&x, &self.conv4_2)?;
        Ok((reg, prob))
    }
}
