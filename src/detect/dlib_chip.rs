//! Face-chip extraction as in `dlib/image_transforms/interpolation.h`: `chip_details`,
//! `get_face_chip_details` (5-point model) and `extract_image_chip` with dlib's default
//! bilinear interpolation.
//!
//! When the chip is much smaller than the source rectangle, dlib does not interpolate from
//! the full-resolution image: it crops a bounding box around the (rotated) chip rectangle,
//! builds a `pyramid_down<2>` image pyramid of that crop (a 5x5 binomial filter then 2x
//! decimation, in integers), and samples from the level whose down-mapped rectangle is the
//! smallest one still larger than the chip. This module reproduces all of that, including
//! its quirks: samples whose 2x2 neighbourhood leaves the cropped box are black even where
//! the full image has pixels, and interpolated values are truncated (not rounded) to `u8`.

use super::dlib_geometry::{affine_from_axes, find_similarity_transform, rotate_point};
use image::{Rgb, RgbImage};

/// dlib's `drectangle`: a rectangle with `f64` corners; width is `right - left + 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DRect {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Right edge (inclusive convention: width = right - left + 1).
    pub right: f64,
    /// Bottom edge (inclusive convention).
    pub bottom: f64,
}

/// An empty `drectangle`, as dlib's default constructor makes.
const EMPTY: DRect = DRect {
    left: 0.0,
    top: 0.0,
    right: -1.0,
    bottom: -1.0,
};

impl DRect {
    /// True when `top > bottom` or `left > right`.
    pub fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }

    /// `right - left + 1`, or 0 when empty.
    pub fn width(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.right - self.left + 1.0
        }
    }

    /// `bottom - top + 1`, or 0 when empty.
    pub fn height(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.bottom - self.top + 1.0
        }
    }

    /// `width() * height()`.
    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    /// Midpoint of the corners.
    pub fn center(&self) -> [f64; 2] {
        [
            (self.left + self.right) / 2.0,
            (self.top + self.bottom) / 2.0,
        ]
    }

    /// Union with a point (dlib's `drect += point`).
    fn add_point(self, p: [f64; 2]) -> DRect {
        if self.is_empty() {
            return DRect {
                left: p[0],
                top: p[1],
                right: p[0],
                bottom: p[1],
            };
        }
        DRect {
            left: self.left.min(p[0]),
            top: self.top.min(p[1]),
            right: self.right.max(p[0]),
            bottom: self.bottom.max(p[1]),
        }
    }

    /// The four corners `[tl, tr, bl, br]`.
    fn corners(&self) -> [[f64; 2]; 4] {
        [
            [self.left, self.top],
            [self.right, self.top],
            [self.left, self.bottom],
            [self.right, self.bottom],
        ]
    }

    /// `pyramid_down<2>::rect_down`: maps both corners with `p/2 - (1.25, 0.75)`.
    fn rect_down(&self) -> DRect {
        let down = |x: f64, y: f64| [x / 2.0 - 1.25, y / 2.0 - 0.75];
        EMPTY
            .add_point(down(self.left, self.top))
            .add_point(down(self.right, self.bottom))
    }
}

/// An integer rectangle `[left, top, right, bottom]` (inclusive), dlib's `rectangle`.
type IRect = [i64; 4];

/// dlib's `drectangle -> rectangle` conversion: each coordinate `floor(v + 0.5)`.
fn round_rect(r: &DRect) -> IRect {
    let f = |v: f64| (v + 0.5).floor() as i64;
    [f(r.left), f(r.top), f(r.right), f(r.bottom)]
}

/// Where and how to cut a chip out of an image (dlib's `chip_details`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    /// The source rectangle before rotation, in image coordinates.
    pub rect: DRect,
    /// Rotation of the rectangle about its center, radians.
    pub angle: f64,
    /// Chip height in pixels.
    pub rows: usize,
    /// Chip width in pixels.
    pub cols: usize,
}

