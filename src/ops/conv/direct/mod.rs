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
//!
//! From 16 images on, the batch runs in [`lanes`] instead (16 images in the lanes of each
//! vector, every lane an output, any square kernel with stride 1 or 2); images past the last
//! full group of 16 take the flat layout when it has them, else a partial group.

#[cfg(target_arch = "x86_64")]
mod kernel;
#[cfg(target_arch = "x86_64")]
mod lanes;
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

/// The flat layout [`forward`] runs `g` in, if it takes `g`.
fn layout(g: &Geom) -> Option<Layout> {
    (g.n * g.oh * g.ow >= MIN_POSITIONS).then(|| Layout::new(g))?
}

/// Which direct kernels may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// None: every convolution takes the im2col path.
    Off,
    /// The flat layout only.
    Flat,
    /// The flat layout, and lanes from 16 images on.
    All,
}

/// The direct kernels this process may run: none without AVX-512F; `CANDLE_FACE_DIRECT_CONV=0`
/// sends every convolution down the im2col path and `=flat` keeps batches off the lanes
/// layout (both for comparisons).
fn mode() -> Mode {
    static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| {
        if !has_avx512() {
            return Mode::Off;
        }
        match std::env::var("CANDLE_FACE_DIRECT_CONV").as_deref() {
            Ok("0") => Mode::Off,
            Ok("flat") => Mode::Flat,
            _ => Mode::All,
        }
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
/// (N, O, oh, ow), or `None` where the direct kernels do not take this convolution (kernel,
/// stride or padding, fewer than 8 output channels, no AVX-512F) and the caller takes the
/// im2col path.
pub(in crate::ops) fn forward(x: &[f32], w: &[f32], g: &Geom, ep: &Affine) -> Option<Vec<f32>> {
    let mode = mode();
    if mode == Mode::Off || g.o < MIN_CHANNELS || g.n * g.c * g.h * g.w == 0 {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // Lanes take any square kernel, but only the flat layout's shapes are measured.
        let shape = Layout::new(g)?;
        if mode == Mode::All && g.n >= lanes::L {
            if let Some(l) = lanes::Lanes::new(g) {
                return Some(batched(x, w, g, &l, ep));
            }
        }
        let l = (g.n * g.oh * g.ow >= MIN_POSITIONS).then_some(shape)?;
        Some(run::forward(x, w, g, &l, ep))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, ep, layout(g));
        None
    }
}

/// The lanes path on the whole batch, whatever its size and kernel (for the tests).
#[cfg(all(test, target_arch = "x86_64"))]
fn lanes_only(x: &[f32], w: &[f32], g: &Geom, ep: &Affine) -> Option<Vec<f32>> {
    let l = lanes::Lanes::new(g)?;
    // SAFETY: forward_into writes every output.
    let mut y = unsafe { crate::ops::uninit_f32(g.n * g.o * g.oh * g.ow) };
    lanes::forward_into(x, w, &l, ep, &mut y);
    Some(y)
}

/// A batch of 16 images or more: the full groups of 16 in lanes, the rest in the flat layout
/// when it takes them (else in a partial group of lanes).
#[cfg(target_arch = "x86_64")]
fn batched(x: &[f32], w: &[f32], g: &Geom, all: &lanes::Lanes, ep: &Affine) -> Vec<f32> {
    let full = g.n / lanes::L * lanes::L;
    let rest = Geom {
        n: g.n - full,
        ..*g
    };
    let out_img = g.o * g.oh * g.ow;
    // SAFETY: the lanes and flat paths below write every image's outputs.
    let mut y = unsafe { crate::ops::uninit_f32(g.n * out_img) };
    let flat = (rest.n > 0).then(|| layout(&rest)).flatten();
    let Some(flat) = flat else {
        lanes::forward_into(x, w, all, ep, &mut y);
        return y;
    };
    let in_img = g.c * g.h * g.w;
    let (res_head, res_rest) = match ep.residual.map(|r| r.split_at(full * out_img)) {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let part = |residual| Affine { residual, ..*ep };
    let l = all.first(full);
    let (yh, yr) = y.split_at_mut(full * out_img);
    lanes::forward_into(&x[..full * in_img], w, &l, &part(res_head), yh);
    let tail = run::forward(&x[full * in_img..], w, &rest, &flat, &part(res_rest));
    yr.copy_from_slice(&tail);
    y
}
