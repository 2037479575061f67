//! FaceNet's InceptionResnetV1 face-embedding network, as in facenet-pytorch.
//!
//! Architecture: Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual
//! Connections on Learning" (2016), used as the embedding network of Schroff et al., "FaceNet: A
//! Unified Embedding for Face Recognition and Clustering" (2015). This port follows
//! `facenet_pytorch/models/inception_resnet_v1.py` (Tim Esler, MIT) module for module: every
//! parameter name is the PyTorch state-dict key (`conv2d_1a.conv.weight`,
//! `repeat_1.0.branch1.1.bn.running_var`, `block8.conv2d.bias`, `last_linear.weight`, `last_bn.*`),
//! so facenet-pytorch checkpoints load unchanged. Output: the L2-normalized embedding
//! (`classify=False`); a checkpoint's `logits.*` head is not part of this model.
//!
//! Kernels: convolutions (including the 1×7, 7×1, 1×3 and 3×1 ones, with per-axis padding) run on
//! [`crate::ops::conv2d`] (im2col + GEMM), BatchNorm on the fused [`crate::ops::batch_norm_train`]
//! in training, and the 3×3 stride-2 max pools on [`crate::ops::max_pool2d`], whose gradient
//! follows PyTorch (candle 0.11's is wrong and refuses kernel ≠ stride).

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::distance::l2_normalize;
use crate::model::layers::{conv_bn_act_stacked, BatchNorm2d, Conv2d as FastConv2d};
use crate::ops::{self, max_pool2d};
use crate::{Error, Result};

/// Channels entering the embedding head (after `block8` and average pooling).
pub const IRV1_FEATURES: usize = 1792;

/// The smallest input side the network accepts: `mixed_7a` needs at least a 3×3 input.
pub const IRV1_MIN_IMAGE_SIZE: usize = 75;

/// Hyper-parameters of [`InceptionResnetV1`]; the defaults are facenet-pytorch's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InceptionResnetV1Config {
    /// Size of the output embedding (`last_linear` rows, `last_bn` features). Default 512.
    pub embedding_dim: usize,
    /// Dropout probability before `last_linear`, applied in training only. Default 0.6.
    pub dropout_prob: f32,
    /// BatchNorm epsilon, in every BatchNorm of the network. Default 0.001.
    pub bn_eps: f64,
    /// Side of the square input image in pixels. Default 160.
    pub image_size: usize,
}

impl Default for InceptionResnetV1Config {
    fn default() -> Self {
        Self {
            embedding_dim: 512,
            dropout_prob: 0.6,
            bn_eps: 1e-3,
            image_size: 160,
        }
    }
}

impl InceptionResnetV1Config {
    /// Checks that every field is in range.
    pub fn validate(&self) -> Result<()> {
        if self.embedding_dim == 0 {
            return Err(Error::InvalidArgument(
                "InceptionResnetV1: embedding_dim must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout_prob) {
            return Err(Error::InvalidArgument(format!(
                "InceptionResnetV1: dropout_prob must be in [0, 1), got {}",
                self.dropout_prob
            )));
        }
        if !(self.bn_eps > 0.0 && self.bn_eps.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "InceptionResnetV1: bn_eps must be positive, got {}",
                self.bn_eps
            )));
        }
        if self.image_size < IRV1_MIN_IMAGE_SIZE {
            return Err(Error::InvalidArgument(format!(
                "InceptionResnetV1: image_size must be at least {IRV1_MIN_IMAGE_SIZE}, got {}",
                self.image_size
            )));
        }
        Ok(())
    }
}

/// facenet-pytorch's `BasicConv2d`: convolution without bias, BatchNorm, ReLU.
/// Parameters `conv.weight` and `bn.{weight,bias,running_mean,running_var}`.
#[derive(Debug, Clone)]
struct BasicConv2d {
    conv: FastConv2d,
    bn: BatchNorm2d,
}

impl BasicConv2d {
    fn new(
        (c_in, c_out): (usize, usize),
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
        eps: f64,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let conv = FastConv2d::new(c_in, c_out, kernel, stride, padding, vb.pp("conv"))?;
        let bn = BatchNorm2d::new(c_out, eps, 0.1, vb.pp("bn"))?;
        Ok(Self { conv, bn })
    }

