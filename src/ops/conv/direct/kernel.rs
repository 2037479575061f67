//! The AVX-512 micro-kernel of the direct convolution: [`M`] output channels × up to [`V`]
//! vectors of 16 output positions held in 24 registers, accumulated over every input channel
//! and tap, then the per-channel affine map (and ReLU) applied in registers and the valid lanes
//! stored into the NCHW output with masked stores.

use std::arch::x86_64::*;

use super::layout::Layout;
use super::Affine;

/// Output channels per register block.
pub(super) const M: usize = 8;

/// Most vectors of 16 output positions per register block.
pub(super) const V: usize = 3;

/// Output positions per register block of [`V`] vectors.
pub(super) const TILE: usize = 16 * V;

/// The weights of one block: its first row (output channel `o0`, `C·k·k` values), the
/// distance between rows, how many of the [`M`] rows exist (the others repeat the last one and
/// their results are dropped), and the weights per input channel (`k·k`).
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) w: *const f32,
    pub(super) stride: usize,
    pub(super) count: usize,
    pub(super) per_channel: usize,
}

/// Adds `Σ_c Σ_(xo, wo) w[m][c·per_channel + wo] · x[c·cs + xo + STEP·v + 0..16]` to `acc` for
/// the [`M`] rows of `rows` and the `NV` vectors of positions starting at `x`, `STEP` floats
/// apart (16 in the flat layout; 16 × the stride in lanes).
///
/// # Safety
/// Every load `x + c·cs + xo + STEP·v + 0..16` (c < `channels`, v < `NV`, `xo` of `taps`) and
/// every weight `rows.w + min(m, count − 1)·stride + c·per_channel + wo` lies inside its
/// allocation, and `count ≥ 1`. The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn accumulate<const NV: usize, const STEP: usize>(
    acc: &mut [[__m512; NV]; M],
    x: *const f32,
    (cs, channels): (usize, usize),
    taps: &[(usize, usize)],
    rows: Rows,
) {
    let mut a = *acc;
    let mut w: [*const f32; M] =
        std::array::from_fn(|m| rows.w.wrapping_add(m.min(rows.count - 1) * rows.stride));
    let mut xc = x;
    for _ in 0..channels {
        for &(xo, wo) in taps {
            // SAFETY: inside the input planes (see the function's contract).
            let xs: [__m512; NV] =
                std::array::from_fn(|v| unsafe { _mm512_loadu_ps(xc.add(xo + STEP * v)) });
            for m in 0..M {
                // SAFETY: weight `wo` of the current channel of row m.
                let wv = _mm512_set1_ps(unsafe { *w[m].add(wo) });
                for v in 0..NV {
                    a[m][v] = _mm512_fmadd_ps(xs[v], wv, a[m][v]);
                }
            }
        }
        xc = xc.wrapping_add(cs);
        for wm in &mut w {
            *wm = wm.wrapping_add(rows.per_channel);
        }
    }
    *acc = a;
}

/// Applies the affine map of output channels `o0..o0 + count` to their accumulators, and the
/// ReLU unless a residual comes first.
#[target_feature(enable = "avx512f")]
fn epilogue<const NV: usize>(acc: &mut [[__m512; NV]; M], ep: &Affine, o0: usize, count: usize) {
    for (m, row) in acc.iter_mut().enumerate().take(count) {
        let a = _mm512_set1_ps(ep.scale[o0 + m]);
        let b = _mm512_set1_ps(ep.shift[o0 + m]);
        for v in row.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
            if ep.relu && ep.residual.is_none() {
                *v = relu(*v);
            }
        }
    }
}

/// ReLU; the second operand of `max` is returned on NaN, so NaN stays NaN, as `relu1`.
#[target_feature(enable = "avx512f")]
fn relu(v: __m512) -> __m512 {
    _mm512_max_ps(_mm512_setzero_ps(), v)
}

/// The lanes `[a, b)` of a 16-lane vector as a mask.
fn lanes(a: usize, b: usize) -> __mmask16 {
    (((1u32 << b) - 1) & !((1u32 << a) - 1)) as __mmask16
}

