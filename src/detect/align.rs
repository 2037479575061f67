//! Face crops for the embedding network, two recipes:
//! - facenet-pytorch's `extract_face`: a square-ish box plus a margin (given in output pixels),
//!   area-resampled to the output size (the reference's tensor path);
//! - 5-point alignment: the least-squares similarity transform (Umeyama, "Least-squares
//!   estimation of transformation parameters between two point patterns", 1991) from the
//!   MTCNN landmarks to the ArcFace/insightface 112×112 template, applied with bilinear sampling
//!   (as insightface's `norm_crop` does with `cv2.warpAffine`).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::mtcnn::Face;
use super::resize::FloatImage;
use crate::{Error, Result};

/// insightface's five-point template for 112×112 crops (`arcface_dst`): left eye, right eye,
/// nose tip, left and right mouth corner.
pub const ARCFACE_TEMPLATE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// How a detected face is cut out for the embedding network (stored in a model's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CropMode {
    /// facenet-pytorch's `extract_face`: the detection box widened by `margin` output pixels
    /// in total (half on each side), area-resampled to the output size. facenet-pytorch's
    /// pretrained models use `margin: 0` at 160×160 by default (`MTCNN(margin=0)`).
    FacenetMargin {
        /// Margin in pixels of the output image.
        margin: u32,
    },
    /// A similarity transform from the five landmarks onto the ArcFace template.
    Aligned,
}

impl Default for CropMode {
    fn default() -> Self {
        CropMode::FacenetMargin { margin: 0 }
    }
}

impl CropMode {
    /// Cuts `face` out of `img` as a `size × size` RGB image.
    pub fn crop(&self, img: &RgbImage, face: &Face, size: u32) -> Result<RgbImage> {
        match *self {
            CropMode::FacenetMargin { margin } => extract_face(img, face.bbox, margin, size),
            CropMode::Aligned => align_face(img, &face.landmarks, size),
        }
    }
}

/// facenet-pytorch's `extract_face` for a tensor image: the box grows by
/// `margin · (x2 − x1) / (size − margin)` horizontally (likewise vertically), half on each
/// side; its corners are truncated to integers and clamped to the image; the crop is
/// area-resampled to `size × size` and truncated to bytes.
pub fn extract_face(img: &RgbImage, bbox: [f32; 4], margin: u32, size: u32) -> Result<RgbImage> {
    if size == 0 || margin >= size {
        return Err(Error::InvalidArgument(format!(
            "crop size must be > margin ≥ 0, got size {size}, margin {margin}"
        )));
    }
    let m = margin as f32;
    let mx = m * (bbox[2] - bbox[0]) / (size as f32 - m);
    let my = m * (bbox[3] - bbox[1]) / (size as f32 - m);
    let (w, h) = (img.width() as f32, img.height() as f32);
    let x0 = (bbox[0] - mx / 2.0).max(0.0) as i64;
    let y0 = (bbox[1] - my / 2.0).max(0.0) as i64;
    let x1 = (bbox[2] + mx / 2.0).min(w) as i64;
    let y1 = (bbox[3] + my / 2.0).min(h) as i64;
    if x1 <= x0 || y1 <= y0 || !bbox.iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "face box {bbox:?} lies outside the {}×{} image",
            img.width(),
            img.height()
        )));
    }
    let f = FloatImage::from_rgb(img).resize_area(
        x0 as usize,
        y0 as usize,
        (x1 - x0) as usize,
        (y1 - y0) as usize,
        size as usize,
        size as usize,
    );
    let raw = f.data.iter().map(|&v| v.clamp(0.0, 255.0) as u8).collect();
    RgbImage::from_raw(size, size, raw).ok_or_else(|| Error::Msg("crop buffer size".into()))
}

/// The ArcFace template scaled from 112×112 to `size × size`.
pub fn template(size: u32) -> [[f32; 2]; 5] {
    let s = size as f32 / 112.0;
    ARCFACE_TEMPLATE_112.map(|[x, y]| [x * s, y * s])
}