impl ChipDetails {
    /// dlib's `chip_details(chip_points, img_points, chip_dims(rows, cols))`: the similarity
    /// transform that best maps `chip_points` (chip pixel coordinates) onto `img_points`.
    pub fn from_points(
        chip_points: &[[f64; 2]],
        img_points: &[[f64; 2]],
        rows: usize,
        cols: usize,
    ) -> Self {
        let tform = find_similarity_transform(chip_points, img_points);
        let (px, py) = (tform.m[0][0], tform.m[1][0]);
        let angle = py.atan2(px);
        let scale = (px * px + py * py).sqrt();
        let c = tform.apply([cols as f64 / 2.0, rows as f64 / 2.0]);
        // centered_drect(c, cols*scale, rows*scale)
        let (w, h) = (cols as f64 * scale - 1.0, rows as f64 * scale - 1.0);
        let rect = DRect {
            left: c[0] - w / 2.0,
            top: c[1] - h / 2.0,
            right: c[0] + w / 2.0,
            bottom: c[1] + h / 2.0,
        };
        Self {
            rect,
            angle,
            rows,
            cols,
        }
    }
}

/// dlib's 5-point face template (eye corners outer/inner right, left, then nose base).
const FACE_TEMPLATE_5: [[f64; 2]; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// `get_face_chip_details(det, size, padding)` for the 5-point landmark model: a `size` x
/// `size` chip of the face, upright, with `padding` (fraction of the face width) on each side.
/// dlib's Python `get_face_chip` uses `size = 150, padding = 0.25`.
pub fn get_face_chip_details(
    landmarks: &[(f64, f64); 5],
    size: usize,
    padding: f64,
) -> ChipDetails {
    let from: Vec<[f64; 2]> = FACE_TEMPLATE_5
        .iter()
        .map(|p| p.map(|v| (padding + v) / (2.0 * padding + 1.0) * size as f64))
        .collect();
    let to: Vec<[f64; 2]> = landmarks.iter().map(|&(x, y)| [x, y]).collect();
    ChipDetails::from_points(&from, &to, size, size)
}

/// A window `[x0, y0, w, h]` into an image (dlib's `sub_image`), already clipped to it.
#[derive(Clone, Copy)]
struct View<'a> {
    img: &'a RgbImage,
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
}

impl<'a> View<'a> {
    fn whole(img: &'a RgbImage) -> Self {
        View {
            img,
            x0: 0,
            y0: 0,
            w: img.width(),
            h: img.height(),
        }
    }

    fn px(&self, x: u32, y: u32) -> [u8; 3] {
        self.img.get_pixel(self.x0 + x, self.y0 + y).0
    }
}

/// `extract_image_chip(img, details, chip)` with `interpolate_bilinear` and a black
/// background, as dlib's Python `get_face_chip` calls it.
pub fn extract_image_chip(img: &RgbImage, details: &ChipDetails) -> RgbImage {
    let (rows, cols) = (details.rows, details.cols);
    if details.angle == 0.0
        && rows as f64 == details.rect.height()
        && cols as f64 == details.rect.width()
    {
        return basic_extract(img, round_rect(&details.rect));
    }
    let size = (rows * cols) as f64;
    let (depth, grow) = pyramid_depth(&details.rect, size);
    let bbox = bounding_box(img, details, grow);
    let sub = View {
        img,
        x0: bbox[0] as u32,
        y0: bbox[1] as u32,
        w: rect_w(bbox),
        h: rect_h(bbox),
    };
    let mut levels: Vec<RgbImage> = Vec::with_capacity(depth);
    for i in 0..depth {
        let down = pyramid_down_2(&levels.get(i.wrapping_sub(1)).map_or(sub, View::whole));
        levels.push(down);
    }
    // pick the level and map the rectangle into it
    let shift = [bbox[0] as f64, bbox[1] as f64];
    let mut rect = DRect {
        left: details.rect.left - shift[0],
        top: details.rect.top - shift[1],
        right: details.rect.right - shift[0],
        bottom: details.rect.bottom - shift[1],
    };
    let mut level: Option<usize> = None;
    while rect.rect_down().area() > size {
        level = Some(level.map_or(0, |l| l + 1));
        rect = rect.rect_down();
    }
    let src = match level {
        None => sub,
        Some(l) => levels.get(l).map_or(
            View {
                img,
                x0: 0,
                y0: 0,
                w: 0,
                h: 0,
            },
            View::whole,
        ),
    };
    let cn = rect.center();
    let [tl, tr, bl, _] = rect.corners().map(|p| rotate_point(cn, p, details.angle));
    let trns = affine_from_axes(tl, tr, bl, cols as f64 - 1.0, rows as f64 - 1.0);
    RgbImage::from_fn(cols as u32, rows as u32, |c, r| {
        Rgb(bilinear(&src, trns.apply([f64::from(c), f64::from(r)])).unwrap_or([0, 0, 0]))
    })
}

