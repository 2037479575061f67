//! MTCNN's refinement network (RNet; Zhang et al. 2016), as facenet-pytorch's `models/mtcnn.py`
//! builds it: rescores and refines PNet's candidates from 24×24 crops.

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Linear, Module, PReLU, VarBuilder};

use super::layers::{check_input, conv, conv_prelu, dense, flatten_whc, max_pool_ceil, prelu};

/// RNet: conv 3→28, PReLU, pool 3/2 (ceil), conv 28→48, PReLU, pool 3/2 (ceil), conv 48→64 (2×2),
/// PReLU, permute (0, 3, 2, 1) + flatten, `dense4` 576→128, PReLU, then `dense5_1` (face/non-face,
/// softmax) and `dense5_2` (box regression).
#[derive(Debug, Clone)]
pub struct RNet {
    conv1: Conv2d,
    prelu1: PReLU,
    conv2: Conv2d,
    prelu2: PReLU,
    conv3: Conv2d,
    prelu3: PReLU,
    dense4: Linear,
    prelu4: PReLU,
    dense5_1: Linear,
    dense5_2: Linear,
}

impl RNet {
    /// Loads RNet's weights from `vb` (keys without prefix, as in facenet-pytorch's `rnet.pt`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv(3, 28, 3, vb.pp("conv1"))?,
            prelu1: prelu(28, vb.pp("prelu1"))?,
            conv2: conv(28, 48, 3, vb.pp("conv2"))?,
            prelu2: prelu(48, vb.pp("prelu2"))?,
            conv3: conv(48, 64, 2, vb.pp("conv3"))?,
            prelu3: prelu(64, vb.pp("prelu3"))?,
            dense4: dense(576, 128, vb.pp("dense4"))?,
            prelu4: prelu(128, vb.pp("prelu4"))?,
            dense5_1: dense(128, 2, vb.pp("dense5_1"))?,
            dense5_2: dense(128, 4, vb.pp("dense5_2"))?,
        })
    }

    /// Runs RNet on a normalized `(N, 3, 24, 24)` batch.
    ///
    /// Returns `(reg, prob)`: `(N, 4)` box offsets and `(N, 2)` softmax probabilities
    /// (column 1 = face).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(x, "RNet")?;
        let x = conv_prelu(x, &self.conv1, &self.prelu1)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = conv_prelu(&x, &self.conv2, &self.prelu2)?;
        let x = max_pool_ceil(&x, 3, 2)?;
        let x = conv_prelu(&x, &self.conv3, &self.prelu3)?;
        let x = self
            .prelu4
            .forward(&self.dense4.forward(&flatten_whc(&x)?)?)?;
        let prob = candle_nn::ops::softmax(&self.dense5_1.forward(&x)?, 1)?;
        let reg = self.dense5_2.forward(&x)?;
        Ok((reg, prob))
    }
}
