//! How a convolution is cut over the threads: images per GEMM, threads across the batch or
//! inside the GEMM, output-channel blocks and bands of output rows, and the scratch buffers.

use std::ops::Range;

use gemm::Parallelism;

use super::gemm::padded_ld;
use super::geom::Geom;
use crate::ops::{num_threads, uninit_f32};

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

/// Default of [`par_min_flops`]: at batch 1, splitting smaller GEMMs costs more in the threads'
/// fork and join than it saves, so only the largest early-layer products (InceptionResnetV1's)
/// are split.
const PAR_MIN_FLOPS: usize = 64_000_000;

/// Images per group near `target` (within half to twice it, at most `per_thread`) that keep
/// the threads evenly loaded: the groups are dealt out whole, so 32 images in groups of 3 give
/// one thread 6 groups (18 images) and the other 5; groups of 4 give both 16. Among equally
/// balanced sizes the one closest to `target` wins, the larger on a tie.
pub(super) fn balanced_group(n: usize, nt: usize, target: usize, per_thread: usize) -> usize {
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
pub(super) struct Plan {
    pub(super) nb: usize,
    pub(super) across: bool,
    pub(super) par: Parallelism,
}

impl Plan {
    pub(super) fn new(g: &Geom) -> Self {
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
    pub(super) fn channel_split(&self, g: &Geom) -> Option<usize> {
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
pub(super) struct Scratch {
    pub(super) col: Vec<f32>,
    pub(super) out: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(plan: &Plan, g: &Geom) -> Self {
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

/// im2col floats one band aims for: its unfolded matrix stays in a core's L2 cache while the
/// GEMM reads it.
const BAND_COL_FLOATS: usize = 96 * 1024;

/// Fewest output pixels in a band, so the GEMM's panels still fill.
const BAND_MIN_PIXELS: usize = 256;

/// Fewest flops per band worth handing to another thread.
const BAND_MIN_FLOPS: usize = 2_000_000;

/// Fewest output pixels in a band cut only to feed another thread (smaller outputs split their
/// channels instead: [`super::forward::forward_channels`]).
const BAND_MIN_SPLIT_PIXELS: usize = 96;

/// Most output channels for which a full batch is cut into bands: each unfolded element takes
/// part in `O` multiply-adds, and below about 64 the GEMM waits on memory rather than on
/// arithmetic (InceptionResnetV1's 32- and 64-channel stem convolutions on 77×77 and 79×79
/// outputs). Wider layers run slower banded (the weights are packed again for every band).
const BAND_MAX_CHANNELS: usize = 64;

/// Fewest im2col floats per image for which a full batch is cut into bands: smaller matrices
/// stay in cache anyway, and banding them only adds work (compact64's layers).
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
pub(super) struct Bands {
    /// Output rows per band (the last band may have fewer).
    pub(super) rows: usize,
    /// Bands per image.
    pub(super) per_image: usize,
}

impl Bands {
    pub(super) fn new(g: &Geom) -> Option<Self> {
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
    pub(super) fn for_cache(g: &Geom) -> Option<Self> {
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
    pub(super) fn span(&self, b: usize, g: &Geom) -> (Range<usize>, usize, usize) {
        let rows = b * self.rows..((b + 1) * self.rows).min(g.oh);
        let (p0, bp) = (rows.start * g.ow, rows.len() * g.ow);
        (rows, p0, bp)
    }
}

/// Fewest flops of one image's convolution worth cutting by output channel over the threads.
const SPLIT_MIN_FLOPS: usize = 4_000_000;
