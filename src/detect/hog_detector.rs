//! dlib's frontal face detector (`dlib::get_frontal_face_detector()`): an
//! `object_detector<scan_fhog_pyramid<pyramid_down<6>>>` of five linear filters over fHOG
//! features (Felzenszwalb et al., "Object Detection with Discriminatively Trained Part Based
//! Models", PAMI 2010; Dalal & Triggs, CVPR 2005), ported from
//! `dlib/image_processing/scan_fhog_pyramid.h` and `object_detector.h`.
//!
//! Detection as dlib's Python `detector(img, upsample)` runs it: the photo is enlarged
//! `upsample` times with `pyramid_up`; a `pyramid_down<6>` pyramid of it is built down to
//! 64 pixels a side; each level's fHOG features (`src/detect/fhog.rs`) are correlated with each
//! filter (as dlib does, through the filters' rank-truncated SVD: one row and one column
//! filter per singular value); every window scoring at least the filter's bias is a
//! detection, mapped back to the photo; the detections of all filters, best first, go
//! through dlib's non-max suppression.
//!
//! The weights come from dlib's own serialization of the detector (what
//! `dlib.get_frontal_face_detector().save(path)` writes); the bundled copy is
//! [`super::bundled_hog_detector`].

use super::fhog::{extract_fhog, pyramid_down6, pyramid_up, Fhog, FHOG_CHANNELS};
use super::hog_filter::{filter_separable, separable_pieces, Separable};
use super::shape_predictor::Rect;
use crate::convert::dlib_format::{DlibFormatError, DlibReader, Result};
use image::RgbImage;
use rayon::prelude::*;

/// One face found by [`DlibFrontalDetector::detect`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HogDetection {
    /// The face box in the photo's pixels, as dlib returns it.
    pub rect: Rect,
    /// Detection confidence: the window's filter response minus the filter's bias (dlib's
    /// `run(img, upsample, 0)` scores; a detection scores at least 0).
    pub score: f64,
    /// Which of the detector's filters found it (dlib's `weight_index`).
    pub filter: usize,
}

/// One of the detector's linear filters: per fHOG channel its separable pieces, and the bias.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    channels: Vec<Vec<Separable>>,
    bias: f64,
}

/// dlib's HOG face detector: filters, window geometry and non-max-suppression thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct DlibFrontalDetector {
    cell_size: u32,
    /// Filter size in cells (rows, cols): the detection window plus padding.
    filter_rows: usize,
    filter_cols: usize,
    /// Detection window in cells, without the padding.
    padding: usize,
    max_levels: u64,
    min_level_size: (u64, u64),
    /// `test_box_overlap`: intersection-over-union and covered-fraction thresholds.
    iou_thresh: f64,
    covered_thresh: f64,
    filters: Vec<Filter>,
}

