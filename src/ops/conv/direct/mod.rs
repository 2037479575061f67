//! Direct 3×3 convolution with stride 1 and padding 1 (no im2col), for inference with a
//! per-channel affine epilogue, on CPUs with AVX-512F (picked at run time; elsewhere the
//! im2col path runs).
//!
//! The batch is copied once, channel by channel, into a zero-padded buffer whose rows are
//! `W + 1` floats long (one zero column, shared by a row's right edge and the next row's left
//! edge) and whose images follow each other with one shared zero row between them. Output
//! position `(i, y, x)` is then the flat index `q = (i·(H + 1) + y)·(W + 1) + x`, and tap
//! `(ky, kx)` of every position reads the input at `q + ky·(W + 1) + kx`: one plain offset for
//! the whole batch. The kernel computes all `q` in runs of 16, valid or not (a zero column and a
//! zero row per image, 5% of 35×35 outputs, 44% of 3×3 ones), and stores only the valid lanes.
//!
//! Work is cut into units of (up to 8 tiles of 48 positions) × (blocks of 8 output channels)
//! and spread over the threads, so one image also uses every thread.

#[cfg(target_arch = "x86_64")]
mod kernel;
#[cfg(test)]
mod tests;

use super::geom::Geom;

/// A per-output-channel affine map and optional ReLU applied to the convolution's output:
/// `act(v·scale[o] + shift[o])`.
pub(in crate::ops) struct Affine<'a> {
    pub(in crate::ops) scale: &'a [f32],
    pub(in crate::ops) shift: &'a [f32],
    pub(in crate::ops) relu: bool,
}

/// The padded flat layout of one convolution (see the module docs).
#[derive(Debug, Clone, Copy)]
struct Layout {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    /// Row length of the padded input: `W + 1`.
    wp: usize,
    /// Flat positions per image: `(H + 1)·wp`.
    pq: usize,
    /// Flat positions up to the last valid one (the last image's zero row left out).
    q: usize,
    /// Floats per channel of the padded input: every read of every computed position fits.
    cs: usize,
}

impl Layout {
    fn new(g: &Geom) -> Self {
        let wp = g.w + 1;
        let pq = (g.h + 1) * wp;
        let q = (g.n * (g.h + 1) - 1) * wp;
        // The last run of 16 ends before q rounded up; its taps reach 2·wp + 2 further.
        let cs = (q.next_multiple_of(16) + 2 * wp + 2).next_multiple_of(16);
        Self {
            n: g.n,
            c: g.c,
            h: g.h,
            w: g.w,
            o: g.o,
            wp,
            pq,
            q,
            cs,
        }
    }
}

/// Fewest output channels for the direct kernel: its blocks have 8, a narrower layer would
/// compute mostly discarded rows.
const MIN_CHANNELS: usize = 8;

/// Whether [`forward`] runs `g` (on this CPU).
pub(in crate::ops) fn applies(g: &Geom) -> bool {
    let shape = g.kh == 3 && g.kw == 3 && g.stride == 1 && (g.ph, g.pw) == (1, 1);
    shape && g.o >= MIN_CHANNELS && g.n * g.c * g.h * g.w > 0 && has_avx512()
}

/// Whether the CPU has AVX-512F (checked once by the standard library).
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The convolution of `x` (N, C, H, W) with `w` (O, C, 3, 3), stride 1, padding 1, with the
/// epilogue `ep` applied: (N, O, H, W), or `None` where the direct kernel does not apply
/// ([`applies`]) and the caller takes the im2col path.
pub(in crate::ops) fn forward(x: &[f32], w: &[f32], g: &Geom, ep: &Affine) -> Option<Vec<f32>> {
    if !applies(g) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        Some(run::forward(x, w, &Layout::new(g), ep))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, ep);
        None
    }
}

#[cfg(target_arch = "x86_64")]
mod run {
    use rayon::prelude::*;

    use super::kernel::{block, Rows, M, TILE, V};
    use super::{Affine, Layout};
    use crate::ops::{num_threads, uninit_f32};

    /// Most tiles per unit of work: their padded input (C rows of `8·48 + 2·wp + 2` floats)
    /// stays in L2 while the unit's channel blocks read it.
    const MAX_TILES: usize = 8;

    /// Fewest multiply-adds in a unit cut only to give the threads more units.
    const MIN_UNIT_MACS: usize = 1 << 19;

    /// The output pointer shared by the units, each writing its own disjoint elements.
    #[derive(Clone, Copy)]
    struct Out(*mut f32);
    // SAFETY: the units write disjoint elements (distinct channels or positions).
    unsafe impl Send for Out {}
    unsafe impl Sync for Out {}

    impl Out {
        /// The pointer (a method, so closures capture the whole `Sync` wrapper).
        fn ptr(self) -> *mut f32 {
            self.0
        }
    }