/// One register block: output channels `o0..o0 + rows.count` at the `NV` vectors of output
/// positions from `q`, computed, mapped and stored into `out` (N, O, oh, ow).
///
/// # Safety
/// `input` is the layout's filled buffer, `ep.residual` (if any) holds N·O·oh·ow floats, and `q + 16·NV ≤ l.q` rounded up to 16 (so every tap
/// stays inside its plane); `rows.w` points at the weights of output channel `o0` (O, C, k, k)
/// and `o0 + rows.count ≤ O`; `out` holds N·O·oh·ow floats and no other thread writes these
/// outputs. The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block<const NV: usize>(
    l: &Layout,
    input: *const f32,
    q: usize,
    (rows, o0): (Rows, usize),
    ep: &Affine,
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; M];
    for gr in &l.groups {
        let x = input.wrapping_add(gr.plane * l.plane + q);
        // SAFETY: the caller's contract; each plane holds every tap of the positions below
        // l.q rounded up (`Layout::with`).
        unsafe { accumulate::<NV, 16>(&mut acc, x, (l.cs(), l.c), &gr.taps, rows) };
    }
    epilogue(&mut acc, ep, o0, rows.count);
    let hw = l.oh * l.ow;
    let end = (q + 16 * NV).min(l.q);
    // Walk the rows the tile touches (divisions once per tile, not per row).
    let (mut i, r) = (q / l.pq, q % l.pq);
    let mut y = r / l.wp;
    let mut row = q - r % l.wp;
    while row < end {
        if y < l.oh {
            // The row's valid positions inside the tile, cut at the vectors' edges.
            let (mut s, hi) = (row.max(q), (row + l.ow).min(end));
            while s < hi {
                let v = (s - q) / 16;
                let q0 = q + 16 * v;
                let seg_end = (q0 + 16).min(hi);
                let mask = lanes(s - q0, seg_end - q0);
                let base = (i * l.o + o0) * hw + y * l.ow + (s - row);
                for (m, a) in acc.iter().enumerate().take(rows.count) {
                    let at = (base + m * hw).wrapping_sub(s - q0);
                    // SAFETY: the lanes of `mask` are outputs (i, o0 + m, y, s − row..) of
                    // this row, inside `out` (and the residual), written by this unit only.
                    unsafe { store(out.wrapping_add(at), mask, a[v], ep, at) };
                }
                s = seg_end;
            }
        }
        row += l.wp;
        y += 1;
        if y * l.wp == l.pq {
            (i, y) = (i + 1, 0);
        }
    }
}

/// One register block of the lanes layout: output channels `o0..o0 + rows.count` at the `NV`
/// positions whose first tap is at `x` (positions `STEP` floats apart), accumulated over the
/// `channels` input planes `cs` floats apart and the taps, mapped by the affine (and the ReLU
/// when there is no residual), stored at `out` (lane vectors of consecutive positions, output
/// channels `out_cs` floats apart).
///
/// # Safety
/// Every tap of every position lies inside the input planes, `rows` as for [`accumulate`],
/// `out + m·out_cs + 16·v + 0..16` (m < `rows.count`, v < `NV`) inside the output and written by
/// no other thread. The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn lanes_block<const NV: usize, const STEP: usize>(
    x: *const f32,
    (taps, (cs, channels)): (&[(usize, usize)], (usize, usize)),
    (rows, o0): (Rows, usize),
    ep: &Affine,
    (out, out_cs): (*mut f32, usize),
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; M];
    // SAFETY: the caller's contract.
    unsafe { accumulate::<NV, STEP>(&mut acc, x, (cs, channels), taps, rows) };
    epilogue(&mut acc, ep, o0, rows.count);
    for (m, a) in acc.iter().enumerate().take(rows.count) {
        for (v, val) in a.iter().enumerate() {
            // SAFETY: output m, position v of this block (the caller's contract).
            unsafe { _mm512_storeu_ps(out.wrapping_add(m * out_cs + 16 * v), *val) };
        }
    }
}

/// Stores the lanes `mask` of `val` at `p` (lane 0's address), after adding the residual's
/// elements at the same offset `at` from its start and the ReLU, when the epilogue has them.
///
/// # Safety
/// The lanes of `mask` at `p`, and at `ep.residual + at` if there is a residual, are elements
/// of the output (and of the residual, of the same shape); no other thread writes them.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store(p: *mut f32, mask: __mmask16, mut val: __m512, ep: &Affine, at: usize) {
    if let Some(res) = ep.residual {
        // SAFETY: only the lanes of `mask` are read, elements of the residual.
        let r = unsafe { _mm512_maskz_loadu_ps(mask, res.as_ptr().wrapping_add(at)) };
        val = _mm512_add_ps(val, r);
        if ep.relu {
            val = relu(val);
        }
    }
    // SAFETY: only the lanes of `mask` are written, elements of the output.
    unsafe { _mm512_mask_storeu_ps(p, mask, val) };
}
