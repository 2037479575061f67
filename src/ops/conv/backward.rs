//! The two gradients of a convolution: `dX = col2im(Wᵀ · dY)` and `dW = Σ_n dY_n · im2col(X_n)ᵀ`,
//! for groups of images or band by band.

use gemm::Parallelism;
use rayon::prelude::*;

use super::gemm::{gather, matmul, padded_ld, scatter, unfold_group_ld, Mat};
use super::geom::{col2im, col2im_rows, im2col_rows, Geom};
use super::plan::{Bands, Plan, Scratch};
use crate::ops::uninit_f32;

/// `dX = col2im(Wᵀ · dY)` for the whole batch.
pub(super) fn input_grad(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    // SAFETY: `input_grad_into` writes every element of `dx`.
    let mut dx = unsafe { uninit_f32(g.n * g.in_len()) };
    input_grad_into(dy, w, g, &mut dx);
    dx
}

/// Input gradient of a group of `nb` images: `cols (K × nb·P) = Wᵀ · dY`, folded back.
fn input_grad_group(
    dxs: &mut [f32],
    dys: &[f32],
    w: &[f32],
    g: &Geom,
    sc: &mut Scratch,
    par: Parallelism,
) {
    let (k, p, in_len) = (g.k(), g.p(), g.in_len());
    let nb = dxs.len() / in_len;
    let cols = nb * p;
    // Wᵀ (K×O): element (k, o) sits at w[o·K + k].
    let lhs = Mat::transposed(w, k);
    let rhs = gather(dys, nb, g.o, p, &mut sc.out);
    let rhs = Mat::rows(rhs, cols);
    if g.pointwise() && nb == 1 {
        matmul((k, p, g.o), dxs, false, lhs, rhs, par);
        return;
    }
    matmul((k, cols, g.o), &mut sc.col, false, lhs, rhs, par);
    if g.pointwise() {
        // Folding back is the identity: each image's (C, P) block is its gradient.
        scatter(&sc.col, nb, g.c, p, dxs);
        return;
    }
    // col2im adds into the images (and leaves pixels no window reads untouched), so they start
    // from zero: filled here, on the group's own thread, while they go into its cache.
    dxs.fill(0.0);
    for (i, dxi) in dxs.chunks_mut(in_len).enumerate() {
        col2im(&sc.col[i * p..], g, dxi, cols);
    }
}

/// [`input_grad`] written into `dx` (`N·C·H·W`; whatever it holds on entry is overwritten:
/// callers may pass uninitialised memory).
pub(in crate::ops) fn input_grad_into(dy: &[f32], w: &[f32], g: &Geom, dx: &mut [f32]) {
    let in_len = g.in_len();
    assert_eq!(dx.len(), g.n * in_len);
    let p = g.p();
    if in_len == 0 || p == 0 {
        dx.fill(0.0);
        return;
    }
    if let Some(bands) = Bands::for_cache(g) {
        input_grad_bands(dy, w, g, dx, &bands);
        return;
    }
    let plan = Plan::new(g);
    let (dxchunk, dychunk) = (plan.nb * in_len, plan.nb * g.o * p);
    if plan.across {
        dx.par_chunks_mut(dxchunk)
            .zip(dy.par_chunks(dychunk))
            .for_each_init(
                || Scratch::new(&plan, g),
                |sc, (dxs, dys)| input_grad_group(dxs, dys, w, g, sc, plan.par),
            );
    } else {
        let mut sc = Scratch::new(&plan, g);
        for (dxs, dys) in dx.chunks_mut(dxchunk).zip(dy.chunks(dychunk)) {
            input_grad_group(dxs, dys, w, g, &mut sc, plan.par);
        }
    }
}

/// [`input_grad_into`] band by band: images spread over the threads, each image's bands folded
/// back one after the other (neighbouring bands add into shared input rows).
pub(super) fn input_grad_bands(dy: &[f32], w: &[f32], g: &Geom, dx: &mut [f32], bands: &Bands) {
    let (k, p) = (g.k(), g.p());
    let band_px = bands.rows * g.ow;
    dx.par_chunks_mut(g.in_len())
        .zip(dy.par_chunks(g.o * p))
        .for_each_init(
            // SAFETY: each band's GEMM (`read_dst = false`) writes all `K × band pixels`
            // elements it then folds back.
            || unsafe { uninit_f32(k * band_px) },
            |col, (dxi, dyi)| {
                // The bands' col2im add into the image.
                dxi.fill(0.0);
                for b in 0..bands.per_image {
                    let (rows, p0, bp) = bands.span(b, g);
                    // Wᵀ (K×O) times the band's columns of dY (O × bp, rows P apart).
                    let lhs = Mat::transposed(w, k);
                    let rhs = Mat::rows(&dyi[p0..], p);
                    let col = &mut col[..k * bp];
                    matmul((k, bp, g.o), col, false, lhs, rhs, Parallelism::None);
                    col2im_rows(col, g, dxi, bp, rows);
                }
            },
        );
}

