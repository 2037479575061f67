//! The batch-in-lanes direct convolution: 16 images side by side in the 16 lanes of each
//! vector, so every lane the kernel computes is an output (the flat layout also computes its
//! zero rows and columns: 44% of the lanes of a 3×3 map, 21% of an 8×8 one).
//!
//! Each group of 16 images is copied into planes of `(H + 2p) × (W + 2p)` positions of 16
//! floats (zero borders), one plane per input channel, 16 positions of the 16 images at a time
//! through a register transpose. Output `(y, x)` of the group reads tap `(ky, kx)` at position
//! `(s·y + ky, s·x + kx)`: 16 floats, one per image, for any stride, so the micro-kernel is the
//! flat one with its vectors `16·s` floats apart. Outputs are stored in the same layout
//! (aligned vector stores) and transposed back to (N, C, H, W) afterwards, where the residual
//! and the ReLU are applied.

use std::arch::x86_64::__m512;
use std::ops::Range;

use rayon::prelude::*;

use super::super::geom::Geom;
use super::kernel::{lanes_block, Rows, M, V};
use super::run::Out;
use super::Affine;
use crate::ops::{num_threads, uninit_f32};

/// Images per group: the lanes of a vector.
pub(super) const L: usize = 16;

/// The lanes layout of one convolution (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Lanes {
    /// Groups of [`L`] images; the last may be partial (its missing images read zeros).
    groups: usize,
    /// Images in the batch.
    n: usize,
    c: usize,
    o: usize,
    h: usize,
    w: usize,
    pad: usize,
    stride: usize,
    k: usize,
    oh: usize,
    ow: usize,
    /// Input plane width (`W + 2p`), in positions of [`L`] floats.
    wp: usize,
    /// Floats per input channel plane: `(H + 2p)·wp·L`, plus one cache line when that is an even
    /// number of lines (so the same position of successive channels maps to different L1
    /// sets).
    cs: usize,
    /// `(input offset, weight offset)` of every tap.
    taps: Vec<(usize, usize)>,
}

impl Lanes {
    /// The lanes layout of `g` (any square kernel with equal paddings, stride 1 or 2).
    pub(super) fn new(g: &Geom) -> Option<Self> {
        let ok = g.kh == g.kw && g.ph == g.pw && matches!(g.stride, 1 | 2) && g.n > 0;
        if !ok || g.oh == 0 || g.ow == 0 {
            return None;
        }
        let (wp, hp) = (g.w + 2 * g.pw, g.h + 2 * g.ph);
        let lines = hp * wp;
        let cs = (lines + 1 - lines % 2) * L;
        let k = g.kh;
        let taps = (0..k * k)
            .map(|t| (((t / k) * wp + t % k) * L, t))
            .collect();
        Some(Self {
            groups: g.n.div_ceil(L),
            n: g.n,
            c: g.c,
            o: g.o,
            h: g.h,
            w: g.w,
            pad: g.ph,
            stride: g.stride,
            k,
            oh: g.oh,
            ow: g.ow,
            wp,
            cs,
            taps,
        })
    }

    /// The same convolution on the first `n` images of the batch.
    pub(super) fn first(&self, n: usize) -> Self {
        let groups = n.div_ceil(L);
        Self {
            n,
            groups,
            ..self.clone()
        }
    }

    /// Floats of one group's input (every channel).
    fn group_in(&self) -> usize {
        self.c * self.cs
    }

    /// Floats of one group's output.
    fn group_out(&self) -> usize {
        self.o * self.oh * self.ow * L
    }

    /// `x` (N, C, H, W) in this layout, starting at a 64-byte boundary of the returned vector
    /// (the offset is returned too); every float of every plane written.
    fn fill(&self, x: &[f32]) -> (Vec<f32>, usize) {
        let len = self.groups * self.group_in();
        // SAFETY: every plane is written whole below; the floats before `at` are never read.
        let mut buf = unsafe { uninit_f32(len + L) };
        let at = aligned_start(&buf);
        buf[at..at + len]
            .par_chunks_mut(self.cs)
            .enumerate()
            .for_each(|(j, dst)| self.fill_plane(x, j / self.c, j % self.c, dst));
        (buf, at)
    }

