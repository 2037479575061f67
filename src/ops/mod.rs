//! Fast CPU kernels for the layers candle-face trains and runs, as candle custom ops with their
//! own backward passes.
//!
//! candle 0.11's built-in CPU convolution is slow, its input gradient goes through a direct-loop
//! `conv_transpose2d`, and its `max_pool2d` backward is wrong (a unique maximum receives 1/4 of
//! its gradient). The ops here follow the classic designs:
//! - [`conv2d`]: im2col + GEMM convolution (Chellapilla et al., 2006, "High Performance
//!   Convolutional Neural Networks for Document Processing"), both gradients as GEMM + col2im;
//! - [`max_pool2d`] / [`relu_max_pool2d`]: max pooling with PyTorch's gradient rule (the whole
//!   gradient goes to the first maximum of each window);
//! - [`batch_norm_train`]: training-mode batch normalization (Ioffe & Szegedy, 2015) in two fused
//!   passes with the closed-form backward;
//! - [`conv_bn_train`]: the three above as one training node (convolution, BatchNorm, ReLU,
//!   optional pool), so the intermediate activations never enter candle's autograd graph;
//! - [`conv_affine`], [`conv_bias_scaled`], [`conv_bias_prelu`]: convolutions whose folded
//!   BatchNorm, scaled bias or bias and PReLU run on each output block right after its GEMM;
//! - [`conv_affine_add_relu`]: [`conv_affine`] with a residual added before the ReLU, one op at
//!   inference (the second half of a ResNet unit).
//!
//! Every op takes and returns ordinary [`candle_core::Tensor`]s and plugs into candle's autograd.
//! The fast paths run on the CPU in f32; other devices and dtypes fall back to candle's
//! built-in operations (with their limitations) so the same model code runs everywhere.
//!
//! # Threads
//!
//! The ops spread their work over the rayon pool they run in (`RAYON_NUM_THREADS`;
//! [`crate::pin_thread_count`] sets it to the physical core count when it is unset, as the
//! `candle-face` binary does). The element-wise passes (BatchNorm, pooling, ReLU) go plane by
//! plane or in fixed chunks (a small pooling input stays on the calling thread); the statistics
//! channel by channel. A convolution's forward pass takes the first of these that applies
//! (`conv/plan.rs`):
//! 1. **Bands of output rows**, when the image is large (not for 1×1 stride-1 kernels, which
//!    need no im2col): each band is unfolded and multiplied on its own, so its im2col matrix
//!    (about 96 K floats) is read from L2 cache rather than memory.
//!    With fewer images than threads (batch-1 inference) the bands also spread one image over
//!    the threads. With a full batch, only where the GEMM waits on memory rather than arithmetic
//!    (at most 64 output channels and an unfolded image over 4 MB, such as InceptionResnetV1's
//!    stem); both gradients of those layers then run band by band too.
//! 2. **Groups across the batch**, when there are at least as many groups as threads: each
//!    thread takes whole groups of images, each GEMM on one thread. Images whose output has fewer
//!    than about 192 pixels (late layers) are gathered side by side into one wider GEMM so the
//!    micro-kernel's panels fill; the group size is chosen so the threads get equal shares.
//! 3. **Inside the GEMM**, for products from 64 MFLOP: the `gemm` crate splits each one over
//!    the threads (`CANDLE_FACE_PAR_MIN_FLOPS` changes the threshold for other machines; below
//!    it, fork and join cost more than they save).
//! 4. **Output-channel blocks**, one image at a time, from 4 MFLOP per image (late layers at
//!    batch 1, 8×8 or 3×3 outputs): each thread multiplies its share of the weight rows.
//!
//! Otherwise the groups run one after the other on the calling thread. The gradients take bands
//! for the memory-bound layers only, else groups across the batch or threads inside the GEMM.
//!
//! Before all of these, the inference ops with a per-channel affine epilogue ([`conv_affine`],
//! [`conv_bias_scaled`], [`conv_affine_add_relu`]) take a **direct convolution** without im2col
//! on CPUs with AVX-512F (`conv/direct`), for 3×3 kernels with stride 1 and padding 1 and for
//! square kernels with stride 2 and no padding, from 8 output channels and 8 output positions
//! in the batch: the batch is copied once into zero-padded flat planes (four phase planes per
//! channel for stride 2), and the work is cut into units of up to 8 tiles of 48 output
//! positions × blocks of 8 output channels (fewer channels per unit when there are too few
//! units for about four per thread, as at batch 1), spread over the threads. The epilogue
//! (affine map, residual, ReLU) runs on the registers before the store. From 16 images on the
//! batch runs 16 images to a vector instead (`conv/direct/lanes`: every lane an output, none
//! spent on the flat planes' padding; any square kernel with stride 1 or 2), the affine and
//! ReLU in registers, the residual while copying the output back to (N, C, H, W).
//! `CANDLE_FACE_DIRECT_CONV=0` sends them down the paths above instead, `=flat` keeps batches
//! in the flat layout.
//!
//! # Memory
//!
//! The GEMMs are the `gemm` crate's (the one candle uses), with its AVX-512 kernels enabled
//! (picked at run time; AVX2 or scalar on other CPUs); it packs its operands into panels itself.
//! The weight gradient reads the unfolded input transposed, so its rows are laid out an odd
//! number of 64-byte cache lines apart: at power-of-two widths the packing's reads would all fall
//! into a few L1 sets. The input gradient zeroes each group's slice on the thread that folds
//! into it, right before col2im. Buffers that are overwritten completely before they are read
//! (GEMM outputs, im2col matrices, element-wise outputs) are allocated without zero-filling;
//! the fused training and inference ops keep their intermediates inside the op, and epilogues
//! run on each output block while it is still in cache.

mod batchnorm;
mod conv;
mod conv_bn;
mod conv_epilogue;
mod conv_residual;
mod kernel;
mod maxpool;
#[cfg(test)]
mod test_util;

pub use batchnorm::{batch_norm_train, update_running_stats};
pub use conv::conv2d;
pub use conv_bn::conv_bn_train;
pub use conv_epilogue::{conv_affine, conv_bias_prelu, conv_bias_scaled};
pub use conv_residual::conv_affine_add_relu;
pub use maxpool::{max_pool2d, relu, relu_max_pool2d};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// What follows the normalization in [`conv_bn_train`] and [`conv_affine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Nothing: the normalized values themselves.
    Identity,
    /// ReLU (NaN kept, as PyTorch).
    Relu,
    /// ReLU then a 2×2 max-pool with stride 2 (floor mode), PyTorch's gradient rule
    /// ([`relu_max_pool2d`]). Training only.
    ReluMaxPool2,
}

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
/// columns, element-wise outputs): zero-filling them would be a pass over memory for nothing, a
/// noticeable share of a training step. candle's CPU backend allocates its outputs the same way.
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
