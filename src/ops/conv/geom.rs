//! The sizes of one convolution and the im2col / col2im unfolding of an image.

use std::ops::Range;

use candle_core::Result;

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(in crate::ops) struct Geom {
    pub(in crate::ops) n: usize,
    pub(in crate::ops) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(in crate::ops) o: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) ph: usize,
    pub(super) pw: usize,
    pub(in crate::ops) oh: usize,
    pub(in crate::ops) ow: usize,
}

impl Geom {
    pub(in crate::ops) fn new(
        x: &[usize],
        w: &[usize],
        stride: usize,
        (ph, pw): (usize, usize),
    ) -> Result<Self> {
        let (&[n, c, h, wd], &[o, c2, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d: expects x (N,C,H,W) and w (O,C,kh,kw), got {x:?} and {w:?}")
        };
        if c != c2 {
            candle_core::bail!(
                "conv2d: x has {c} channels but the kernel expects {c2} ({x:?}, {w:?})"
            )
        }
        if stride == 0 || kh == 0 || kw == 0 {
            candle_core::bail!("conv2d: stride and kernel sizes must be positive")
        }
        if h + 2 * ph < kh || wd + 2 * pw < kw {
            candle_core::bail!(
                "conv2d: kernel {kh}×{kw} larger than the padded input {}×{}",
                h + 2 * ph,
                wd + 2 * pw
            )
        }
        let oh = (h + 2 * ph - kh) / stride + 1;
        let ow = (wd + 2 * pw - kw) / stride + 1;
        Ok(Self {
            n,
            c,
            h,
            w: wd,
            o,
            kh,
            kw,
            stride,
            ph,
            pw,
            oh,
            ow,
        })
    }

    /// Rows of the im2col matrix: `C·kh·kw`.
    pub(super) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per image.
    pub(in crate::ops) fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Input elements per image.
    pub(in crate::ops) fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// A 1×1 stride-1 unpadded convolution: im2col is the identity.
    pub(super) fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.ph == 0 && self.pw == 0
    }

    /// Output columns `[lo, hi)` whose input column `ow·s + kj − pw` lies inside the image.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = if self.pw > kj {
            (self.pw - kj).div_ceil(s)
        } else {
            0
        }
        .min(self.ow);
        let hi = if self.w + self.pw > kj {
            ((self.w - 1 + self.pw - kj) / s + 1).min(self.ow)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// Input row read by output row `oi` at kernel row `ki`, if inside the image.
    fn input_row(&self, oi: usize, ki: usize) -> Option<usize> {
        (oi * self.stride + ki)
            .checked_sub(self.ph)
            .filter(|&r| r < self.h)
    }
}

/// Unfolds one image `(C, H, W)` into `col` `(C·kh·kw, oh·ow)`, whose rows are `ld` apart
/// (`ld ≥ oh·ow`: the image's columns inside a wider matrix of several images).
pub(super) fn im2col(x: &[f32], g: &Geom, col: &mut [f32], ld: usize) {
    im2col_rows(x, g, col, ld, 0..g.oh)
}

/// [`im2col`] of the output rows `rows` only: `col` `(C·kh·kw, rows.len()·ow)`, rows `ld` apart.
pub(super) fn im2col_rows(x: &[f32], g: &Geom, col: &mut [f32], ld: usize, rows: Range<usize>) {
    let s = g.stride;
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                let (lo, hi) = g.valid_cols(kj);
                for (r, oi) in rows.clone().enumerate() {
                    let dst = &mut col[row + r * g.ow..row + (r + 1) * g.ow];
                    let Some(ih) = g.input_row(oi, ki) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[ih * g.w..(ih + 1) * g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if s == 1 {
                        let start = lo + kj - g.pw;
                        dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                    } else {
                        for (oj, d) in dst[lo..hi].iter_mut().enumerate() {
                            *d = src[(lo + oj) * s + kj - g.pw];
                        }
                    }
                }
            }
        }
    }
}

/// Folds `col` `(C·kh·kw, oh·ow)`, rows `ld` apart, back into one image `(C, H, W)`, adding
/// overlapping entries.
pub(super) fn col2im(col: &[f32], g: &Geom, x: &mut [f32], ld: usize) {
    col2im_rows(col, g, x, ld, 0..g.oh)
}

/// [`col2im`] of the output rows `rows` only (`col` holds `rows.len()·ow` columns), added into
/// the image.
pub(super) fn col2im_rows(col: &[f32], g: &Geom, x: &mut [f32], ld: usize, rows: Range<usize>) {
    let s = g.stride;
    for c in 0..g.c {
        let plane = &mut x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = ((c * g.kh + ki) * g.kw + kj) * ld;
                let (lo, hi) = g.valid_cols(kj);
                for (r, oi) in rows.clone().enumerate() {
                    let Some(ih) = g.input_row(oi, ki) else {
                        continue;
                    };
                    let src = &col[row + r * g.ow + lo..row + r * g.ow + hi];
                    let dst = &mut plane[ih * g.w..(ih + 1) * g.w];
                    if s == 1 {
                        let start = lo + kj - g.pw;
                        for (d, v) in dst[start..start + hi - lo].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (oj, v) in src.iter().enumerate() {
                            dst[(lo + oj) * s + kj - g.pw] += v;
                        }
                    }
                }
            }
        }
    }
}
