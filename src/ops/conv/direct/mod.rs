//! Direct convolution (no im2col) for inference with a per-channel affine epilogue, on CPUs
//! with AVX-512F (picked at run time; elsewhere the im2col path runs): 3×3 kernels with stride
//! 1 and padding 1, and square kernels with stride 2 and no padding (dlib's downsampling
//! convolutions and its 7×7 stem).
//!
//! The batch is copied once, channel by channel, into flat planes ([`layout`]). For 3×3 with
//! stride 1 the rows are `W + 1` floats long (one zero column, shared by a row's right edge and
//! the next row's left edge) and the images follow each other with one shared zero row between
//! them. Output position `(i, y, x)` is then the flat index `q = (i·(H + 1) + y)·(W + 1) + x`,
//! and tap `(ky, kx)` of every position reads the input at `q + ky·(W + 1) + kx`: one offset
//! for the whole batch. A stride-2 convolution is the sum of four stride-1 convolutions, one
//! for each phase of the input (even or odd rows × even or odd columns) with the kernel's taps
//! of that phase; each phase is a plane of its own. The kernel computes every `q` in runs of
//! 16, valid or not (the zero column and row of each image: 5% of 35×35 outputs, 44% of 3×3
//! ones), and stores only the valid lanes.
//!
//! Work is cut into units of (up to 8 tiles of 48 positions) × (blocks of 8 output channels)
//! and spread over the threads, so one image also uses every thread.

#[cfg(target_arch = "x86_64")]
mod kernel;
mod layout;
#[cfg(target_arch = "x86_64")]
mod run;
#[cfg(test)]
mod tests;

use super::geom::Geom;
use layout::Layout;

/// A per-output-channel affine map, an optional residual and an optional ReLU applied to the
/// convolution's output: `act(v·scale[o] + shift[o] + residual)`.
pub(in crate::ops) struct Affine<'a> {
    pub(in crate::ops) scale: &'a [f32],
    pub(in crate::ops) shift: &'a [f32],
    /// A tensor of the output's shape (N, O, oh, ow) added before the ReLU.
    pub(in crate::ops) residual: Option<&'a [f32]>,
    pub(in crate::ops) relu: bool,
}

/// Fewest output channels for the direct kernel: its blocks have 8, a narrower layer would
/// compute mostly discarded rows.
const MIN_CHANNELS: usize = 8;

/// Fewest output positions in the batch for the direct kernel: below, its runs of 16 are
/// mostly discarded lanes and each weight feeds a single vector, and the GEMM's matrix-vector
/// path reads the weights faster (the last 256-channel layers at batch 1, 1×1 outputs).
const MIN_POSITIONS: usize = 8;

/// The layout [`forward`] runs `g` in (on this CPU), if it runs it.
fn layout(g: &Geom) -> Option<Layout> {
    let small = g.n * g.oh * g.ow < MIN_POSITIONS;
    if small || g.o < MIN_CHANNELS || g.n * g.c * g.h * g.w == 0 || !enabled() {
        return None;
    }
    Layout::new(g)
}

/// Whether the direct kernel may run: the CPU has AVX-512F and `CANDLE_FACE_DIRECT_CONV` is
/// not `0` (which sends every convolution down the im2col path, for comparisons).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        has_avx512() && std::env::var("CANDLE_FACE_DIRECT_CONV").map_or(true, |v| v != "0")
    })
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

/// The convolution of `x` (N, C, H, W) with `w` (O, C, k, k) with the epilogue `ep` applied:
/// (N, O, oh, ow), or `None` where the direct kernel does not take this convolution (kernel,
/// stride or padding, fewer than 8 output channels, no AVX-512F) and the caller takes the
/// im2col path.
pub(in crate::ops) fn forward(x: &[f32], w: &[f32], g: &Geom, ep: &Affine) -> Option<Vec<f32>> {
    let l = layout(g)?;
    #[cfg(target_arch = "x86_64")]
    {
        Some(run::forward(x, w, g, &l, ep))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, ep, l);
        None
    }
}
