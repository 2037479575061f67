//! The second half of a residual unit as one inference op: convolution, per-channel affine
//! map, the shortcut added and ReLU, with no intermediate tensor (dlib's
//! `relu(add_prev(affine(con(x)), shortcut))` where the two have the same shape).

use candle_core::{CpuStorage, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::{self, Geom};
use super::kernel::{Input, Kernel3, Op3, Output};
use super::maxpool::relu1;
use super::{conv_affine, is_cpu_f32, relu, Activation};

/// `relu(conv(x, w)·scale + shift + residual)`, with `ss` (2, O) holding `scale` then `shift`
/// (as [`conv_affine`]) and `residual` of the output's shape.
///
/// Without autograd on the CPU in f32 this is one op: the sum and the ReLU run in the
/// convolution's epilogue (in registers on the direct kernel, or right after the GEMM). When
/// any input takes part in autograd, or off the CPU, it is [`conv_affine`], `+` and [`relu`],
/// which give the same values and have gradients.
pub fn conv_affine_add_relu(
    x: &Tensor,
    w: &Tensor,
    ss: &Tensor,
    residual: &Tensor,
    stride: usize,
    padding: (usize, usize),
) -> Result<Tensor> {
    let g = Geom::new(x.dims(), w.dims(), stride, padding)?;
    if residual.dims() != [g.n, g.o, g.oh, g.ow] || ss.dims() != [2, g.o] {
        candle_core::bail!(
            "conv_affine_add_relu: output ({}, {}, {}, {}) but residual {:?}, scale and shift {:?}",
            g.n,
            g.o,
            g.oh,
            g.ow,
            residual.dims(),
            ss.dims()
        )
    }
    let inputs = [x, w, ss, residual];
    if inputs.iter().any(|t| t.track_op() || !is_cpu_f32(t)) {
        let y = conv_affine(x, w, ss, stride, padding, Activation::Identity)?;
        return relu(&(y + residual)?);
    }
    let op = ConvResidualOp {
        stride,
        padding,
        ss: ss.flatten_all()?.to_vec1()?,
    };
    x.contiguous()?
        .apply_op3_no_bwd(&w.contiguous()?, &residual.contiguous()?, &Op3(op))
}

/// `(x, w, residual) → relu(conv(x, w)·scale + shift + residual)`, `ss` the scales then the
/// shifts.
struct ConvResidualOp {
    stride: usize,
    padding: (usize, usize),
    ss: Vec<f32>,
}

impl Kernel3 for ConvResidualOp {
    fn name(&self) -> &'static str {
        "candle-face-conv-affine-add-relu"
    }

    fn cpu_fwd(&self, (x, l1): Input, (w, l2): Input, (r, _): Input) -> Output {
        let g = Geom::new(l1.dims(), l2.dims(), self.stride, self.padding)?;
        let (scale, shift) = self.ss.split_at(g.o);
        let ep = conv::Affine {
            scale,
            shift,
            residual: Some(r),
            relu: true,
        };
        let y = match conv::forward_direct(x, w, &g, &ep) {
            Some(y) => y,
            None => {
                let apply = |y: &mut [f32], s: usize| {
                    for ((plane, a), b) in y.chunks_exact_mut(s).zip(scale).zip(shift) {
                        plane.iter_mut().for_each(|v| *v = *v * a + b);
                    }
                };
                let mut y = conv::forward_with(x, w, &g, Some(&apply));
                y.par_chunks_mut(1 << 14)
                    .zip(r.par_chunks(1 << 14))
                    .for_each(|(y, r)| y.iter_mut().zip(r).for_each(|(v, r)| *v = relu1(*v + r)));
                y
            }
        };
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{close, rand, vals};
    use candle_core::Var;

    /// The fused op against `relu(conv_affine + residual)`, on the direct kernel's shapes and
    /// others (5×5 kernels take the GEMM path).
    #[test]
    fn fused_op_equals_conv_affine_plus_residual_then_relu() {
        for (xd, k, stride, pad) in [
            ([2, 8, 9, 7], 3, 1, 1),
            ([3, 5, 4, 4], 3, 1, 1),
            ([2, 4, 9, 9], 3, 2, 0),
            ([2, 4, 8, 6], 5, 1, 2),
        ] {
            let o = 12;
            let x = rand(&xd, 1);
            let w = rand(&[o, xd[1], k, k], 2);
            let ss = rand(&[2, o], 3);
            let y = conv_affine(&x, &w, &ss, stride, (pad, pad), Activation::Identity).unwrap();
            let res = rand(y.dims(), 4);
            let want = relu(&(&y + &res).unwrap()).unwrap();
            let got = conv_affine_add_relu(&x, &w, &ss, &res, stride, (pad, pad)).unwrap();
            close(
                &vals(&got),
                &vals(&want),
                1e-6,
                &format!("{xd:?} k {k}/{stride}"),
            );
            // With a variable the unfused ops run, with gradients.
            let wv = Var::from_tensor(&w).unwrap();
            let got = conv_affine_add_relu(&x, &wv, &ss, &res, stride, (pad, pad)).unwrap();
            close(&vals(&got), &vals(&want), 1e-6, "tracked");
            assert!(got
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(&wv)
                .is_some());
        }
    }

    #[test]
    fn residual_of_another_shape_is_an_error() {
        let (x, w, ss) = (
            rand(&[1, 2, 4, 4], 1),
            rand(&[3, 2, 3, 3], 2),
            rand(&[2, 3], 3),
        );
        let res = rand(&[1, 3, 4, 5], 4);
        assert!(conv_affine_add_relu(&x, &w, &ss, &res, 1, (1, 1)).is_err());
    }
}
