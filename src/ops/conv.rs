//! 2-D convolution (cross-correlation, as in PyTorch's `nn.Conv2d` without bias) as an
//! im2col + GEMM candle custom op with its own backward pass.
//!
//! Design after Chellapilla, Puri & Simard (2006), "High Performance Convolutional Neural
//! Networks for Document Processing", as used by Caffe and PyTorch's CPU backend:
//! - forward, per image: `Y_n (O×P) = W (O×K) · im2col(X_n) (K×P)`, `K = C·kh·kw`, `P = oh·ow`;
//! - weight gradient: `dW = Σ_n dY_n · im2col(X_n)ᵀ`;
//! - input gradient: `dX_n = col2im(Wᵀ · dY_n)` (no `conv_transpose2d`);
//! - 1×1 stride-1 unpadded kernels skip im2col/col2im entirely.
//!
//! Matrix products use the `gemm` crate (the one candle itself uses). Images whose output has
//! fewer than ~192 pixels (late layers) are unfolded side by side and multiplied as one wider
//! GEMM, so the micro-kernel's panels fill. With at least as many such groups as threads the
//! batch is split across threads (each GEMM single-threaded); otherwise the GEMMs themselves run
//! in parallel.

use std::ops::Range;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::{f32_data, is_cpu_f32, num_threads, uninit_f32};

/// 2-D convolution of `x` (N, C, H, W) with `w` (O, C, kh, kw), no bias, no dilation, no groups.
///
/// `padding` is `(pad_h, pad_w)`: zeros added on both sides of each axis, as PyTorch's
/// `padding=(pad_h, pad_w)`; `stride` applies to both axes; kernels need not be square (1×7, 7×1).
/// Output: (N, O, (H + 2·pad_h − kh)/stride + 1, (W + 2·pad_w − kw)/stride + 1), floored.
///
/// On the CPU in f32 this is an im2col + GEMM custom op whose backward computes the input
/// gradient (only when `x` takes part in autograd) and the weight gradient with the same kind
/// of GEMMs. Elsewhere it falls back to candle's `conv2d` (padding unequal per axis through
/// `pad_with_zeros`).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: (usize, usize)) -> Result<Tensor> {
    Geom::new(x.dims(), w.dims(), stride, padding)?;
    if is_cpu_f32(x) && is_cpu_f32(w) {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        return x.apply_op2(&w, Conv2dOp { stride, padding });
    }
    let (ph, pw) = padding;
    if ph == pw {
        x.conv2d(w, ph, stride, 1, 1)
    } else {
        x.pad_with_zeros(2, ph, ph)?
            .pad_with_zeros(3, pw, pw)?
            .conv2d(w, 0, stride, 1, 1)
    }
}