/// A 2-D similarity transform `(x, y) ↦ (a·x − b·y + tx, b·x + a·y + ty)`: rotation by
/// `atan2(b, a)`, uniform scale `√(a² + b²)`, translation `(tx, ty)`; no reflection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// `scale · cos θ`.
    pub a: f64,
    /// `scale · sin θ`.
    pub b: f64,
    /// Translation along x.
    pub tx: f64,
    /// Translation along y.
    pub ty: f64,
}

impl Similarity {
    /// The transform with the given scale, rotation (radians, counter-clockwise in x-right,
    /// y-down image coordinates means clockwise on screen) and translation.
    pub fn new(scale: f64, angle: f64, tx: f64, ty: f64) -> Self {
        Self {
            a: scale * angle.cos(),
            b: scale * angle.sin(),
            tx,
            ty,
        }
    }

    /// Least-squares similarity mapping `src[i]` onto `dst[i]` (Umeyama 1991 without
    /// reflection; in 2-D the closed form of the complex-number least squares problem).
    /// Fails when the source points all coincide or the inputs differ in length.
    pub fn estimate(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Result<Self> {
        if src.len() != dst.len() || src.len() < 2 {
            return Err(Error::InvalidArgument(format!(
                "similarity needs ≥ 2 point pairs, got {} and {}",
                src.len(),
                dst.len()
            )));
        }
        let n = src.len() as f64;
        let mean = |p: &[[f32; 2]]| {
            let (sx, sy) = p.iter().fold((0.0, 0.0), |(sx, sy), q| {
                (sx + f64::from(q[0]), sy + f64::from(q[1]))
            });
            (sx / n, sy / n)
        };
        let (msx, msy) = mean(src);
        let (mdx, mdy) = mean(dst);
        let (mut var, mut sa, mut sb) = (0.0, 0.0, 0.0);
        for (s, d) in src.iter().zip(dst) {
            let (xs, ys) = (f64::from(s[0]) - msx, f64::from(s[1]) - msy);
            let (xd, yd) = (f64::from(d[0]) - mdx, f64::from(d[1]) - mdy);
            var += xs * xs + ys * ys;
            sa += xs * xd + ys * yd;
            sb += xs * yd - ys * xd;
        }
        if var.is_nan() || var <= 1e-12 || !sa.is_finite() || !sb.is_finite() {
            return Err(Error::InvalidArgument(
                "similarity: source points coincide or are not finite".into(),
            ));
        }
        let (a, b) = (sa / var, sb / var);
        Ok(Self {
            a,
            b,
            tx: mdx - (a * msx - b * msy),
            ty: mdy - (b * msx + a * msy),
        })
    }

    /// Maps one point.
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        [
            (self.a * x - self.b * y + self.tx) as f32,
            (self.b * x + self.a * y + self.ty) as f32,
        ]
    }

    /// The inverse transform (`None` for a zero scale).
    pub fn inverse(&self) -> Option<Self> {
        let d = self.a * self.a + self.b * self.b;
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let (a, b) = (self.a / d, -self.b / d);
        Some(Self {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }

    /// The uniform scale factor.
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }

    /// The rotation angle in radians.
    pub fn angle(&self) -> f64 {
        self.b.atan2(self.a)
    }
}

/// Above this many source pixels per output pixel, a crop is taken from a low-passed,
/// downscaled copy of the source region: bilinear sampling alone would skip pixels and alias
/// (a 1000-pixel face in a phone photo cut to 250 pixels).
pub const PREFILTER_STEP: f64 = 1.5;

/// Where a source point lands in a [`prefilter_region`] copy: `q = (p_x·sx + tx, p_y·sy + ty)`
/// (pixel centres matched, as the resize does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisMap {
    /// Scale along x.
    pub sx: f64,
    /// Scale along y.
    pub sy: f64,
    /// Offset along x.
    pub tx: f64,
    /// Offset along y.
    pub ty: f64,
}

impl AxisMap {
    /// Maps a source point into the copy.
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [p[0] * self.sx + self.tx, p[1] * self.sy + self.ty]
    }
}