    /// A square kernel `k` with symmetric padding `p`.
    fn square(
        chans: (usize, usize),
        k: usize,
        stride: usize,
        p: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Self::new(chans, (k, k), stride, (p, p), eps, vb)
    }
}

impl ModuleT for BasicConv2d {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn
            .conv_bn_act(&self.conv, x, train, ops::Activation::Relu)
    }
}

/// One branch of an Inception block: a single `BasicConv2d` (`branchK.conv.weight`) or a
/// sequence of them (`branchK.0.conv.weight`, `branchK.1.conv.weight`, ...).
#[derive(Debug, Clone)]
enum Branch {
    Single(BasicConv2d),
    Seq(Vec<BasicConv2d>),
}

impl ModuleT for Branch {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Branch::Single(c) => c.forward_t(x, train),
            Branch::Seq(cs) => cs.iter().try_fold(x.clone(), |x, c| c.forward_t(&x, train)),
        }
    }
}

/// `Block35`, `Block17` and `Block8`: concatenated branches, a 1×1 `conv2d` with bias back to the
/// input width, scaled residual sum, then ReLU (except the final `block8`).
#[derive(Debug, Clone)]
struct ResidualBlock {
    branches: Vec<Branch>,
    conv2d: FastConv2d,
    conv2d_bias: Tensor,
    scale: f64,
    relu: bool,
}

impl ResidualBlock {
    fn new(
        branches: Vec<Branch>,
        (c_cat, c_out): (usize, usize),
        scale: f64,
        relu: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let conv2d = FastConv2d::new(c_cat, c_out, (1, 1), 1, (0, 0), vb.pp("conv2d"))?;
        let bound = 1.0 / (c_cat as f64).sqrt();
        let conv2d_bias = vb.pp("conv2d").get_with_hints(
            c_out,
            "bias",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self {
            branches,
            conv2d,
            conv2d_bias,
            scale,
            relu,
        })
    }
}

impl ModuleT for ResidualBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let outs = run_branches(&self.branches, x, train)?;
        // (conv + bias)·scale as one convolution with the bias and scale in its epilogue.
        let y = ops::conv_bias_scaled(
            &Tensor::cat(&outs, 1)?,
            self.conv2d.weight(),
            &self.conv2d_bias,
            self.scale,
            1,
            (0, 0),
        )?;
        let y = (y + x)?;
        if self.relu {
            ops::relu(&y)
        } else {
            Ok(y)
        }
    }
}

/// The outputs of an Inception block's branches for input `x`. In inference with fewer images
/// than threads (batch-1 latency), where each convolution runs on one thread, the independent
/// branches run in parallel instead; otherwise one after the other (each convolution then
/// spreads its images over the threads).
fn run_branches(branches: &[Branch], x: &Tensor, train: bool) -> candle_core::Result<Vec<Tensor>> {
    if !train && x.device().is_cpu() && x.dim(0)? < rayon::current_num_threads() {
        use rayon::prelude::*;
        return branches.par_iter().map(|b| b.forward_t(x, train)).collect();
    }
    run_branches_stacked(branches, x, train)
}

/// [`run_branches`] on whole batches: the branches that open with a 1×1 convolution (all of them
/// in the residual blocks, all three in `Mixed_7a`) run those first convolutions as one, stacked
/// ([`conv_bn_act_stacked`]), then go on from their channels of its output.
fn run_branches_stacked(
    branches: &[Branch],
    x: &Tensor,
    train: bool,
) -> candle_core::Result<Vec<Tensor>> {
    let units: Vec<_> = branches
        .iter()
        .filter_map(pointwise_head)
        .map(|c| (&c.conv, &c.bn))
        .collect();
    let mut stacked = conv_bn_act_stacked(&units, x, train, ops::Activation::Relu)?.into_iter();
    branches
        .iter()
        .map(|b| match (b, pointwise_head(b).is_some()) {
            (Branch::Single(_), true) => stacked.next().ok_or_else(missing),
            (Branch::Seq(cs), true) => {
                let y = stacked.next().ok_or_else(missing)?;
                cs[1..].iter().try_fold(y, |y, c| c.forward_t(&y, train))
            }
            (b, false) => b.forward_t(x, train),
        })
        .collect()
}

