//! Area resampling, PyTorch's `interpolate(mode="area")` (= `adaptive_avg_pool2d`), which
//! facenet-pytorch's MTCNN uses for its image pyramid and for every crop it feeds RNet/ONet.

/// An f32 image in HWC layout (row-major, channels interleaved), values in 0..=255.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel.
    pub channels: usize,
    /// `height × width × channels` values.
    pub data: Vec<f32>,
}

impl FloatImage {
    /// Converts an 8-bit RGB image to f32 (no scaling).
    pub fn from_rgb(img: &image::RgbImage) -> Self {
        Self {
            width: img.width() as usize,
            height: img.height() as usize,
            channels: 3,
            data: img.as_raw().iter().map(|&v| f32::from(v)).collect(),
        }
    }

    /// Area-resamples the rectangle `x0..x0+w, y0..y0+h` (clipped to the image by the caller)
    /// to `out_w × out_h`, exactly as PyTorch's adaptive average pooling: output cell `i` of
    /// `o` averages input cells `floor(i·n/o) .. ceil((i+1)·n/o)`, summed row by row in f32
    /// and divided by the window height, then width.
    ///
    /// # Panics
    /// Never for a rectangle inside the image with `w, h ≥ 1`; callers check that.
    pub fn resize_area(
        &self,
        x0: usize,
        y0: usize,
        w: usize,
        h: usize,
        out_w: usize,
        out_h: usize,
    ) -> FloatImage {
        let c = self.channels;
        let xs: Vec<(usize, usize)> = (0..out_w).map(|i| window(i, out_w, w)).collect();
        let mut data = vec![0f32; out_w * out_h * c];
        // One output row; sums in the same order as PyTorch (rows, then columns), so the values
        // are identical whatever the threading.
        let row_job = |oy: usize, out: &mut [f32]| {
            let (ya, yb) = window(oy, out_h, h);
            let kh = (yb - ya) as f32;
            for (&(xa, xb), d) in xs.iter().zip(out.chunks_exact_mut(c)) {
                let kw = (xb - xa) as f32;
                if c == 3 {
                    let mut s = [0f32; 3];
                    for y in ya..yb {
                        let row = ((y0 + y) * self.width + x0) * 3;
                        for p in self.data[row + xa * 3..row + xb * 3].chunks_exact(3) {
                            s[0] += p[0];
                            s[1] += p[1];
                            s[2] += p[2];
                        }
                    }
                    for (d, s) in d.iter_mut().zip(s) {
                        *d = s / kh / kw;
                    }
                } else {
                    d.iter_mut().for_each(|v| *v = 0.0);
                    for y in ya..yb {
                        let row = ((y0 + y) * self.width + x0) * c;
                        for p in self.data[row + xa * c..row + xb * c].chunks_exact(c) {
                            for (s, &v) in d.iter_mut().zip(p) {
                                *s += v;
                            }
                        }
                    }
                    d.iter_mut().for_each(|v| *v = *v / kh / kw);
                }
            }
        };
        let row_len = (out_w * c).max(1);
        // Parallel rows only when there is enough work to pay for it (pyramid levels, not the
        // 24×24 / 48×48 crops, which the caller spreads over threads itself).
        if (w * h) >= 1 << 16 && out_h > 1 {
            use rayon::prelude::*;
            data.par_chunks_mut(row_len)
                .enumerate()
                .for_each(|(oy, out)| row_job(oy, out));
        } else {
            data.chunks_mut(row_len)
                .enumerate()
                .for_each(|(oy, out)| row_job(oy, out));
        }
        FloatImage {
            width: out_w,
            height: out_h,
            channels: c,
            data,
        }
    }

    /// The whole image area-resampled to `out_w × out_h`.
    pub fn resize_area_full(&self, out_w: usize, out_h: usize) -> FloatImage {
        self.resize_area(0, 0, self.width, self.height, out_w, out_h)
    }

    /// CHW values normalized as MTCNN does, `(x − 127.5) × 0.0078125`, appended to `out`.
    pub fn push_normalized_chw(&self, out: &mut Vec<f32>) {
        let n = self.width * self.height;
        out.reserve(n * self.channels);
        for ch in 0..self.channels {
            out.extend(
                self.data[ch..]
                    .iter()
                    .step_by(self.channels)
                    .take(n)
                    .map(|&v| (v - 127.5) * 0.0078125),
            );
        }
    }
}

/// Adaptive-pooling window `[start, end)` of output cell `i` out of `o` over `n` inputs.
fn window(i: usize, o: usize, n: usize) -> (usize, usize) {
    ((i * n) / o, ((i + 1) * n).div_ceil(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_adaptive_pooling() {
        // 5 → 3: [0,2) [1,4) [3,5)
        assert_eq!(
            (0..3).map(|i| window(i, 3, 5)).collect::<Vec<_>>(),
            vec![(0, 2), (1, 4), (3, 5)]
        );
        // upsampling 2 → 4 repeats each input twice.
        assert_eq!(
            (0..4).map(|i| window(i, 4, 2)).collect::<Vec<_>>(),
            vec![(0, 1), (0, 1), (1, 2), (1, 2)]
        );
    }

    #[test]
    fn area_resize_averages_exact_blocks() {
        // 4×2 single-channel image halved in width: each output is the mean of a 1×2 block.
        let img = FloatImage {
            width: 4,
            height: 2,
            channels: 1,
            data: vec![1., 3., 5., 7., 0., 2., 10., 20.],
        };
        let r = img.resize_area_full(2, 1);
        assert_eq!(
            r.data,
            vec![(1. + 3. + 0. + 2.) / 4., (5. + 7. + 10. + 20.) / 4.]
        );
        // A sub-rectangle: column 1..3, row 1 → one pixel (2 + 10) / 2.
        assert_eq!(img.resize_area(1, 1, 2, 1, 1, 1).data, vec![6.0]);
    }
}