/// The part `roi` (`[x0, y0, x1, y1]` in source pixels, widened by two output pixels and
/// clipped to the image) of `img`, resized with a triangle filter (which widens with the
/// reduction, so it averages what it drops) to about one pixel per output pixel, given `step`
/// source pixels per output pixel; with the [`AxisMap`] from source to copy coordinates. `None`
/// when `step` needs no prefilter or the region misses the image.
pub fn prefilter_region(img: &RgbImage, roi: [f64; 4], step: f64) -> Option<(RgbImage, AxisMap)> {
    if step.is_nan() || step <= PREFILTER_STEP || !roi.iter().all(|v| v.is_finite()) {
        return None;
    }
    let margin = 2.0 * step;
    let x0 = (roi[0] - margin).floor().max(0.0);
    let y0 = (roi[1] - margin).floor().max(0.0);
    let x1 = (roi[2] + margin).ceil().min(f64::from(img.width()));
    let y1 = (roi[3] + margin).ceil().min(f64::from(img.height()));
    if x1 - x0 < 2.0 || y1 - y0 < 2.0 {
        return None;
    }
    let (w, h) = (x1 - x0, y1 - y0);
    let (nw, nh) = ((w / step).round().max(1.0), (h / step).round().max(1.0));
    let sub = image::imageops::crop_imm(img, x0 as u32, y0 as u32, w as u32, h as u32).to_image();
    let small = image::imageops::resize(
        &sub,
        nw as u32,
        nh as u32,
        image::imageops::FilterType::Triangle,
    );
    // Pixel centres correspond: (q + ½) = (p − o + ½)·s.
    let (sx, sy) = (nw / w, nh / h);
    let map = AxisMap {
        sx,
        sy,
        tx: (0.5 - x0) * sx - 0.5,
        ty: (0.5 - y0) * sy - 0.5,
    };
    Some((small, map))
}

/// Resamples `img` into a `width × height` image whose pixel `(u, v)` shows the source point
/// `m⁻¹(u, v)` (integer pixel coordinates, as `cv2.warpAffine`), with bilinear interpolation
/// and black outside the source. When `m` shrinks by more than [`PREFILTER_STEP`], the covered
/// region is first low-passed and downscaled ([`prefilter_region`]), so large faces do not alias
/// (`cv2.warpAffine`, which insightface uses, does alias there).
pub fn warp_similarity(
    img: &RgbImage,
    m: &Similarity,
    width: u32,
    height: u32,
) -> Result<RgbImage> {
    let inv = m
        .inverse()
        .ok_or_else(|| Error::InvalidArgument("similarity with zero scale".into()))?;
    // Output pixel (u, v) shows source point m⁻¹(u, v).
    let src = |u: f64, v: f64| {
        [
            inv.a * u - inv.b * v + inv.tx,
            inv.b * u + inv.a * v + inv.ty,
        ]
    };
    let (w, h) = (f64::from(width), f64::from(height));
    let corners = [src(0.0, 0.0), src(w, 0.0), src(0.0, h), src(w, h)];
    let lo = |k: usize| corners.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
    let hi = |k: usize| {
        corners
            .iter()
            .map(|p| p[k])
            .fold(f64::NEG_INFINITY, f64::max)
    };
    if let Some((small, map)) = prefilter_region(img, [lo(0), lo(1), hi(0), hi(1)], 1.0 / m.scale())
    {
        return Ok(warp_with(&small, width, height, |u, v| {
            map.apply(src(u, v))
        }));
    }
    Ok(warp_with(img, width, height, src))
}