/// The first convolution of branch `b` when it is pointwise (1×1, stride 1, no padding).
fn pointwise_head(b: &Branch) -> Option<&BasicConv2d> {
    let first = match b {
        Branch::Single(c) => c,
        Branch::Seq(cs) => cs.first()?,
    };
    first.conv.is_pointwise().then_some(first)
}

fn missing() -> candle_core::Error {
    candle_core::Error::Msg("InceptionResnetV1: stacked branch outputs out of step".into())
}

/// `Mixed_6a` and `Mixed_7a`: convolution branches concatenated with a parameter-free 3×3
/// stride-2 max pool of the input (the last branch).
#[derive(Debug, Clone)]
struct ReductionBlock {
    branches: Vec<Branch>,
}

impl ModuleT for ReductionBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut outs = run_branches(&self.branches, x, train)?;
        outs.push(max_pool2d(x, 3, 2)?);
        Tensor::cat(&outs, 1)
    }
}

/// One `BasicConv2d` of a sequential branch: `((c_in, c_out), (k_h, k_w), stride, (p_h, p_w))`.
type ConvSpec = ((usize, usize), (usize, usize), usize, (usize, usize));

/// A sequential branch (`branchK.0`, `branchK.1`, ...) built from its convolutions' specs.
fn seq(specs: &[ConvSpec], eps: f64, vb: VarBuilder) -> candle_core::Result<Branch> {
    let convs = specs
        .iter()
        .enumerate()
        .map(|(i, &(ch, k, s, p))| BasicConv2d::new(ch, k, s, p, eps, vb.pp(i)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Branch::Seq(convs))
}

fn single(
    ch: (usize, usize),
    k: usize,
    s: usize,
    p: usize,
    eps: f64,
    vb: VarBuilder,
) -> candle_core::Result<Branch> {
    Ok(Branch::Single(BasicConv2d::square(ch, k, s, p, eps, vb)?))
}

/// facenet-pytorch `Block35` (35×35 grid in the paper; 17×17 at 160 px): 256 channels.
fn block35(scale: f64, eps: f64, vb: VarBuilder) -> candle_core::Result<ResidualBlock> {
    let one = (1, 1);
    let three = (3, 3);
    let branches = vec![
        single((256, 32), 1, 1, 0, eps, vb.pp("branch0"))?,
        seq(
            &[((256, 32), one, 1, (0, 0)), ((32, 32), three, 1, (1, 1))],
            eps,
            vb.pp("branch1"),
        )?,
        seq(
            &[
                ((256, 32), one, 1, (0, 0)),
                ((32, 32), three, 1, (1, 1)),
                ((32, 32), three, 1, (1, 1)),
            ],
            eps,
            vb.pp("branch2"),
        )?,
    ];
    ResidualBlock::new(branches, (96, 256), scale, true, vb)
}

/// facenet-pytorch `Block17`: 896 channels, factorized 1×7 / 7×1 convolutions.
fn block17(scale: f64, eps: f64, vb: VarBuilder) -> candle_core::Result<ResidualBlock> {
    let branches = vec![
        single((896, 128), 1, 1, 0, eps, vb.pp("branch0"))?,
        seq(
            &[
                ((896, 128), (1, 1), 1, (0, 0)),
                ((128, 128), (1, 7), 1, (0, 3)),
                ((128, 128), (7, 1), 1, (3, 0)),
            ],
            eps,
            vb.pp("branch1"),
        )?,
    ];
    ResidualBlock::new(branches, (256, 896), scale, true, vb)
}

/// facenet-pytorch `Block8`: 1792 channels, factorized 1×3 / 3×1 convolutions.
fn block8(scale: f64, relu: bool, eps: f64, vb: VarBuilder) -> candle_core::Result<ResidualBlock> {
    let branches = vec![
        single((1792, 192), 1, 1, 0, eps, vb.pp("branch0"))?,
        seq(
            &[
                ((1792, 192), (1, 1), 1, (0, 0)),
                ((192, 192), (1, 3), 1, (0, 1)),
                ((192, 192), (3, 1), 1, (1, 0)),
            ],
            eps,
            vb.pp("branch1"),
        )?,
    ];
    ResidualBlock::new(branches, (384, 1792), scale, relu, vb)
}

/// facenet-pytorch `Mixed_6a`: 256 → 384 + 256 + 256 (pool) = 896 channels, stride 2.
fn mixed_6a(eps: f64, vb: VarBuilder) -> candle_core::Result<ReductionBlock> {
    let branches = vec![
        single((256, 384), 3, 2, 0, eps, vb.pp("branch0"))?,
        seq(
            &[
                ((256, 192), (1, 1), 1, (0, 0)),
                ((192, 192), (3, 3), 1, (1, 1)),
                ((192, 256), (3, 3), 2, (0, 0)),
            ],
            eps,
            vb.pp("branch1"),
        )?,
    ];
    Ok(ReductionBlock { branches })
}

/// facenet-pytorch `Mixed_7a`: 896 → 384 + 256 + 256 + 896 (pool) = 1792 channels, stride 2.
fn mixed_7a(eps: f64, vb: VarBuilder) -> candle_core::Result<ReductionBlock> {
    let branches = vec![
        seq(
            &[
                ((896, 256), (1, 1), 1, (0, 0)),
                ((256, 384), (3, 3), 2, (0, 0)),
            ],
            eps,
            vb.pp("branch0"),
        )?,
        seq(
            &[
                ((896, 256), (1, 1), 1, (0, 0)),
                ((256, 256), (3, 3), 2, (0, 0)),
            ],
            eps,
            vb.pp("branch1"),
        )?,
        seq(
            &[
                ((896, 256), (1, 1), 1, (0, 0)),
                ((256, 256), (3, 3), 1, (1, 1)),
                ((256, 256), (3, 3), 2, (0, 0)),
            ],
            eps,
            vb.pp("branch2"),
        )?,
    ];
    Ok(ReductionBlock { branches })
}

/// The names of the modules whose outputs [`InceptionResnetV1::forward_stages`] reports, in
/// forward order (the keys `stage.{name}` of the parity fixture).
pub const IRV1_STAGES: [&str; 9] = [
    "conv2d_4b",
    "repeat_1",
    "mixed_6a",
    "repeat_2",
    "mixed_7a",
    "repeat_3",
    "block8",
    "last_linear",
    "last_bn",
];

/// FaceNet's InceptionResnetV1 embedding network (facenet-pytorch layout, `classify=False`).
///
/// Input: `(N, 3, S, S)` standardized images (`(x − 127.5) / 128` for facenet-pytorch's
/// pretrained weights), `S = config.image_size`. Output: `(N, embedding_dim)` L2-normalized
/// embeddings. `forward_t(x, true)` runs BatchNorm in training mode (batch statistics, running
/// stats updated in place) and applies dropout before `last_linear`.
#[derive(Debug, Clone)]
pub struct InceptionResnetV1 {
    config: InceptionResnetV1Config,
    conv2d_1a: BasicConv2d,
    conv2d_2a: BasicConv2d,
    conv2d_2b: BasicConv2d,
    conv2d_3b: BasicConv2d,
    conv2d_4a: BasicConv2d,
    conv2d_4b: BasicConv2d,
    repeat_1: Vec<ResidualBlock>,
    mixed_6a: ReductionBlock,
    repeat_2: Vec<ResidualBlock>,
    mixed_7a: ReductionBlock,
    repeat_3: Vec<ResidualBlock>,
    block8: ResidualBlock,
    last_linear: Linear,
    last_bn: BatchNorm2d,
}

impl InceptionResnetV1 {
    /// Builds the network, reading every tensor from `vb` under facenet-pytorch's names.
    pub fn new(config: &InceptionResnetV1Config, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        Ok(Self::build(config, vb)?)
    }

    fn build(config: &InceptionResnetV1Config, vb: VarBuilder) -> candle_core::Result<Self> {
        let eps = config.bn_eps;
        let sq = |ch, k, s, p, name: &str| BasicConv2d::square(ch, k, s, p, eps, vb.pp(name));
        let repeat =
            |n: usize, name: &str, f: &dyn Fn(VarBuilder) -> candle_core::Result<ResidualBlock>| {
                (0..n)
                    .map(|i| f(vb.pp(name).pp(i)))
                    .collect::<candle_core::Result<Vec<_>>>()
            };
        Ok(Self {
            config: config.clone(),
            conv2d_1a: sq((3, 32), 3, 2, 0, "conv2d_1a")?,
            conv2d_2a: sq((32, 32), 3, 1, 0, "conv2d_2a")?,
            conv2d_2b: sq((32, 64), 3, 1, 1, "conv2d_2b")?,
            conv2d_3b: sq((64, 80), 1, 1, 0, "conv2d_3b")?,
            conv2d_4a: sq((80, 192), 3, 1, 0, "conv2d_4a")?,
            conv2d_4b: sq((192, 256), 3, 2, 0, "conv2d_4b")?,
            repeat_1: repeat(5, "repeat_1", &|vb| block35(0.17, eps, vb))?,
            mixed_6a: mixed_6a(eps, vb.pp("mixed_6a"))?,
            repeat_2: repeat(10, "repeat_2", &|vb| block17(0.10, eps, vb))?,
            mixed_7a: mixed_7a(eps, vb.pp("mixed_7a"))?,
            repeat_3: repeat(5, "repeat_3", &|vb| block8(0.20, true, eps, vb))?,
            block8: block8(1.0, false, eps, vb.pp("block8"))?,
            last_linear: candle_nn::linear_no_bias(
                IRV1_FEATURES,
                config.embedding_dim,
                vb.pp("last_linear"),
            )?,
            last_bn: BatchNorm2d::new(config.embedding_dim, eps, 0.1, vb.pp("last_bn"))?,
        })
    }

    /// The configuration the network was built with.
    pub fn config(&self) -> &InceptionResnetV1Config {
        &self.config
    }

    /// Runs the network and also returns the output of each module named in [`IRV1_STAGES`],
    /// in that order: a debugging aid for locating a mismatch against a reference.
    pub fn forward_stages(
        &self,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Tensor, Vec<(&'static str, Tensor)>)> {
        let mut stages = Vec::with_capacity(IRV1_STAGES.len());
        let y = self.run(x, train, &mut |name, t| stages.push((name, t.clone())))?;
        Ok((y, stages))
    }

    fn run(
        &self,
        x: &Tensor,
        train: bool,
        record: &mut dyn FnMut(&'static str, &Tensor),
    ) -> candle_core::Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let s = self.config.image_size;
        if c != 3 || h != s || w != s {
            candle_core::bail!(
                "InceptionResnetV1 expects (N, 3, {s}, {s}) images, got {:?}",
                x.shape()
            )
        }
        let x = x
            .apply_t(&self.conv2d_1a, train)?
            .apply_t(&self.conv2d_2a, train)?
            .apply_t(&self.conv2d_2b, train)?;
        let x = max_pool2d(&x, 3, 2)?
            .apply_t(&self.conv2d_3b, train)?
            .apply_t(&self.conv2d_4a, train)?
            .apply_t(&self.conv2d_4b, train)?;
        record("conv2d_4b", &x);
        let x = self
            .repeat_1
            .iter()
            .try_fold(x, |x, b| x.apply_t(b, train))?;
        record("repeat_1", &x);
        let x = x.apply_t(&self.mixed_6a, train)?;
        record("mixed_6a", &x);
        let x = self
            .repeat_2
            .iter()
            .try_fold(x, |x, b| x.apply_t(b, train))?;
        record("repeat_2", &x);
        let x = x.apply_t(&self.mixed_7a, train)?;
        record("mixed_7a", &x);
        let x = self
            .repeat_3
            .iter()
            .try_fold(x, |x, b| x.apply_t(b, train))?;
        record("repeat_3", &x);
        let x = x.apply_t(&self.block8, train)?;
        record("block8", &x);
        // AdaptiveAvgPool2d(1) then flatten.
        let x = x.mean((2, 3))?;
        let x = if train && self.config.dropout_prob > 0.0 {
            candle_nn::ops::dropout(&x, self.config.dropout_prob)?
        } else {
            x
        };
        let x = self.last_linear.forward(&x)?;
        record("last_linear", &x);
        let x = self.last_bn.forward_t(&x, train)?;
        record("last_bn", &x);
        l2_normalize(&x)
    }
}

impl ModuleT for InceptionResnetV1 {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.run(x, train, &mut |_, _| {})
    }
}