/// Sizes of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    pub(super) n: usize,
    pub(super) c: usize,
    h: usize,
    w: usize,
    pub(super) o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    ph: usize,
    pw: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Geom {
    pub(super) fn new(
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
    fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per image.
    pub(super) fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Input elements per image.
    pub(super) fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// A 1×1 stride-1 unpadded convolution: im2col is the identity.
    fn pointwise(&self) -> bool {
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
fn im2col(x: &[f32], g: &Geom, col: &mut [f32], ld: usize) {
    im2col_rows(x, g, col, ld, 0..g.oh)
}

/// [`im2col`] of the output rows `rows` only: `col` `(C·kh·kw, rows.len()·ow)`, rows `ld` apart.
fn im2col_rows(x: &[f32], g: &Geom, col: &mut [f32], ld: usize, rows: Range<usize>) {
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
fn col2im(col: &[f32], g: &Geom, x: &mut [f32], ld: usize) {
    col2im_rows(col, g, x, ld, 0..g.oh)
}

/// [`col2im`] of the output rows `rows` only (`col` holds `rows.len()·ow` columns), added into
/// the image.
fn col2im_rows(col: &[f32], g: &Geom, x: &mut [f32], ld: usize, rows: Range<usize>) {
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

/// A row-major view of a matrix for [`matmul`]: data, column stride, row stride.
struct Mat<'a> {
    data: &'a [f32],
    cs: usize,
    rs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix whose rows are `rs` apart.
    fn rows(data: &'a [f32], rs: usize) -> Self {
        Self { data, cs: 1, rs }
    }

    /// The transpose of a row-major matrix whose rows are `cs` apart (a column-major view).
    fn transposed(data: &'a [f32], cs: usize) -> Self {
        Self { data, cs, rs: 1 }
    }

    /// Checks that every element of a `rows × cols` view lies inside the slice.
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len());
        }
    }
}

/// `dst (m×n, row-major contiguous) (+)= lhs (m×k) · rhs (k×n)` through `gemm`.
fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    par: Parallelism,
) {
    assert!(dst.len() >= m * n);
    lhs.check(m, k);
    rhs.check(k, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the three views were bounds-checked above; dst does not alias lhs or rhs (it is
    // a distinct &mut slice).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
/// Work applied to an output block `(O, s)` right after its GEMM, while it is in cache: called
/// with the block and `s` (a whole image's `oh·ow`, or the pixels of one band of it).
pub(super) type Epilogue<'a> = Option<&'a (dyn Fn(&mut [f32], usize) + Sync)>;

/// Output columns the GEMMs aim for: images whose outputs are smaller (late layers, 8×8 or
/// 3×3) are processed several at a time as one wider GEMM, so the micro-kernel's panels fill.
const GEMM_COLUMNS: usize = 192;

/// Smallest GEMM (in flops) worth splitting across threads; `CANDLE_FACE_PAR_MIN_FLOPS`
/// overrides it (for tuning on other machines).
fn par_min_flops() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("CANDLE_FACE_PAR_MIN_FLOPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(PAR_MIN_FLOPS)
    })
}

/// Default of [`par_min_flops`], measured on the project's machine: at batch 1 on 2 threads,
/// splitting GEMMs below this made both models slower (compact64 1.23 → 1.9 ms when every
/// GEMM was split); only the largest early-layer products of InceptionResnetV1 gain.
const PAR_MIN_FLOPS: usize = 64_000_000;

/// Images per group near `target` (within half to twice it, at most `per_thread`) that keep
/// the threads evenly loaded: the groups are dealt out whole, so 32 images in groups of 3 give
/// one thread 6 groups (18 images) and the other 5; groups of 4 give both 16. Among equally
/// balanced sizes the one closest to `target` wins, the larger on a tie.
fn balanced_group(n: usize, nt: usize, target: usize, per_thread: usize) -> usize {
    // The busiest thread takes ceil(groups / threads) groups (the last one may be partial).
    let load = |nb: usize| (n.div_ceil(nb).div_ceil(nt) * nb).min(n);
    let lo = (target / 2).max(1);
    let hi = (2 * target).min(per_thread).max(lo);
    (lo..=hi)
        .min_by_key(|&nb| (load(nb), nb.abs_diff(target), std::cmp::Reverse(nb)))
        .unwrap_or(target)
}

/// How the batch is cut and run: `nb` images per GEMM; groups spread over threads (each GEMM
/// single-threaded) when there are enough of them, else the GEMMs themselves run in parallel.
#[derive(Debug, Clone, Copy)]
struct Plan {
    nb: usize,
    across: bool,
    par: Parallelism,
}

impl Plan {
    fn new(g: &Geom) -> Self {
        let nt = num_threads();
        let per_thread = g.n.div_ceil(nt).max(1);
        let target = GEMM_COLUMNS.div_ceil(g.p().max(1)).clamp(1, per_thread);
        let nb = balanced_group(g.n, nt, target, per_thread);
        let groups = g.n.div_ceil(nb);
        if nt > 1 && groups >= nt {
            Self {
                nb,
                across: true,
                par: Parallelism::None,
            }
        } else {
            // Too few images to spread: split each GEMM, when it is big enough to pay for the
            // threads' fork and join (small ones run faster on one thread: batch-1 latency).
            let flops = 2 * g.o * g.k() * nb * g.p();
            Self {
                nb,
                across: false,
                par: if nt > 1 && flops >= par_min_flops() {
                    Parallelism::Rayon(nt)
                } else {
                    Parallelism::None
                },
            }
        }
    }

    /// Output channels per thread when the images are too few and too small for the other
    /// ways of keeping the threads busy (batch-1 latency of late layers): each image's GEMM is
    /// cut by output channel, `None` when that does not pay.
    fn channel_split(&self, g: &Geom) -> Option<usize> {
        let nt = num_threads();
        let single_threaded = matches!(self.par, Parallelism::None);
        let flops = 2 * g.o * g.k() * g.p();
        (nt > 1 && !self.across && self.nb == 1 && single_threaded && flops >= SPLIT_MIN_FLOPS)
            .then(|| g.o.div_ceil(nt))
            .filter(|&rows| rows < g.o)
    }

    /// Scratch floats one group needs: its im2col matrix and, for several images, the
    /// gathered output or gradient matrix.
    fn scratch(&self, g: &Geom) -> (usize, usize) {
        let cols = self.nb * g.p();
        // A single pointwise image is used in place (K = C for pointwise kernels).
        let col = if g.pointwise() && self.nb == 1 {
            0
        } else {
            g.k() * padded_ld(cols)
        };
        let out = if self.nb > 1 { g.o * cols } else { 0 };
        (col, out)
    }
}

/// Per-thread scratch buffers of one group.
struct Scratch {
    col: Vec<f32>,
    out: Vec<f32>,
}

impl Scratch {
    fn new(plan: &Plan, g: &Geom) -> Self {
        let (col, out) = plan.scratch(g);
        // SAFETY: `col` is written by `unfold_group` (im2col writes every element of each
        // image's rows, padding included; `gather` copies whole rows) before the GEMM reads
        // it, and `out` is a GEMM destination written with `read_dst = false` before
        // `scatter` reads it; the backward passes use both the same way.
        unsafe {
            Self {
                col: uninit_f32(col),
                out: uninit_f32(out),
            }
        }
    }
}

/// `im2col` of images `xs` side by side: `(K, nb·P)`; pointwise kernels just gather.
fn unfold_group<'a>(xs: &'a [f32], nb: usize, g: &Geom, col: &'a mut [f32]) -> &'a [f32] {
    unfold_group_ld(xs, nb, g, col, nb * g.p()).0
}

/// Row stride for a matrix of `cols` columns that a GEMM packs across its rows (the unfolded
/// input of the weight gradient, read as the transposed operand): `cols` rounded up to whole
/// 64-byte lines, plus one line when that is an even number of lines. With a power-of-two
/// stride (64×64 images: 16 KB rows) the packing's reads of 64 consecutive rows all fall in
/// the same few L1 sets and evict each other; an odd number of lines spreads them over all.
fn padded_ld(cols: usize) -> usize {
    let ld = cols.next_multiple_of(16);
    if (ld / 16).is_multiple_of(2) {
        ld + 16
    } else {
        ld
    }
}

/// [`unfold_group`] with rows `ld` apart (`ld ≥ nb·P`; the columns past `nb·P` are not
/// written): returns the matrix and its row stride, which is `P` for a single pointwise image
/// (used in place).
fn unfold_group_ld<'a>(
    xs: &'a [f32],
    nb: usize,
    g: &Geom,
    col: &'a mut [f32],
    ld: usize,
) -> (&'a [f32], usize) {
    let (p, in_len) = (g.p(), g.in_len());
    if g.pointwise() {
        // The unfolded image is the image itself, (C, P).
        if nb == 1 {
            return (&xs[..g.c * p], p);
        }
        gather_ld(xs, nb, g.c, p, col, ld);
    } else {
        for i in 0..nb {
            im2col(&xs[i * in_len..(i + 1) * in_len], g, &mut col[i * p..], ld);
        }
    }
    let len = if g.k() == 0 {
        0
    } else {
        (g.k() - 1) * ld + nb * p
    };
    (&col[..len], ld)
}

