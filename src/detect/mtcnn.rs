//! The MTCNN cascade (Zhang et al., "Joint Face Detection and Alignment using Multi-task
//! Cascaded Convolutional Networks", 2016), step for step as facenet-pytorch's
//! `models/utils/detect_face.py::detect_face` and `MTCNN.detect` run it:
//!
//! 1. an image pyramid (scale `12 / min_face_size`, × `factor` per level while the shorter side
//!    stays ≥ 12 px; level size `int(h·scale + 1)`, area resampling); PNet on every level;
//!    windows with face probability ≥ `thresholds[0]` become boxes
//!    `floor((2·idx + 1) / scale) .. floor((2·idx + 12) / scale)`; NMS 0.5 within a level and
//!    0.7 across levels; box regression (`w = x2 − x1`) and squaring (`rerec`);
//! 2. crops `img[y−1:ey, x−1:ex]` (truncated, clamped) area-resampled to 24×24, RNet, probability
//!    `> thresholds[1]`, NMS 0.7, regression (`w = x2 − x1 + 1`), squaring;
//! 3. 48×48 crops, ONet, probability `> thresholds[2]`, landmarks, regression, and NMS 0.7 with
//!    the "Min" overlap and +1 areas.
//!
//! One deliberate difference: facenet-pytorch silently skips a crop that is empty after
//! clamping (a box wholly outside the image) and then mis-pairs the remaining boxes with the
//! network outputs; here such candidates are dropped.

use rayon::prelude::*;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::nms::{nms, nms_plus_one, Overlap};
use super::{ONet, PNet, RNet};
use crate::image::FloatImage;
use crate::{Error, Result};

/// File names of the three networks inside an MTCNN model folder.
pub const PNET_FILE: &str = "pnet.safetensors";
/// See [`PNET_FILE`].
pub const RNET_FILE: &str = "rnet.safetensors";
/// See [`PNET_FILE`].
pub const ONET_FILE: &str = "onet.safetensors";

/// IoU threshold of the NMS within one pyramid level (stage 1).
pub const NMS_WITHIN_SCALE: f64 = 0.5;
/// IoU threshold of the NMS across pyramid levels (stage 1).
pub const NMS_ACROSS_SCALES: f64 = 0.7;
/// IoU threshold of the NMS after RNet (stage 2).
pub const NMS_RNET: f64 = 0.7;
/// "Min"-overlap threshold of the NMS after ONet (stage 3).
pub const NMS_ONET: f32 = 0.7;

/// One detected face, in the pixel coordinates of the original image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// Bounding box `[x1, y1, x2, y2]` (may extend past the image border).
    pub bbox: [f32; 4],
    /// ONet's face probability.
    pub score: f32,
    /// Five landmarks `(x, y)`: left eye, right eye, nose, left and right mouth corner
    /// (left/right as seen in the image).
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    /// Box width `x2 − x1`.
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }

    /// Box height `y2 − y1`.
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }

    /// Box area `(x2 − x1)(y2 − y1)`, the key facenet-pytorch's `select_largest` sorts by.
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
}

/// Detector settings; `Default` is facenet-pytorch's `MTCNN()` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MtcnnConfig {
    /// Smallest face side, in pixels, the pyramid looks for (facenet-pytorch: 20).
    pub min_face_size: f64,
    /// Face-probability thresholds of PNet, RNet, ONet (facenet-pytorch: 0.6, 0.7, 0.7).
    pub thresholds: [f32; 3],
    /// Scale step between pyramid levels, in (0, 1) (facenet-pytorch: 0.709).
    pub factor: f64,
    /// Largest RNet/ONet batch (facenet-pytorch: 512); only memory use depends on it.
    pub batch_size: usize,
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        Self {
            min_face_size: 20.0,
            thresholds: [0.6, 0.7, 0.7],
            factor: 0.709,
            batch_size: 512,
        }
    }
}