    /// Channel `c` of group `gi` into `dst` (`cs` floats).
    fn fill_plane(&self, x: &[f32], gi: usize, c: usize, dst: &mut [f32]) {
        let (hw, row) = (self.h * self.w, self.wp * L);
        let first = (gi * L * self.c + c) * hw;
        let images = (self.n - gi * L).min(L);
        let (top, left) = (self.pad * row, self.pad * L);
        dst[..top].fill(0.0);
        let step = self.c * hw;
        assert!(images == 0 || first + (images - 1) * step + hw <= x.len());
        for (y, r) in dst[top..][..self.h * row].chunks_exact_mut(row).enumerate() {
            r[..left].fill(0.0);
            r[left + self.w * L..].fill(0.0);
            let cells = &mut r[left..left + self.w * L];
            let rows: [Option<&[f32]>; L] = std::array::from_fn(|i| {
                (i < images).then(|| &x[first + i * step + y * self.w..][..self.w])
            });
            // SAFETY: the CPU has AVX-512F (lanes run only then).
            unsafe { rows_to_cells(&rows, cells) };
        }
        dst[top + self.h * row..].fill(0.0);
    }
}

/// `cells[x·L + i] = rows[i][x]` (zero where `rows[i]` is `None`): up to [`L`] rows of `W`
/// floats into `W` cells of [`L`] lanes, 16 positions at a time through a register transpose.
///
/// # Safety
/// The CPU has AVX-512F; every row present holds `cells.len() / L` floats.
#[target_feature(enable = "avx512f")]
unsafe fn rows_to_cells(rows: &[Option<&[f32]>; L], cells: &mut [f32]) {
    use std::arch::x86_64::*;
    let w = cells.len() / L;
    assert!(rows.iter().flatten().all(|r| r.len() >= w));
    for x0 in (0..w).step_by(L) {
        let n = (w - x0).min(L);
        let mask = lanes_mask(n);
        // SAFETY: the loads read positions x0..x0 + n of each row (masked), the stores write
        // cells x0..x0 + n.
        unsafe {
            let mut v: [__m512; L] = std::array::from_fn(|i| match rows[i] {
                Some(r) => _mm512_maskz_loadu_ps(mask, r.as_ptr().add(x0)),
                None => _mm512_setzero_ps(),
            });
            transpose16(&mut v);
            for (j, cell) in v.iter().enumerate().take(n) {
                _mm512_storeu_ps(cells.as_mut_ptr().add((x0 + j) * L), *cell);
            }
        }
    }
}

/// The mask of the first `n` (at most 16) lanes.
fn lanes_mask(n: usize) -> u16 {
    ((1u32 << n.min(L)) - 1) as u16
}

/// Transposes 16 vectors of 16 floats in registers: afterwards `v[k][j]` is the old `v[j][k]`.
#[target_feature(enable = "avx512f")]
fn transpose16(v: &mut [__m512; L]) {
    use std::arch::x86_64::*;
    let mut t = [_mm512_setzero_ps(); L];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    let (lo, hi) = (
        |a: __m512, b: __m512| {
            _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
        },
        |a: __m512, b: __m512| {
            _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
        },
    );
    for i in 0..4 {
        v[4 * i] = lo(t[4 * i], t[4 * i + 2]);
        v[4 * i + 1] = hi(t[4 * i], t[4 * i + 2]);
        v[4 * i + 2] = lo(t[4 * i + 1], t[4 * i + 3]);
        v[4 * i + 3] = hi(t[4 * i + 1], t[4 * i + 3]);
    }
    for h in [0, 8] {
        for k in 0..4 {
            t[h + k] = _mm512_shuffle_f32x4::<0x88>(v[h + k], v[h + k + 4]);
            t[h + k + 4] = _mm512_shuffle_f32x4::<0xdd>(v[h + k], v[h + k + 4]);
        }
    }
    for k in 0..8 {
        v[k] = _mm512_shuffle_f32x4::<0x88>(t[k], t[k + 8]);
        v[k + 8] = _mm512_shuffle_f32x4::<0xdd>(t[k], t[k + 8]);
    }
}

