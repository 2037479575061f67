//! The AVX-512 micro-kernel of the direct 3×3 convolution: [`M`] output channels × up to
//! [`V`] vectors of 16 output positions held in 24 registers, accumulated over every input
//! channel and the 9 taps, then the per-channel affine map (and ReLU) applied in registers and
//! the valid lanes stored into the NCHW output with masked stores.

use std::arch::x86_64::*;

use super::{Affine, Layout};

/// Output channels per register block.
pub(super) const M: usize = 8;

/// Most vectors of 16 output positions per register block.
pub(super) const V: usize = 3;

/// Output positions per register block of [`V`] vectors.
pub(super) const TILE: usize = 16 * V;

/// The weights of one block: the first of its rows (`O` row of `C·9` values), the distance
/// between rows and how many of the [`M`] rows exist (the others repeat the last one, and
/// their results are dropped).
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) w: *const f32,
    pub(super) stride: usize,
    pub(super) count: usize,
}

/// `Σ_c Σ_taps w[m][c][tap] · x[c][q + off(tap) + 16·v]` for the [`M`] rows of `rows` and `NV`
/// vectors starting at `x` (channel 0, tap (0, 0)); `off(ky, kx) = ky·rs + kx·KS` and channel
/// `c` starts `c·cs` floats after channel 0.
///
/// # Safety
/// Every load `x + c·cs + ky·rs + kx·KS + 16·v + 0..16` (c < `channels`, ky, kx < 3, v < `NV`)
/// and every weight `rows.w + min(m, count − 1)·stride + 0..channels·9` lies inside its
/// allocation, and `count ≥ 1`. The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn accumulate<const NV: usize, const KS: usize>(
    x: *const f32,
    (cs, rs, channels): (usize, usize, usize),
    rows: Rows,
) -> [[__m512; NV]; M] {
    let mut acc = [[_mm512_setzero_ps(); NV]; M];
    let mut w: [*const f32; M] =
        std::array::from_fn(|m| rows.w.wrapping_add(m.min(rows.count - 1) * rows.stride));
    let mut xc = x;
    for _ in 0..channels {
        for ky in 0..3 {
            for kx in 0..3 {
                let tap = ky * 3 + kx;
                // SAFETY: inside the input plane (see the function's contract).
                let xs: [__m512; NV] = std::array::from_fn(|v| unsafe {
                    _mm512_loadu_ps(xc.add(ky * rs + kx * KS + 16 * v))
                });
                for m in 0..M {
                    // SAFETY: weight `tap` of the current channel of row m.
                    let wv = _mm512_set1_ps(unsafe { *w[m].add(tap) });
                    for v in 0..NV {
                        acc[m][v] = _mm512_fmadd_ps(xs[v], wv, acc[m][v]);
                    }
                }
            }
        }
        xc = xc.wrapping_add(cs);
        for wm in &mut w {
            *wm = wm.wrapping_add(9);
        }
    }
    acc
}

/// Applies the affine map (and ReLU) of output channels `o0..o0 + count` to their
/// accumulators.
#[target_feature(enable = "avx512f")]
fn epilogue<const NV: usize>(acc: &mut [[__m512; NV]; M], ep: &Affine, o0: usize, count: usize) {
    for (m, row) in acc.iter_mut().enumerate().take(count) {
        let a = _mm512_set1_ps(ep.scale[o0 + m]);
        let b = _mm512_set1_ps(ep.shift[o0 + m]);
        for v in row.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
            if ep.relu {
                // Second operand returned on NaN: NaN stays NaN, as `relu1`.
                *v = _mm512_max_ps(_mm512_setzero_ps(), *v);
            }
        }
    }
}

/// The lanes `[a, b)` of a 16-lane vector as a mask.
fn lanes(a: usize, b: usize) -> __mmask16 {
    (((1u32 << b) - 1) & !((1u32 << a) - 1)) as __mmask16
}

/// One register block: output channels `o0..o0 + rows.count` at the `NV` vectors of output
/// positions from `q`, computed, mapped and stored into `out` (N, O, H, W).
///
/// # Safety
/// As [`accumulate`] for `x = input + q` (the layout's padded input), `rows.w` the weights of
/// channel `o0`, `o0 + rows.count ≤ O`, and `out` holds N·O·H·W floats; no other thread writes
/// the same outputs. The CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block<const NV: usize>(
    l: &Layout,
    input: *const f32,
    q: usize,
    (rows, o0): (Rows, usize),
    ep: &Affine,
    out: *mut f32,
) {
    let x = input.wrapping_add(q);
    // SAFETY: the caller's contract.
    let mut acc = unsafe { accumulate::<NV, 1>(x, (l.cs, l.wp, l.c), rows) };
    epilogue(&mut acc, ep, o0, rows.count);
    let hw = l.h * l.w;
    for v in 0..NV {
        let q0 = q + 16 * v;
        let end = (q0 + 16).min(l.q);
        let mut s = q0;
        while s < end {
            let (i, r) = (s / l.pq, s % l.pq);
            let (y, x) = (r / l.wp, r % l.wp);
            let next_row = s - x + l.wp;
            if y < l.h && x < l.w {
                let seg_end = (s - x + l.w).min(end);
                let mask = lanes(s - q0, seg_end - q0);
                let base = (i * l.o + o0) * hw + y * l.w + x;
                for (m, a) in acc.iter().enumerate().take(rows.count) {
                    let p = out.wrapping_add(base + m * hw).wrapping_sub(s - q0);
                    // SAFETY: only the lanes of `mask` are written, output pixels
                    // (i, o0 + m, y, x..x + seg_end − s) of this image row: inside `out`.
                    unsafe { _mm512_mask_storeu_ps(p, mask, a[v]) };
                }
            }
            s = next_row;
        }
    }
}