impl MtcnnConfig {
    /// Checks the settings are usable (a factor ≥ 1 would never end the pyramid).
    pub fn validate(&self) -> Result<()> {
        if !(self.min_face_size.is_finite() && self.min_face_size > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "MTCNN min_face_size must be > 0, got {}",
                self.min_face_size
            )));
        }
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "MTCNN factor must be in (0, 1), got {}",
                self.factor
            )));
        }
        if self.thresholds.iter().any(|t| !(0.0..=1.0).contains(t)) {
            return Err(Error::InvalidArgument(format!(
                "MTCNN thresholds must be in [0, 1], got {:?}",
                self.thresholds
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "MTCNN batch_size must be ≥ 1".into(),
            ));
        }
        Ok(())
    }

    /// The pyramid scales for an image of `width × height`, as facenet-pytorch computes them.
    pub fn scales(&self, width: usize, height: usize) -> Vec<f64> {
        let m = 12.0 / self.min_face_size;
        let mut minl = width.min(height) as f64 * m;
        let mut scale = m;
        let mut scales = Vec::new();
        while minl >= 12.0 && self.factor > 0.0 && self.factor < 1.0 {
            scales.push(scale);
            scale *= self.factor;
            minl *= self.factor;
        }
        scales
    }
}

/// Intermediate results of one detection, for parity checks and debugging.
#[derive(Debug, Clone, Default)]
pub struct DetectTrace {
    /// Pyramid scales.
    pub scales: Vec<f64>,
    /// The normalized PNet input of every pyramid level, `(1, 3, int(h·s + 1), int(w·s + 1))`.
    pub pyramid: Vec<Tensor>,
    /// Stage-1 candidates fed to RNet: `[x1, y1, x2, y2, score]` after regression and squaring.
    pub stage1: Vec<[f32; 5]>,
    /// RNet's input batch `(N, 3, 24, 24)`, if stage 1 found anything.
    pub rnet_input: Option<Tensor>,
    /// Stage-2 candidates fed to ONet: `[x1, y1, x2, y2, score]`.
    pub stage2: Vec<[f32; 5]>,
    /// ONet's input batch `(N, 3, 48, 48)`, if stage 2 kept anything.
    pub onet_input: Option<Tensor>,
}

/// A candidate box with its score and regression offsets.
#[derive(Debug, Clone, Copy)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// The three-network MTCNN face detector.
#[derive(Debug, Clone)]
pub struct Mtcnn {
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    config: MtcnnConfig,
    device: Device,
}

/// Loads one safetensors file as a `VarBuilder` on `device`.
fn load_vb(path: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    if !path.is_file() {
        return Err(Error::weights(path, "file not found"));
    }
    let tensors =
        candle_core::safetensors::load(path, device).map_err(|e| Error::weights(path, e))?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}

