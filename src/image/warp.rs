//! Similarity transforms and the warps that apply them: the least-squares similarity between
//! two point sets (Umeyama, "Least-squares estimation of transformation parameters between two
//! point patterns", 1991), and bilinear resampling through it (as `cv2.warpAffine`), with a
//! low-pass prefilter for strong reductions.

use image::RgbImage;

use crate::{Error, Result};

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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Five spread-out points (insightface's 112×112 face template).
    const POINTS: [[f32; 2]; 5] = [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ];

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn similarity_recovers_known_rotation_scale_translation() {
        let truth = Similarity::new(1.7, 0.35, 12.5, -40.25);
        let src = POINTS;
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
        let src = POINTS;
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
        assert!(Similarity::estimate(&[[1.0, 1.0]; 5], &POINTS).is_err());
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
}