/// The first index of `buf` at a 64-byte boundary.
fn aligned_start(buf: &[f32]) -> usize {
    buf.as_ptr().align_offset(64).min(L - 1)
}

/// Output rows per unit and channel blocks per unit: whole maps and every block, cut (rows
/// first, so that each unit reads its own input, then blocks) until each thread has about four
/// units.
fn plan(l: &Lanes, nt: usize) -> (usize, usize) {
    let blocks = l.o.div_ceil(M);
    let (mut rpu, mut bpu) = (l.oh, blocks);
    let want = if nt > 1 { 4 * nt } else { 1 };
    let units = |r: usize, b: usize| l.groups * l.oh.div_ceil(r) * blocks.div_ceil(b);
    while units(rpu, bpu) < want && (bpu > 1 || rpu > 1) {
        if rpu > 1 {
            rpu = rpu.div_ceil(2);
        } else {
            bpu = bpu.div_ceil(2);
        }
    }
    (rpu, bpu)
}

/// The convolution of `x` (N, C, H, W) with `w` (O, C, k, k) and the epilogue `ep`, in lanes:
/// (N, O, oh, ow) written into `y`. The CPU has AVX-512F and `l` is `g`'s lanes layout.
pub(super) fn forward_into(x: &[f32], w: &[f32], l: &Lanes, ep: &Affine, y: &mut [f32]) {
    let (input, at) = l.fill(x);
    let input = &input[at..];
    let out_len = l.groups * l.group_out();
    // SAFETY: the units store every output position of every channel of every group.
    let mut lanes_out = unsafe { uninit_f32(out_len + L) };
    let oat = aligned_start(&lanes_out);
    let out = Out(lanes_out[oat..].as_mut_ptr());
    let (rpu, bpu) = plan(l, num_threads());
    let (row_units, block_units) = (l.oh.div_ceil(rpu), l.o.div_ceil(M).div_ceil(bpu));
    let per_group = row_units * block_units;
    (0..l.groups * per_group).into_par_iter().for_each(|u| {
        let (gi, r) = (u / per_group, u % per_group);
        let (y0, b0) = (r / block_units * rpu, r % block_units * bpu);
        let rows = y0..(y0 + rpu).min(l.oh);
        let blocks = b0..(b0 + bpu).min(l.o.div_ceil(M));
        // SAFETY: this CPU has AVX-512F (`super::enabled`); the unit's rows and blocks of
        // group gi are its own; `input` and the output have the layout's sizes.
        unsafe { run_unit(l, input, w, ep, out.ptr(), (gi, rows, blocks)) };
    });
    unfill(l, &lanes_out[oat..oat + out_len], ep, y);
}

/// One unit: the channel blocks `blocks` at the output rows `rows` of group `gi`, row by row
/// (a row's input, `k` rows of every channel, stays in L2 while the blocks read it).
///
/// # Safety
/// The CPU has AVX-512F; `input` holds the layout's groups, `w` O·C·k·k floats, `out` the
/// layout's output groups, and no other unit has these rows and blocks of this group.
#[target_feature(enable = "avx512f")]
unsafe fn run_unit(
    l: &Lanes,
    input: &[f32],
    w: &[f32],
    ep: &Affine,
    out: *mut f32,
    (gi, rows, blocks): (usize, Range<usize>, Range<usize>),
) {
    let x = input[gi * l.group_in()..].as_ptr();
    let out = out.wrapping_add(gi * l.group_out());
    for y in rows {
        for b in blocks.clone() {
            // SAFETY: the caller's contract.
            unsafe { run_row(l, x, w, ep, out, (y, b)) };
        }
    }
}