impl Mtcnn {
    /// Loads the detector from a model folder holding `pnet.safetensors`, `rnet.safetensors`
    /// and `onet.safetensors` (facenet-pytorch's parameter names, no prefix), with the default
    /// [`MtcnnConfig`]. [`crate::convert::convert_mtcnn_pt`] writes such a folder.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::weights(dir, "MTCNN model folder not found"));
        }
        Self::load_files(
            dir.join(PNET_FILE),
            dir.join(RNET_FILE),
            dir.join(ONET_FILE),
            device,
        )
    }

    /// Loads the detector from three safetensors files, with the default [`MtcnnConfig`].
    pub fn load_files(
        pnet: impl AsRef<Path>,
        rnet: impl AsRef<Path>,
        onet: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Self> {
        let (p, r, o) = (pnet.as_ref(), rnet.as_ref(), onet.as_ref());
        Ok(Self {
            pnet: PNet::new(load_vb(p, device)?).map_err(|e| Error::weights(p, e))?,
            rnet: RNet::new(load_vb(r, device)?).map_err(|e| Error::weights(r, e))?,
            onet: ONet::new(load_vb(o, device)?).map_err(|e| Error::weights(o, e))?,
            config: MtcnnConfig::default(),
            device: device.clone(),
        })
    }

    /// Builds the detector from one `VarBuilder` per network (keys without prefix).
    pub fn from_varbuilders(
        pnet: VarBuilder,
        rnet: VarBuilder,
        onet: VarBuilder,
        config: MtcnnConfig,
    ) -> Result<Self> {
        config.validate()?;
        let device = pnet.device().clone();
        Ok(Self {
            pnet: PNet::new(pnet)?,
            rnet: RNet::new(rnet)?,
            onet: ONet::new(onet)?,
            config,
            device,
        })
    }

    /// Replaces the settings (checked by [`MtcnnConfig::validate`]).
    pub fn with_config(mut self, config: MtcnnConfig) -> Result<Self> {
        config.validate()?;
        self.config = config;
        Ok(self)
    }

    /// The current settings.
    pub fn config(&self) -> &MtcnnConfig {
        &self.config
    }

    /// The device the networks run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The proposal network.
    pub fn pnet(&self) -> &PNet {
        &self.pnet
    }

    /// The refinement network.
    pub fn rnet(&self) -> &RNet {
        &self.rnet
    }

    /// The output network.
    pub fn onet(&self) -> &ONet {
        &self.onet
    }

    /// Detects every face in `img`.
    ///
    /// Faces are sorted by box area, largest first (facenet-pytorch's `select_largest`
    /// order), so `faces.first()` is the default "main" face. An image with no face, or one
    /// smaller than 12 px after scaling by `12 / min_face_size`, gives an empty list.
    pub fn detect(&self, img: &image::RgbImage) -> Result<Vec<Face>> {
        self.run(img, None)
    }

    /// Like [`Mtcnn::detect`], also returning the intermediate stages.
    pub fn detect_with_trace(&self, img: &image::RgbImage) -> Result<(Vec<Face>, DetectTrace)> {
        let mut trace = DetectTrace::default();
        let faces = self.run(img, Some(&mut trace))?;
        Ok((faces, trace))
    }

    fn run(&self, img: &image::RgbImage, mut trace: Option<&mut DetectTrace>) -> Result<Vec<Face>> {
        self.config.validate()?;
        let fimg = FloatImage::from_rgb(img);
        let stage1 = self.propose(&fimg, trace.as_deref_mut())?;
        let stage2 = self.refine(&fimg, &stage1, trace.as_deref_mut())?;
        self.output(&fimg, &stage2, trace)
    }

    /// Stage 1: PNet over the pyramid, NMS within and across levels, regression and squaring.
    fn propose(&self, fimg: &FloatImage, mut trace: Option<&mut DetectTrace>) -> Result<Vec<Cand>> {
        let cfg = &self.config;
        let scales = cfg.scales(fimg.width, fimg.height);
        let mut all = Vec::new();
        // The pyramid levels are independent: resample them all at once, in parallel.
        let levels: Vec<(usize, usize, Vec<f32>)> = scales
            .par_iter()
            .map(|&scale| {
                let hs = (fimg.height as f64 * scale + 1.0) as usize;
                let ws = (fimg.width as f64 * scale + 1.0) as usize;
                let mut buf = Vec::new();
                fimg.resize_area_full(ws, hs).push_normalized_chw(&mut buf);
                (hs, ws, buf)
            })
            .collect();
        for (&scale, (hs, ws, buf)) in scales.iter().zip(levels) {
            let x = Tensor::from_vec(buf, (1, 3, hs, ws), &self.device)?;
            let (reg, prob) = self.pnet.forward(&x)?;
            let cands = proposals(&reg, &prob, scale as f32, cfg.thresholds[0])?;
            let keep = nms(&boxes_of(&cands), &scores_of(&cands), NMS_WITHIN_SCALE);
            all.extend(keep.into_iter().map(|i| cands[i]));
            if let Some(t) = trace.as_deref_mut() {
                t.pyramid.push(x);
            }
        }
        if let Some(t) = trace {
            t.scales = scales;
        }
        let keep = nms(&boxes_of(&all), &scores_of(&all), NMS_ACROSS_SCALES);
        let stage1 = keep
            .into_iter()
            .map(|i| {
                let c = all[i];
                let (w, h) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
                let b = [
                    c.b[0] + c.reg[0] * w,
                    c.b[1] + c.reg[1] * h,
                    c.b[2] + c.reg[2] * w,
                    c.b[3] + c.reg[3] * h,
                ];
                Cand {
                    b: rerec(b),
                    score: c.score,
                    reg: [0.0; 4],
                }
            })
            .collect();
        Ok(stage1)
    }

    /// Stage 2: RNet on 24×24 crops of `stage1`, threshold, NMS, regression and squaring.
    fn refine(
        &self,
        fimg: &FloatImage,
        stage1: &[Cand],
        mut trace: Option<&mut DetectTrace>,
    ) -> Result<Vec<Cand>> {
        let cfg = &self.config;
        let (kept, batch) = crops(fimg, stage1, 24);
        let stage1: Vec<Cand> = kept.iter().map(|&i| stage1[i]).collect();
        if let Some(t) = trace.as_deref_mut() {
            t.stage1 = stage1.iter().map(with_score).collect();
        }
        if stage1.is_empty() {
            return Ok(Vec::new());
        }
        let input = Tensor::from_vec(batch, (stage1.len(), 3, 24, 24), &self.device)?;
        let mut regs = Vec::with_capacity(stage1.len());
        let mut probs = Vec::with_capacity(stage1.len());
        for chunk in chunks(&input, cfg.batch_size)? {
            let (reg, prob) = self.rnet.forward(&chunk)?;
            regs.extend(rows::<4>(&reg)?);
            probs.extend(rows::<2>(&prob)?.into_iter().map(|p| p[1]));
        }
        if let Some(t) = trace {
            t.rnet_input = Some(input);
        }
        let passed: Vec<Cand> = stage1
            .iter()
            .zip(regs.iter().zip(&probs))
            .filter(|(_, (_, &p))| p > cfg.thresholds[1])
            .map(|(c, (&reg, &score))| Cand { b: c.b, score, reg })
            .collect();
        let keep = nms(&boxes_of(&passed), &scores_of(&passed), NMS_RNET);
        let stage2: Vec<Cand> = keep
            .into_iter()
            .map(|i| {
                let c = passed[i];
                Cand {
                    b: rerec(bbreg(c.b, c.reg)),
                    score: c.score,
                    reg: [0.0; 4],
                }
            })
            .collect();
        Ok(stage2)
    }

    /// Stage 3: ONet on 48×48 crops of `stage2`: threshold, landmarks, regression, and the
    /// final "Min"-overlap NMS; largest face first.
    fn output(
        &self,
        fimg: &FloatImage,
        stage2: &[Cand],
        mut trace: Option<&mut DetectTrace>,
    ) -> Result<Vec<Face>> {
        let cfg = &self.config;
        let (kept, batch) = crops(fimg, stage2, 48);
        let stage2: Vec<Cand> = kept.iter().map(|&i| stage2[i]).collect();
        if let Some(t) = trace.as_deref_mut() {
            t.stage2 = stage2.iter().map(with_score).collect();
        }
        if stage2.is_empty() {
            return Ok(Vec::new());
        }
        let input = Tensor::from_vec(batch, (stage2.len(), 3, 48, 48), &self.device)?;
        let (mut regs, mut lms, mut probs) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in chunks(&input, cfg.batch_size)? {
            let (reg, lm, prob) = self.onet.forward(&chunk)?;
            regs.extend(rows::<4>(&reg)?);
            lms.extend(rows::<10>(&lm)?);
            probs.extend(rows::<2>(&prob)?.into_iter().map(|p| p[1]));
        }
        if let Some(t) = trace {
            t.onet_input = Some(input);
        }
        let mut faces = Vec::new();
        for (i, c) in stage2.iter().enumerate() {
            let score = probs[i];
            if score <= cfg.thresholds[2] {
                continue;
            }
            let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
            let lm = &lms[i];
            let mut landmarks = [[0f32; 2]; 5];
            for (j, p) in landmarks.iter_mut().enumerate() {
                *p = [w * lm[j] + c.b[0] - 1.0, h * lm[5 + j] + c.b[1] - 1.0];
            }
            faces.push(Face {
                bbox: bbreg(c.b, regs[i]),
                score,
                landmarks,
            });
        }
        let boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
        let scores: Vec<f32> = faces.iter().map(|f| f.score).collect();
        let keep = nms_plus_one(&boxes, &scores, NMS_ONET, Overlap::Min);
        let mut faces: Vec<Face> = keep.into_iter().map(|i| faces[i]).collect();
        faces.sort_by(|a, b| b.area().total_cmp(&a.area()));
        Ok(faces)
    }
}

