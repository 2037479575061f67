//! The image side of dlib's HOG face detector: its bilinear `resize_image`, the image pyramids
//! (`pyramid_up` with `pyramid_down<2>`, `pyramid_down<6>`) and Felzenszwalb's 31-channel fHOG
//! features (`dlib/image_transforms/fhog.h`, `extract_fhog_features`), as dlib 20 computes them
//! on an RGB image.
//!
//! Arithmetic follows dlib's vectorised code paths lane for lane, so the features match to the
//! last bit or nearly: `resize_image` works in `f32` four output columns at a time (with a
//! scalar `f64` tail) and truncates; the fHOG gradient of a block of eight pixels picks the
//! colour channel with the strongest gradient preferring the later channel on ties, the
//! scalar tail the earlier one; histogram votes, block norms and features are `f32` in
//! dlib's order of operations.

use image::RgbImage;

/// The fHOG features of one image: 31 planes of `rows × cols` cells, row-major, with a zero
/// border so that a filter of the detection window's size can be centred on every cell.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fhog {
    /// Rows of each plane (cells, border included).
    pub rows: usize,
    /// Columns of each plane.
    pub cols: usize,
    /// `31 · rows · cols` values, plane after plane.
    pub data: Vec<f32>,
}

impl Fhog {
    /// Plane `i` (0..31).
    pub fn plane(&self, i: usize) -> &[f32] {
        &self.data[i * self.rows * self.cols..(i + 1) * self.rows * self.cols]
    }
}

/// Number of fHOG channels: 18 signed and 9 unsigned orientations, 4 texture features.
pub(crate) const FHOG_CHANNELS: usize = 31;

/// dlib's `resize_image(in, out)` (bilinear) for RGB images, to `width × height`.
pub(crate) fn resize_bilinear(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    if width == 0 || height == 0 || src.width() == 0 || src.height() == 0 {
        return out;
    }
    let (in_w, in_h) = (i64::from(src.width()), i64::from(src.height()));
    let x_scale = (in_w - 1) as f64 / (i64::from(width) - 1).max(1) as f64;
    let y_scale = (in_h - 1) as f64 / (i64::from(height) - 1).max(1) as f64;
    let row_len = width as usize * 3;
    let mut y = -y_scale;
    for (r, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        y += y_scale;
        let top = y.floor() as i64;
        let bottom = (top + 1).min(in_h - 1);
        let rows = (row_of(src, top), row_of(src, bottom));
        let done = resize_row_simd(rows, y - top as f64, x_scale, in_w, out_row);
        resize_row_tail(rows, y - top as f64, x_scale, in_w, done, out_row);
        debug_assert!(r < height as usize);
    }
    out
}

/// Row `r` of `img` as raw RGB bytes (empty outside the image).
fn row_of(img: &RgbImage, r: i64) -> &[u8] {
    let len = img.width() as usize * 3;
    usize::try_from(r)
        .ok()
        .and_then(|r| img.as_raw().get(r * len..(r + 1) * len))
        .unwrap_or(&[])
}

/// The four-column `f32` loop of dlib's RGB `resize_image`; returns the first column it left.
fn resize_row_simd(
    (top, bottom): (&[u8], &[u8]),
    tb_frac: f64,
    x_scale: f64,
    in_w: i64,
    out: &mut [u8],
) -> usize {
    let (tb, inv_tb) = (tb_frac as f32, (1.0 - tb_frac) as f32);
    let step = (4.0 * x_scale) as f32;
    let x0 = -4.0 * x_scale;
    let mut xs = [0, 1, 2, 3].map(|k| (x0 + f64::from(k) * x_scale) as f32);
    let mut c = 0usize;
    loop {
        xs.iter_mut().for_each(|x| *x += step);
        let left = xs.map(|x| x as i32);
        if i64::from(left[3]) + 1 >= in_w || (c + 4) * 3 > out.len() {
            return c;
        }
        for k in 0..4 {
            let lr = xs[k] - left[k] as f32;
            let inv_lr = 1.0 - lr;
            let w = [inv_tb * inv_lr, inv_tb * lr, tb * inv_lr, tb * lr];
            let (l, rt) = (left[k] as usize * 3, left[k] as usize * 3 + 3);
            for ch in 0..3 {
                let px = |row: &[u8], i: usize| f32::from(row.get(i + ch).copied().unwrap_or(0));
                let v = w[0] * px(top, l)
                    + w[1] * px(top, rt)
                    + w[2] * px(bottom, l)
                    + w[3] * px(bottom, rt);
                // `static_cast<unsigned char>` of the truncated `int32`.
                out[(c + k) * 3 + ch] = v as i32 as u8;
            }
        }
        c += 4;
    }
}