/// Pyramid depth and crop margin for a chip of `size` pixels cut from `rect`.
fn pyramid_depth(rect: &DRect, size: f64) -> (usize, f64) {
    let (mut depth, mut grow) = (0usize, 2.0f64);
    let mut r = rect.rect_down();
    while r.area() > size {
        r = r.rect_down();
        depth += 1;
        grow = grow * 2.0 + 2.0;
    }
    (depth, grow)
}

/// The rotated chip rectangle grown by `grow`, clipped to the image, rounded to integers.
fn bounding_box(img: &RgbImage, d: &ChipDetails, grow: f64) -> IRect {
    let cn = d.rect.center();
    let rot = d
        .rect
        .corners()
        .iter()
        .fold(EMPTY, |acc, &p| acc.add_point(rotate_point(cn, p, d.angle)));
    let clipped = DRect {
        left: (rot.left - grow).max(0.0),
        top: (rot.top - grow).max(0.0),
        right: (rot.right + grow).min(f64::from(img.width()) - 1.0),
        bottom: (rot.bottom + grow).min(f64::from(img.height()) - 1.0),
    };
    let r = round_rect(&clipped);
    // `rectangle() + r` is r unless r is empty; an empty box selects no pixels.
    if r[0] > r[2] || r[1] > r[3] {
        [0, 0, -1, -1]
    } else {
        r
    }
}

fn rect_w(r: IRect) -> u32 {
    if r[0] > r[2] {
        0
    } else {
        (r[2] - r[0] + 1) as u32
    }
}

fn rect_h(r: IRect) -> u32 {
    if r[1] > r[3] {
        0
    } else {
        (r[3] - r[1] + 1) as u32
    }
}

/// `interpolate_bilinear` on an RGB view: `None` when the 2x2 neighbourhood leaves the view.
fn bilinear(v: &View, p: [f64; 2]) -> Option<[u8; 3]> {
    let (left, top) = (p[0].floor(), p[1].floor());
    let inside =
        left >= 0.0 && top >= 0.0 && left + 1.0 < f64::from(v.w) && top + 1.0 < f64::from(v.h);
    if !inside {
        return None;
    }
    let (l, t) = (left as u32, top as u32);
    let (lr, tb) = (p[0] - left, p[1] - top);
    let (a, b, c, d) = (
        v.px(l, t),
        v.px(l + 1, t),
        v.px(l, t + 1),
        v.px(l + 1, t + 1),
    );
    Some(std::array::from_fn(|k| {
        let (tl, tr, bl, br) = (
            f64::from(a[k]),
            f64::from(b[k]),
            f64::from(c[k]),
            f64::from(d[k]),
        );
        let val = (1.0 - tb) * ((1.0 - lr) * tl + lr * tr) + tb * ((1.0 - lr) * bl + lr * br);
        assign_u8(val)
    }))
}

/// dlib's `assign_pixel(unsigned char&, double)`: clamp to [0, 255], then truncate.
fn assign_u8(v: f64) -> u8 {
    if v <= 0.0 {
        0
    } else if v <= 255.0 {
        v as u8
    } else {
        255
    }
}

