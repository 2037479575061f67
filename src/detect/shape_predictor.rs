//! dlib's `shape_predictor` (`dlib/image_processing/shape_predictor.h`): the cascade of
//! regression-tree forests of Kazemi & Sullivan, "One Millisecond Face Alignment with an
//! Ensemble of Regression Trees" (CVPR 2014).
//!
//! A shape is a flat vector `[x0, y0, x1, y1, ...]` in a normalized frame where the detection
//! rectangle maps to the unit square. Each cascade level samples grey values at pixels
//! defined relative to the current shape (an anchor landmark plus an offset, warped by the
//! similarity transform from the mean shape to the current one), runs every tree on
//! differences of those samples, and adds the selected leaf vectors to the shape.
//!
//! Arithmetic follows dlib exactly: shapes, offsets and leaf sums in `f32`; the mapping to
//! image coordinates in `f64`; sample positions rounded with `floor(v + 0.5)`; grey value of
//! an RGB pixel `(r + g + b) / 3` in integers; samples outside the image read as 0.

use super::dlib_geometry::{find_similarity_transform, round_dlib, Affine};
use crate::convert::dlib_format::{DlibFormatError, DlibReader, Result};
use image::RgbImage;

/// dlib's integer `rectangle`: inclusive corners, as returned by its face detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left column.
    pub left: i64,
    /// Top row.
    pub top: i64,
    /// Right column (inclusive).
    pub right: i64,
    /// Bottom row (inclusive).
    pub bottom: i64,
}

impl Rect {
    /// Pixels covered (0 when empty), as dlib's `rectangle::area`.
    pub fn area(&self) -> f64 {
        if self.left > self.right || self.top > self.bottom {
            0.0
        } else {
            ((self.right - self.left + 1) * (self.bottom - self.top + 1)) as f64
        }
    }

    /// The rectangle both cover (empty when they do not meet), as dlib's `a.intersect(b)`.
    pub fn intersect(&self, other: &Rect) -> Rect {
        Rect {
            left: self.left.max(other.left),
            top: self.top.max(other.top),
            right: self.right.min(other.right),
            bottom: self.bottom.min(other.bottom),
        }
    }
}

/// One split node: go left when `f[idx1] - f[idx2] > thresh` (`impl::split_feature`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitFeature {
    /// Index of the first feature pixel.
    pub idx1: u32,
    /// Index of the second feature pixel.
    pub idx2: u32,
    /// Threshold on the intensity difference.
    pub thresh: f32,
}

/// A complete binary tree stored breadth-first (`impl::regression_tree`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionTree {
    /// Split nodes; the children of node `i` are `2i+1` and `2i+2`.
    pub splits: Vec<SplitFeature>,
    /// `splits.len() + 1` shape increments, each of length `2 * num_parts`.
    pub leaf_values: Vec<Vec<f32>>,
}

impl RegressionTree {
    /// Runs the tree on the sampled pixel values and returns the selected leaf vector.
    fn leaf(&self, features: &[f32]) -> &[f32] {
        let mut i = 0usize;
        while let Some(s) = self.splits.get(i) {
            let a = features.get(s.idx1 as usize).copied().unwrap_or(0.0);
            let b = features.get(s.idx2 as usize).copied().unwrap_or(0.0);
            i = if a - b > s.thresh {
                2 * i + 1
            } else {
                2 * i + 2
            };
        }
        self.leaf_values
            .get(i - self.splits.len())
            .map_or(&[], Vec::as_slice)
    }
}

/// A trained landmark predictor, e.g. `shape_predictor_5_face_landmarks.dat`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapePredictor {
    /// Mean shape in normalized coordinates, `[x0, y0, x1, y1, ...]`.
    pub initial_shape: Vec<f32>,
    /// One forest per cascade level.
    pub forests: Vec<Vec<RegressionTree>>,
    /// Per cascade level, the landmark each feature pixel is anchored to.
    pub anchor_idx: Vec<Vec<u32>>,
    /// Per cascade level, each feature pixel's offset from its anchor (mean-shape frame).
    pub deltas: Vec<Vec<[f32; 2]>>,
}

