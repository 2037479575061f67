//! A compact convolutional network for face embeddings that trains on a CPU.
//!
//! The layout follows the `compact64` reference network of `reference/bench_torch.py`: stages of
//! `Conv3x3 (no bias) → BatchNorm → ReLU`, each stage ending in a 2×2 max-pool, then global average
//! pooling, a linear projection and L2 normalisation (FaceNet, Schroff et al. 2015, §3). With the
//! default configuration a 64×64 input is reduced to 4×4 before pooling.
//!
//! Parameter names: `stages.{s}.{b}.conv.weight`, `stages.{s}.{b}.bn.{weight,bias,running_mean,running_var}`,
//! `embed.{weight,bias}`.

use crate::model::layers::{l2_normalize, BatchNorm2d, Conv2d};
use crate::ops::Activation;
use crate::{Error, Result};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Configuration of [`CompactCnn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactCnnConfig {
    /// Output channels of each stage; every stage halves the resolution with a 2×2 max-pool.
    pub channels: Vec<usize>,
    /// Number of `conv → BN → ReLU` blocks per stage (≥ 1).
    pub blocks_per_stage: usize,
    /// Size of the L2-normalised embedding.
    pub embedding_dim: usize,
    /// Side of the square input image in pixels; must be divisible by `2^stages`.
    pub image_size: usize,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// BatchNorm momentum for the running statistics (PyTorch convention).
    pub bn_momentum: f64,
}

impl Default for CompactCnnConfig {
    /// The `compact64` reference network: channels 32, 64, 128, 256, one block per stage,
    /// 128-d embedding, 64×64 input.
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 128, 256],
            blocks_per_stage: 1,
            embedding_dim: 128,
            image_size: 64,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        }
    }
}

impl CompactCnnConfig {
    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        if self.channels.is_empty() || self.channels.contains(&0) {
            return Err(Error::InvalidArgument(
                "compact_cnn: channels must be a non-empty list of positive numbers".into(),
            ));
        }
        if self.blocks_per_stage == 0 || self.embedding_dim == 0 {
            return Err(Error::InvalidArgument(
                "compact_cnn: blocks_per_stage and embedding_dim must be positive".into(),
            ));
        }
        let div = 1usize << self.channels.len();
        if self.image_size < div || !self.image_size.is_multiple_of(div) {
            return Err(Error::InvalidArgument(format!(
                "compact_cnn: image_size {} must be a positive multiple of {div} (2^stages)",
                self.image_size
            )));
        }
        Ok(())
    }
}

/// One `conv3x3 → BatchNorm → ReLU` block (the ReLU is applied by the caller, fused with the
/// stage's max-pool for the last block of a stage).
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBn {
    fn new(c_in: usize, c_out: usize, cfg: &CompactCnnConfig, vb: VarBuilder) -> Result<Self> {
        let conv = Conv2d::new(c_in, c_out, (3, 3), 1, (1, 1), vb.pp("conv"))?;
        let bn = BatchNorm2d::new(c_out, cfg.bn_eps, cfg.bn_momentum, vb.pp("bn"))?;
        Ok(Self { conv, bn })
    }

    fn forward_t(&self, x: &Tensor, train: bool, act: Activation) -> candle_core::Result<Tensor> {
        self.bn.conv_bn_act(&self.conv, x, train, act)
    }
}

/// The compact CNN: see the module documentation.
#[derive(Debug, Clone)]
pub struct CompactCnn {
    stages: Vec<Vec<ConvBn>>,
    embed: Linear,
    cfg: CompactCnnConfig,
}

impl CompactCnn {
    /// Builds the network, taking (or creating) its parameters from `vb`.
    pub fn new(cfg: &CompactCnnConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut stages = Vec::with_capacity(cfg.channels.len());
        let mut c_in = 3;
        for (s, &c_out) in cfg.channels.iter().enumerate() {
            let vbs = vb.pp("stages").pp(s);
            let mut blocks = Vec::with_capacity(cfg.blocks_per_stage);
            for b in 0..cfg.blocks_per_stage {
                blocks.push(ConvBn::new(c_in, c_out, cfg, vbs.pp(b))?);
                c_in = c_out;
            }
            stages.push(blocks);
        }
        let embed = candle_nn::linear(c_in, cfg.embedding_dim, vb.pp("embed"))?;
        Ok(Self {
            stages,
            embed,
            cfg: cfg.clone(),
        })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &CompactCnnConfig {
        &self.cfg
    }
}

impl ModuleT for CompactCnn {
    /// `x`: (N, 3, S, S) standardised images → (N, embedding_dim) L2-normalised embeddings.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for blocks in &self.stages {
            let last = blocks.len() - 1;
            for (i, block) in blocks.iter().enumerate() {
                let act = if i == last {
                    Activation::ReluMaxPool2
                } else {
                    Activation::Relu
                };
                x = block.forward_t(&x, train, act)?;
            }
        }
        let x = x.mean((2, 3))?;
        let x = self.embed.forward(&x)?;
        l2_normalize(&x)
    }
}
