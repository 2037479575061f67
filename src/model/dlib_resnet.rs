//! dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`, the network of dlib's
//! `examples/dnn_face_recognition_ex.cpp`, used by the Python `face_recognition` library).
//!
//! Layout, with dlib's layer semantics:
//! - stem: 7×7 convolution with stride 2 and no padding, per-channel affine map, ReLU, 3×3 max
//!   pool with stride 2 and no padding;
//! - residual units of two 3×3 convolutions, each followed by a per-channel affine map, with a
//!   ReLU between them and after the sum. A stride-1 convolution pads by 1; a downsampling unit's
//!   first convolution has stride 2 and **no padding**, and its shortcut is a 2×2 average pool
//!   with stride 2;
//! - the sum is dlib's `add_prev`: two tensors of different shapes are added as if the smaller
//!   were padded with zeros at the end of each axis (more channels on the convolution path; at
//!   the 256-channel stage also one more row and column on the shortcut, 4×4 against 3×3);
//! - global average pool, then a linear layer without bias to the embedding (not normalised:
//!   dlib compares raw descriptors with the Euclidean distance).
//!
//! dlib trained with batch normalisation and stores it as `affine` (a fixed per-channel scale and
//! shift). Here each convolution's bias is folded into its affine shift at conversion, and the
//! affine maps stay **fixed** in training too, as dlib's own `affine_` layer (which has no
//! learnable parameters): they hold the statistics of the millions of faces the network was
//! trained on, which the small P×K batches of a fine-tuning run could not estimate better.
//! Fine-tuning changes the convolution and linear weights.
//!
//! Tensor names: `stem.weight` (32, 3, 7, 7), `stem.scale`, `stem.shift` (32);
//! `units.{i}.conv{1,2}.weight`, `.scale`, `.shift`; `fc.weight` (D, C).

use candle_core::{CpuStorage, CustomOp1, Layout, ModuleT, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ops::Activation;

/// One stage: `units` residual units of `channels` channels, the first one downsampling
/// when `downsample` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlibStage {
    /// Output channels of every unit in the stage.
    pub channels: usize,
    /// Number of residual units.
    pub units: usize,
    /// Whether the stage's first unit halves the resolution.
    pub downsample: bool,
}

/// Hyper-parameters of [`DlibResNet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlibResNetConfig {
    /// Input side in pixels (dlib: 150).
    pub image_size: usize,
    /// Channels of the stem convolution (dlib: 32).
    pub stem_channels: usize,
    /// The residual stages, input end first.
    pub stages: Vec<DlibStage>,
    /// Size of the embedding (dlib: 128).
    pub embedding_dim: usize,
}

impl Default for DlibResNetConfig {
    /// dlib's `dlib_face_recognition_resnet_model_v1`.
    fn default() -> Self {
        let stage = |channels, units, downsample| DlibStage {
            channels,
            units,
            downsample,
        };
        Self {
            image_size: 150,
            stem_channels: 32,
            stages: vec![
                stage(32, 3, false),
                stage(64, 4, true),
                stage(128, 3, true),
                stage(256, 3, true),
                stage(256, 1, true),
            ],
            embedding_dim: 128,
        }
    }
}

impl DlibResNetConfig {
    /// The units in order, as `(input channels, output channels, downsample)`.
    pub fn units(&self) -> Vec<(usize, usize, bool)> {
        let mut c_in = self.stem_channels;
        let mut out = Vec::new();
        for s in &self.stages {
            for u in 0..s.units {
                out.push((c_in, s.channels, s.downsample && u == 0));
                c_in = s.channels;
            }
        }
        out
    }

    /// Channels entering the final linear layer.
    pub fn feature_channels(&self) -> usize {
        self.stages
            .last()
            .map_or(self.stem_channels, |s| s.channels)
    }

    /// Checks that the numbers describe a network that yields at least one pixel at its end.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidArgument(m));
        if self.embedding_dim == 0 || self.stem_channels == 0 {
            return bad("dlib_resnet: embedding_dim and stem_channels must be positive".into());
        }
        if self.stages.iter().any(|s| s.channels == 0 || s.units == 0) {
            return bad("dlib_resnet: every stage needs channels and units".into());
        }
        let mut side = self.image_size;
        // Stem convolution (7, stride 2) and pool (3, stride 2), both unpadded.
        for k in [7, 3] {
            if side < k {
                return bad(format!(
                    "dlib_resnet: image_size {} is too small",
                    self.image_size
                ));
            }
            side = (side - k) / 2 + 1;
        }
        for (_, _, down) in self.units() {
            if down {
                if side < 3 {
                    return bad(format!(
                        "dlib_resnet: image_size {} is too small",
                        self.image_size
                    ));
                }
                // The sum keeps the larger of (side-3)/2+1 and (side-2)/2+1.
                side = (side - 2) / 2 + 1;
            }
        }
        if self.image_size > 4096 {
            return bad("dlib_resnet: image_size must be at most 4096".into());
        }
        Ok(())
    }
}