/// Gathers `nb` per-image `(R, P)` blocks into one `(R, nb·P)` matrix (or borrows a single one).
fn gather<'a>(src: &'a [f32], nb: usize, rows: usize, p: usize, dst: &'a mut [f32]) -> &'a [f32] {
    if nb == 1 {
        return &src[..rows * p];
    }
    let ld = nb * p;
    gather_ld(src, nb, rows, p, dst, ld);
    &dst[..rows * ld]
}

/// [`gather`] into `dst` with rows `ld` apart (`ld ≥ nb·P`).
fn gather_ld(src: &[f32], nb: usize, rows: usize, p: usize, dst: &mut [f32], ld: usize) {
    for i in 0..nb {
        for r in 0..rows {
            let from = (i * rows + r) * p;
            dst[r * ld + i * p..r * ld + (i + 1) * p].copy_from_slice(&src[from..from + p]);
        }
    }
}

/// Scatters an `(R, nb·P)` matrix back into `nb` per-image `(R, P)` blocks.
fn scatter(src: &[f32], nb: usize, rows: usize, p: usize, dst: &mut [f32]) {
    let ld = nb * p;
    for i in 0..nb {
        for r in 0..rows {
            let to = (i * rows + r) * p;
            dst[to..to + p].copy_from_slice(&src[r * ld + i * p..r * ld + (i + 1) * p]);
        }
    }
}

