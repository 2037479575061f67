//! Resampling a square window of an RGB image to a square output: the one geometric primitive
//! behind the training data's preprocessing and augmentation.
//!
//! Coordinates are continuous with pixel `i` covering `[i, i+1)` (centre `i + 0.5`), the
//! convention of Pillow and the `image` crate. A window may reach outside the image: samples
//! outside repeat the nearest edge pixel (OpenCV's `BORDER_REPLICATE`).
//!
//! - [`window_triangle`]: separable triangle (tent) filter whose support widens with the
//!   downscale ratio, i.e. the anti-aliased "bilinear" of Pillow and `image`'s
//!   `FilterType::Triangle`. Used once per image when building caches.
//! - [`window_bilinear`]: plain bilinear interpolation (four taps), optionally mirrored; used for
//!   per-step augmentation where the scale is close to 1 and speed matters.

use image::RgbImage;

/// Taps of one output sample along one axis: `(first_index, weights)` with clamped indices
/// folded in, so `weights[t]` applies to source index `idx[t]`.
struct Taps {
    idx: Vec<u32>,
    w: Vec<f32>,
}

/// Triangle-filter taps for `out` samples of the window `[start, start + len)` over an axis of
/// `n` source pixels.
fn axis_taps(n: u32, start: f64, len: f64, out: u32) -> Vec<Taps> {
    let scale = len / out as f64;
    let support = scale.max(1.0);
    let last = n.saturating_sub(1) as i64;
    (0..out)
        .map(|j| {
            let centre = start + (j as f64 + 0.5) * scale;
            let lo = (centre - support - 0.5).floor() as i64;
            let hi = (centre + support - 0.5).ceil() as i64;
            let mut idx = Vec::with_capacity((hi - lo + 1) as usize);
            let mut w = Vec::with_capacity((hi - lo + 1) as usize);
            let mut sum = 0.0f64;
            for i in lo..=hi {
                let d = ((i as f64 + 0.5 - centre) / support).abs();
                if d >= 1.0 {
                    continue;
                }
                let wt = 1.0 - d;
                let ci = i.clamp(0, last) as u32;
                match idx.last() {
                    Some(&prev) if prev == ci => *w.last_mut().expect("nonempty") += wt,
                    _ => {
                        idx.push(ci);
                        w.push(wt);
                    }
                }
                sum += wt;
            }
            if sum <= 0.0 {
                // Cannot happen for support ≥ 1, but keep the output defined.
                let ci = ((centre - 0.5).round() as i64).clamp(0, last) as u32;
                return Taps {
                    idx: vec![ci],
                    w: vec![1.0],
                };
            }
            Taps {
                idx,
                w: w.into_iter().map(|x| (x / sum) as f32).collect(),
            }
        })
        .collect()
}

