//! A compact convolutional network for face embeddings that trains on a CPU.
//!
//! The layout follows the `compact64` reference network of `reference/bench_torch.py`: stages of
//! `Conv3x3 (no bias) → BatchNorm → ReLU`, each stage ending in a 2×2 max-pool, then global average
//! pooling, a linear projection and L2 normalisation (FaceNet, Schroff et al. 2015, §3). With the
//! default configuration a 64×64 input is reduced to 4×4 before pooling.
//!
//! [`Head::Flatten`] replaces the global average pool by a linear layer over the whole final map
//! (DeepFace/DeepID/ArcFace-style output layer): for aligned faces *where* a feature fires carries
//! identity, which averaging throws away. Optional dropout on that input regularises it.
//!
//! Parameter names: `stages.{s}.{b}.conv.weight`, `stages.{s}.{b}.bn.{weight,bias,running_mean,running_var}`,
//! `embed.{weight,bias}`.

use crate::distance::l2_normalize;
use crate::model::layers::{BatchNorm2d, Conv2d};
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
    /// Number of `conv → BN → ReLU` blocks per stage (≥ 1): one number for every stage, or a
    /// list with one entry per stage (`[1, 1, 2, 2]`: deeper late stages, where the maps are
    /// small and a block costs little).
    pub blocks_per_stage: Blocks,
    /// Size of the L2-normalised embedding.
    pub embedding_dim: usize,
    /// Side of the square input image in pixels; must be divisible by `2^stages`.
    pub image_size: usize,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// BatchNorm momentum for the running statistics (PyTorch convention).
    pub bn_momentum: f64,
    /// How the final feature map becomes the embedding (absent in older config.json files:
    /// global average pooling). Written only when not the default, so configs and checkpoint
    /// resume keys of networks without it stay as they were.
    #[serde(default, skip_serializing_if = "Head::is_default")]
    pub head: Head,
    /// Dropout probability on the head's input during training (0: none; written only when set).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropout: f32,
}

/// Blocks per stage of [`CompactCnn`]: written in config.json as a number or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Blocks {
    /// The same number of blocks in every stage.
    Uniform(usize),
    /// One entry per stage.
    PerStage(Vec<usize>),
}

impl Blocks {
    /// The number of blocks of stage `s` (0 for a stage a per-stage list does not cover).
    pub fn of_stage(&self, s: usize) -> usize {
        match self {
            Blocks::Uniform(n) => *n,
            Blocks::PerStage(v) => v.get(s).copied().unwrap_or(0),
        }
    }
}

impl From<usize> for Blocks {
    fn from(n: usize) -> Self {
        Blocks::Uniform(n)
    }
}

impl std::fmt::Display for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocks::Uniform(n) => write!(f, "{n}"),
            Blocks::PerStage(v) => {
                let s: Vec<String> = v.iter().map(|n| n.to_string()).collect();
                write!(f, "{}", s.join(","))
            }
        }
    }
}

impl std::str::FromStr for Blocks {
    type Err = Error;
    /// `"2"` (every stage) or `"1,1,2,2"` (one number per stage).
    fn from_str(s: &str) -> Result<Self> {
        let parts: std::result::Result<Vec<usize>, _> =
            s.split(',').map(|p| p.trim().parse::<usize>()).collect();
        match parts {
            Ok(v) if v.len() == 1 => Ok(Blocks::Uniform(v[0])),
            Ok(v) => Ok(Blocks::PerStage(v)),
            Err(_) => Err(Error::InvalidArgument(format!(
                "blocks per stage {s:?}: expected a number or a comma-separated list of numbers"
            ))),
        }
    }
}

/// The output layer of [`CompactCnn`]: how the last stage's feature map becomes the embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Global average pooling over the final map, then `Linear(C → embedding_dim)`.
    #[default]
    GlobalAverage,
    /// The final map flattened, then `Linear(C·h·w → embedding_dim)`: keeps the spatial layout.
    Flatten,
}

impl Head {
    fn is_default(&self) -> bool {
        *self == Head::default()
    }
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

impl std::str::FromStr for Head {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gap" | "global-average" | "global_average" => Ok(Head::GlobalAverage),
            "flatten" => Ok(Head::Flatten),
            _ => Err(Error::InvalidArgument(format!(
                "unknown head {s:?} (global-average, flatten)"
            ))),
        }
    }
}