    /// See [`super::forward`]; the CPU has AVX-512F.
    pub(super) fn forward(x: &[f32], w: &[f32], l: &Layout, ep: &Affine) -> Vec<f32> {
        let padded = pad_input(x, l);
        // SAFETY: the units together store every valid output position of every channel.
        let mut y = unsafe { uninit_f32(l.n * l.o * l.h * l.w) };
        let (tiles, blocks) = (l.q.div_ceil(TILE), l.o.div_ceil(M));
        let (tpu, bpu) = plan(l, num_threads());
        let block_units = blocks.div_ceil(bpu);
        let out = Out(y.as_mut_ptr());
        (0..tiles.div_ceil(tpu) * block_units)
            .into_par_iter()
            .for_each(|u| {
                let (t, b) = (u / block_units * tpu, u % block_units * bpu);
                let (t_end, b_end) = ((t + tpu).min(tiles), (b + bpu).min(blocks));
                // SAFETY: this CPU has AVX-512F (`applies`); the unit's tiles and blocks are
                // its own; `padded`, `w` and `y` have the layout's sizes.
                unsafe { run_unit(l, &padded, w, ep, out.ptr(), (t..t_end, b..b_end)) };
            });
        y
    }

    /// Tiles per unit and channel blocks per unit: whole images' worth of tiles in units of
    /// [`MAX_TILES`], cut further (channel blocks first) until each thread has about four
    /// units or the units would get too small.
    fn plan(l: &Layout, nt: usize) -> (usize, usize) {
        let (tiles, blocks) = (l.q.div_ceil(TILE), l.o.div_ceil(M));
        let (mut tpu, mut bpu) = (tiles.min(MAX_TILES), blocks);
        let want = if nt > 1 { 4 * nt } else { 1 };
        let macs = TILE * M * l.c * 9;
        while tiles.div_ceil(tpu) * blocks.div_ceil(bpu) < want
            && tpu * bpu * macs >= 2 * MIN_UNIT_MACS
        {
            if bpu > 1 {
                bpu = bpu.div_ceil(2);
            } else if tpu > 1 {
                tpu = tpu.div_ceil(2);
            } else {
                break;
            }
        }
        (tpu, bpu)
    }

    /// The batch in the padded layout: each channel a plane of `cs` floats, every one written.
    fn pad_input(x: &[f32], l: &Layout) -> Vec<f32> {
        let (wp, hw) = (l.wp, l.h * l.w);
        // SAFETY: each channel's plane is written whole below (zero rows, zero columns, rows
        // of the images, the zero tail).
        let mut buf = unsafe { uninit_f32(l.c * l.cs) };
        let min_len = (1 << 14) / l.cs + 1;
        buf.par_chunks_mut(l.cs)
            .with_min_len(min_len)
            .enumerate()
            .for_each(|(c, dst)| {
                for i in 0..l.n {
                    let img = &x[(i * l.c + c) * hw..][..hw];
                    let top = i * l.pq;
                    dst[top..top + wp].fill(0.0);
                    for (y, src) in img.chunks_exact(l.w).enumerate() {
                        let row = &mut dst[top + (1 + y) * wp..][..wp];
                        row[0] = 0.0;
                        row[1..].copy_from_slice(src);
                    }
                }
                dst[l.n * l.pq..].fill(0.0);
            });
        buf
    }

    /// One unit: the channel blocks `blocks` at the tiles `tiles`, block by block.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `padded` is [`pad_input`]'s, `w` holds O·C·9 floats, `out` N·O·H·W,
    /// and no other unit has these tiles and blocks.
    #[target_feature(enable = "avx512f")]
    unsafe fn run_unit(
        l: &Layout,
        padded: &[f32],
        w: &[f32],
        ep: &Affine,
        out: *mut f32,
        (tiles, blocks): (std::ops::Range<usize>, std::ops::Range<usize>),
    ) {
        debug_assert!(padded.len() == l.c * l.cs && w.len() == l.o * l.c * 9);
        for b in blocks {
            let o0 = b * M;
            let rows = Rows {
                w: w[o0 * l.c * 9..].as_ptr(),
                stride: l.c * 9,
                count: (l.o - o0).min(M),
            };
            for t in tiles.clone() {
                let q = t * TILE;
                let x = padded.as_ptr();
                // SAFETY: the vectors of this tile end before q rounded up to 16, whose taps
                // stay inside each channel's `cs` floats (`Layout::new`); rows `o0..o0 + count`
                // exist; the outputs are this unit's.
                unsafe {
                    match (l.q - q).div_ceil(16).min(V) {
                        1 => block::<1>(l, x, q, (rows, o0), ep, out),
                        2 => block::<2>(l, x, q, (rows, o0), ep, out),
                        _ => block::<3>(l, x, q, (rows, o0), ep, out),
                    }
                }
            }
        }
    }
}