/// PNet windows with face probability ≥ `thresh`, as boxes in original-image pixels
/// (facenet-pytorch's `generateBoundingBox`: stride 2, cell 12, f32 arithmetic).
fn proposals(reg: &Tensor, prob: &Tensor, scale: f32, thresh: f32) -> Result<Vec<Cand>> {
    let (_, _, oh, ow) = prob.dims4()?;
    let prob = prob.i((0, 1))?.flatten_all()?.to_vec1::<f32>()?;
    let reg = reg.i(0)?.flatten_all()?.to_vec1::<f32>()?;
    let n = oh * ow;
    let mut out = Vec::new();
    for y in 0..oh {
        for x in 0..ow {
            let k = y * ow + x;
            let score = prob[k];
            if score >= thresh {
                let (bx, by) = (x as f32, y as f32);
                out.push(Cand {
                    b: [
                        ((2.0 * bx + 1.0) / scale).floor(),
                        ((2.0 * by + 1.0) / scale).floor(),
                        ((2.0 * bx + 12.0) / scale).floor(),
                        ((2.0 * by + 12.0) / scale).floor(),
                    ],
                    score,
                    reg: [reg[k], reg[n + k], reg[2 * n + k], reg[3 * n + k]],
                });
            }
        }
    }
    Ok(out)
}