/// Forward of a group of `nb` images: `Y (O × nb·P) = W · unfold(X)`.
fn forward_group(
    xs: &[f32],
    w: &[f32],
    g: &Geom,
    ys: &mut [f32],
    sc: &mut Scratch,
    par: Parallelism,
    epilogue: &Epilogue,
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

fn forward(x: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    forward_with(x, w, g, None)
}

/// The convolution of the batch, `epilogue` applied to each image's output after its GEMM.
pub(super) fn forward_with(x: &[f32], w: &[f32], g: &Geom, epilogue: Epilogue) -> Vec<f32> {
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

/// im2col floats one band aims for: its unfolded matrix stays in a core's L2 cache while the
/// GEMM reads it.
const BAND_COL_FLOATS: usize = 96 * 1024;

/// Fewest output pixels in a band, so the GEMM's panels still fill.
const BAND_MIN_PIXELS: usize = 256;

/// Fewest flops per band worth handing to another thread.
const BAND_MIN_FLOPS: usize = 2_000_000;

/// Fewest output pixels in a band cut only to feed another thread (smaller outputs split their
/// channels instead: [`forward_channels`]).
const BAND_MIN_SPLIT_PIXELS: usize = 96;

/// Most output channels for which a full batch is cut into bands: each unfolded element takes
/// part in `O` multiply-adds, and below about 64 the GEMM waits on memory rather than on
/// arithmetic (InceptionResnetV1's 32- and 64-channel stem convolutions on 77×77 and 79×79
/// outputs: 2.2× slower than PyTorch unbanded). Wider layers were measured slower banded (the
/// weights are packed again for every band).
const BAND_MAX_CHANNELS: usize = 64;

/// Fewest im2col floats per image for which a full batch is cut into bands: smaller matrices
/// stay in cache anyway (compact64's layers: −3% banded).
const BAND_MIN_COL_FLOATS: usize = 1 << 20;

/// Large images (early layers) cut into bands of whole output rows: each band is unfolded and
/// multiplied on its own, so its im2col matrix is read from cache rather than memory.
/// - With fewer images than threads (batch-1 latency) the bands also spread one image over the
///   threads ([`Bands::new`]).
/// - With a full batch, only where the GEMM is memory-bound (few output channels, an unfolded
///   image larger than the cache: [`Bands::for_cache`]); the forward pass and both gradients
///   then work band by band.
///
/// `None` for pointwise kernels (no im2col) and when one band would be the whole image.
#[derive(Debug, Clone, Copy)]
struct Bands {
    /// Output rows per band (the last band may have fewer).
    rows: usize,
    /// Bands per image.
    per_image: usize,
}

impl Bands {
    fn new(g: &Geom) -> Option<Self> {
        let (p, k) = (g.p(), g.k());
        if g.pointwise() || p == 0 || k == 0 {
            return None;
        }
        let nt = num_threads();
        if g.n >= nt {
            return Self::for_cache(g);
        }
        // Bands small enough for the cache, and enough of them for every thread while each
        // is worth a thread.
        let pixels = (BAND_COL_FLOATS / k).max(BAND_MIN_PIXELS);
        let want = nt.div_ceil(g.n.max(1));
        let worth = (2 * g.o * k * p / BAND_MIN_FLOPS)
            .min(p / BAND_MIN_SPLIT_PIXELS)
            .max(1);
        let count = p.div_ceil(pixels).max(want.min(worth));
        Self::of_count(g, count)
    }

    /// Bands for a memory-bound convolution of a full batch (see [`BAND_MAX_CHANNELS`]), used
    /// by the forward pass and both gradients whatever the batch size.
    fn for_cache(g: &Geom) -> Option<Self> {
        let (p, k) = (g.p(), g.k());
        if g.pointwise() || g.o > BAND_MAX_CHANNELS || k * p < BAND_MIN_COL_FLOATS {
            return None;
        }
        let pixels = (BAND_COL_FLOATS / k).max(BAND_MIN_PIXELS);
        Self::of_count(g, p.div_ceil(pixels))
    }

    /// `count` bands of (nearly) equal height, or `None` for one band.
    fn of_count(g: &Geom, count: usize) -> Option<Self> {
        let count = count.min(g.oh);
        if count <= 1 {
            return None;
        }
        let rows = g.oh.div_ceil(count);
        Some(Self {
            rows,
            per_image: g.oh.div_ceil(rows),
        })
    }

    /// Band `b`: its output rows, its first output pixel and its number of pixels.
    fn span(&self, b: usize, g: &Geom) -> (Range<usize>, usize, usize) {
        let rows = b * self.rows..((b + 1) * self.rows).min(g.oh);
        let (p0, bp) = (rows.start * g.ow, rows.len() * g.ow);
        (rows, p0, bp)
    }
}

/// Fewest flops of one image's convolution worth cutting by output channel over the threads.
const SPLIT_MIN_FLOPS: usize = 4_000_000;

/// The forward convolution image by image, each image's GEMM cut into blocks of `rows` output
/// channels that run on different threads; the epilogue runs on the whole image afterwards.
fn forward_channels(
    x: &[f32],
    w: &[f32],
    g: &Geom,
    y: &mut [f32],
    rows: usize,
    epilogue: &Epilogue,
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
fn forward_bands(
    x: &[f32],
    w: &[f32],
    g: &Geom,
    y: &mut [f32],
    bands: &Bands,
    epilogue: &Epilogue,
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

/// `dX = col2im(Wᵀ · dY)` for the whole batch.
fn input_grad(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
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
pub(super) fn input_grad_into(dy: &[f32], w: &[f32], g: &Geom, dx: &mut [f32]) {
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
fn input_grad_bands(dy: &[f32], w: &[f32], g: &Geom, dx: &mut [f32], bands: &Bands) {
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
fn weight_grad_bands(x: &[f32], dy: &[f32], g: &Geom, bands: &Bands) -> Vec<f32> {
    let (k, p, w_len) = (g.k(), g.p(), g.o * g.k());
    let band_px = bands.rows * g.ow;
    x.par_chunks(g.in_len())
        .zip(dy.par_chunks(g.o * p))
        .fold(
            // SAFETY: `col` is written by `im2col_rows` (every element of the band's rows)
            // before the GEMM reads it.
            || (vec![0f32; w_len], unsafe { uninit_f32(k * band_px) }),
            |(mut dw, mut col), (xi, dyi)| {
                for b in 0..bands.per_image {
                    let (rows, p0, bp) = bands.span(b, g);
                    im2col_rows(xi, g, &mut col, bp, rows);
                    let lhs = Mat::rows(&dyi[p0..], p);
                    // The band's unfold transposed (bp × K): element (q, k) at col[k·bp + q].
                    let rhs = Mat::transposed(&col[..k * bp], bp);
                    matmul((g.o, k, bp), &mut dw, true, lhs, rhs, Parallelism::None);
                }
                (dw, col)
            },
        )
        .map(|(dw, _)| dw)
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(|| vec![0f32; w_len])
}

/// Adds the weight gradient of images `[i0, i0 + nb)` into `dw`: `dY (O × nb·P) · unfold(X)ᵀ`.
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
pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
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
        groups
            .into_par_iter()
            .fold(
                || (vec![0f32; w_len], Scratch::new(&plan, g)),
                |(mut dw, mut sc), grp| {
                    weight_grad_group(&mut dw, x, dy, grp, g, &mut sc, plan.par);
                    (dw, sc)
                },
            )
            .map(|(dw, _)| dw)
            .reduce_with(|mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            })
            .unwrap_or_else(|| vec![0f32; w_len])
    } else {
        let mut dw = vec![0f32; w_len];
        let mut sc = Scratch::new(&plan, g);
        for grp in groups {
            weight_grad_group(&mut dw, x, dy, grp, g, &mut sc, plan.par);
        }
        dw
    }
}

/// The forward convolution; its backward calls [`Conv2dInputGrad`] and [`Conv2dWeightGrad`].
struct Conv2dOp {
    stride: usize,
    padding: (usize, usize),
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "candle-face-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let y = forward(x, w, &g);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        conv_grads(x, w, grad, self.stride, self.padding)
    }
}

/// The gradients of a convolution of `x` by `w` given the gradient of its output: `dX` (when
/// `x` takes part in autograd) and `dW` (when `w` does), as two custom ops.
pub(super) fn conv_grads(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    stride: usize,
    padding: (usize, usize),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    let dx = x
        .track_op()
        .then(|| {
            let op = Conv2dInputGrad {
                stride,
                padding,
                h,
                w: wd,
            };
            grad.apply_op2_no_bwd(w, &op)
        })
        .transpose()?;
    let dw = w
        .track_op()
        .then(|| {
            let op = Conv2dWeightGrad {
                stride,
                padding,
                kh,
                kw,
            };
            x.apply_op2_no_bwd(&grad, &op)
        })
        .transpose()?;
    Ok((dx, dw))
}

/// Input gradient of [`Conv2dOp`]: `(dY, W) → dX`.
struct Conv2dInputGrad {
    stride: usize,
    padding: (usize, usize),
    h: usize,
    w: usize,
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "candle-face-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, oh, ow) = l1.shape().dims4()?;
        let (_, c, _, _) = l2.shape().dims4()?;
        let g = Geom::new(
            &[n, c, self.h, self.w],
            l2.dims(),
            self.stride,
            self.padding,
        )?;
        if (g.o, g.oh, g.ow) != (o, oh, ow) {
            candle_core::bail!(
                "{}: gradient shape {:?} does not fit",
                self.name(),
                l1.dims()
            )
        }
        let dy = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let dx = input_grad(dy, w, &g);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, self.h, self.w))))
    }
}