impl DlibFrontalDetector {
    /// Parses dlib's serialization of an `object_detector<scan_fhog_pyramid<...>>` (version 2,
    /// as `fhog_object_detector.save` writes it).
    pub fn from_dlib_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = DlibReader::new(bytes);
        let version = r
            .read_i32()
            .map_err(|e| e.context("object_detector version"))?;
        if version != 2 {
            return Err(DlibFormatError::new(
                0,
                format!("not a dlib object_detector: version {version}, expected 2"),
            ));
        }
        let mut det = read_scanner(&mut r)?;
        det.iou_thresh = r
            .read_f64()
            .map_err(|e| e.context("overlap match_thresh"))?;
        det.covered_thresh = r.read_f64().map_err(|e| e.context("overlap_thresh"))?;
        let dims = FHOG_CHANNELS * det.filter_rows * det.filter_cols;
        let n = r.read_len(dims + 1, "weight vectors")?;
        for i in 0..n {
            let w = r
                .read_matrix_f64(Some(1))
                .map_err(|e| e.context(format!("weight vector {i}")))?;
            if w.data.len() != dims + 1 {
                return Err(r.err(format!(
                    "weight vector {i} has {} values, the scanner needs {}",
                    w.data.len(),
                    dims + 1
                )));
            }
            det.filters.push(det.build_filter(&w.data));
        }
        r.expect_end("the object_detector")?;
        det.validate()
            .map_err(|what| DlibFormatError::new(r.offset(), what))?;
        Ok(det)
    }

    /// Checks what detection relies on: finite weights and thresholds, at least one filter.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.filters.is_empty() {
            return Err("the detector has no filters".into());
        }
        let finite = self.filters.iter().all(|f| {
            f.bias.is_finite()
                && f.channels
                    .iter()
                    .flatten()
                    .all(|s| s.row.iter().chain(&s.col).all(|v| v.is_finite()))
        });
        if !finite || !self.iou_thresh.is_finite() || !self.covered_thresh.is_finite() {
            return Err("non-finite weights or overlap thresholds".into());
        }
        Ok(())
    }

    /// Number of filters (dlib's `num_detectors()`; 5 for the frontal face detector).
    pub fn num_filters(&self) -> usize {
        self.filters.len()
    }

    /// Faces in `img`, best first, as dlib's Python `detector.run(img, upsample, 0)` finds
    /// them (with `upsample` times `pyramid_up` first; `detector(img, 1)` is what
    /// face_recognition uses). Pyramid levels are scanned in parallel (rayon).
    pub fn detect(&self, img: &RgbImage, upsample: u32) -> Vec<HogDetection> {
        let mut big = img.clone();
        for _ in 0..upsample {
            big = pyramid_up(&big);
        }
        let mut dets = self.detect_plain(&big);
        for d in &mut dets {
            d.rect = rect_down2(d.rect, upsample);
        }
        dets
    }

    /// `object_detector::operator()` on `img` itself: scan, sort, non-max suppression.
    fn detect_plain(&self, img: &RgbImage) -> Vec<HogDetection> {
        let levels = self.pyramid(img);
        let per_level: Vec<Vec<HogDetection>> = levels
            .par_iter()
            .enumerate()
            .map(|(l, level)| self.scan_level(level, l))
            .collect();
        let mut all: Vec<HogDetection> = (0..self.filters.len())
            .flat_map(|f| per_level.iter().flatten().filter(move |d| d.filter == f))
            .copied()
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<HogDetection> = Vec::new();
        for d in all {
            if !kept.iter().any(|k| self.boxes_overlap(k.rect, d.rect)) {
                kept.push(d);
            }
        }
        kept
    }

    /// The images of `scan_fhog_pyramid::load`: `img` and its `pyramid_down<6>` reductions,
    /// as many as dlib's level count from the shrinking image rectangle allows.
    fn pyramid(&self, img: &RgbImage) -> Vec<RgbImage> {
        let mut rect = [
            0.0,
            0.0,
            f64::from(img.width()) - 1.0,
            f64::from(img.height()) - 1.0,
        ];
        let mut levels = 0u64;
        loop {
            rect = rect.map(|v| round_half_up((v - 0.3) * (5.0 / 6.0)));
            levels += 1;
            let (w, h) = (rect[2] - rect[0] + 1.0, rect[3] - rect[1] + 1.0);
            let big_enough = w >= self.min_level_size.0 as f64 && h >= self.min_level_size.1 as f64;
            if !big_enough || levels >= self.max_levels {
                break;
            }
        }
        let mut out = vec![img.clone()];
        while (out.len() as u64) < levels {
            let next = pyramid_down6(out.last().unwrap_or(img));
            out.push(next);
        }
        out
    }

    /// Detections of every filter at pyramid level `l`, in dlib's order within a filter.
    fn scan_level(&self, img: &RgbImage, l: usize) -> Vec<HogDetection> {
        let feats = extract_fhog(img, self.cell_size, self.filter_rows, self.filter_cols);
        if feats.data.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (f, filter) in self.filters.iter().enumerate() {
            let (saliency, area) = self.saliency(filter, &feats);
            let [top, bottom, left, right] = area;
            for r in top..bottom {
                for c in left..right {
                    let s = f64::from(saliency[r * feats.cols + c]);
                    if s >= filter.bias {
                        out.push(HogDetection {
                            rect: self.window_rect(c, r, l),
                            score: s - filter.bias,
                            filter: f,
                        });
                    }
                }
            }
        }
        out
    }

    /// `apply_filters_to_fhog` (separable path): the filter response at every cell, and the
    /// cells where it is defined as `[top, bottom, left, right)` bounds.
    fn saliency(&self, filter: &Filter, feats: &Fhog) -> (Vec<f32>, [usize; 4]) {
        let (nr, nc) = (feats.rows, feats.cols);
        let mut out = vec![0f32; nr * nc];
        let mut scratch = vec![0f32; nr * nc];
        for (ch, pieces) in filter.channels.iter().enumerate() {
            for p in pieces {
                filter_separable(feats.plane(ch), (nr, nc), p, &mut scratch, &mut out);
            }
        }
        let (fr, fc) = (self.filter_rows, self.filter_cols);
        let (top, left) = (fr / 2, fc / 2);
        let bottom = nr.saturating_sub((fr - 1) / 2).max(top);
        let right = nc.saturating_sub((fc - 1) / 2).max(left);
        let area = [top, bottom, left, right];
        (out, area)
    }

    /// The photo rectangle of the window centred on cell `(c, r)` of pyramid level `l`:
    /// `rect_up(fhog_to_image(centered_rect((c, r), window)), l)`.
    fn window_rect(&self, c: usize, r: usize, l: usize) -> Rect {
        let (wr, wc) = (
            (self.filter_rows - 2 * self.padding) as i64,
            (self.filter_cols - 2 * self.padding) as i64,
        );
        let (left, top) = (c as i64 - wc / 2, r as i64 - wr / 2);
        let cell = i64::from(self.cell_size);
        let to_img = |p: i64, pad: usize| {
            let v = (p + 1 - (pad as i64 - 1) / 2) * cell + 1;
            v + if v >= 0 { cell / 2 } else { -cell / 2 }
        };
        let corners = [
            to_img(left, self.filter_cols),
            to_img(top, self.filter_rows),
            to_img(left + wc - 1, self.filter_cols),
            to_img(top + wr - 1, self.filter_rows),
        ];
        let up = corners.map(|v| {
            let mut x = v as f64;
            for _ in 0..l {
                x = x * (6.0 / 5.0) + 0.3;
            }
            round_point(x) as i64
        });
        Rect {
            left: up[0],
            top: up[1],
            right: up[2],
            bottom: up[3],
        }
    }

    /// dlib's `test_box_overlap` with the detector's thresholds.
    fn boxes_overlap(&self, a: Rect, b: Rect) -> bool {
        let inter = a.intersect(&b).area();
        if inter == 0.0 {
            return false;
        }
        let union = (Rect {
            left: a.left.min(b.left),
            top: a.top.min(b.top),
            right: a.right.max(b.right),
            bottom: a.bottom.max(b.bottom),
        })
        .area();
        inter / union > self.iou_thresh
            || inter / a.area() > self.covered_thresh
            || inter / b.area() > self.covered_thresh
    }

    /// `build_fhog_filterbank` for one weight vector: each channel's `rows × cols` filter
    /// split by its SVD into rank-1 pieces, singular values below `max(1e-3, 0.01·σ_max)`
    /// dropped; the last weight is the bias.
    fn build_filter(&self, w: &[f64]) -> Filter {
        let (rows, cols) = (self.filter_rows, self.filter_cols);
        let size = rows * cols;
        let channels = (0..FHOG_CHANNELS)
            .map(|ch| separable_pieces(&w[ch * size..(ch + 1) * size], rows, cols))
            .collect();
        Filter {
            channels,
            bias: w[FHOG_CHANNELS * size],
        }
    }
}