/// Resamples the square window with top-left `(x0, y0)` and side `side` (in source pixels,
/// fractional allowed, may extend past the borders) to `out × out` with a triangle filter.
///
/// `side` is clamped to at least a thousandth of a pixel and `out` to at least 1; an empty
/// source image gives a black output.
pub fn window_triangle(img: &RgbImage, x0: f64, y0: f64, side: f64, out: u32) -> RgbImage {
    let out = out.max(1);
    let side = side.max(1e-3);
    let (w, h) = img.dimensions();
    let mut dst = RgbImage::new(out, out);
    if w == 0 || h == 0 {
        return dst;
    }
    let xt = axis_taps(w, x0, side, out);
    let yt = axis_taps(h, y0, side, out);
    // Rows of the source that any output row reads.
    let rows = || yt.iter().flat_map(|t| t.idx.iter().copied());
    let (rmin, rmax) = (rows().min().unwrap_or(0), rows().max().unwrap_or(0));
    let src = img.as_raw();
    let stride = w as usize * 3;
    let o = out as usize;
    // Horizontal pass over the needed rows into f32.
    let nrows = (rmax - rmin + 1) as usize;
    let mut tmp = vec![0f32; nrows * o * 3];
    for r in 0..nrows {
        let row = &src[(rmin as usize + r) * stride..(rmin as usize + r + 1) * stride];
        let trow = &mut tmp[r * o * 3..(r + 1) * o * 3];
        for (j, t) in xt.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (&i, &wt) in t.idx.iter().zip(&t.w) {
                let p = &row[i as usize * 3..i as usize * 3 + 3];
                acc[0] += p[0] as f32 * wt;
                acc[1] += p[1] as f32 * wt;
                acc[2] += p[2] as f32 * wt;
            }
            trow[j * 3..j * 3 + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass.
    let dbuf: &mut [u8] = &mut dst;
    for (yo, t) in yt.iter().enumerate() {
        let drow = &mut dbuf[yo * o * 3..(yo + 1) * o * 3];
        let mut acc = vec![0f32; o * 3];
        for (&i, &wt) in t.idx.iter().zip(&t.w) {
            let trow = &tmp[(i - rmin) as usize * o * 3..(i - rmin + 1) as usize * o * 3];
            for (a, &v) in acc.iter_mut().zip(trow) {
                *a += v * wt;
            }
        }
        for (d, a) in drow.iter_mut().zip(&acc) {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    dst
}

/// One RGB pixel interpolated between columns `c0`, `c1` (weight `fx` on `c1`) of two RGB rows
/// (weight `fy` on `row1`), rounded and clamped into `out`.
#[inline(always)]
fn bilinear_rgb(
    row0: &[u8],
    row1: &[u8],
    (c0, c1, fx): (usize, usize, f32),
    fy: f32,
    out: &mut [u8],
) {
    for (c, o) in out.iter_mut().enumerate() {
        let a = row0[c0 * 3 + c] as f32;
        let b = row0[c1 * 3 + c] as f32;
        let cc = row1[c0 * 3 + c] as f32;
        let d = row1[c1 * 3 + c] as f32;
        let top = a + (b - a) * fx;
        let bot = cc + (d - cc) * fx;
        *o = (top + (bot - top) * fy).round().clamp(0.0, 255.0) as u8;
    }
}

/// The black `out × out` output (`out` at least 1) of a window of side `side`, and the source
/// step per output pixel; `None` when `img` has no pixels (the output then stays black).
fn blank_window(img: &RgbImage, side: f32, out: u32) -> Option<(RgbImage, f32)> {
    let out = out.max(1);
    let (w, h) = img.dimensions();
    (w > 0 && h > 0).then(|| (RgbImage::new(out, out), side / out as f32))
}

/// Samples the square window with top-left `(x0, y0)` and side `side` at `out × out` points by
/// bilinear interpolation (edge pixels repeat outside the image). Output pixel `(j, i)` reads
/// source point `(x0 + (j + ½)·side/out − ½, y0 + (i + ½)·side/out − ½)` in pixel-index
/// coordinates, so a window of side `out` at integer `(x0, y0)` is an exact crop.
/// With `mirror`, output column `j` reads the point of column `out − 1 − j`.
pub fn window_bilinear(
    img: &RgbImage,
    x0: f32,
    y0: f32,
    side: f32,
    out: u32,
    mirror: bool,
) -> RgbImage {
    let Some((mut dst, step)) = blank_window(img, side, out) else {
        return RgbImage::new(out.max(1), out.max(1));
    };
    let out = dst.width();
    let (w, h) = img.dimensions();
    let coords = |start: f32, n: u32| -> Vec<(usize, usize, f32)> {
        (0..out)
            .map(|j| {
                let x = start + (j as f32 + 0.5) * step - 0.5;
                let x = x.clamp(0.0, (n - 1) as f32);
                let i0 = x.floor();
                let f = x - i0;
                let i0 = i0 as usize;
                let i1 = (i0 + 1).min(n as usize - 1);
                (i0, i1, f)
            })
            .collect()
    };
    let mut xs = coords(x0, w);
    if mirror {
        xs.reverse();
    }
    let ys = coords(y0, h);
    let src = img.as_raw();
    let stride = w as usize * 3;
    let o = out as usize;
    let dbuf: &mut [u8] = &mut dst;
    for (yo, &(r0, r1, fy)) in ys.iter().enumerate() {
        let row0 = &src[r0 * stride..(r0 + 1) * stride];
        let row1 = &src[r1 * stride..(r1 + 1) * stride];
        let drow = &mut dbuf[yo * o * 3..(yo + 1) * o * 3];
        for (xo, &(c0, c1, fx)) in xs.iter().enumerate() {
            bilinear_rgb(row0, row1, (c0, c1, fx), fy, &mut drow[xo * 3..xo * 3 + 3]);
        }
    }
    dst
}

/// [`window_bilinear`] with the window turned by `angle` radians about its centre (a positive
/// angle shows the content turned anticlockwise on screen: a quarter turn is
/// `image::imageops::rotate270`). Output pixel `(j, i)`
/// reads the source point `c + R(angle)·(u, v)`, where `(u, v) = ((j + ½)·s − side/2,
/// (i + ½)·s − side/2)` is its offset from the window centre `c` in source pixels (`s =
/// side/out`, `u` negated with `mirror`). Edge pixels repeat outside the image. With `angle == 0`
/// the result is exactly [`window_bilinear`]'s.
pub fn window_bilinear_rotated(
    img: &RgbImage,
    x0: f32,
    y0: f32,
    side: f32,
    out: u32,
    mirror: bool,
    angle: f32,
) -> RgbImage {
    if angle == 0.0 {
        return window_bilinear(img, x0, y0, side, out, mirror);
    }
    let Some((mut dst, step)) = blank_window(img, side, out) else {
        return RgbImage::new(out.max(1), out.max(1));
    };
    let out = dst.width();
    let (w, h) = img.dimensions();
    // Window centre in pixel-index coordinates (the −½ of window_bilinear's mapping).
    let cx = x0 + side / 2.0 - 0.5;
    let cy = y0 + side / 2.0 - 0.5;
    let (sin, cos) = angle.sin_cos();
    let src = img.as_raw();
    let stride = w as usize * 3;
    let (wm, hm) = ((w - 1) as f32, (h - 1) as f32);
    let o = out as usize;
    let dbuf: &mut [u8] = &mut dst;
    for yo in 0..o {
        let v = (yo as f32 + 0.5) * step - side / 2.0;
        for xo in 0..o {
            let j = if mirror { o - 1 - xo } else { xo };
            let u = (j as f32 + 0.5) * step - side / 2.0;
            let x = (cx + cos * u - sin * v).clamp(0.0, wm);
            let y = (cy + sin * u + cos * v).clamp(0.0, hm);
            let (xf, yf) = (x.floor(), y.floor());
            let (fx, fy) = (x - xf, y - yf);
            let (c0, r0) = (xf as usize, yf as usize);
            let c1 = (c0 + 1).min(w as usize - 1);
            let r1 = (r0 + 1).min(h as usize - 1);
            let row0 = &src[r0 * stride..(r0 + 1) * stride];
            let row1 = &src[r1 * stride..(r1 + 1) * stride];
            let px = (yo * o + xo) * 3;
            bilinear_rgb(row0, row1, (c0, c1, fx), fy, &mut dbuf[px..px + 3]);
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::{resize, FilterType};

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 37 + y * 11) % 256) as u8,
                ((x * x + 3 * y) % 256) as u8,
                ((200 + x * 5 + y * y * 7) % 256) as u8,
            ])
        })
    }

    #[test]
    fn triangle_matches_image_crate_inside() {
        // Whole-image windows: the image crate's Triangle resize is an independent reference.
        // Borders differ by design (we repeat edge pixels, `image` drops out-of-range taps).
        for (w, h, out) in [(50u32, 50u32, 17u32), (40, 40, 40), (30, 30, 71)] {
            let img = pattern(w, h);
            let ours = window_triangle(&img, 0.0, 0.0, w as f64, out);
            let theirs = resize(&img, out, out, FilterType::Triangle);
            let ratio = (w as f64 / out as f64).max(1.0);
            let margin = (ratio * 2.0 / (w as f64 / out as f64)).ceil() as u32 + 1;
            let mut worst = 0i32;
            for y in margin..out - margin {
                for x in margin..out - margin {
                    for c in 0..3 {
                        let d =
                            ours.get_pixel(x, y).0[c] as i32 - theirs.get_pixel(x, y).0[c] as i32;
                        worst = worst.max(d.abs());
                    }
                }
            }
            assert!(worst <= 1, "{w}x{h}->{out}: max diff {worst}");
        }
    }

    #[test]
    fn triangle_identity_and_mean() {
        let img = pattern(9, 7);
        // A window of side n at integer offset resized to n is an exact crop.
        let crop = window_triangle(&img, 1.0, 0.0, 7.0, 7);
        assert_eq!(crop, image::imageops::crop_imm(&img, 1, 0, 7, 7).to_image());
        // A 2×2 window to 1×1: support 2, so taps at distances ½ and 3/2 with tent weights
        // ¾ and ¼, normalised: (1/8, 3/8, 3/8, 1/8) on columns 2..=5 and rows 1..=4.
        let one = window_triangle(&img, 3.0, 2.0, 2.0, 1);
        let wts = [0.125f64, 0.375, 0.375, 0.125];
        for c in 0..3 {
            let mut s = 0.0;
            for (yi, wy) in wts.iter().enumerate() {
                for (xi, wx) in wts.iter().enumerate() {
                    s += wx * wy * img.get_pixel(2 + xi as u32, 1 + yi as u32).0[c] as f64;
                }
            }
            assert_eq!(one.get_pixel(0, 0).0[c] as f64, s.round(), "channel {c}");
        }
        // The whole of a 2×2 image to 1×1 (edges repeated) is the mean of its four pixels.
        let small = pattern(2, 2);
        let m = window_triangle(&small, 0.0, 0.0, 2.0, 1);
        for c in 0..3 {
            let s: u32 = small.pixels().map(|p| p.0[c] as u32).sum();
            assert_eq!(m.get_pixel(0, 0).0[c] as f64, (s as f64 / 4.0).round());
        }
    }

    #[test]
    fn windows_outside_replicate_edges() {
        let img = RgbImage::from_fn(2, 2, |x, _| image::Rgb([x as u8 * 200, 0, 0]));
        let t = window_triangle(&img, -10.0, -10.0, 4.0, 4);
        assert!(t.pixels().all(|p| p.0[0] == 0));
        let b = window_bilinear(&img, 5.0, 0.0, 4.0, 4, false);
        assert!(b.pixels().all(|p| p.0[0] == 200));
    }

    #[test]
    fn bilinear_crop_and_mirror() {
        let img = pattern(12, 10);
        let crop = window_bilinear(&img, 3.0, 2.0, 6.0, 6, false);
        assert_eq!(crop, image::imageops::crop_imm(&img, 3, 2, 6, 6).to_image());
        let m = window_bilinear(&img, 3.0, 2.0, 6.0, 6, true);
        assert_eq!(m, image::imageops::flip_horizontal(&crop));
        // Halfway between two pixels: their mean.
        let half = window_bilinear(&img, 0.5, 0.0, 1.0, 1, false);
        let a = img.get_pixel(0, 0).0[0] as f32;
        let b = img.get_pixel(1, 0).0[0] as f32;
        assert_eq!(half.get_pixel(0, 0).0[0] as f32, ((a + b) / 2.0).round());
    }

    #[test]
    fn rotated_window_quarter_turns_and_small_angles() {
        // A quarter turn of an odd-sized whole-image window is an exact transpose-and-flip:
        // an independent closed form (image::imageops::rotate90/270).
        let img = pattern(9, 9);
        let plus =
            window_bilinear_rotated(&img, 0.0, 0.0, 9.0, 9, false, std::f32::consts::FRAC_PI_2);
        let minus =
            window_bilinear_rotated(&img, 0.0, 0.0, 9.0, 9, false, -std::f32::consts::FRAC_PI_2);
        // Output (j, i) reads c + R(90°)(u, v) = c + (−v, u): source (8 − i, j).
        for i in 0..9u32 {
            for j in 0..9u32 {
                assert_eq!(
                    plus.get_pixel(j, i),
                    img.get_pixel(8 - i, j),
                    "+90 at {j},{i}"
                );
                assert_eq!(
                    minus.get_pixel(j, i),
                    img.get_pixel(i, 8 - j),
                    "−90 at {j},{i}"
                );
            }
        }
        assert_eq!(plus, image::imageops::rotate270(&img));
        assert_eq!(minus, image::imageops::rotate90(&img));
        // Zero angle is window_bilinear itself, mirror included.
        for mirror in [false, true] {
            assert_eq!(
                window_bilinear_rotated(&img, 1.3, 0.7, 6.5, 5, mirror, 0.0),
                window_bilinear(&img, 1.3, 0.7, 6.5, 5, mirror)
            );
        }
        // A small angle against a per-pixel reference written from the formula in f64.
        let big = pattern(40, 30);
        let (x0, y0, side, out, angle) = (6.0f32, 3.0f32, 22.0f32, 16u32, 0.2f32);
        for mirror in [false, true] {
            let got = window_bilinear_rotated(&big, x0, y0, side, out, mirror, angle);
            let s = side as f64 / out as f64;
            let (cx, cy) = (
                x0 as f64 + side as f64 / 2.0 - 0.5,
                y0 as f64 + side as f64 / 2.0 - 0.5,
            );
            let (sn, cs) = (angle as f64).sin_cos();
            for i in 0..out {
                for j in 0..out {
                    let jj = if mirror { out - 1 - j } else { j };
                    let u = (jj as f64 + 0.5) * s - side as f64 / 2.0;
                    let v = (i as f64 + 0.5) * s - side as f64 / 2.0;
                    let x = (cx + cs * u - sn * v).clamp(0.0, 39.0);
                    let y = (cy + sn * u + cs * v).clamp(0.0, 29.0);
                    let (xa, ya) = (x.floor() as u32, y.floor() as u32);
                    let (xb, yb) = ((xa + 1).min(39), (ya + 1).min(29));
                    let (fx, fy) = (x - x.floor(), y - y.floor());
                    for c in 0..3 {
                        let p = |xx: u32, yy: u32| big.get_pixel(xx, yy).0[c] as f64;
                        let top = p(xa, ya) * (1.0 - fx) + p(xb, ya) * fx;
                        let bot = p(xa, yb) * (1.0 - fx) + p(xb, yb) * fx;
                        let want = top * (1.0 - fy) + bot * fy;
                        let g = got.get_pixel(j, i).0[c] as f64;
                        assert!((g - want).abs() <= 0.51, "({j},{i},{c}) {g} vs {want}");
                    }
                }
            }
        }
    }
}