/// A convolution followed by dlib's fixed per-channel affine map.
#[derive(Debug, Clone)]
struct ConvAffine {
    weight: Tensor,
    /// (O): the affine map's scale and shift, read (detached: fixed in training) at each
    /// forward pass, so values loaded into the variables after construction count.
    scale: Tensor,
    shift: Tensor,
    stride: usize,
    padding: usize,
}

impl ConvAffine {
    fn new(c_in: usize, c_out: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            (c_out, c_in, k, k),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let scale = vb.get_with_hints(c_out, "scale", candle_nn::Init::Const(1.0))?;
        let shift = vb.get_with_hints(c_out, "shift", candle_nn::Init::Const(0.0))?;
        // dlib pads stride-1 convolutions by half the kernel and strided ones not at all.
        let padding = if stride == 1 { k / 2 } else { 0 };
        Ok(Self {
            weight,
            scale,
            shift,
            stride,
            padding,
        })
    }

    fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let p = (self.padding, self.padding);
        crate::ops::conv_affine(x, &self.weight, &self.ss()?, self.stride, p, act)
    }

    /// `relu(self(x) + residual)`, for a residual of the output's shape.
    fn forward_add_relu(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let p = (self.padding, self.padding);
        crate::ops::conv_affine_add_relu(x, &self.weight, &self.ss()?, residual, self.stride, p)
    }

    /// The affine map as the (2, O) tensor of scales then shifts, detached.
    fn ss(&self) -> Result<Tensor> {
        Tensor::stack(&[self.scale.detach(), self.shift.detach()], 0)
    }
}

/// One residual unit.
#[derive(Debug, Clone)]
struct Unit {
    conv1: ConvAffine,
    conv2: ConvAffine,
    downsample: bool,
}

impl Unit {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x, Activation::Relu)?;
        let o = self.conv2.weight.dim(0)?;
        if !self.downsample && x.dim(1)? == o {
            // Same shapes: add_prev is a plain sum, fused into the convolution.
            return self.conv2.forward_add_relu(&y, x);
        }
        let (_, c, h, w) = x.dims4()?;
        let (_, _, oh, ow) = y.dims4()?;
        let fits = c <= o && h / 2 <= oh && w / 2 <= ow;
        if self.downsample && fits && !x.track_op() && crate::ops::is_cpu_f32(x) {
            // The pooled shortcut, zero-padded to the output's shape as add_prev pads it.
            let shortcut = x
                .contiguous()?
                .apply_op1_no_bwd(&PaddedAvgPool { o, oh, ow })?;
            return self.conv2.forward_add_relu(&y, &shortcut);
        }
        let y = self.conv2.forward(&y, Activation::Identity)?;
        let shortcut = if self.downsample {
            avg_pool2x2(x)?
        } else {
            x.clone()
        };
        crate::ops::relu(&add_prev(&y, &shortcut)?)
    }
}

/// dlib's face-recognition ResNet (see the module documentation).
#[derive(Debug, Clone)]
pub struct DlibResNet {
    stem: ConvAffine,
    units: Vec<Unit>,
    fc: Tensor,
    cfg: DlibResNetConfig,
}