/// Weight gradient of [`Conv2dOp`]: `(X, dY) → dW`.
struct Conv2dWeightGrad {
    stride: usize,
    padding: (usize, usize),
    kh: usize,
    kw: usize,
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "candle-face-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, _, _) = l1.shape().dims4()?;
        let (n2, o, oh, ow) = l2.shape().dims4()?;
        let g = Geom::new(
            l1.dims(),
            &[o, c, self.kh, self.kw],
            self.stride,
            self.padding,
        )?;
        if (g.n, g.oh, g.ow) != (n2, oh, ow) {
            candle_core::bail!(
                "{}: gradient shape {:?} does not fit",
                self.name(),
                l2.dims()
            )
        }
        let x = f32_data(s1, l1, self.name())?;
        let dy = f32_data(s2, l2, self.name())?;
        let dw = weight_grad(x, dy, &g);
        Ok((CpuStorage::F32(dw), Shape::from((o, c, self.kh, self.kw))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// Brute-force f64 convolution: the independent reference.
    fn conv_ref(
        x: &[f64],
        xd: [usize; 4],
        w: &[f64],
        wd: [usize; 4],
        s: usize,
        pad: (usize, usize),
    ) -> Vec<f64> {
        let [n, c, h, wi] = xd;
        let [o, _, kh, kw] = wd;
        let oh = (h + 2 * pad.0 - kh) / s + 1;
        let ow = (wi + 2 * pad.1 - kw) / s + 1;
        let mut y = vec![0f64; n * o * oh * ow];
        for b in 0..n {
            for oc in 0..o {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = 0f64;
                        for ic in 0..c {
                            for ki in 0..kh {
                                for kj in 0..kw {
                                    let ih = (i * s + ki) as isize - pad.0 as isize;
                                    let iw = (j * s + kj) as isize - pad.1 as isize;
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= wi as isize {
                                        continue;
                                    }
                                    let xv = x[((b * c + ic) * h + ih as usize) * wi + iw as usize];
                                    acc += xv * w[((oc * c + ic) * kh + ki) * kw + kj];
                                }
                            }
                        }
                        y[((b * o + oc) * oh + i) * ow + j] = acc;
                    }
                }
            }
        }
        y
    }