fn read_tree(r: &mut DlibReader) -> Result<RegressionTree> {
    let splits = r.read_vec("splits", |r| {
        Ok(SplitFeature {
            idx1: r.read_u32().map_err(|e| e.context("split idx1"))?,
            idx2: r.read_u32().map_err(|e| e.context("split idx2"))?,
            thresh: r.read_f32().map_err(|e| e.context("split thresh"))?,
        })
    })?;
    let leaf_values = r.read_vec("leaf_values", |r| Ok(r.read_matrix_f32(Some(1))?.data))?;
    Ok(RegressionTree {
        splits,
        leaf_values,
    })
}

impl ShapePredictor {
    /// Parses a dlib `.dat` file holding a serialized `shape_predictor` and validates it.
    pub fn from_dlib_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = DlibReader::new(bytes);
        let version = r
            .read_i32()
            .map_err(|e| e.context("shape_predictor version"))?;
        if version != 1 {
            return Err(DlibFormatError::new(
                0,
                format!("not a dlib shape_predictor: version {version}, expected 1"),
            ));
        }
        let initial_shape = r
            .read_matrix_f32(Some(1))
            .map_err(|e| e.context("initial_shape"))?
            .data;
        let forests = r.read_vec("forests", |r| r.read_vec("forest", read_tree))?;
        let anchor_idx = r.read_vec("anchor_idx", |r| {
            r.read_vec("anchors", DlibReader::read_u32)
        })?;
        let deltas = r.read_vec("deltas", |r| {
            r.read_vec("offsets", DlibReader::read_point_f32)
        })?;
        r.expect_end("the shape_predictor")?;
        let sp = Self {
            initial_shape,
            forests,
            anchor_idx,
            deltas,
        };
        sp.validate()
            .map_err(|what| DlibFormatError::new(r.offset(), what))?;
        Ok(sp)
    }

    /// Checks every invariant `predict` relies on (dlib's `requires` clauses).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let len = self.initial_shape.len();
        if len == 0 || !len.is_multiple_of(2) {
            return Err(format!(
                "initial_shape has {len} values, need a positive even count"
            ));
        }
        let levels = self.forests.len();
        if self.anchor_idx.len() != levels || self.deltas.len() != levels {
            return Err(format!(
                "{levels} forests but {} anchor lists and {} delta lists",
                self.anchor_idx.len(),
                self.deltas.len()
            ));
        }
        for (c, ((forest, anchors), deltas)) in self
            .forests
            .iter()
            .zip(&self.anchor_idx)
            .zip(&self.deltas)
            .enumerate()
        {
            if anchors.len() != deltas.len() {
                return Err(format!(
                    "cascade {c}: {} anchors, {} deltas",
                    anchors.len(),
                    deltas.len()
                ));
            }
            if let Some(a) = anchors.iter().find(|&&a| a as usize >= len / 2) {
                return Err(format!("cascade {c}: anchor {a} >= {} parts", len / 2));
            }
            for (t, tree) in forest.iter().enumerate() {
                check_tree(tree, anchors.len(), len)
                    .map_err(|e| format!("cascade {c} tree {t}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Number of landmarks predicted.
    pub fn num_parts(&self) -> usize {
        self.initial_shape.len() / 2
    }

    /// Predicts landmarks in `rect`, as dlib's `shape_predictor::operator()(img, rect)` on an
    /// RGB image: each part is an integer pixel position (returned as `f64`).
    pub fn predict(&self, img: &RgbImage, rect: Rect) -> Vec<(f64, f64)> {
        self.predict_unrounded(img, rect)
            .into_iter()
            .map(|(x, y)| (round_dlib(x), round_dlib(y)))
            .collect()
    }

    /// Like [`predict`](Self::predict) but without dlib's final rounding to whole pixels.
    pub fn predict_unrounded(&self, img: &RgbImage, rect: Rect) -> Vec<(f64, f64)> {
        let mut shape = self.initial_shape.clone();
        let mut features = Vec::new();
        for (c, forest) in self.forests.iter().enumerate() {
            self.feature_pixel_values(img, rect, &shape, c, &mut features);
            for tree in forest {
                for (s, v) in shape.iter_mut().zip(tree.leaf(&features)) {
                    *s += v;
                }
            }
        }
        let to_img = unnormalizing_tform(rect);
        shape
            .chunks_exact(2)
            .map(|p| {
                let q = to_img.apply([f64::from(p[0]), f64::from(p[1])]);
                (q[0], q[1])
            })
            .collect()
    }

    /// `impl::extract_feature_pixel_values` for cascade level `c`.
    fn feature_pixel_values(
        &self,
        img: &RgbImage,
        rect: Rect,
        shape: &[f32],
        c: usize,
        out: &mut Vec<f32>,
    ) {
        let m = tform_between_shapes(&self.initial_shape, shape)
            .m
            .map(|row| row.map(|v| v as f32));
        let to_img = unnormalizing_tform(rect);
        let (w, h) = (i64::from(img.width()), i64::from(img.height()));
        out.clear();
        // `validate` guarantees these lookups succeed; the fallbacks only keep a hand-built,
        // invalid predictor from panicking.
        let anchors = self.anchor_idx.get(c).map_or(&[][..], Vec::as_slice);
        let deltas = self.deltas.get(c).map_or(&[][..], Vec::as_slice);
        for (&a, d) in anchors.iter().zip(deltas) {
            let loc = shape
                .get(2 * a as usize..2 * a as usize + 2)
                .unwrap_or(&[0.0, 0.0]);
            // float arithmetic, as dlib evaluates `tform*delta + location(shape, a)`
            let x = (m[0][0] * d[0] + m[0][1] * d[1]) + loc[0];
            let y = (m[1][0] * d[0] + m[1][1] * d[1]) + loc[1];
            let p = to_img.apply([f64::from(x), f64::from(y)]);
            let (px, py) = (round_dlib(p[0]) as i64, round_dlib(p[1]) as i64);
            let v = if (0..w).contains(&px) && (0..h).contains(&py) {
                let [r, g, b] = img.get_pixel(px as u32, py as u32).0;
                ((u32::from(r) + u32::from(g) + u32::from(b)) / 3) as f32
            } else {
                0.0
            };
            out.push(v);
        }
    }
}

fn check_tree(
    tree: &RegressionTree,
    num_features: usize,
    shape_len: usize,
) -> std::result::Result<(), String> {
    if tree.leaf_values.len() != tree.splits.len() + 1 {
        return Err(format!(
            "{} splits but {} leaves",
            tree.splits.len(),
            tree.leaf_values.len()
        ));
    }
    if let Some(s) = tree
        .splits
        .iter()
        .find(|s| s.idx1 as usize >= num_features || s.idx2 as usize >= num_features)
    {
        return Err(format!(
            "split uses feature {}/{} of {num_features}",
            s.idx1, s.idx2
        ));
    }
    match tree.leaf_values.iter().find(|l| l.len() != shape_len) {
        Some(l) => Err(format!("leaf of length {}, shape has {shape_len}", l.len())),
        None => Ok(()),
    }
}

/// `impl::find_tform_between_shapes`: similarity from `from` to `to` (identity for 1 part).
fn tform_between_shapes(from: &[f32], to: &[f32]) -> Affine {
    let pts = |s: &[f32]| -> Vec<[f64; 2]> {
        s.chunks_exact(2)
            .map(|p| [f64::from(p[0]), f64::from(p[1])])
            .collect()
    };
    if from.len() == 2 {
        return find_similarity_transform(&[], &[]);
    }
    find_similarity_transform(&pts(from), &pts(to))
}

/// `impl::unnormalizing_tform(rect)`: maps (0,0) to the top-left and (1,1) to the
/// bottom-right corner of `rect`.
fn unnormalizing_tform(rect: Rect) -> Affine {
    Affine {
        m: [
            [(rect.right - rect.left) as f64, 0.0],
            [0.0, (rect.bottom - rect.top) as f64],
        ],
        b: [rect.left as f64, rect.top as f64],
    }
}