fn boxes_of(c: &[Cand]) -> Vec<[f32; 4]> {
    c.iter().map(|c| c.b).collect()
}

fn scores_of(c: &[Cand]) -> Vec<f32> {
    c.iter().map(|c| c.score).collect()
}

fn with_score(c: &Cand) -> [f32; 5] {
    [c.b[0], c.b[1], c.b[2], c.b[3], c.score]
}

/// facenet-pytorch's `bbreg`: offsets scaled by the +1 box size.
fn bbreg(b: [f32; 4], reg: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [
        b[0] + reg[0] * w,
        b[1] + reg[1] * h,
        b[2] + reg[2] * w,
        b[3] + reg[3] * h,
    ]
}

/// facenet-pytorch's `rerec`: the square with side `max(w, h)` on the box's centre.
fn rerec(b: [f32; 4]) -> [f32; 4] {
    let (h, w) = (b[3] - b[1], b[2] - b[0]);
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// Crops every candidate as facenet-pytorch's `pad` + `img[y−1:ey, x−1:ex]` (coordinates
/// truncated toward zero, clamped to `1..` and `..=w`/`..=h`), area-resampled to `size × size`
/// and normalized, concatenated NCHW. Returns the indices of the non-empty crops and the data.
fn crops(img: &FloatImage, cands: &[Cand], size: usize) -> (Vec<usize>, Vec<f32>) {
    let (w, h) = (img.width as i64, img.height as i64);
    // Each crop on its own (in parallel), then concatenated in candidate order.
    let per: Vec<Option<Vec<f32>>> = cands
        .par_iter()
        .map(|c| {
            let t = |v: f32| v.trunc() as i64;
            let x = t(c.b[0]).max(1);
            let y = t(c.b[1]).max(1);
            let ex = t(c.b[2]).min(w);
            let ey = t(c.b[3]).min(h);
            (ey > y - 1 && ex > x - 1).then(|| {
                let (x0, y0) = ((x - 1) as usize, (y - 1) as usize);
                let (cw, ch) = ((ex - x + 1) as usize, (ey - y + 1) as usize);
                let mut v = Vec::with_capacity(3 * size * size);
                img.resize_area(x0, y0, cw, ch, size, size)
                    .push_normalized_chw(&mut v);
                v
            })
        })
        .collect();
    let mut kept = Vec::new();
    let mut data = Vec::with_capacity(cands.len() * 3 * size * size);
    for (i, v) in per.into_iter().enumerate() {
        if let Some(v) = v {
            data.extend_from_slice(&v);
            kept.push(i);
        }
    }
    (kept, data)
}

/// Splits a batch into chunks of at most `n` along dimension 0.
fn chunks(x: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    let total = x.dim(0)?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < total {
        let len = n.min(total - start);
        out.push(x.narrow(0, start, len)?);
        start += len;
    }
    Ok(out)
}

/// The rows of an `(N, K)` tensor as fixed-size arrays.
fn rows<const K: usize>(x: &Tensor) -> Result<Vec<[f32; K]>> {
    let (n, k) = x.dims2()?;
    if k != K {
        return Err(Error::Msg(format!("expected {K} columns, got {k}")));
    }
    let v = x.flatten_all()?.to_vec1::<f32>()?;
    Ok((0..n)
        .map(|i| {
            let mut r = [0f32; K];
            r.copy_from_slice(&v[i * K..(i + 1) * K]);
            r
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_scales_match_the_reference_for_astronaut() {
        // fixtures/README.md: 512×512 gives level sizes 308, 218, 155, 110, 78, 56, 40, 28, 20, 14.
        let s = MtcnnConfig::default().scales(512, 512);
        let sizes: Vec<usize> = s.iter().map(|&s| (512.0 * s + 1.0) as usize).collect();
        assert_eq!(sizes, vec![308, 218, 155, 110, 78, 56, 40, 28, 20, 14]);
        assert!(MtcnnConfig::default().scales(10, 200).is_empty());
    }

    #[test]
    fn rerec_and_bbreg_follow_facenet_pytorch() {
        // A 10 wide × 20 high box becomes a 20×20 square on the same centre.
        assert_eq!(rerec([0.0, 0.0, 10.0, 20.0]), [-5.0, 0.0, 15.0, 20.0]);
        // bbreg scales offsets by the +1 size: w = h = 11.
        assert_eq!(
            bbreg([0.0, 0.0, 10.0, 10.0], [0.5, -0.25, 0.125, 0.0]),
            [5.5, -2.75, 11.375, 10.0]
        );
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = [
            MtcnnConfig {
                factor: 1.0,
                ..Default::default()
            },
            MtcnnConfig {
                min_face_size: 0.0,
                ..Default::default()
            },
            MtcnnConfig {
                thresholds: [0.6, 1.5, 0.7],
                ..Default::default()
            },
            MtcnnConfig {
                batch_size: 0,
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        let json = serde_json::to_string(&MtcnnConfig::default()).unwrap();
        let back: MtcnnConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, MtcnnConfig::default());
        let partial: MtcnnConfig = serde_json::from_str(r#"{"min_face_size": 40}"#).unwrap();
        assert_eq!(partial.min_face_size, 40.0);
        assert_eq!(partial.factor, 0.709);
    }
}