/// Reads `scan_fhog_pyramid`'s serialization (version 1) into a detector without filters.
fn read_scanner(r: &mut DlibReader) -> Result<DlibFrontalDetector> {
    let ctx = |what: &'static str| move |e: DlibFormatError| e.context(what);
    let version = r.read_i32().map_err(ctx("scan_fhog_pyramid version"))?;
    if version != 1 {
        return Err(r.err(format!("unsupported scan_fhog_pyramid version {version}")));
    }
    // `feats` (a dlib::array of feature images), empty in a saved detector.
    let _max_size = r.read_u64().map_err(ctx("feats max_size"))?;
    if r.read_u64().map_err(ctx("feats size"))? != 0 {
        return Err(r.err("a saved scan_fhog_pyramid holding feature images is not supported"));
    }
    let cell_size = r.read_i32().map_err(ctx("cell_size"))?;
    let padding = r.read_u64().map_err(ctx("padding"))?;
    let window_w = r.read_u64().map_err(ctx("window_width"))?;
    let window_h = r.read_u64().map_err(ctx("window_height"))?;
    let max_levels = r.read_u64().map_err(ctx("max_pyramid_levels"))?;
    let min_w = r.read_u64().map_err(ctx("min_pyramid_layer_width"))?;
    let min_h = r.read_u64().map_err(ctx("min_pyramid_layer_height"))?;
    let _nuclear = r.read_f64().map_err(ctx("nuclear_norm_regularization"))?;
    let dims = r.read_i64().map_err(ctx("num_dimensions"))?;
    let ok = (1..=64).contains(&cell_size)
        && padding <= 16
        && (1..=4096).contains(&window_w)
        && (1..=4096).contains(&window_h)
        && max_levels > 0;
    if !ok {
        return Err(r.err(format!(
            "implausible scanner: cell {cell_size}, padding {padding}, window \
             {window_w}x{window_h}, {max_levels} levels"
        )));
    }
    let cell = cell_size as u32;
    // compute_fhog_window_size: grow_rect(image_to_fhog(centered_rect((0, 0), w, h)), padding),
    // image_to_fhog(p) = (p − 1)/cell − 1 in C's truncating division.
    let fhog_side = |n: u64| {
        let lo = -(n as i64 / 2);
        let hi = lo + n as i64 - 1;
        let to_fhog = |p: i64| (p - 1) / i64::from(cell) - 1;
        (to_fhog(hi) - to_fhog(lo) + 1 + 2 * padding as i64).max(0) as usize
    };
    let (filter_rows, filter_cols) = (fhog_side(window_h), fhog_side(window_w));
    if dims != (FHOG_CHANNELS * filter_rows * filter_cols) as i64 || filter_rows == 0 {
        return Err(r.err(format!(
            "scanner says {dims} dimensions, its window needs {}",
            FHOG_CHANNELS * filter_rows * filter_cols
        )));
    }
    Ok(DlibFrontalDetector {
        cell_size: cell,
        filter_rows,
        filter_cols,
        padding: padding as usize,
        max_levels,
        min_level_size: (min_w, min_h),
        iou_thresh: 0.0,
        covered_thresh: 0.0,
        filters: Vec::new(),
    })
}