impl DlibResNet {
    /// Builds the network, taking (or, from a fresh `VarMap`, creating) its tensors from `vb`.
    pub fn new(cfg: &DlibResNetConfig, vb: VarBuilder) -> crate::Result<Self> {
        cfg.validate()?;
        let stem = ConvAffine::new(3, cfg.stem_channels, 7, 2, vb.pp("stem"))?;
        let units = cfg
            .units()
            .into_iter()
            .enumerate()
            .map(|(i, (c_in, c_out, down))| {
                let vb = vb.pp(format!("units.{i}"));
                Ok(Unit {
                    conv1: ConvAffine::new(
                        c_in,
                        c_out,
                        3,
                        if down { 2 } else { 1 },
                        vb.pp("conv1"),
                    )?,
                    conv2: ConvAffine::new(c_out, c_out, 3, 1, vb.pp("conv2"))?,
                    downsample: down,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let fc = vb.get_with_hints(
            (cfg.embedding_dim, cfg.feature_channels()),
            "fc.weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        Ok(Self {
            stem,
            units,
            fc,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DlibResNetConfig {
        &self.cfg
    }
}

impl ModuleT for DlibResNet {
    /// `x`: (N, 3, S, S) preprocessed images; returns (N, D) raw descriptors.
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let mut h = self.stem.forward(x, Activation::Relu)?;
        h = crate::ops::max_pool2d(&h, 3, 2)?;
        for u in &self.units {
            h = u.forward(&h)?;
        }
        let pooled = h.mean(D::Minus1)?.mean(D::Minus1)?;
        pooled.matmul(&self.fc.t()?)
    }
}

/// 2×2 average pool with stride 2, no padding, floor mode (dlib's `avg_pool<2,2,2,2>`), from
/// differentiable candle operations.
fn avg_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / 2, w / 2);
    x.narrow(2, 0, 2 * oh)?
        .narrow(3, 0, 2 * ow)?
        .reshape((n, c, oh, 2, ow, 2))?
        .sum(5)?
        .sum(3)?
        .affine(0.25, 0.0)
}

/// [`avg_pool2x2`] of an (N, C, H, W) tensor written into a zeroed (N, O, oh, ow) one (O ≥ C,
/// oh ≥ H/2, ow ≥ W/2): a downsampling unit's shortcut padded as `add_prev` pads it, for the
/// fused sum. The same values, in one pass; no gradient (inference).
struct PaddedAvgPool {
    o: usize,
    oh: usize,
    ow: usize,
}

impl CustomOp1 for PaddedAvgPool {
    fn name(&self) -> &'static str {
        "candle-face-dlib-padded-avg-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (CpuStorage::F32(v), Some((start, end))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("{}: expects contiguous f32", self.name())
        };
        let (x, (o, oh, ow)) = (&v[start..end], (self.o, self.oh, self.ow));
        let mut y = vec![0f32; n * o * oh * ow];
        y.par_chunks_mut(oh * ow)
            .enumerate()
            .filter(|(j, _)| j % o < c)
            .for_each(|(j, plane)| {
                let src = &x[(j / o * c + j % o) * h * w..][..h * w];
                for (r, rows) in src.chunks_exact(2 * w).enumerate() {
                    let (r0, r1) = rows.split_at(w);
                    for (q, d) in plane[r * ow..][..w / 2].iter_mut().enumerate() {
                        let (a, b) = (r0[2 * q] + r0[2 * q + 1], r1[2 * q] + r1[2 * q + 1]);
                        // As avg_pool2x2: the row sums added, then `affine(0.25, 0.0)`.
                        *d = (a + b) * 0.25 + 0.0;
                    }
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((n, o, oh, ow))))
    }
}

/// dlib's `add_prev`: `a + b` where each tensor counts as zero wherever it is smaller than the
/// other (channels, rows, columns: padded at the end of each axis).
pub fn add_prev(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() == b.dims() {
        return a + b;
    }
    let (na, ca, ha, wa) = a.dims4()?;
    let (nb, cb, hb, wb) = b.dims4()?;
    if na != nb {
        candle_core::bail!("add_prev: batch sizes differ ({na} and {nb})")
    }
    let target = [ca.max(cb), ha.max(hb), wa.max(wb)];
    let pad = |t: &Tensor, dims: [usize; 3]| -> Result<Tensor> {
        let mut t = t.clone();
        for (axis, (&have, &want)) in dims.iter().zip(&target).enumerate() {
            if have < want {
                t = t.pad_with_zeros(axis + 1, 0, want - have)?;
            }
        }
        Ok(t)
    };
    pad(a, [ca, ha, wa])? + pad(b, [cb, hb, wb])?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn add_prev_pads_with_zeros() {
        let dev = Device::Cpu;
        let a = Tensor::ones((1, 2, 3, 3), DType::F32, &dev).unwrap();
        let b = (Tensor::ones((1, 1, 4, 4), DType::F32, &dev).unwrap() * 2.0).unwrap();
        let s = add_prev(&a, &b).unwrap();
        assert_eq!(s.dims(), &[1, 2, 4, 4]);
        let v = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Brute force: channel 0 has 1 + 2 inside 3×3 and 2 outside; channel 1 has 1 inside, 0 outside.
        for c in 0..2 {
            for y in 0..4 {
                for x in 0..4 {
                    let inside = y < 3 && x < 3;
                    let want = (if inside { 1.0 } else { 0.0 }) + if c == 0 { 2.0 } else { 0.0 };
                    assert_eq!(v[c * 16 + y * 4 + x], want, "c{c} y{y} x{x}");
                }
            }
        }
    }

    #[test]
    fn padded_avg_pool_is_avg_pool_then_add_prev_padding() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 7, 6), &dev).unwrap();
        let op = PaddedAvgPool { o: 5, oh: 4, ow: 3 };
        let got = x.apply_op1_no_bwd(&op).unwrap();
        let zeros = Tensor::zeros((2, 5, 4, 3), DType::F32, &dev).unwrap();
        let want = add_prev(&zeros, &avg_pool2x2(&x).unwrap()).unwrap();
        assert_eq!(got.dims(), want.dims());
        let (g, w) = (got.flatten_all().unwrap(), want.flatten_all().unwrap());
        assert_eq!(g.to_vec1::<f32>().unwrap(), w.to_vec1::<f32>().unwrap());
    }

    #[test]
    fn avg_pool_floors_odd_sides() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 25.0, &dev)
            .unwrap()
            .reshape((1, 1, 5, 5))
            .unwrap();
        let y = avg_pool2x2(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Windows {0,1,5,6}, {2,3,7,8}, {10,11,15,16}, {12,13,17,18}.
        assert_eq!(y, vec![3.0, 5.0, 13.0, 15.0]);
    }

    #[test]
    fn default_shapes() {
        let cfg = DlibResNetConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.units().len(), 14);
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = DlibResNet::new(&cfg, vb).unwrap();
        let x = Tensor::zeros((2, 3, 150, 150), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward_t(&x, false).unwrap().dims(), &[2, 128]);
        let params: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        // 5.6 million parameters, as the author states ("29 convolutions").
        assert!((5_500_000..5_700_000).contains(&params), "{params}");
    }
}