/// The scalar `f64` tail of dlib's RGB `resize_image`, from column `start` on.
fn resize_row_tail(
    (top, bottom): (&[u8], &[u8]),
    tb_frac: f64,
    x_scale: f64,
    in_w: i64,
    start: usize,
    out: &mut [u8],
) {
    let mut x = -x_scale + start as f64 * x_scale;
    for c in start..out.len() / 3 {
        x += x_scale;
        let left = x.floor() as i64;
        let right = (left + 1).min(in_w - 1);
        let lr = x - left as f64;
        let (l, rt) = (left.max(0) as usize * 3, right.max(0) as usize * 3);
        for ch in 0..3 {
            let px = |row: &[u8], i: usize| f64::from(row.get(i + ch).copied().unwrap_or(0));
            let v = (1.0 - tb_frac) * ((1.0 - lr) * px(top, l) + lr * px(top, rt))
                + tb_frac * ((1.0 - lr) * px(bottom, l) + lr * px(bottom, rt));
            out[c * 3 + ch] = v as u8;
        }
    }
}

/// dlib's `pyramid_up(img, out, pyramid_down<2>)`: the image resized to the bottom-right
/// corner of `rect_up(get_rect(img))` plus one, i.e. `(2w + 2) × (2h + 1)`.
pub(crate) fn pyramid_up(img: &RgbImage) -> RgbImage {
    if img.width() == 0 || img.height() == 0 {
        return RgbImage::new(0, 0);
    }
    // point_up(p) = (p + (1.25, 0.75))·2, then rounded with floor(v + 0.5).
    let up = |v: f64, shift: f64| ((v + shift) * 2.0 + 0.5).floor() as u32;
    let right = up(f64::from(img.width() - 1), 1.25);
    let bottom = up(f64::from(img.height() - 1), 0.75);
    resize_bilinear(img, right + 1, bottom + 1)
}

/// dlib's `pyramid_down<6>` on an image: resized to `⌊5w/6⌋ × ⌊5h/6⌋`.
pub(crate) fn pyramid_down6(img: &RgbImage) -> RgbImage {
    resize_bilinear(img, img.width() * 5 / 6, img.height() * 5 / 6)
}

/// Gradient orientations: dlib's nine unit vectors, as `f32`.
const DIRECTIONS: [[f32; 2]; 9] = [
    [1.0000, 0.0000],
    [0.9397, 0.3420],
    [0.7660, 0.6428],
    [0.500, 0.8660],
    [0.1736, 0.9848],
    [-0.1736, 0.9848],
    [-0.5000, 0.8660],
    [-0.7660, 0.6428],
    [-0.9397, 0.3420],
];

/// The strongest colour gradient at `(x, y)` (both at least 1 inside the image):
/// `(dx, dy, squared length)`. `later_wins` chooses dlib's tie rule: the vectorised path keeps
/// the later channel of two with equal strength, the scalar path the earlier.
fn gradient(img: &RgbImage, x: u32, y: u32, later_wins: bool) -> (i32, i32, i32) {
    let raw = img.as_raw();
    let stride = img.width() as usize * 3;
    let at = (y as usize) * stride + x as usize * 3;
    let g = |ch: usize| {
        let dx = i32::from(raw[at + 3 + ch]) - i32::from(raw[at - 3 + ch]);
        let dy = i32::from(raw[at + stride + ch]) - i32::from(raw[at - stride + ch]);
        (dx, dy, dx * dx + dy * dy)
    };
    let mut best = g(0);
    for ch in [1, 2] {
        let cand = g(ch);
        if cand.2 > best.2 || (later_wins && cand.2 == best.2) {
            best = cand;
        }
    }
    best
}