/// dlib's `drectangle → rectangle` rounding, `floor(v + 0.5)`.
fn round_half_up(v: f64) -> f64 {
    (v + 0.5).floor()
}

/// dlib's rounding of a mapped `rectangle`'s corners (`rect_up`/`rect_down` of an integer
/// rectangle): half away from zero, which differs from [`round_half_up`] at −n.5 (a window
/// hanging over the photo's left or top edge).
fn round_point(v: f64) -> f64 {
    v.round()
}

/// `pyramid_down<2>::rect_down(rect, levels)`: both corners mapped with `p/2 − (1.25, 0.75)`
/// `levels` times, then rounded.
fn rect_down2(rect: Rect, levels: u32) -> Rect {
    let down = |v: i64, shift: f64| {
        let mut x = v as f64;
        for _ in 0..levels {
            x = x / 2.0 - shift;
        }
        round_point(x) as i64
    };
    Rect {
        left: down(rect.left, 1.25),
        top: down(rect.top, 0.75),
        right: down(rect.right, 1.25),
        bottom: down(rect.bottom, 0.75),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: &[u8] = include_bytes!("../../models/dlib-hog-frontal/frontal_face_detector.svm");

    #[test]
    fn truncated_or_corrupt_files_are_errors() {
        let det = DlibFrontalDetector::from_dlib_bytes(BYTES).unwrap();
        assert_eq!(
            (det.filter_rows, det.filter_cols, det.num_filters()),
            (10, 10, 5)
        );
        for cut in [0, 1, 5, 40, BYTES.len() / 2, BYTES.len() - 1] {
            let e = DlibFrontalDetector::from_dlib_bytes(&BYTES[..cut]).unwrap_err();
            assert!(!e.what.is_empty(), "cut at {cut}");
        }
        let mut wrong_version = BYTES.to_vec();
        wrong_version[1] = 3;
        let e = DlibFrontalDetector::from_dlib_bytes(&wrong_version).unwrap_err();
        assert!(e.what.contains("version 3"), "{e}");
        // The window's dimension count (3100) changed to 3101.
        let mut dims = BYTES.to_vec();
        let at = dims
            .windows(3)
            .position(|w| w == [0x02, 0x1c, 0x0c])
            .unwrap();
        dims[at + 1] = 0x1d;
        assert!(DlibFrontalDetector::from_dlib_bytes(&dims).is_err());
        let mut trailing = BYTES.to_vec();
        trailing.push(0);
        assert!(DlibFrontalDetector::from_dlib_bytes(&trailing).is_err());
    }

    #[test]
    fn window_mapping_and_overlap_follow_dlib() {
        let det = DlibFrontalDetector::from_dlib_bytes(BYTES).unwrap();
        // Cell (9, 9) of level 0: centered_rect left 4 → fhog_to_image (4+1-4)·8+1+4 = 13.
        let r = det.window_rect(9, 9, 0);
        assert_eq!((r.left, r.top, r.right, r.bottom), (13, 13, 85, 85));
        // One level up: 13·1.2+0.3 = 15.9 → 16; 85·1.2+0.3 = 102.3 → 102.
        let r = det.window_rect(9, 9, 1);
        assert_eq!((r.left, r.right), (16, 102));
        // Left edge at -19 one level up: -22.5 rounds away from zero.
        assert_eq!(det.window_rect(6, 9, 1).left, -23);
        let a = Rect {
            left: 0,
            top: 0,
            right: 9,
            bottom: 9,
        };
        let b = Rect {
            left: 5,
            top: 0,
            right: 14,
            bottom: 9,
        };
        // Intersection over union 50/150 = 0.333 > 0.330: overlapping.
        assert!(det.boxes_overlap(a, b));
        // 40/160 = 0.25, each covered 40%: not overlapping.
        let c = Rect {
            left: 6,
            top: 0,
            right: 15,
            bottom: 9,
        };
        assert!(!det.boxes_overlap(a, c));
        // A box inside a bigger one is covered entirely.
        let big = Rect {
            left: -20,
            top: -20,
            right: 40,
            bottom: 40,
        };
        assert!(det.boxes_overlap(big, a));
    }
}