impl Default for CompactCnnConfig {
    /// The `compact64` reference network: channels 32, 64, 128, 256, one block per stage,
    /// 128-d embedding, 64×64 input.
    fn default() -> Self {
        Self {
            channels: vec![32, 64, 128, 256],
            blocks_per_stage: Blocks::Uniform(1),
            embedding_dim: 128,
            image_size: 64,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
            head: Head::GlobalAverage,
            dropout: 0.0,
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
        if let Blocks::PerStage(v) = &self.blocks_per_stage {
            if v.len() != self.channels.len() {
                return Err(Error::InvalidArgument(format!(
                    "compact_cnn: blocks_per_stage lists {} stages, channels {}",
                    v.len(),
                    self.channels.len()
                )));
            }
        }
        let no_blocks = (0..self.channels.len()).any(|s| self.blocks_per_stage.of_stage(s) == 0);
        if no_blocks || self.embedding_dim == 0 {
            return Err(Error::InvalidArgument(
                "compact_cnn: blocks_per_stage and embedding_dim must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument(format!(
                "compact_cnn: dropout {} must be in [0, 1)",
                self.dropout
            )));
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

    /// Side of the last stage's feature map.
    pub fn final_side(&self) -> usize {
        self.image_size >> self.channels.len()
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
            let n_blocks = cfg.blocks_per_stage.of_stage(s);
            let mut blocks = Vec::with_capacity(n_blocks);
            for b in 0..n_blocks {
                blocks.push(ConvBn::new(c_in, c_out, cfg, vbs.pp(b))?);
                c_in = c_out;
            }
            stages.push(blocks);
        }
        let head_in = match cfg.head {
            Head::GlobalAverage => c_in,
            Head::Flatten => c_in * cfg.final_side() * cfg.final_side(),
        };
        let embed = candle_nn::linear(head_in, cfg.embedding_dim, vb.pp("embed"))?;
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

    /// The last stage's feature map, (N, C, h, w), before the head.
    pub fn features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
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
        Ok(x)
    }
}

impl ModuleT for CompactCnn {
    /// `x`: (N, 3, S, S) standardised images → (N, embedding_dim) L2-normalised embeddings.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let x = self.features(x, train)?;
        let x = match self.cfg.head {
            Head::GlobalAverage => x.mean((2, 3))?,
            Head::Flatten => x.flatten_from(1)?,
        };
        let x = if train && self.cfg.dropout > 0.0 {
            candle_nn::ops::dropout(&x, self.cfg.dropout)?
        } else {
            x
        };
        let x = self.embed.forward(&x)?;
        l2_normalize(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(head: Head, dropout: f32) -> (CompactCnn, VarMap) {
        let cfg = CompactCnnConfig {
            channels: vec![4, 6],
            embedding_dim: 5,
            image_size: 12,
            head,
            dropout,
            ..Default::default()
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        (CompactCnn::new(&cfg, vb).unwrap(), varmap)
    }

    /// The head computed with plain loops over the weights, from the network's feature map.
    fn head_by_loops(net: &CompactCnn, varmap: &VarMap, x: &Tensor) -> Vec<Vec<f32>> {
        let t = net.features(x, false).unwrap();
        let (n, c, h, w) = t.dims4().unwrap();
        let f: Vec<Vec<Vec<Vec<f32>>>> = (0..n)
            .map(|i| t.get(i).unwrap().to_vec3::<f32>().unwrap())
            .collect();
        let vars = varmap.data().lock().unwrap();
        let wt = vars["embed.weight"].as_tensor().to_vec2::<f32>().unwrap();
        let bias = vars["embed.bias"].as_tensor().to_vec1::<f32>().unwrap();
        (0..n)
            .map(|i| {
                let input: Vec<f32> = match net.config().head {
                    Head::GlobalAverage => (0..c)
                        .map(|ci| f[i][ci].iter().flatten().sum::<f32>() / (h * w) as f32)
                        .collect(),
                    Head::Flatten => f[i].iter().flatten().flatten().copied().collect(),
                };
                let out: Vec<f32> = wt
                    .iter()
                    .zip(&bias)
                    .map(|(row, b)| row.iter().zip(&input).map(|(a, v)| a * v).sum::<f32>() + b)
                    .collect();
                let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt();
                out.iter().map(|v| v / norm).collect()
            })
            .collect()
    }

    #[test]
    fn heads_match_a_loop_reference() {
        let x = Tensor::randn(0f32, 1.0, (3, 3, 12, 12), &Device::Cpu).unwrap();
        for head in [Head::GlobalAverage, Head::Flatten] {
            let (net, varmap) = build(head, 0.0);
            let expected = head_by_loops(&net, &varmap, &x);
            let got = net.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();
            let in_dim = varmap.data().lock().unwrap()["embed.weight"]
                .as_tensor()
                .dim(1)
                .unwrap();
            assert_eq!(in_dim, if head == Head::Flatten { 6 * 3 * 3 } else { 6 });
            for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
                assert!((g - e).abs() < 1e-5, "{head:?}: {g} vs {e}");
            }
        }
    }

    #[test]
    fn dropout_only_in_training() {
        let x = Tensor::randn(0f32, 1.0, (4, 3, 12, 12), &Device::Cpu).unwrap();
        let (net, _) = build(Head::Flatten, 0.5);
        let a = net.forward_t(&x, false).unwrap();
        let b = net.forward_t(&x, false).unwrap();
        let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        let t1 = net.forward_t(&x, true).unwrap();
        let t2 = net.forward_t(&x, true).unwrap();
        let diff = (&t1 - &t2).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            diff.to_scalar::<f32>().unwrap() > 1e-4,
            "dropout drew the same mask twice"
        );
    }