/// The orientation bin (0..18) of gradient `(dx, dy)`, as dlib snaps it.
fn orientation(dx: f32, dy: f32) -> usize {
    let (mut best_dot, mut best_o) = (0f32, 0usize);
    for (o, d) in DIRECTIONS.iter().enumerate() {
        let dot = dx * d[0] + dy * d[1];
        if dot > best_dot {
            best_dot = dot;
            best_o = o;
        } else if -dot > best_dot {
            best_dot = -dot;
            best_o = o + 9;
        }
    }
    best_o
}

/// Orientation histograms of `cells_nr × cells_nc` cells with a one-cell border, 18 bins
/// each, filled with bilinear votes of every pixel's gradient magnitude.
struct Histograms {
    cols: usize,
    bins: Vec<[f32; 18]>,
}

impl Histograms {
    fn new(cells_nr: usize, cells_nc: usize) -> Self {
        Self {
            cols: cells_nc + 2,
            bins: vec![[0.0; 18]; (cells_nr + 2) * (cells_nc + 2)],
        }
    }

    fn add(&mut self, r: usize, c: usize, o: usize, v: f32) {
        self.bins[r * self.cols + c][o] += v;
    }

    /// Histogram of cell `(r, c)` (border-free coordinates).
    fn cell(&self, r: usize, c: usize) -> &[f32; 18] {
        &self.bins[(r + 1) * self.cols + c + 1]
    }
}

/// Votes of the pixels of row `y` into the histograms (`cell` pixels per cell side,
/// `visible_nc` the first column not voting).
fn vote_row(img: &RgbImage, y: u32, cell: u32, visible_nc: u32, hist: &mut Histograms) {
    let yp = ((f64::from(y) + 0.5) / f64::from(cell) - 0.5) as f32;
    let iyp = yp.floor();
    let vy0 = yp - iyp;
    let vy1 = (1.0 - f64::from(vy0)) as f32;
    let row = (iyp as i64 + 1) as usize;
    let mut x = 1u32;
    // Blocks of eight pixels (dlib's simd8f path): xp is shifted by one cell already.
    while x + 7 < visible_nc {
        for x in x..x + 8 {
            let (dx, dy, len) = gradient(img, x, y, true);
            let xp = (x as f32 + 0.5) / cell as f32 + 0.5;
            let ixp = xp as i32;
            let vx0 = xp - ixp as f32;
            let vx1 = 1.0 - vx0;
            let v = (len as f32).sqrt();
            let o = orientation(dx as f32, dy as f32);
            let (vx1, vx0) = (vx1 * v, vx0 * v);
            let col = ixp as usize;
            hist.add(row, col, o, vy1 * vx1);
            hist.add(row + 1, col, o, vy0 * vx1);
            hist.add(row, col + 1, o, vy1 * vx0);
            hist.add(row + 1, col + 1, o, vy0 * vx0);
        }
        x += 8;
    }
    for x in x..visible_nc {
        let (dx, dy, len) = gradient(img, x, y, false);
        let o = orientation(dx as f32, dy as f32);
        let v = (len as f32).sqrt();
        let xp = ((f64::from(x) + 0.5) / f64::from(cell) - 0.5) as f32;
        let ixp = xp.floor();
        let vx0 = xp - ixp;
        let vx1 = (1.0 - f64::from(vx0)) as f32;
        let col = (ixp as i64 + 1) as usize;
        hist.add(row, col, o, vy1 * vx1 * v);
        hist.add(row + 1, col, o, vy0 * vx1 * v);
        hist.add(row, col + 1, o, vy1 * vx0 * v);
        hist.add(row + 1, col + 1, o, vy0 * vx0 * v);
    }
}