/// Output row `y` of channel block `b` of one group: its input `x`, its output `out`.
///
/// # Safety
/// As [`run_unit`], for one of its rows and blocks.
#[target_feature(enable = "avx512f")]
unsafe fn run_row(
    l: &Lanes,
    x: *const f32,
    w: &[f32],
    ep: &Affine,
    out: *mut f32,
    (y, b): (usize, usize),
) {
    let (per_channel, out_cs, o0) = (l.k * l.k, l.oh * l.ow * L, b * M);
    let rows = Rows {
        w: w[o0 * l.c * per_channel..].as_ptr(),
        stride: l.c * per_channel,
        count: (l.o - o0).min(M),
        per_channel,
    };
    let (taps, blk) = ((&l.taps[..], (l.cs, l.c)), (rows, o0));
    for x0 in (0..l.ow).step_by(V) {
        let xp = x.wrapping_add((l.stride * (y * l.wp + x0)) * L);
        let op = (out.wrapping_add(o0 * out_cs + (y * l.ow + x0) * L), out_cs);
        // SAFETY: positions x0.. of row y and their taps lie inside the group's planes; the
        // outputs are this unit's.
        unsafe {
            match ((l.ow - x0).min(V), l.stride) {
                (1, 1) => lanes_block::<1, 16>(xp, taps, blk, ep, op),
                (2, 1) => lanes_block::<2, 16>(xp, taps, blk, ep, op),
                (_, 1) => lanes_block::<3, 16>(xp, taps, blk, ep, op),
                (1, _) => lanes_block::<1, 32>(xp, taps, blk, ep, op),
                (2, _) => lanes_block::<2, 32>(xp, taps, blk, ep, op),
                _ => lanes_block::<3, 32>(xp, taps, blk, ep, op),
            }
        }
    }
}

/// The lanes output (groups of (O, oh, ow, [`L`])) back into `y` (N, O, oh, ow), adding the
/// residual and applying the ReLU when the epilogue has a residual (otherwise the kernel has
/// applied both). One task per output channel of a group, its positions read once for all its
/// images.
fn unfill(l: &Lanes, src: &[f32], ep: &Affine, y: &mut [f32]) {
    let hw = l.oh * l.ow;
    assert!(y.len() >= l.n * l.o * hw && src.len() >= l.groups * l.group_out());
    assert!(ep.residual.is_none_or(|r| r.len() >= l.n * l.o * hw));
    let out = Out(y.as_mut_ptr());
    (0..l.groups * l.o).into_par_iter().for_each(|j| {
        let (gi, o) = (j / l.o, j % l.o);
        let images = (l.n - gi * L).min(L);
        let src = &src[j * hw * L..][..hw * L];
        // SAFETY: the CPU has AVX-512F (lanes run only then); channel o of images
        // gi·L..gi·L + images lies inside y and the residual (asserted above) and is written by
        // this task only.
        unsafe { unfill_channel(l, src, (gi * L, images, o), ep, out.ptr()) };
    });
}

/// Channel `o` of the `images` images from `first`: `src` (positions of [`L`] floats) into
/// their planes of `y` (N, O, oh, ow), plus the residual and the ReLU when there is one; 16
/// positions at a time through a register transpose.
///
/// # Safety
/// The CPU has AVX-512F; `src` holds `L·oh·ow` floats; channel `o` of these images lies inside
/// `y` and the residual, and no other thread writes it.
#[target_feature(enable = "avx512f")]
unsafe fn unfill_channel(
    l: &Lanes,
    src: &[f32],
    (first, images, o): (usize, usize, usize),
    ep: &Affine,
    y: *mut f32,
) {
    use std::arch::x86_64::*;
    let hw = l.oh * l.ow;
    assert!(src.len() >= hw * L);
    for p0 in (0..hw).step_by(L) {
        let n = (hw - p0).min(L);
        let mask = lanes_mask(n);
        // SAFETY: the loads read positions p0..p0 + n of src; the residual loads and the
        // stores are masked to the plane's hw floats (the function's contract).
        unsafe {
            let mut v: [__m512; L] = std::array::from_fn(|j| {
                if j < n {
                    _mm512_loadu_ps(src.as_ptr().add((p0 + j) * L))
                } else {
                    _mm512_setzero_ps()
                }
            });
            transpose16(&mut v);
            for (lane, &val) in v.iter().enumerate().take(images) {
                let at = ((first + lane) * l.o + o) * hw + p0;
                let mut val = val;
                if let Some(r) = ep.residual {
                    val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(mask, r.as_ptr().add(at)));
                    if ep.relu {
                        val = _mm512_max_ps(_mm512_setzero_ps(), val);
                    }
                }
                _mm512_mask_storeu_ps(y.add(at), mask, val);
            }
        }
    }
}