    fn to_f64(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * scale,
                "{what}[{i}]: got {g}, want {w} (scale {scale})"
            );
        }
    }

    /// Shapes: (x dims, w dims, stride, padding).
    /// x dims, w dims, stride, (pad_h, pad_w).
    type Case = ([usize; 4], [usize; 4], usize, (usize, usize));

    const CASES: &[Case] = &[
        ([2, 3, 8, 8], [4, 3, 3, 3], 1, (1, 1)),
        ([2, 3, 9, 7], [5, 3, 3, 3], 2, (1, 1)),
        ([3, 4, 6, 6], [6, 4, 1, 1], 1, (0, 0)),
        ([2, 4, 7, 7], [3, 4, 1, 1], 2, (0, 0)),
        ([2, 3, 5, 9], [4, 3, 1, 7], 1, (0, 3)),
        ([2, 3, 9, 5], [4, 3, 7, 1], 1, (3, 0)),
        ([1, 2, 11, 10], [3, 2, 3, 3], 2, (0, 0)),
        ([1, 3, 6, 6], [2, 3, 3, 3], 1, (2, 2)),
        ([5, 2, 4, 4], [3, 2, 2, 2], 2, (0, 1)),
        // Small outputs: several images per GEMM, the last group partial.
        ([7, 3, 3, 3], [4, 3, 1, 1], 1, (0, 0)),
        ([7, 2, 5, 5], [3, 2, 3, 3], 2, (1, 1)),
    ];

    fn inputs(xd: [usize; 4], wd: [usize; 4]) -> (Tensor, Tensor) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., &xd, &dev).unwrap();
        let w = Tensor::randn(0f32, 1., &wd, &dev).unwrap();
        (x, w)
    }

    #[test]
    fn forward_matches_brute_force_and_candle() {
        for &(xd, wd, s, pad) in CASES {
            let (x, w) = inputs(xd, wd);
            let y = conv2d(&x, &w, s, pad).unwrap();
            let want = conv_ref(&to_f64(&x), xd, &to_f64(&w), wd, s, pad);
            assert_close(
                &to_f64(&y),
                &want,
                1e-5,
                &format!("fwd {xd:?} {wd:?} s{s} p{pad:?}"),
            );
            // candle's built-in (symmetric padding via pad_with_zeros).
            let xp = x
                .pad_with_zeros(2, pad.0, pad.0)
                .unwrap()
                .pad_with_zeros(3, pad.1, pad.1)
                .unwrap();
            let yc = xp.conv2d(&w, 0, s, 1, 1).unwrap();
            assert_eq!(y.dims(), yc.dims());
            assert_close(&to_f64(&y), &to_f64(&yc), 1e-4, "fwd vs candle");
        }
    }

    #[test]
    fn forward_works_for_batch_smaller_and_larger_than_threads() {
        // Batch 1 takes the in-GEMM parallel path, batch 7 the across-batch path.
        for n in [1, 7] {
            let xd = [n, 3, 10, 10];
            let wd = [8, 3, 3, 3];
            let (x, w) = inputs(xd, wd);
            let y = conv2d(&x, &w, 1, (1, 1)).unwrap();
            let want = conv_ref(&to_f64(&x), xd, &to_f64(&w), wd, 1, (1, 1));
            assert_close(&to_f64(&y), &want, 1e-5, "fwd batch");
        }
    }

    /// An epilogue that depends on the channel and the pixel position within its block, so a
    /// band or channel block handed the wrong offsets shows: `v·(1 + ch) + 0.5·ch`.
    fn channel_epilogue(y: &mut [f32], s: usize) {
        for (ch, plane) in y.chunks_exact_mut(s).enumerate() {
            plane
                .iter_mut()
                .for_each(|v| *v = *v * (1 + ch) as f32 + 0.5 * ch as f32);
        }
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn f64s(a: &[f32]) -> Vec<f64> {
        a.iter().map(|&v| v as f64).collect()
    }

    fn channel_epilogue_ref(y: &mut [f64], o: usize, p: usize) {
        for (i, v) in y.iter_mut().enumerate() {
            let ch = (i / p) % o;
            *v = *v * (1 + ch) as f64 + 0.5 * ch as f64;
        }
    }

    #[test]
    fn banded_and_channel_split_forward_match_brute_force() {
        // The batch-1 latency paths, forced with explicit cuts so they run whatever the
        // machine's thread count; uneven last band and last channel block included.
        let cases: &[Case] = &[
            ([1, 3, 20, 18], [5, 3, 3, 3], 1, (1, 2)),
            ([2, 4, 23, 17], [7, 4, 3, 3], 2, (0, 0)),
            ([1, 3, 9, 13], [6, 3, 1, 7], 1, (0, 3)),
            ([2, 6, 3, 3], [9, 6, 1, 1], 1, (0, 0)),
        ];
        let epilogue: &(dyn Fn(&mut [f32], usize) + Sync) = &channel_epilogue;
        for &(xd, wd, s, pad) in cases {
            let (x, w) = inputs(xd, wd);
            let g = Geom::new(&xd, &wd, s, pad).unwrap();
            let (xv, wv) = (flat(&x), flat(&w));
            let plain = conv_ref(&to_f64(&x), xd, &to_f64(&w), wd, s, pad);
            let mut with_epi = plain.clone();
            channel_epilogue_ref(&mut with_epi, g.o, g.p());
            let what = format!("{xd:?} {wd:?} s{s} p{pad:?}");
            for rows in 1..=g.oh.min(4) {
                let bands = Bands {
                    rows,
                    per_image: g.oh.div_ceil(rows),
                };
                for (epi, want) in [(None, &plain), (Some(epilogue), &with_epi)] {
                    let mut y = vec![f32::NAN; g.n * g.o * g.p()];
                    forward_bands(&xv, &wv, &g, &mut y, &bands, &epi);
                    assert_close(
                        &f64s(&y),
                        want,
                        1e-5,
                        &format!("bands of {rows} rows {what}"),
                    );
                }
            }
            for rows in [1, 2, g.o - 1] {
                for (epi, want) in [(None, &plain), (Some(epilogue), &with_epi)] {
                    let mut y = vec![f32::NAN; g.n * g.o * g.p()];
                    forward_channels(&xv, &wv, &g, &mut y, rows, &epi);
                    assert_close(&f64s(&y), want, 1e-5, &format!("{rows} channels {what}"));
                }
            }
        }
    }

    #[test]
    fn groups_keep_the_threads_evenly_loaded() {
        // InceptionResnetV1's 8×8 layers at batch 32 on 2 threads: 3 per group would load one
        // thread with 18 images, 4 gives 16 each.
        assert_eq!(balanced_group(32, 2, 3, 16), 4);
        // compact64's 4×4 layer at batch 64: 12 → 16 (8 and 16 balance equally; larger wins).
        assert_eq!(balanced_group(64, 2, 12, 32), 16);
        // Already balanced sizes stay; one thread takes whatever the window allows.
        assert_eq!(balanced_group(32, 2, 16, 16), 16);
        assert_eq!(balanced_group(7, 1, 3, 7), 3);
        // Against an explicit search of the window: list the groups, give the busiest thread
        // the first ceil(groups / threads) of them, keep the least loaded size, then the
        // closest to the target, then the larger.
        for n in 1..40usize {
            for nt in 1..5 {
                let per_thread = n.div_ceil(nt);
                for target in 1..=per_thread {
                    let (lo, hi) = ((target / 2).max(1), (2 * target).min(per_thread));
                    let mut best: Option<(usize, usize)> = None;
                    for nb in lo..=hi.max(lo) {
                        let groups: Vec<usize> =
                            (0..n).step_by(nb).map(|i| nb.min(n - i)).collect();
                        let load: usize = groups.iter().take(groups.len().div_ceil(nt)).sum();
                        let better = match best {
                            None => true,
                            Some((b, bl)) => {
                                (load, nb.abs_diff(target)) < (bl, b.abs_diff(target))
                                    || (load == bl && nb.abs_diff(target) == b.abs_diff(target))
                            }
                        };
                        if better {
                            best = Some((nb, load));
                        }
                    }
                    let want = best.unwrap().0;
                    assert_eq!(
                        balanced_group(n, nt, target, per_thread),
                        want,
                        "n {n} threads {nt} target {target}"
                    );
                }
            }
        }
    }

    #[test]
    fn banded_gradients_match_the_whole_image_gradients() {
        // The memory-bound path (full batches of few-channel, large layers), forced with
        // explicit bands; the whole-image gradients are checked against candle and finite
        // differences below.
        let cases: &[Case] = &[
            ([3, 3, 12, 11], [4, 3, 3, 3], 1, (1, 1)),
            ([2, 2, 13, 9], [3, 2, 3, 3], 2, (0, 1)),
            ([3, 2, 7, 12], [5, 2, 1, 7], 1, (0, 3)),
        ];
        for &(xd, wd, s, pad) in cases {
            let (x, w) = inputs(xd, wd);
            let g = Geom::new(&xd, &wd, s, pad).unwrap();
            assert!(
                Bands::for_cache(&g).is_none(),
                "small enough for the plain path"
            );
            let dy = Tensor::randn(0f32, 1., (g.n, g.o, g.oh, g.ow), &Device::Cpu).unwrap();
            let (xv, wv, dyv) = (flat(&x), flat(&w), flat(&dy));
            let want_dx = f64s(&input_grad(&dyv, &wv, &g));
            let want_dw = f64s(&weight_grad(&xv, &dyv, &g));
            for rows in 1..=g.oh.min(3) {
                let bands = Bands {
                    rows,
                    per_image: g.oh.div_ceil(rows),
                };
                let what = format!("bands of {rows} rows {xd:?} {wd:?} s{s} p{pad:?}");
                let mut dx = vec![0f32; g.n * g.in_len()];
                input_grad_bands(&dyv, &wv, &g, &mut dx, &bands);
                assert_close(&f64s(&dx), &want_dx, 1e-5, &format!("dx, {what}"));
                let dw = weight_grad_bands(&xv, &dyv, &g, &bands);
                assert_close(&f64s(&dw), &want_dw, 1e-5, &format!("dw, {what}"));
            }
        }
    }

    #[test]
    fn gradients_match_candle_autograd() {
        for &(xd, wd, s, pad) in CASES {
            // candle 0.11's own conv2d backward returns an input gradient of the wrong shape
            // when the strided windows leave input rows/columns unread (e.g. 10 wide, k 3,
            // stride 2): compare only where candle is right; finite differences cover the rest.
            if (xd[2] + 2 * pad.0 - wd[2]) % s != 0 || (xd[3] + 2 * pad.1 - wd[3]) % s != 0 {
                continue;
            }
            let (x0, w0) = inputs(xd, wd);
            let (x, w) = (
                Var::from_tensor(&x0).unwrap(),
                Var::from_tensor(&w0).unwrap(),
            );
            let y = conv2d(&x, &w, s, pad).unwrap();
            let r = Tensor::randn(0f32, 1., y.dims(), &Device::Cpu).unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let xp = x
                .pad_with_zeros(2, pad.0, pad.0)
                .unwrap()
                .pad_with_zeros(3, pad.1, pad.1)
                .unwrap();
            let yc = xp.conv2d(&w, 0, s, 1, 1).unwrap();
            let gc = (yc * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let what = format!("{xd:?} {wd:?} s{s} p{pad:?}");
            for v in [&x, &w] {
                let got = to_f64(g.get(v).unwrap());
                let want = to_f64(gc.get(v).unwrap());
                assert_close(&got, &want, 1e-4, &format!("grad vs candle {what}"));
            }
        }
    }

    /// Central finite differences of `L = Σ conv_ref(x, w) · r` (f64 brute force), against the
    /// op's analytic gradients.
    #[test]
    fn gradients_match_finite_differences() {
        for &(xd, wd, s, pad) in CASES {
            let (x0, w0) = inputs(xd, wd);
            let (x, w) = (
                Var::from_tensor(&x0).unwrap(),
                Var::from_tensor(&w0).unwrap(),
            );
            let y = conv2d(&x, &w, s, pad).unwrap();
            let r = Tensor::randn(0f32, 1., y.dims(), &Device::Cpu).unwrap();
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let (xv, wv, rv) = (to_f64(&x0), to_f64(&w0), to_f64(&r));
            let loss = |xv: &[f64], wv: &[f64]| -> f64 {
                conv_ref(xv, xd, wv, wd, s, pad)
                    .iter()
                    .zip(&rv)
                    .map(|(a, b)| a * b)
                    .sum()
            };
            let eps = 1e-3;
            let fd = |v: &[f64], is_x: bool| -> Vec<f64> {
                (0..v.len())
                    .map(|i| {
                        let (mut p, mut m) = (v.to_vec(), v.to_vec());
                        p[i] += eps;
                        m[i] -= eps;
                        let (lp, lm) = if is_x {
                            (loss(&p, &wv), loss(&m, &wv))
                        } else {
                            (loss(&xv, &p), loss(&xv, &m))
                        };
                        (lp - lm) / (2. * eps)
                    })
                    .collect()
            };
            let what = format!("{xd:?} {wd:?} s{s} p{pad:?}");
            assert_close(
                &to_f64(g.get(&x).unwrap()),
                &fd(&xv, true),
                1e-4,
                &format!("dx fd {what}"),
            );
            assert_close(
                &to_f64(g.get(&w).unwrap()),
                &fd(&wv, false),
                1e-4,
                &format!("dw fd {what}"),
            );
        }
    }

    #[test]
    fn input_gradient_skipped_for_plain_tensors() {
        let (x, w0) = inputs([2, 3, 6, 6], [4, 3, 3, 3]);
        let w = Var::from_tensor(&w0).unwrap();
        let y = conv2d(&x, &w, 1, (1, 1)).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        // dW of Σy is Σ over images and positions of the input patch: check one entry by hand.
        let xv = to_f64(&x);
        let mut want = 0f64;
        for b in 0..2 {
            for i in 0..6 {
                for j in 0..6 {
                    // kernel entry (o=0, c=1, ki=0, kj=2) reads x[b, 1, i-1, j+1]
                    if i >= 1 && j + 1 < 6 {
                        want += xv[((b * 3 + 1) * 6 + i - 1) * 6 + j + 1];
                    }
                }
            }
        }
        let dw = g
            .get(&w)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = dw[11] as f64; // (o=0, c=1, ki=0, kj=2) in (4, 3, 3, 3)
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.),
            "{got} vs {want}"
        );
    }

    /// The weight gradient's unfolded rows are padded to an odd number of 64-byte lines, never
    /// shorter than the row; the gradient tests above run through the padded layout (their
    /// padding is NaN in test builds, so reading it would show).
    #[test]
    fn padded_rows_are_an_odd_number_of_lines() {
        for cols in [1, 15, 16, 17, 64, 192, 256, 289, 1024, 4096, 6241] {
            let ld = padded_ld(cols);
            assert!(ld >= cols && ld < cols + 32, "{cols} → {ld}");
            assert!(
                ld.is_multiple_of(16) && !(ld / 16).is_multiple_of(2),
                "{cols} → {ld}"
            );
        }
        assert_eq!(padded_ld(4096), 4112);
        assert_eq!(padded_ld(289), 304);
    }

    #[test]
    fn rejects_bad_shapes() {
        let (x, w) = inputs([1, 3, 4, 4], [2, 2, 3, 3]);
        assert!(conv2d(&x, &w, 1, (1, 1)).is_err());
        let (x, w) = inputs([1, 3, 2, 2], [2, 3, 5, 5]);
        assert!(conv2d(&x, &w, 1, (0, 0)).is_err());
        let (x, w) = inputs([1, 3, 4, 4], [2, 3, 3, 3]);
        assert!(conv2d(&x, &w, 0, (1, 1)).is_err());
        assert!(conv2d(
            &x.sum_keepdim(D::Minus1).unwrap().squeeze(3).unwrap(),
            &w,
            1,
            (1, 1)
        )
        .is_err());
    }
}