/// Horizontal sum of four lanes as dlib's `sum(simd4f)` adds them.
fn sum4(h: [f32; 4]) -> f32 {
    (h[0] + h[1]) + (h[2] + h[3])
}

/// dlib's `extract_fhog_features(img, hog, cell_size, pad_rows, pad_cols)` on an RGB image:
/// 31 planes of `(cells_nr − 2 + pad_rows − 1) × (cells_nc − 2 + pad_cols − 1)`, features at
/// offset `((pad_rows − 1)/2, (pad_cols − 1)/2)`, zero elsewhere; empty planes for an image of
/// fewer than three cells a side.
pub(crate) fn extract_fhog(img: &RgbImage, cell: u32, pad_rows: usize, pad_cols: usize) -> Fhog {
    let empty = Fhog {
        rows: 0,
        cols: 0,
        data: Vec::new(),
    };
    let cells = |n: u32| (n as f32 / cell as f32 + 0.5) as usize;
    let (cells_nr, cells_nc) = (cells(img.height()), cells(img.width()));
    if cells_nr < 3 || cells_nc < 3 || pad_rows == 0 || pad_cols == 0 {
        return empty;
    }
    let mut hist = Histograms::new(cells_nr, cells_nc);
    let visible = |cells: usize, n: u32| (cells as u64 * u64::from(cell)).min(u64::from(n)) as u32;
    let visible_nr = visible(cells_nr, img.height()).saturating_sub(1);
    let visible_nc = visible(cells_nc, img.width()).saturating_sub(1);
    for y in 1..visible_nr {
        vote_row(img, y, cell, visible_nc, &mut hist);
    }
    let norm = block_energy(&hist, cells_nr, cells_nc);
    let (hog_nr, hog_nc) = (cells_nr - 2, cells_nc - 2);
    let (rows, cols) = (hog_nr + pad_rows - 1, hog_nc + pad_cols - 1);
    let mut out = Fhog {
        rows,
        cols,
        data: vec![0.0; FHOG_CHANNELS * rows * cols],
    };
    let (oy, ox) = ((pad_rows - 1) / 2, (pad_cols - 1) / 2);
    for y in 0..hog_nr {
        for x in 0..hog_nc {
            let f = cell_features(hist.cell(y + 1, x + 1), &norm, cells_nc, y, x);
            for (ch, v) in f.iter().enumerate() {
                out.data[(ch * rows + y + oy) * cols + x + ox] = *v;
            }
        }
    }
    out
}

/// Energy of each cell: the sum over the 9 unsigned orientations of the squared vote.
fn block_energy(hist: &Histograms, cells_nr: usize, cells_nc: usize) -> Vec<f32> {
    let mut norm = vec![0f32; cells_nr * cells_nc];
    for r in 0..cells_nr {
        for c in 0..cells_nc {
            let h = hist.cell(r, c);
            for o in 0..9 {
                let s = h[o] + h[o + 9];
                norm[r * cells_nc + c] += s * s;
            }
        }
    }
    norm
}

