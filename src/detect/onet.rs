//! MTCNN's output network (ONet; Zhang et al. 2016), as facenet-pytorch's `models/mtcnn.py`
//! builds it: final score, box refinement and five facial landmarks from 48×48 crops.

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Linear, Module, PReLU, VarBuilder};

use super::layers::{check_input, conv, conv_prelu, dense, flatten_whc, max_pool_ceil, prelu};

/// ONet: conv 3→32, PReLU, pool 3/2, conv 32→64, PReLU, pool 3/2, conv 64→64, PReLU, pool 2/2,
/// conv 64→128 (2×2), PReLU (all pools ceil mode), permute (0, 3, 2, 1) + flatten, `dense5`
/// 1152→256, PReLU, then `dense6_1` (face/non-face, softmax), `dense6_2` (box regression) and
/// `dense6_3` (landmarks: five x then five y, relative to the box).
#[derive(Debug, Clone)]
pub struct ONet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    conv4: Conv2d,
    prelu4: PReLU,
    dense5: Linear,
    prelu5: PReLU,
    dense6_1: Linear,
    dense6_2: Linear,
    dense6_3: Linear,
}

impl ONet {
    /// Loads ONet's weights from `vb` (keys without prefix, as in facenet-pytorch's `onet.pt`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(3, 32, 3, vb.pp("conv1"))?,
            prelu1: prelu(32, vb.pp("prelu1"))?,
            conv2: conv(32, 64, 3, vb.pp("conv2"))?,
            prelu2: prelu(64, vb.pp("prelu2"))?,
            conv3: conv(64, 64, 3, vb.pp("conv3"))?,
            prelu3: prelu(64, vb.pp("prelu3"))?,
            conv4: conv(64, 128, 2, vb.pp("conv4"))?,
            prelu4: prelu(128, vb.pp("prelu4"))?,
            dense5: dense(1152, 256, vb.pp("dense5"))?,
            prelu5: prelu(256, vb.pp("prelu5"))?,
            dense6_1: dense(256, 2, vb.pp("dense6_1"))?,
            dense6_2: dense(256, 4, vb.pp("dense6_2"))?,
            dense6_3: dense(256, 10, vb.pp("dense6_3"))?,
        })
    }

    /// Runs ONet on a normalized `(N, 3, 48, 48)` batch.
    ///
    /// Returns `(reg, landmarks, prob)`: `(N, 4)` box offsets, `(N, 10)` landmarks (x1..x5,
    /// y1..y5 as fractions of the box) and `(N, 2)` softmax probabilities (column 1 = face).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        check_input(x, "ONet")?;
        let x = conv_prelu(x, &self.conv1, &self.prelu1)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = conv_prelu(&x, &self.conv2, &self.prelu2)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = conv_prelu(&x, &self.conv3, &self.prelu3)?;
        let x = max_pool_ceil(&x, 2, 2)?;
        let x = conv_prelu(&x, &self.conv4, &self.prelu4)?;
        let x = self
            .prelu5
            .forward(&self.dense5.forward(&flatten_whc(&x)?)?)?;
        let prob = candle_nn::ops::softmax(&self.dense6_1.forward(&x)?, 1)?;
        let reg = self.dense6_2.forward(&x)?;
        let landmarks = self.dense6_3.forward(&x)?;
        Ok((reg, landmarks, prob))
    }
}
