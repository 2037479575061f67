//! Where the direct kernel finds its input: the batch copied into flat planes (padded for the
//! 3×3 stride-1 convolution, split into four phases for stride 2), and the taps that read them.

use rayon::prelude::*;

use super::super::gemm::padded_ld;
use super::super::geom::Geom;
use crate::ops::uninit_f32;

/// The taps of one plane of every input channel: `(input offset, weight offset)` pairs, the
/// input offset from an output position's flat index, the weight offset inside one input
/// channel's `k·k` weights.
#[derive(Debug, Clone)]
pub(super) struct Group {
    /// Which of a channel's planes the taps read.
    pub(super) plane: usize,
    pub(super) taps: Vec<(usize, usize)>,
}

/// The flat layout of one convolution's input and output positions (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) o: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    /// Kernel side: `k·k` weights per input channel.
    pub(super) k: usize,
    /// Row length of a plane.
    pub(super) wp: usize,
    /// Flat positions per image.
    pub(super) pq: usize,
    /// Flat positions up to the last valid output (the positions computed, rounded up to 16).
    pub(super) q: usize,
    /// Floats per plane: the images, then zeros far enough for every tap of every position.
    pub(super) plane: usize,
    /// Planes per input channel: 1, or 4 phases for stride 2.
    pub(super) phases: usize,
    pub(super) groups: Vec<Group>,
}

impl Layout {
    /// The layout of `g`, if the direct kernel handles it: 3×3 with stride 1 and padding 1, or
    /// a square kernel with stride 2 and no padding.
    pub(super) fn new(g: &Geom) -> Option<Self> {
        if g.kh != g.kw || g.ph != g.pw || g.oh == 0 || g.ow == 0 {
            return None;
        }
        match (g.kh, g.stride, g.ph) {
            (3, 1, 1) => Some(Self::same3x3(g)),
            (_, 2, 0) => Some(Self::stride2(g)),
            _ => None,
        }
    }

    /// 3×3, stride 1, padding 1: rows of `W + 1` (one zero column shared by a row's right
    /// edge and the next row's left edge) and one zero row before each image and at the end.
    fn same3x3(g: &Geom) -> Self {
        let wp = g.w + 1;
        let pq = (g.h + 1) * wp;
        let taps = (0..9).map(|t| ((t / 3) * wp + t % 3, t)).collect();
        let groups = vec![Group { plane: 0, taps }];
        Self::with(g, wp, pq, 1, groups)
    }

    /// Square `k×k`, stride 2, no padding: each channel split into its four phases (even or
    /// odd rows × even or odd columns), each a stride-1 convolution with the kernel's taps of
    /// that phase. Rows of `⌈W/2⌉`, images `⌈H/2⌉` rows apart.
    fn stride2(g: &Geom) -> Self {
        let (k, wp) = (g.kh, g.w.div_ceil(2));
        let pq = g.h.div_ceil(2) * wp;
        let groups = (0..4)
            .map(|phase| {
                let (py, px) = (phase / 2, phase % 2);
                let taps = (py..k)
                    .step_by(2)
                    .flat_map(|ky| (px..k).step_by(2).map(move |kx| (ky, kx)))
                    .map(|(ky, kx)| ((ky / 2) * wp + kx / 2, ky * k + kx))
                    .collect();
                Group { plane: phase, taps }
            })
            .collect();
        Self::with(g, wp, pq, 4, groups)
    }

    fn with(g: &Geom, wp: usize, pq: usize, phases: usize, groups: Vec<Group>) -> Self {
        let q = (g.n - 1) * pq + (g.oh - 1) * wp + g.ow;
        let reach = groups
            .iter()
            .flat_map(|gr| gr.taps.iter().map(|t| t.0))
            .max()
            .unwrap_or(0);
        // The last run of 16 positions ends at q rounded up; its taps reach `reach` further.
        // An odd number of 64-byte lines per plane: the same position of successive planes
        // falls into different L1 sets (a multiple of 4 KB would put all of them in one).
        let plane = padded_ld((q.next_multiple_of(16) + reach).max(g.n * pq + 1));
        Self {
            n: g.n,
            c: g.c,
            o: g.o,
            oh: g.oh,
            ow: g.ow,
            k: g.kh,
            wp,
            pq,
            q,
            plane,
            phases,
            groups,
        }
    }

    /// Floats per input channel.
    pub(super) fn cs(&self) -> usize {
        self.phases * self.plane
    }

    /// The batch `x` (N, C, H, W) of `g` in this layout: channel after channel, each
    /// [`Self::phases`] planes, every float written.
    pub(super) fn fill(&self, x: &[f32], g: &Geom) -> Vec<f32> {
        let cs = self.cs();
        // SAFETY: every plane is written whole below (its images, their zero rows and columns,
        // the zero tail).
        let mut buf = unsafe { uninit_f32(self.c * cs) };
        let hw = g.h * g.w;
        buf.par_chunks_mut(self.plane)
            .with_min_len((1 << 14) / self.plane + 1)
            .enumerate()
            .for_each(|(j, dst)| {
                let (c, phase) = (j / self.phases, j % self.phases);
                for i in 0..self.n {
                    let img = &x[(i * self.c + c) * hw..][..hw];
                    let dst = &mut dst[i * self.pq..][..self.pq];
                    if self.phases == 1 {
                        self.fill_padded(img, g, dst);
                    } else {
                        self.fill_phase(img, g, phase, dst);
                    }
                }
                dst[self.n * self.pq..].fill(0.0);
            });
        buf
    }

    /// One image's plane for the stride-1 3×3 layout: a zero row, then each row after a zero.
    fn fill_padded(&self, img: &[f32], g: &Geom, dst: &mut [f32]) {
        let wp = self.wp;
        dst[..wp].fill(0.0);
        for (row, src) in dst[wp..].chunks_exact_mut(wp).zip(img.chunks_exact(g.w)) {
            row[0] = 0.0;
            row[1..].copy_from_slice(src);
        }
    }

    /// One image's phase `(py, px)` for stride 2: `dst[r][s] = img[2r + py][2s + px]`, zero
    /// past the image's edge.
    fn fill_phase(&self, img: &[f32], g: &Geom, phase: usize, dst: &mut [f32]) {
        let (py, px) = (phase / 2, phase % 2);
        for (r, row) in dst.chunks_exact_mut(self.wp).enumerate() {
            let y = 2 * r + py;
            if y >= g.h {
                row.fill(0.0);
                continue;
            }
            let src = &img[y * g.w..(y + 1) * g.w];
            for (s, d) in row.iter_mut().enumerate() {
                *d = src.get(2 * s + px).copied().unwrap_or(0.0);
            }
        }
    }
}
