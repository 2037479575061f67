//! The forward convolution: whole images in groups, one image cut by output channel, or
//! bands of output rows, each with an optional epilogue run on the output while it is in cache.

use gemm::Parallelism;
use rayon::prelude::*;

use super::gemm::{matmul, scatter, unfold_group, Mat};
use super::geom::{im2col_rows, Geom};
use super::plan::{Bands, Plan, Scratch};
use crate::ops::uninit_f32;

/// Work applied to an output block `(O, s)` right after its GEMM, while it is in cache: called
/// with the block and `s` (a whole image's `oh·ow`, or the pixels of one band of it).
pub(in crate::ops) type GemmEpilogue<'a> = Option<&'a (dyn Fn(&mut [f32], usize) + Sync)>;

/// Forward of a group of `nb` images: `Y (O × nb·P) = W · unfold(X)`.
fn forward_group(
    xs: &[f32],
    w: &[f32],
    g: &Geom,
    ys: &mut [f32],
    sc: &mut Scratch,
    par: Parallelism,
    epilogue: &GemmEpilogue,
) {
    let (k, p) = (g.k(), g.p());
    let nb = ys.len() / (g.o * p);
    let cols = nb * p;
    let rhs = unfold_group(xs, nb, g, &mut sc.col);
    let lhs = Mat::rows(w, k);
    let rhs = Mat::rows(rhs, cols);
    if nb == 1 {
        matmul((g.o, p, k), ys, false, lhs, rhs, par);
    } else {
        matmul((g.o, cols, k), &mut sc.out, false, lhs, rhs, par);
        scatter(&sc.out, nb, g.o, p, ys);
    }
    if let Some(f) = epilogue {
        ys.chunks_mut(g.o * p).for_each(|y| f(y, p));
    }
}

pub(super) fn forward(x: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    forward_with(x, w, g, None)
}

/// The convolution of the batch, `epilogue` applied to each image's output after its GEMM.
pub(in crate::ops) fn forward_with(
    x: &[f32],
    w: &[f32],
    g: &Geom,
    epilogue: GemmEpilogue,
) -> Vec<f32> {
    let out_len = g.o * g.p();
    // SAFETY: every image's output block is written by its GEMM (`read_dst = false`, or the
    // zero fill when K = 0) or by `scatter`, before the epilogue reads it.
    let mut y = unsafe { uninit_f32(g.n * out_len) };
    if out_len == 0 {
        return y;
    }
    if let Some(bands) = Bands::new(g) {
        forward_bands(x, w, g, &mut y, &bands, &epilogue);
        return y;
    }
    let plan = Plan::new(g);
    let (ychunk, xchunk) = (plan.nb * out_len, plan.nb * g.in_len().max(1));
    if let Some(rows) = plan.channel_split(g) {
        forward_channels(x, w, g, &mut y, rows, &epilogue);
    } else if plan.across {
        y.par_chunks_mut(ychunk)
            .zip(x.par_chunks(xchunk))
            .for_each_init(
                || Scratch::new(&plan, g),
                |sc, (ys, xs)| forward_group(xs, w, g, ys, sc, plan.par, &epilogue),
            );
    } else {
        let mut sc = Scratch::new(&plan, g);
        for (ys, xs) in y.chunks_mut(ychunk).zip(x.chunks(xchunk)) {
            forward_group(xs, w, g, ys, &mut sc, plan.par, &epilogue);
        }
    }
    y
}

/// The forward convolution image by image, each image's GEMM cut into blocks of `rows` output
/// channels that run on different threads; the epilogue runs on the whole image afterwards.
pub(super) fn forward_channels(
    x: &[f32],
    w: &[f32],
    g: &Geom,
    y: &mut [f32],
    rows: usize,
    epilogue: &GemmEpilogue,
) {
    let (k, p) = (g.k(), g.p());
    let plan = Plan {
        nb: 1,
        across: false,
        par: Parallelism::None,
    };
    let mut sc = Scratch::new(&plan, g);
    for (yi, xi) in y.chunks_mut(g.o * p).zip(x.chunks(g.in_len().max(1))) {
        let unfolded = unfold_group(xi, 1, g, &mut sc.col);
        yi.par_chunks_mut(rows * p)
            .zip(w.par_chunks(rows * k))
            .for_each(|(yc, wc)| {
                let lhs = Mat::rows(wc, k);
                let rhs = Mat::rows(unfolded, p);
                matmul((yc.len() / p, p, k), yc, false, lhs, rhs, Parallelism::None);
            });
        if let Some(f) = epilogue {
            f(yi, p);
        }
    }
}

/// A raw output pointer shared by the threads of [`forward_bands`], each writing its own
/// disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used to write disjoint elements from different threads (see `forward_bands`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// The forward convolution band by band (see [`Bands`]): each band's `(O, band pixels)` result
/// is computed in scratch, the epilogue applied there, then copied into its columns of `y`.
pub(super) fn forward_bands(
    x: &[f32],
    w: &[f32],
    g: &Geom,
    y: &mut [f32],
    bands: &Bands,
    epilogue: &GemmEpilogue,
) {
    let (k, p, in_len) = (g.k(), g.p(), g.in_len());
    let band_px = bands.rows * g.ow;
    let out = SharedOut(y.as_mut_ptr());
    let units = g.n * bands.per_image;
    (0..units).into_par_iter().for_each_init(
        // SAFETY: a band's im2col writes every element of its `K × band pixels` rows and the
        // GEMM (`read_dst = false`) every element of its `O × band pixels` output before
        // they are read; only those prefixes are used.
        || unsafe { (uninit_f32(k * band_px), uninit_f32(g.o * band_px)) },
        |(col, res), unit| {
            let (i, b) = (unit / bands.per_image, unit % bands.per_image);
            let (rows, p0, bp) = bands.span(b, g);
            let xi = &x[i * in_len..(i + 1) * in_len];
            im2col_rows(xi, g, col, bp, rows);
            let lhs = Mat::rows(w, k);
            let rhs = Mat::rows(&col[..k * bp], bp);
            let res = &mut res[..g.o * bp];
            matmul((g.o, bp, k), res, false, lhs, rhs, Parallelism::None);
            if let Some(f) = epilogue {
                f(res, bp);
            }
            let base = i * g.o * p + p0;
            for (o, src) in res.chunks_exact(bp).enumerate() {
                // SAFETY: unit (i, b) writes only columns [p0, p0 + bp) of image i's rows,
                // which no other unit writes, all inside `y` (N·O·P elements).
                unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), out.ptr().add(base + o * p), bp);
                }
            }
        },
    );
}
