//! 2-D max pooling with any kernel and stride, and a correct gradient.
//!
//! candle 0.11.1's built-in `max_pool2d` backward scales a window's gradient by the *average* of
//! its max mask (a unique maximum in a 2×2 window gets a quarter of its gradient) and refuses
//! kernel ≠ stride (FaceNet's InceptionResnetV1 pools 3×3 with stride 2). This op follows
//! PyTorch's `F.max_pool2d` (no padding, floor mode): each output's gradient goes to the one input
//! that produced it, the first maximum in row-major window order on ties (a NaN wins, as in
//! PyTorch's CPU kernel).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Max pooling of an `(N, C, H, W)` tensor with a square `kernel` and `stride`, no padding,
/// output size `floor((H - kernel) / stride) + 1`, differentiable with the correct gradient.
///
/// On the CPU this is a custom op with its own backward. On other devices it falls back to
/// candle's built-in `max_pool2d_with_stride` (correct forward; its backward is not).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> candle_core::Result<Tensor> {
    if kernel == 0 || stride == 0 {
        candle_core::bail!("max_pool2d: kernel ({kernel}) and stride ({stride}) must be positive")
    }
    let (_, _, h, w) = x.dims4()?;
    if h < kernel || w < kernel {
        candle_core::bail!("max_pool2d: input {h}×{w} is smaller than the {kernel}×{kernel} kernel")
    }
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(MaxPool2d { kernel, stride })
    } else {
        x.max_pool2d_with_stride(kernel, stride)
    }
}

/// The forward op: `(N, C, H, W)` → `(N, C, Ho, Wo)`.
#[derive(Debug, Clone, Copy)]
struct MaxPool2d {
    kernel: usize,
    stride: usize,
}

/// The gradient op: `(input, grad_output)` → `grad_input`, routing each output gradient to
/// its window's first maximum.
#[derive(Debug, Clone, Copy)]
struct MaxPool2dGrad {
    kernel: usize,
    stride: usize,
}

/// Sizes of one pooling problem.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
    kernel: usize,
    stride: usize,
}

impl Geometry {
    fn new(layout: &Layout, kernel: usize, stride: usize) -> candle_core::Result<Self> {
        let (n, c, h, w) = layout.shape().dims4()?;
        if h < kernel || w < kernel {
            candle_core::bail!("max_pool2d: input {h}×{w} is smaller than the kernel {kernel}")
        }
        Ok(Self {
            planes: n * c,
            h,
            w,
            ho: (h - kernel) / stride + 1,
            wo: (w - kernel) / stride + 1,
            kernel,
            stride,
        })
    }

    /// Flat index (within a plane) of the first maximum of the window of output `(oh, ow)`.
    #[inline]
    fn argmax<T: WithDType>(&self, plane: &[T], oh: usize, ow: usize) -> usize {
        let (h0, w0) = (oh * self.stride, ow * self.stride);
        let mut best = h0 * self.w + w0;
        let mut max = f64::NEG_INFINITY;
        for i in h0..h0 + self.kernel {
            let row = i * self.w;
            for j in w0..w0 + self.kernel {
                let v = plane[row + j].to_f64();
                if v > max || v.is_nan() {
                    max = v;
                    best = row + j;
                }
            }
        }
        best
    }

    fn forward<T: WithDType>(&self, x: &[T]) -> Vec<T> {
        let mut out = vec![T::from_f64(0.0); self.planes * self.ho * self.wo];
        out.par_chunks_mut(self.ho * self.wo)
            .zip(x.par_chunks(self.h * self.w))
            .for_each(|(o, plane)| {
                for oh in 0..self.ho {
                    for ow in 0..self.wo {
                        o[oh * self.wo + ow] = plane[self.argmax(plane, oh, ow)];
                    }
                }
            });
        out
    }

    fn backward<T: WithDType>(&self, x: &[T], grad: &[T]) -> Vec<T> {
        let mut out = vec![T::from_f64(0.0); self.planes * self.h * self.w];
        out.par_chunks_mut(self.h * self.w)
            .zip(x.par_chunks(self.h * self.w))
            .zip(grad.par_chunks(self.ho * self.wo))
            .for_each(|((gi, plane), go)| {
                for oh in 0..self.ho {
                    for ow in 0..self.wo {
                        let k = self.argmax(plane, oh, ow);
                        gi[k] += go[oh * self.wo + ow];
                    }
                }
            });
        out
    }
}

/// The contiguous slice a layout covers, or an error when it is not contiguous.
fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "max-pool2d-exact"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(layout, self.kernel, self.stride)?;
        let (n, c, _, _) = layout.shape().dims4()?;
        let shape = Shape::from((n, c, g.ho, g.wo));
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(g.forward(contiguous(v, layout, self.name())?)),
            CpuStorage::F64(v) => CpuStorage::F64(g.forward(contiguous(v, layout, self.name())?)),
            s => candle_core::bail!("{}: unsupported dtype {:?}", self.name(), s.dtype()),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let grad = arg.contiguous()?.apply_op2_no_bwd(
            &grad_res.contiguous()?,
            &MaxPool2dGrad {
                kernel: self.kernel,
                stride: self.stride,
            },
        )?;
        Ok(Some(grad))
    }
}

