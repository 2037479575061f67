//! The direct convolution's work cut into units and spread over the threads.

use std::ops::Range;

use rayon::prelude::*;

use super::super::geom::Geom;
use super::kernel::{block, Rows, M, TILE, V};
use super::layout::Layout;
use super::Affine;
use crate::ops::{num_threads, uninit_f32};

/// Most tiles per unit of work: their input (C rows of `8·48` floats plus the taps' reach per
/// plane) stays in L2 while the unit's channel blocks read it.
const MAX_TILES: usize = 8;

/// Fewest multiply-adds in a unit cut only to give the threads more units.
const MIN_UNIT_MACS: usize = 1 << 19;

/// The output pointer shared by the units (of the flat and the lanes layouts), each writing
/// its own disjoint elements.
#[derive(Clone, Copy)]
pub(super) struct Out(pub(super) *mut f32);
// SAFETY: the units write disjoint elements (distinct channels, positions, groups or rows).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub(super) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// See [`super::forward`]; the CPU has AVX-512F and `l` is `g`'s layout.
pub(super) fn forward(x: &[f32], w: &[f32], g: &Geom, l: &Layout, ep: &Affine) -> Vec<f32> {
    let input = l.fill(x, g);
    // SAFETY: the units together store every valid output position of every channel.
    let mut y = unsafe { uninit_f32(l.n * l.o * l.oh * l.ow) };
    let (tiles, blocks) = (l.q.div_ceil(TILE), l.o.div_ceil(M));
    let (tpu, bpu) = plan(l, num_threads());
    let block_units = blocks.div_ceil(bpu);
    let out = Out(y.as_mut_ptr());
    (0..tiles.div_ceil(tpu) * block_units)
        .into_par_iter()
        .for_each(|u| {
            let (t, b) = (u / block_units * tpu, u % block_units * bpu);
            let (t_end, b_end) = ((t + tpu).min(tiles), (b + bpu).min(blocks));
            // SAFETY: this CPU has AVX-512F (`super::enabled`); the unit's tiles and blocks
            // are its own; `input`, `w` and `y` have the layout's sizes.
            unsafe { run_unit(l, &input, w, ep, out.ptr(), (t..t_end, b..b_end)) };
        });
    y
}

/// Tiles per unit and channel blocks per unit: at most [`MAX_TILES`] tiles and every block,
/// cut further (channel blocks first) until each thread has about four units or the units
/// would get too small.
fn plan(l: &Layout, nt: usize) -> (usize, usize) {
    let (tiles, blocks) = (l.q.div_ceil(TILE), l.o.div_ceil(M));
    let (mut tpu, mut bpu) = (tiles.min(MAX_TILES), blocks);
    let want = if nt > 1 { 4 * nt } else { 1 };
    let macs = TILE * M * l.c * l.k * l.k;
    while tiles.div_ceil(tpu) * blocks.div_ceil(bpu) < want && tpu * bpu * macs >= 2 * MIN_UNIT_MACS
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

/// One unit: the channel blocks `blocks` at the tiles `tiles`, block by block.
///
/// # Safety
/// The CPU has AVX-512F; `input` is the layout's filled buffer, `w` holds O·C·k·k floats,
/// `out` N·O·oh·ow, and no other unit has these tiles and blocks.
#[target_feature(enable = "avx512f")]
unsafe fn run_unit(
    l: &Layout,
    input: &[f32],
    w: &[f32],
    ep: &Affine,
    out: *mut f32,
    (tiles, blocks): (Range<usize>, Range<usize>),
) {
    let per_channel = l.k * l.k;
    debug_assert!(input.len() == l.c * l.cs() && w.len() == l.o * l.c * per_channel);
    for b in blocks {
        let o0 = b * M;
        let rows = Rows {
            w: w[o0 * l.c * per_channel..].as_ptr(),
            stride: l.c * per_channel,
            count: (l.o - o0).min(M),
            per_channel,
        };
        for t in tiles.clone() {
            let q = t * TILE;
            let x = input.as_ptr();
            // SAFETY: the tile's vectors end at l.q rounded up to 16 at most, whose taps stay
            // inside each plane (`Layout::with`); rows `o0..o0 + count` exist; the outputs are
            // this unit's.
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
