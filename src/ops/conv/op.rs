//! The convolution as candle custom ops: the forward op and its two gradient ops.

use candle_core::{CpuStorage, Result, Shape, Tensor};

use super::backward::{input_grad, weight_grad};
use super::forward::forward;
use super::geom::Geom;
use crate::ops::kernel::{check_grad_shape, Grads2, Input, Kernel2, Op2, Output};

/// The forward convolution; its backward calls [`Conv2dInputGrad`] and [`Conv2dWeightGrad`].
pub(super) struct Conv2dOp {
    pub(super) stride: usize,
    pub(super) padding: (usize, usize),
}

impl Kernel2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "candle-face-conv2d"
    }

    fn cpu_fwd(&self, (x, l1): Input, (w, l2): Input) -> Output {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let y = forward(x, w, &g);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Grads2 {
        conv_grads(x, w, grad, self.stride, self.padding)
    }
}

/// The gradients of a convolution of `x` by `w` given the gradient of its output: `dX` (when
/// `x` takes part in autograd) and `dW` (when `w` does), as two custom ops.
pub(in crate::ops) fn conv_grads(
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
            grad.apply_op2_no_bwd(w, &Op2(op))
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
            x.apply_op2_no_bwd(&grad, &Op2(op))
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

impl Kernel2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "candle-face-conv2d-input-grad"
    }

    fn cpu_fwd(&self, (dy, l1): Input, (w, l2): Input) -> Output {
        let (n, o, oh, ow) = l1.shape().dims4()?;
        let (_, c, _, _) = l2.shape().dims4()?;
        let g = Geom::new(
            &[n, c, self.h, self.w],
            l2.dims(),
            self.stride,
            self.padding,
        )?;
        check_grad_shape((g.o, g.oh, g.ow) == (o, oh, ow), self.name(), l1.dims())?;
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

impl Kernel2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "candle-face-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, (x, l1): Input, (dy, l2): Input) -> Output {
        let (_, c, _, _) = l1.shape().dims4()?;
        let (n2, o, oh, ow) = l2.shape().dims4()?;
        let g = Geom::new(
            l1.dims(),
            &[o, c, self.kh, self.kw],
            self.stride,
            self.padding,
        )?;
        check_grad_shape((g.n, g.oh, g.ow) == (n2, oh, ow), self.name(), l2.dims())?;
        let dw = weight_grad(x, dy, &g);
        Ok((CpuStorage::F32(dw), Shape::from((o, c, self.kh, self.kw))))
    }
}