impl CustomOp2 for MaxPool2dGrad {
    fn name(&self) -> &'static str {
        "max-pool2d-exact-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1, self.kernel, self.stride)?;
        let (n, c, _, _) = l1.shape().dims4()?;
        if l2.shape().dims() != [n, c, g.ho, g.wo] {
            candle_core::bail!(
                "{}: gradient shape {:?} does not match the pooled shape {:?}",
                self.name(),
                l2.shape(),
                (n, c, g.ho, g.wo)
            )
        }
        let name = self.name();
        let out = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(d)) => {
                CpuStorage::F32(g.backward(contiguous(x, l1, name)?, contiguous(d, l2, name)?))
            }
            (CpuStorage::F64(x), CpuStorage::F64(d)) => {
                CpuStorage::F64(g.backward(contiguous(x, l1, name)?, contiguous(d, l2, name)?))
            }
            (a, b) => candle_core::bail!(
                "{name}: unsupported dtypes {:?}, {:?}",
                a.dtype(),
                b.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Brute-force reference: output value and argmax by explicit loops over a Vec.
    fn reference(
        x: &[f64],
        (n, c, h, w): (usize, usize, usize, usize),
        k: usize,
        s: usize,
    ) -> Vec<f64> {
        let (ho, wo) = ((h - k) / s + 1, (w - k) / s + 1);
        let mut out = Vec::new();
        for p in 0..n * c {
            for oh in 0..ho {
                for ow in 0..wo {
                    let mut m = f64::NEG_INFINITY;
                    for i in 0..k {
                        for j in 0..k {
                            m = m.max(x[p * h * w + (oh * s + i) * w + ow * s + j]);
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    fn sample(n: usize) -> Vec<f64> {
        // Distinct values in a scrambled order (no ties), so finite differences are exact.
        (0..n)
            .map(|i| ((i * 7919) % n) as f64 * 0.01 - 1.0)
            .collect()
    }

    #[test]
    fn forward_matches_brute_force() -> candle_core::Result<()> {
        let dims = (2, 3, 9, 8);
        let data = sample(2 * 3 * 9 * 8);
        let x = Tensor::from_vec(data.clone(), dims, &Device::Cpu)?;
        for (k, s) in [(3, 2), (2, 2), (3, 1), (1, 1), (3, 3)] {
            let y = max_pool2d(&x, k, s)?;
            let want = reference(&data, dims, k, s);
            assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, want, "k={k} s={s}");
            let y32 = max_pool2d(&x.to_dtype(DType::F32)?, k, s)?;
            let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            assert_eq!(y32.flatten_all()?.to_vec1::<f32>()?, want32);
        }
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> candle_core::Result<()> {
        let dims = (2, 2, 7, 9);
        let n = 2 * 2 * 7 * 9;
        let data = sample(n);
        // A fixed weighting of the outputs makes the loss sensitive to every output.
        let (k, s) = (3, 2);
        let m = 2 * 2 * 3 * 4;
        let wts: Vec<f64> = (0..m).map(|i| 1.0 + (i % 5) as f64 * 0.3).collect();
        let wt = Tensor::from_vec(wts.clone(), (2, 2, 3, 4), &Device::Cpu)?;
        let x = Var::from_tensor(&Tensor::from_vec(data.clone(), dims, &Device::Cpu)?)?;
        let loss = (max_pool2d(x.as_tensor(), k, s)? * &wt)?.sum_all()?;
        let grads = loss.backward()?;
        let g = grads
            .get(x.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let f = |d: &[f64]| -> f64 {
            reference(d, dims, k, s)
                .iter()
                .zip(&wts)
                .map(|(a, b)| a * b)
                .sum()
        };
        let eps = 1e-4;
        for i in 0..n {
            let mut p = data.clone();
            p[i] += eps;
            let mut q = data.clone();
            q[i] -= eps;
            let fd = (f(&p) - f(&q)) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 1e-6,
                "element {i}: analytic {} vs fd {fd}",
                g[i]
            );
        }
        // Every output routes its whole gradient to exactly one input.
        let total: f64 = g.iter().sum();
        assert!((total - wts.iter().sum::<f64>()).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn gradient_goes_to_the_first_maximum_on_ties() -> candle_core::Result<()> {
        // The CANDLE-NOTES examples: a unique max gets the whole gradient; on ties, PyTorch
        // picks the first index in row-major order.
        let x = Var::new(
            &[[[[1f32, 2.], [3., 4.]]], [[[5f32, 5.], [1., 5.]]]],
            &Device::Cpu,
        )?;
        let y = max_pool2d(x.as_tensor(), 2, 2)?;
        let g = y.sum_all()?.backward()?;
        let g = g
            .get(x.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(g, vec![0., 0., 0., 1., 1., 0., 0., 0.]);
        Ok(())
    }
}