/// `pyramid_down<2>` on an RGB image: 5-tap [1 4 6 4 1] filter in both directions, keep
/// every other row and column, divide by 256 (truncating). Views of 8 or fewer rows or
/// columns give an empty image.
fn pyramid_down_2(v: &View) -> RgbImage {
    if v.h <= 8 || v.w <= 8 {
        return RgbImage::new(0, 0);
    }
    let (tw, th) = ((v.w - 3) / 2, v.h);
    let taps = [1u32, 4, 6, 4, 1];
    // row filter into a u32 buffer of th x tw x 3
    let mut temp = vec![[0u32; 3]; (tw * th) as usize];
    for r in 0..th {
        for c in 0..tw {
            let acc = &mut temp[(r * tw + c) as usize];
            for (k, &w) in taps.iter().enumerate() {
                let p = v.px(2 * c + k as u32, r);
                (0..3).for_each(|ch| acc[ch] += w * u32::from(p[ch]));
            }
        }
    }
    RgbImage::from_fn(tw, (v.h - 3) / 2, |c, dr| {
        let r = 2 + 2 * dr;
        let mut acc = [0u32; 3];
        for (k, &w) in taps.iter().enumerate() {
            let t = temp[((r - 2 + k as u32) * tw + c) as usize];
            (0..3).for_each(|ch| acc[ch] += w * t[ch]);
        }
        Rgb(acc.map(|s| (s / 256) as u8))
    })
}

/// `impl::basic_extract_image_chip`: a plain copy of `loc`, black where it leaves the image.
fn basic_extract(img: &RgbImage, loc: IRect) -> RgbImage {
    let (w, h) = (rect_w(loc), rect_h(loc));
    RgbImage::from_fn(w, h, |c, r| {
        let (x, y) = (loc[0] + i64::from(c), loc[1] + i64::from(r));
        let inside =
            (0..i64::from(img.width())).contains(&x) && (0..i64::from(img.height())).contains(&y);
        if inside {
            *img.get_pixel(x as u32, y as u32)
        } else {
            Rgb([0, 0, 0])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_down_sizes_and_constant_image() {
        let img = RgbImage::from_pixel(21, 12, Rgb([200, 100, 7]));
        let d = pyramid_down_2(&View::whole(&img));
        assert_eq!((d.width(), d.height()), (9, 4));
        assert!(d.pixels().all(|p| p.0 == [200, 100, 7]));
        assert_eq!(
            pyramid_down_2(&View::whole(&RgbImage::new(8, 50))).width(),
            0
        );
    }

    #[test]
    fn axis_aligned_chip_is_a_copy() {
        let img = RgbImage::from_fn(20, 10, |x, y| Rgb([x as u8, y as u8, 0]));
        let d = ChipDetails {
            rect: DRect {
                left: -2.0,
                top: 3.0,
                right: 5.0,
                bottom: 6.0,
            },
            angle: 0.0,
            rows: 4,
            cols: 8,
        };
        let chip = extract_image_chip(&img, &d);
        assert_eq!(chip.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(chip.get_pixel(2, 0).0, [0, 3, 0]);
        assert_eq!(chip.get_pixel(7, 3).0, [5, 6, 0]);
    }

    #[test]
    fn empty_and_far_away_chips_are_black() {
        let img = RgbImage::from_pixel(30, 30, Rgb([255, 255, 255]));
        let d = get_face_chip_details(
            &[
                (1e4, 1e4),
                (1e4 - 20.0, 1e4),
                (1e4 - 90.0, 1e4),
                (1e4 - 70.0, 1e4),
                (1e4 - 45.0, 1e4 + 50.0),
            ],
            40,
            0.25,
        );
        let chip = extract_image_chip(&img, &d);
        assert!(chip.pixels().all(|p| p.0 == [0, 0, 0]));
        let small = RgbImage::new(0, 0);
        assert_eq!(extract_image_chip(&small, &d).width(), 40);
    }
}