/// Bilinear resampling: output pixel `(u, v)` shows point `at(u, v)` of `img` (integer pixel
/// coordinates), black outside it.
fn warp_with(
    img: &RgbImage,
    width: u32,
    height: u32,
    at: impl Fn(f64, f64) -> [f64; 2],
) -> RgbImage {
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let mut out = RgbImage::new(width, height);
    for (u, v, px) in out.enumerate_pixels_mut() {
        let [sx, sy] = at(f64::from(u), f64::from(v));
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let mut acc = [0f64; 3];
        for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
            for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                let (x, y) = (x0 + dx, y0 + dy);
                if x < 0 || y < 0 || x >= iw || y >= ih {
                    continue;
                }
                let o = ((y * iw + x) * 3) as usize;
                for c in 0..3 {
                    acc[c] += wx * wy * f64::from(src[o + c]);
                }
            }
        }
        for (p, a) in px.0.iter_mut().zip(acc) {
            *p = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// [`warp_similarity`] without the prefilter.
#[cfg(test)]
fn warp_plain(img: &RgbImage, m: &Similarity, width: u32, height: u32) -> Result<RgbImage> {
    let inv = m
        .inverse()
        .ok_or_else(|| Error::InvalidArgument("similarity with zero scale".into()))?;
    Ok(warp_with(img, width, height, |u, v| {
        [
            inv.a * u - inv.b * v + inv.tx,
            inv.b * u + inv.a * v + inv.ty,
        ]
    }))
}
/// Aligns a face to the ArcFace template scaled to `size × size`: estimates the similarity
/// from `landmarks` (as [`Face::landmarks`]) onto [`template`]`(size)` and warps bilinearly.
/// Fails when the landmarks are degenerate (all equal or not finite) or `size` is 0.
pub fn align_face(img: &RgbImage, landmarks: &[[f32; 2]; 5], size: u32) -> Result<RgbImage> {
    if size == 0 {
        return Err(Error::InvalidArgument("crop size must be > 0".into()));
    }
    let m = Similarity::estimate(landmarks, &template(size))?;
    warp_similarity(img, &m, size, size)
}

/// Aligns a face onto an arbitrary five-point `template` (pixels of the `size × size` output):
/// the least-squares similarity from `landmarks` onto it, then a bilinear warp (black outside
/// the photo). Fails when either point set is degenerate or `size` is 0.
pub fn align_face_to(
    img: &RgbImage,
    landmarks: &[[f32; 2]; 5],
    template: &[[f32; 2]; 5],
    size: u32,
) -> Result<RgbImage> {
    if size == 0 {
        return Err(Error::InvalidArgument("crop size must be > 0".into()));
    }
    let m = Similarity::estimate(landmarks, template)?;
    warp_similarity(img, &m, size, size)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn similarity_recovers_known_rotation_scale_translation() {
        let truth = Similarity::new(1.7, 0.35, 12.5, -40.25);
        let src = ARCFACE_TEMPLATE_112;
        let dst = src.map(|p| truth.apply(p));
        let est = Similarity::estimate(&src, &dst).unwrap();
        for (x, y) in [
            (est.a, truth.a),
            (est.b, truth.b),
            (est.tx, truth.tx),
            (est.ty, truth.ty),
        ] {
            assert!(close(x, y, 1e-4), "{est:?} vs {truth:?}");
        }
        assert!(close(est.scale(), 1.7, 1e-5) && close(est.angle(), 0.35, 1e-5));
        // The inverse undoes it.
        let inv = est.inverse().unwrap();
        for p in src {
            let q = inv.apply(est.apply(p));
            assert!(close(q[0].into(), p[0].into(), 1e-4) && close(q[1].into(), p[1].into(), 1e-4));
        }
    }

    #[test]
    fn similarity_is_the_least_squares_fit() {
        // Noisy correspondences: the estimate must beat small perturbations of itself.
        let truth = Similarity::new(0.8, -0.5, 3.0, 7.0);
        let src = ARCFACE_TEMPLATE_112;
        let noise = [
            [0.3, -0.2],
            [-0.4, 0.1],
            [0.2, 0.5],
            [0.0, -0.3],
            [-0.1, 0.2],
        ];
        let dst: Vec<[f32; 2]> = src
            .iter()
            .zip(noise)
            .map(|(&p, n)| {
                let q = truth.apply(p);
                [q[0] + n[0], q[1] + n[1]]
            })
            .collect();
        let est = Similarity::estimate(&src, &dst).unwrap();
        let sse = |m: &Similarity| -> f64 {
            src.iter()
                .zip(&dst)
                .map(|(&p, d)| {
                    let q = m.apply(p);
                    (f64::from(q[0] - d[0])).powi(2) + (f64::from(q[1] - d[1])).powi(2)
                })
                .sum()
        };
        let best = sse(&est);
        for (da, db, dt) in [
            (1e-3, 0.0, 0.0),
            (-1e-3, 0.0, 0.0),
            (0.0, 1e-3, 0.0),
            (0.0, -1e-3, 0.0),
            (0.0, 0.0, 1e-2),
        ] {
            let p = Similarity {
                a: est.a + da,
                b: est.b + db,
                tx: est.tx + dt,
                ty: est.ty - dt,
            };
            assert!(sse(&p) > best);
        }
        assert!(Similarity::estimate(&[[1.0, 1.0]; 5], &ARCFACE_TEMPLATE_112).is_err());
    }

    /// Renders Gaussian blobs at `points` on a black `w × h` image.
    fn blobs(points: &[[f32; 2]], w: u32, h: u32, sigma: f32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v: f32 = points
                .iter()
                .map(|p| {
                    let d2 = (x as f32 - p[0]).powi(2) + (y as f32 - p[1]).powi(2);
                    (-d2 / (2.0 * sigma * sigma)).exp()
                })
                .sum();
            let v = (255.0 * v).min(255.0) as u8;
            image::Rgb([v, v, v])
        })
    }

    #[test]
    fn aligned_landmarks_land_on_the_template() {
        // Landmarks = the template moved by a known similarity; after alignment each blob's
        // intensity centroid must sit on the template point.
        let size = 112;
        let truth = Similarity::new(1.6, 0.4, 40.0, 10.0);
        let lm = ARCFACE_TEMPLATE_112.map(|p| truth.apply(p));
        let img = blobs(&lm, 260, 260, 2.5);
        let out = align_face(&img, &lm, size).unwrap();
        assert_blobs_at(&out, &template(size));
    }

    /// Each blob's intensity centroid (11×11 window) in `out` lies within 0.3 px of its point.
    fn assert_blobs_at(out: &RgbImage, points: &[[f32; 2]; 5]) {
        for t in points {
            let (mut sw, mut sx, mut sy) = (0.0f64, 0.0f64, 0.0f64);
            let (cx, cy) = (t[0].round() as i64, t[1].round() as i64);
            for y in cy - 5..=cy + 5 {
                for x in cx - 5..=cx + 5 {
                    let v = f64::from(out.get_pixel(x as u32, y as u32)[0]);
                    sw += v;
                    sx += v * x as f64;
                    sy += v * y as f64;
                }
            }
            assert!(sw > 0.0);
            let (mx, my) = (sx / sw, sy / sw);
            assert!(
                close(mx, t[0].into(), 0.3) && close(my, t[1].into(), 0.3),
                "{t:?} vs ({mx}, {my})"
            );
        }
    }

    #[test]
    fn landmarks_land_on_a_custom_template() {
        // An arbitrary template (not a scaled ArcFace one) in a 90×90 output; the landmarks are
        // a rotated, scaled copy of it, so the fit is exact and each blob must land on its point.
        let tpl = [
            [30.0, 35.0],
            [60.0, 33.0],
            [46.0, 50.0],
            [34.0, 66.0],
            [58.0, 65.0],
        ];
        let truth = Similarity::new(2.1, -0.3, 25.0, 70.0);
        let lm = tpl.map(|p| truth.apply(p));
        let img = blobs(&lm, 300, 300, 3.0);
        let out = align_face_to(&img, &lm, &tpl, 90).unwrap();
        assert_eq!(out.dimensions(), (90, 90));
        assert_blobs_at(&out, &tpl);
        assert!(align_face_to(&img, &lm, &[[5.0, 5.0]; 5], 90).is_err());
        assert!(align_face_to(&img, &[[5.0, 5.0]; 5], &tpl, 90).is_err());
        assert!(align_face_to(&img, &lm, &tpl, 0).is_err());
    }

    /// A 2000×2000 test image: red and green are linear ramps (x/8, y/8) and blue a one-pixel
    /// checkerboard, the worst case for aliasing.
    pub(crate) fn ramps_and_checkerboard() -> RgbImage {
        RgbImage::from_fn(2000, 2000, |x, y| {
            image::Rgb([
                (x / 8) as u8,
                (y / 8) as u8,
                if (x + y) % 2 == 0 { 255 } else { 0 },
            ])
        })
    }

    /// Mean and largest absolute difference of channel `c` between `a` and `b` over the
    /// central part (a 10% border left out), and the mean and standard deviation of `a`'s
    /// channel `c` there.
    pub(crate) fn channel_stats(a: &RgbImage, b: &RgbImage, c: usize) -> (f64, f64, f64, f64) {
        let (w, h) = a.dimensions();
        let (mut diffs, mut vals) = (Vec::new(), Vec::new());
        for y in h / 10..h - h / 10 {
            for x in w / 10..w - w / 10 {
                let (p, q) = (
                    f64::from(a.get_pixel(x, y)[c]),
                    f64::from(b.get_pixel(x, y)[c]),
                );
                diffs.push((p - q).abs());
                vals.push(p);
            }
        }
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let max = diffs.iter().cloned().fold(0.0, f64::max);
        (diffs.iter().sum::<f64>() / n, max, mean, sd)
    }

    /// Whether channel `c` of `img` is the checkerboard's even grey (not aliased).
    pub(crate) fn is_grey(img: &RgbImage, c: usize) -> bool {
        let (_, _, mean, sd) = channel_stats(img, img, c);
        (mean - 127.5).abs() < 6.0 && sd < 8.0
    }

    #[test]
    fn shrinking_warps_are_prefiltered_and_keep_their_geometry() {
        // Scale 1/7.3 with a rotation, the source centre (1000, 1000) onto the output centre
        // (100, 100): the unfiltered warp and the prefiltered one agree on the smooth ramps
        // (geometry kept), but only the prefiltered one averages the checkerboard to grey.
        let img = ramps_and_checkerboard();
        let (a, b) = ((0.2f64).cos() / 7.3, (0.2f64).sin() / 7.3);
        let m = Similarity {
            a,
            b,
            tx: 100.0 - (a - b) * 1000.0,
            ty: 100.0 - (a + b) * 1000.0,
        };
        let plain = warp_plain(&img, &m, 200, 200).unwrap();
        let filtered = warp_similarity(&img, &m, 200, 200).unwrap();
        for c in 0..2 {
            let (mean, max, _, _) = channel_stats(&filtered, &plain, c);
            assert!(mean < 0.8 && max <= 3.0, "ramp {c}: mean {mean}, max {max}");
        }
        assert!(!is_grey(&plain, 2), "the unfiltered warp aliases");
        assert!(
            is_grey(&filtered, 2),
            "{:?}",
            channel_stats(&filtered, &filtered, 2)
        );
        // Enlarging or mild shrinking is not prefiltered.
        let m = Similarity::new(1.0 / 1.4, 0.2, -40.0, 30.0);
        assert_eq!(
            warp_similarity(&img, &m, 64, 64).unwrap(),
            warp_plain(&img, &m, 64, 64).unwrap()
        );
        assert!(prefilter_region(&img, [5000.0, 5000.0, 6000.0, 6000.0], 4.0).is_none());
    }

    #[test]
    fn extract_face_crops_the_box_with_margin() {
        // A 100×100 image whose pixel value encodes its column; box 20..60 with margin 32 at
        // size 96 grows by 32·40/64 = 20 px → crop 10..70, so output column j averages the
        // source columns of its area window.
        let img = RgbImage::from_fn(100, 100, |x, _| image::Rgb([x as u8, 0, 255]));
        let out = extract_face(&img, [20.0, 20.0, 60.0, 60.0], 32, 96).unwrap();
        assert_eq!(out.dimensions(), (96, 96));
        // 60 source columns onto 96: column 0 covers source 10 only; the last covers 69.
        assert_eq!(out.get_pixel(0, 0)[0], 10);
        assert_eq!(out.get_pixel(95, 50)[0], 69);
        assert_eq!(out.get_pixel(50, 50)[2], 255);
        assert!(extract_face(&img, [200.0, 0.0, 300.0, 50.0], 0, 160).is_err());
        assert!(extract_face(&img, [0.0, 0.0, 50.0, 50.0], 160, 160).is_err());
        let cfg: CropMode =
            serde_json::from_str(r#"{"mode":"facenet_margin","margin":14}"#).unwrap();
        assert_eq!(cfg, CropMode::FacenetMargin { margin: 14 });
        assert_eq!(
            serde_json::to_string(&CropMode::Aligned).unwrap(),
            r#"{"mode":"aligned"}"#
        );
    }
}
