//! Fast CPU kernels for the layers candle-face trains, as candle custom ops with their own
//! backward passes (issue #9, "faster than PyTorch on the CPU").
//!
//! candle 0.11's built-in CPU convolution is slow, its input gradient goes through a direct-loop
//! `conv_transpose2d`, and its `max_pool2d` backward is wrong (a unique maximum receives 1/4 of
//! its gradient; see `../shared/CANDLE-NOTES.md`). The ops here follow the classic designs:
//! - [`conv2d`]: im2col + GEMM convolution (Chellapilla et al., 2006, "High Performance
//!   Convolutional Neural Networks for Document Processing"), both gradients as GEMM + col2im;
//! - [`max_pool2d`] / [`relu_max_pool2d`]: max pooling with PyTorch's gradient rule (the whole
//!   gradient goes to the first maximum of each window);
//! - [`batch_norm_train`]: training-mode batch normalization (Ioffe & Szegedy, 2015) in two fused
//!   passes with the closed-form backward;
//! - [`conv_bn_train`] / [`conv_affine`]: the three above as one node (convolution, BatchNorm,
//!   ReLU, optional pool), so the intermediate activations never enter candle's autograd graph.
//!
//! Every op takes and returns ordinary [`candle_core::Tensor`]s and plugs into candle's autograd.
//! The fast paths run on the CPU in f32; other devices and dtypes fall back to candle's
//! built-in operations (with their limitations) so the same model code runs everywhere.

mod batchnorm;
mod conv;
mod conv_bn;
mod maxpool;

pub use batchnorm::{batch_norm_train, update_running_stats};
pub use conv::conv2d;
pub use conv_bn::{conv_affine, conv_bias_prelu, conv_bias_scaled, conv_bn_train, Activation};
pub use maxpool::{max_pool2d, relu, relu_max_pool2d};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// The contiguous f32 data of a CPU storage viewed through `layout`.
pub(crate) fn f32_data<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        other => candle_core::bail!("{op}: expects f32 data, got {:?}", other.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
}

/// A `Vec<f32>` of length `n` whose contents are unspecified, for buffers that are overwritten
/// completely before anything reads them (GEMM outputs written with `read_dst = false`, im2col
/// columns, element-wise outputs). Zero-filling such buffers was 7–11% of a training step or an
/// InceptionResnetV1 forward in `perf`. candle's CPU backend allocates its outputs the same way.
///
/// In test builds the vector is filled with NaN instead, so an element that is read before
/// being written shows up in every value the ops' tests compare against their references.
///
/// # Safety
/// The caller writes every element before reading it (or handing the vector out).
#[cfg(test)]
unsafe fn uninit_f32(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// See the test-build version above.
#[cfg(not(test))]
#[allow(clippy::uninit_vec)]
unsafe fn uninit_f32(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: capacity is n; f32 has no invalid bit patterns and the caller initialises every
    // element before it is read.
    unsafe { v.set_len(n) };
    v
}

/// Whether `t` can take the custom CPU f32 fast path.
pub(crate) fn is_cpu_f32(t: &candle_core::Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// Number of threads the ops spread work over: the size of the rayon pool they run in.
///
/// Not `candle_core::utils::get_num_threads()`: without `RAYON_NUM_THREADS` that re-reads
/// `/proc/cpuinfo` on every call (about 1200 times per MTCNN detection).
fn num_threads() -> usize {
    rayon::current_num_threads().max(1)
}
