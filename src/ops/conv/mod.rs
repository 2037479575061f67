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
//! batch is split across threads (each GEMM single-threaded); otherwise large GEMMs themselves
//! run in parallel.
//!
//! How the work is cut over the threads is described in the [`crate::ops`] module docs. Files:
//! `geom` (sizes, im2col / col2im), `gemm` (matrix views, the GEMM call, gathering several
//! images into one matrix), `plan` (images per GEMM, threads, bands, scratch buffers),
//! `forward`, `backward` (both gradients), `op` (the candle custom ops) and `direct` (the
//! inference-only direct 3×3 kernel on AVX-512).

mod backward;
mod direct;
mod forward;
mod gemm;
mod geom;
mod op;
mod plan;
#[cfg(test)]
mod tests;

use candle_core::{Result, Tensor};

use super::is_cpu_f32;
use super::kernel::Op2;
use op::Conv2dOp;

pub(super) use backward::{input_grad_into, weight_grad};
pub(super) use direct::{forward as forward_direct, Affine};
pub(super) use forward::forward_with;
pub(super) use geom::Geom;
pub(super) use op::conv_grads;

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
        return x.apply_op2(&w, Op2(Conv2dOp { stride, padding }));
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