/// `dW = Σ_n Σ_bands dY_band · im2col(X_n)_bandᵀ`: images spread over the threads, one partial
/// sum per thread.
pub(super) fn weight_grad_bands(x: &[f32], dy: &[f32], g: &Geom, bands: &Bands) -> Vec<f32> {
    let (k, p, w_len) = (g.k(), g.p(), g.o * g.k());
    let band_px = bands.rows * g.ow;
    // SAFETY: `col` is written by `im2col_rows` (every element of the band's rows) before the
    // GEMM reads it.
    let scratch = || unsafe { uninit_f32(k * band_px) };
    ordered_sum(g.n, w_len, scratch, |dw, col, i| {
        let xi = &x[i * g.in_len()..(i + 1) * g.in_len()];
        let dyi = &dy[i * g.o * p..(i + 1) * g.o * p];
        for b in 0..bands.per_image {
            let (rows, p0, bp) = bands.span(b, g);
            im2col_rows(xi, g, col, bp, rows);
            let lhs = Mat::rows(&dyi[p0..], p);
            // The band's unfold transposed (bp × K): element (q, k) at col[k·bp + q].
            let rhs = Mat::transposed(&col[..k * bp], bp);
            matmul((g.o, k, bp), dw, true, lhs, rhs, Parallelism::None);
        }
    })
}

/// `Σ_i add(i)` over `0..n` into a `len`-long sum: the items are cut into one contiguous run per
/// thread, each run summed on its own (with its own scratch), and the runs' sums added in order.
/// The same inputs and thread count give the same bits on every run, which rayon's
/// `fold`/`reduce` (split wherever work stealing happens) does not: training is reproducible.
fn ordered_sum<S>(
    n: usize,
    len: usize,
    scratch: impl Fn() -> S + Sync,
    add: impl Fn(&mut [f32], &mut S, usize) + Sync,
) -> Vec<f32> {
    let per = n.div_ceil(rayon::current_num_threads().max(1)).max(1);
    let partials: Vec<Vec<f32>> = (0..n.div_ceil(per))
        .into_par_iter()
        .map(|run| {
            let (mut sum, mut s) = (vec![0f32; len], scratch());
            for i in run * per..((run + 1) * per).min(n) {
                add(&mut sum, &mut s, i);
            }
            sum
        })
        .collect();
    let mut runs = partials.into_iter();
    let mut total = runs.next().unwrap_or_else(|| vec![0f32; len]);
    for run in runs {
        total.iter_mut().zip(&run).for_each(|(a, b)| *a += b);
    }
    total
}

fn weight_grad_group(
    dw: &mut [f32],
    x: &[f32],
    dy: &[f32],
    (i0, nb): (usize, usize),
    g: &Geom,
    sc: &mut Scratch,
    par: Parallelism,
) {
    let (k, p, in_len) = (g.k(), g.p(), g.in_len());
    let cols = nb * p;
    let xs = &x[i0 * in_len..(i0 + nb) * in_len];
    let dys = &dy[i0 * g.o * p..(i0 + nb) * g.o * p];
    let (unfolded, ld) = unfold_group_ld(xs, nb, g, &mut sc.col, padded_ld(cols));
    let lhs = gather(dys, nb, g.o, p, &mut sc.out);
    let lhs = Mat::rows(lhs, cols);
    // unfold(X)ᵀ (nb·P × K): element (q, k) sits at unfolded[k·ld + q].
    let rhs = Mat::transposed(unfolded, ld);
    matmul((g.o, k, cols), dw, true, lhs, rhs, par);
}

/// `dW = Σ_n dY_n · im2col(X_n)ᵀ`.
pub(in crate::ops) fn weight_grad(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    let w_len = g.o * g.k();
    if w_len == 0 || g.p() == 0 || g.n == 0 {
        return vec![0f32; w_len];
    }
    if let Some(bands) = Bands::for_cache(g) {
        return weight_grad_bands(x, dy, g, &bands);
    }
    let plan = Plan::new(g);
    let groups: Vec<(usize, usize)> = (0..g.n)
        .step_by(plan.nb)
        .map(|i0| (i0, plan.nb.min(g.n - i0)))
        .collect();
    if plan.across {
        let scratch = || Scratch::new(&plan, g);
        ordered_sum(groups.len(), w_len, scratch, |dw, sc, j| {
            weight_grad_group(dw, x, dy, groups[j], g, sc, plan.par)
        })
    } else {
        let mut dw = vec![0f32; w_len];
        let mut sc = Scratch::new(&plan, g);
        for grp in groups {
            weight_grad_group(&mut dw, x, dy, grp, g, &mut sc, plan.par);
        }
        dw
    }
}