    #[test]
    fn head_config_parses_and_validates() {
        let old = r#"{"channels":[4,8],"blocks_per_stage":1,"embedding_dim":8,"image_size":16,"bn_eps":1e-5,"bn_momentum":0.1}"#;
        let c: CompactCnnConfig = serde_json::from_str(old).unwrap();
        assert_eq!((c.head, c.dropout), (Head::GlobalAverage, 0.0));
        // Written back without the new fields: a checkpoint's resume key from before them matches.
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::from_str::<serde_json::Value>(old).unwrap()
        );
        let c = CompactCnnConfig {
            head: Head::Flatten,
            ..Default::default()
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""head":"flatten""#), "{text}");
        assert_eq!(serde_json::from_str::<CompactCnnConfig>(&text).unwrap(), c);
        assert_eq!("flatten".parse::<Head>().unwrap(), Head::Flatten);
        assert!("mean"
            .parse::<Head>()
            .unwrap_err()
            .to_string()
            .contains("flatten"));
        let bad = CompactCnnConfig {
            dropout: 1.0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("dropout"));
    }

    #[test]
    fn per_stage_blocks_build_parse_and_round_trip() {
        // A number and a list both parse; the number is written back as a number, so the JSON
        // (and the resume key) of existing configs does not change.
        let old = r#"{"channels":[4,8],"blocks_per_stage":2,"embedding_dim":8,"image_size":16,"bn_eps":0.001,"bn_momentum":0.1}"#;
        let cfg: CompactCnnConfig = serde_json::from_str(old).unwrap();
        assert_eq!(cfg.blocks_per_stage, Blocks::Uniform(2));
        assert_eq!(serde_json::to_string(&cfg).unwrap(), old);
        let mut cfg = CompactCnnConfig {
            channels: vec![4, 8, 8],
            blocks_per_stage: "1,2,3".parse().unwrap(),
            embedding_dim: 8,
            image_size: 16,
            ..Default::default()
        };
        assert_eq!(cfg.blocks_per_stage, Blocks::PerStage(vec![1, 2, 3]));
        assert_eq!(cfg.blocks_per_stage.to_string(), "1,2,3");
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""blocks_per_stage":[1,2,3]"#), "{json}");
        assert_eq!(
            serde_json::from_str::<CompactCnnConfig>(&json).unwrap(),
            cfg
        );
        // The network has exactly those blocks (parameter names stages.{s}.{b}).
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = CompactCnn::new(&cfg, vb).unwrap();
        let names: std::collections::BTreeSet<String> = varmap
            .data()
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.ends_with("conv.weight"))
            .cloned()
            .collect();
        let want: std::collections::BTreeSet<String> = [
            "stages.0.0",
            "stages.1.0",
            "stages.1.1",
            "stages.2.0",
            "stages.2.1",
            "stages.2.2",
        ]
        .iter()
        .map(|p| format!("{p}.conv.weight"))
        .collect();
        assert_eq!(names, want);
        let x = Tensor::zeros((2, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 8]);
        // Wrong length, zeros and junk are refused.
        cfg.blocks_per_stage = Blocks::PerStage(vec![1, 2]);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lists 2 stages"));
        cfg.blocks_per_stage = Blocks::PerStage(vec![1, 0, 1]);
        assert!(cfg.validate().is_err());
        assert!("1,x".parse::<Blocks>().is_err());
    }
}