/// The 31 features of cell `(y + 1, x + 1)` with histogram `h`, normalised by the energy of
/// its four 2×2 blocks, in dlib's lane order.
fn cell_features(h: &[f32; 18], norm: &[f32], nc: usize, y: usize, x: usize) -> [f32; 31] {
    let n = |r: usize, c: usize| norm[r * nc + c];
    let z1 = [n(y + 1, x + 1), n(y, x + 1), n(y + 1, x), n(y, x)];
    let z2 = [n(y + 1, x + 2), n(y, x + 2), n(y + 1, x + 1), n(y, x + 1)];
    let z3 = [n(y + 2, x + 1), n(y + 1, x + 1), n(y + 2, x), n(y + 1, x)];
    let z4 = [
        n(y + 2, x + 2),
        n(y + 1, x + 2),
        n(y + 2, x + 1),
        n(y + 1, x + 1),
    ];
    let eps = 0.0001f32;
    let nn: [f32; 4] =
        std::array::from_fn(|k| 0.2f32 * ((z1[k] + z2[k] + z3[k] + z4[k]) + eps).sqrt());
    let inv: [f32; 4] = nn.map(|v| 0.1f32 / v);
    let clip = |v: f32| -> [f32; 4] { std::array::from_fn(|k| v.min(nn[k]) * inv[k]) };
    let mut f = [0f32; 31];
    let mut t = [0f32; 4];
    for o in (0..18).step_by(3) {
        let hs = [clip(h[o]), clip(h[o + 1]), clip(h[o + 2])];
        for (i, hv) in hs.iter().enumerate() {
            f[o + i] = sum4(*hv);
        }
        for k in 0..4 {
            t[k] += (hs[0][k] + hs[1][k]) + hs[2][k];
        }
    }
    for (o, item) in f.iter_mut().skip(18).take(9).enumerate() {
        *item = sum4(clip(h[o] + h[o + 9]));
    }
    let texture = (2.0 * 0.2357) as f32;
    for k in 0..4 {
        f[27 + k] = t[k] * texture;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_sizes_follow_dlib() {
        // pyramid_up with pyramid_down<2>: rect_up of (0,0,w-1,h-1) is (3,2,2w+1,2h).
        let img = RgbImage::new(250, 200);
        let up = pyramid_up(&img);
        assert_eq!((up.width(), up.height()), (502, 401));
        // pyramid_down<6>: ⌊5n/6⌋.
        let down = pyramid_down6(&up);
        assert_eq!((down.width(), down.height()), (418, 334));
        assert_eq!(pyramid_down6(&RgbImage::new(5, 1)).dimensions(), (4, 0));
    }

    #[test]
    fn resize_keeps_a_constant_image_and_the_corners() {
        let img = RgbImage::from_fn(37, 23, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 11) as u8, 9])
        });
        let out = resize_bilinear(&img, 53, 31);
        // Corners map onto corners exactly.
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(0, 0));
        assert_eq!(out.get_pixel(52, 30), img.get_pixel(36, 22));
        let flat = RgbImage::from_pixel(40, 30, image::Rgb([200, 100, 50]));
        // dlib truncates its f32 weighted sums, so a flat image may lose one grey level.
        let near = |p: &image::Rgb<u8>| {
            p.0.iter()
                .zip([200u8, 100, 50])
                .all(|(&v, w)| v == w || v + 1 == w)
        };
        assert!(resize_bilinear(&flat, 33, 25).pixels().all(near));
        assert_eq!(resize_bilinear(&flat, 0, 5).dimensions(), (0, 5));
    }

    #[test]
    fn fhog_of_a_flat_image_is_zero_and_sized_like_dlib() {
        let flat = RgbImage::from_pixel(80, 64, image::Rgb([90, 90, 90]));
        let f = extract_fhog(&flat, 8, 10, 10);
        // 10 × 8 cells → 8 × 6 features, padded by 9.
        assert_eq!((f.rows, f.cols), (6 + 9, 8 + 9));
        assert!(f.data.iter().all(|&v| v == 0.0));
        // 12 pixels make (int)(1.5 + 0.5) = 2 cells: no feature cell.
        assert!(extract_fhog(&RgbImage::new(12, 40), 8, 10, 10)
            .data
            .is_empty());
        assert_eq!(extract_fhog(&RgbImage::new(20, 20), 8, 10, 10).rows, 10);
    }

    #[test]
    fn fhog_of_a_vertical_edge_votes_horizontal_gradients() {
        // Left half black, right half white: gradients point along +x (orientation 0).
        let img = RgbImage::from_fn(64, 64, |x, _| image::Rgb([if x < 32 { 0 } else { 255 }; 3]));
        let f = extract_fhog(&img, 8, 1, 1);
        let (r, c) = (3, 2); // cell row 4, column 3 (the edge at x = 31..32)
        let at = |ch: usize| f.plane(ch)[r * f.cols + c];
        assert!(at(0) > 0.1, "{}", at(0));
        assert!((1..18).all(|o| at(o) == 0.0));
        assert_eq!(at(18), at(0));
        assert!(at(27) > 0.0);
    }
}
