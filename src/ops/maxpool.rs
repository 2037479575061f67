//! Max pooling (floor mode) with PyTorch's gradient rule, an optional fused ReLU, and a
//! one-pass ReLU, as candle custom ops.
//!
//! The gradient of each output goes entirely to the *first* maximum of its window in row-major
//! order, as PyTorch's CPU `max_pool2d` (`if (val > maxval) || isnan(val)`). candle 0.11's own
//! `max_pool2d` backward scales it by the mean of the max mask (1/4 for a unique maximum in a
//! 2×2 window) and refuses kernel ≠ stride. Because `max` commutes with the monotone ReLU,
//! `relu_max_pool2d(x) = max_pool2d(relu(x)) = relu(max_pool2d(x))`: the fused op applies the
//! ReLU to the pooled values only and routes the gradient to the window's first maximum when it
//! is positive, which is exactly what the unfused PyTorch pair computes.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernel::{check_grad_shape, Input, Kernel2, Op2, Output};
use super::{f32_data, is_cpu_f32, uninit_f32};

/// Elements per parallel chunk of element-wise work.
const CHUNK: usize = 1 << 15;

/// Max pooling of `x` (N, C, H, W) with a `kernel`×`kernel` window every `stride` pixels, no
/// padding, floor mode: output (N, C, (H − kernel)/stride + 1, (W − kernel)/stride + 1).
///
/// The gradient follows PyTorch (all of it to the first maximum of each window; overlapping
/// windows, kernel > stride, add up). On other devices or dtypes this falls back to candle's
/// `max_pool2d_with_stride`, whose backward is wrong in candle 0.11.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    pool(x, kernel, stride, false)
}

/// `max_pool2d(relu(x), kernel, stride)` in one pass, with the same gradient as the two ops
/// in sequence (PyTorch's `ReLU` then `MaxPool2d`). Falls back to candle's ops off the CPU/f32.
pub fn relu_max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    pool(x, kernel, stride, true)
}

/// `max(x, 0)` element-wise, whose backward is a single pass `grad · [x > 0]` (candle's own
/// ReLU backward allocates a mask, converts and multiplies). Falls back to `Tensor::relu`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !is_cpu_f32(x) {
        return x.relu();
    }
    x.contiguous()?.apply_op1(ReluOp)
}

fn pool(x: &Tensor, kernel: usize, stride: usize, fuse_relu: bool) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if kernel == 0 || stride == 0 || h < kernel || w < kernel {
        candle_core::bail!(
            "max_pool2d: kernel {kernel}, stride {stride} do not fit a {h}×{w} input"
        )
    }
    if !is_cpu_f32(x) {
        let x = if fuse_relu { x.relu()? } else { x.clone() };
        return x.max_pool2d_with_stride(kernel, stride);
    }
    x.contiguous()?.apply_op1(MaxPoolOp {
        kernel,
        stride,
        fuse_relu,
    })
}

/// Sizes of one pooling.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolGeom {
    w: usize,
    oh: usize,
    ow: usize,
    kernel: usize,
    stride: usize,
}

impl PoolGeom {
    pub(super) fn new(h: usize, w: usize, kernel: usize, stride: usize) -> Result<Self> {
        if kernel == 0 || stride == 0 || h < kernel || w < kernel {
            candle_core::bail!("max_pool2d: kernel {kernel}, stride {stride} do not fit {h}×{w}")
        }
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        Ok(Self {
            w,
            oh,
            ow,
            kernel,
            stride,
        })
    }

    /// Index in the plane and value of the first maximum of the window of output (i, j).
    #[inline]
    fn argmax(&self, plane: &[f32], i: usize, j: usize) -> (usize, f32) {
        let (r0, c0) = (i * self.stride, j * self.stride);
        let mut best = (r0 * self.w + c0, plane[r0 * self.w + c0]);
        for r in r0..r0 + self.kernel {
            let row = &plane[r * self.w + c0..r * self.w + c0 + self.kernel];
            for (c, &v) in row.iter().enumerate() {
                if v > best.1 || (v.is_nan() && !best.1.is_nan()) {
                    best = (r * self.w + c0 + c, v);
                }
            }
        }
        best
    }

    /// The value [`argmax`](Self::argmax) returns, without tracking the index: the first
    /// maximum, or NaN when the window holds one (the reference of [`pool_plane`]).
    #[cfg(test)]
    fn window_max(&self, plane: &[f32], i: usize, j: usize) -> f32 {
        let (r0, c0) = (i * self.stride, j * self.stride);
        let (mut m, mut nan) = (f32::NEG_INFINITY, false);
        for r in r0..r0 + self.kernel {
            for &v in &plane[r * self.w + c0..r * self.w + c0 + self.kernel] {
                nan |= v.is_nan();
                m = if v > m { v } else { m };
            }
        }
        if nan {
            f32::NAN
        } else {
            m
        }
    }
}

/// Forward of one plane for any window, separably: the maximum over each row's windows
/// (`rows`, `H × ow` floats), then over the window's rows, contiguous so that it vectorises.
/// Ties keep the earlier value in both passes, so the result is [`PoolGeom::window_max`]'s, the
/// sign of a zero maximum included, and NaN when the window holds one.
fn pool_plane(plane: &[f32], out: &mut [f32], g: &PoolGeom, fuse_relu: bool, rows: &mut [f32]) {
    let (w, k, s, ow) = (g.w, g.kernel, g.stride, g.ow);
    let used = (g.oh - 1) * s + k;
    for (hrow, src) in rows
        .chunks_exact_mut(ow)
        .zip(plane.chunks_exact(w))
        .take(used)
    {
        if (k, s) == (3, 2) {
            // The common 3×3 window with stride 2, without index arithmetic.
            let pairs = src.chunks_exact(2).zip(src[2..].iter().step_by(2));
            for (m, (ab, &c)) in hrow.iter_mut().zip(pairs) {
                *m = nan_max(nan_max(ab[0], ab[1]), c);
            }
            continue;
        }
        for (j, m) in hrow.iter_mut().enumerate() {
            let win = &src[j * s..][..k];
            *m = win[1..].iter().fold(win[0], |m, &v| nan_max(m, v));
        }
    }
    for (i, orow) in out.chunks_exact_mut(ow).enumerate() {
        orow.copy_from_slice(&rows[i * s * ow..][..ow]);
        for r in i * s + 1..i * s + k {
            for (o, &v) in orow.iter_mut().zip(&rows[r * ow..][..ow]) {
                *o = nan_max(*o, v);
            }
        }
        if fuse_relu {
            orow.iter_mut().for_each(|o| *o = relu1(*o));
        }
    }
}

/// The larger of `a` and `b`, NaN when either is NaN; branch-free.
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// ReLU that keeps NaN (like PyTorch), unlike `f32::max`.
#[inline]
pub(super) fn relu1(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// The 2×2, stride-2 window `(a b / c d)`: the index (0..4, row-major) and value of its first
/// maximum, a NaN counting as larger than any number (the rule of [`PoolGeom::argmax`]).
#[cfg(test)]
fn first_max4(a: f32, b: f32, c: f32, d: f32) -> (u32, f32) {
    let (mut i, mut m) = (0u32, a);
    for (k, v) in [(1u32, b), (2, c), (3, d)] {
        if v > m || (v.is_nan() & !m.is_nan()) {
            i = k;
            m = v;
        }
    }
    (i, m)
}

/// The value of `first_max4` (a test reference) only, branch-free so that the loop vectorises.
#[inline(always)]
fn max4(a: f32, b: f32, c: f32, d: f32) -> f32 {
    let ab = if b > a { b } else { a };
    let cd = if d > c { d } else { c };
    let m = if cd > ab { cd } else { ab };
    if a.is_nan() | b.is_nan() | c.is_nan() | d.is_nan() {
        f32::NAN
    } else {
        m
    }
}

/// `first_max4`'s index as a one-hot mask, branch-free, and the maximum ([`max4`]): the
/// first element equal to the maximum, or the first NaN when there is one.
#[inline(always)]
fn first_max4_mask(a: f32, b: f32, c: f32, d: f32) -> ([bool; 4], f32) {
    let m = max4(a, b, c, d);
    let nan = m.is_nan();
    let hit = |v: f32| (v == m) | (nan & v.is_nan());
    let e0 = hit(a);
    let e1 = !e0 & hit(b);
    let e2 = !(e0 | e1) & hit(c);
    let e3 = !(e0 | e1 | e2);
    ([e0, e1, e2, e3], m)
}

/// Forward of one plane for the common 2×2 window with stride 2 (every layer of the compact
/// CNN): rows two at a time, no per-window index arithmetic.
pub(super) fn pool2x2_plane(plane: &[f32], out: &mut [f32], g: &PoolGeom, fuse_relu: bool) {
    let (w, ow) = (g.w, g.ow);
    for (i, orow) in out.chunks_exact_mut(ow).enumerate().take(g.oh) {
        let r0 = &plane[2 * i * w..2 * i * w + 2 * ow];
        let r1 = &plane[(2 * i + 1) * w..(2 * i + 1) * w + 2 * ow];
        for ((o, p0), p1) in orow
            .iter_mut()
            .zip(r0.chunks_exact(2))
            .zip(r1.chunks_exact(2))
        {
            let m = max4(p0[0], p0[1], p1[0], p1[1]);
            *o = if fuse_relu { relu1(m) } else { m };
        }
    }
}

/// Backward of one plane for the 2×2, stride-2 window: each window's gradient goes to its
/// first maximum (when positive, with the fused ReLU); every element of `dplane` inside a
/// window is written, the rest (an odd last row or column) is left as it is (zero).
pub(super) fn pool2x2_grad_plane(
    plane: &[f32],
    dout: &[f32],
    dplane: &mut [f32],
    g: &PoolGeom,
    fuse_relu: bool,
) {
    let (w, ow) = (g.w, g.ow);
    for (i, drow) in dout.chunks_exact(ow).enumerate().take(g.oh) {
        let r0 = &plane[2 * i * w..2 * i * w + 2 * ow];
        let r1 = &plane[(2 * i + 1) * w..(2 * i + 1) * w + 2 * ow];
        let (d0, d1) = dplane[2 * i * w..(2 * i + 2) * w].split_at_mut(w);
        let (d0, d1) = (&mut d0[..2 * ow], &mut d1[..2 * ow]);
        let mut j = 0;
        while j + LANES <= ow {
            grad_at::<LANES>(r0, r1, drow, d0, d1, j, fuse_relu);
            j += LANES;
        }
        while j + 4 <= ow {
            grad_at::<4>(r0, r1, drow, d0, d1, j, fuse_relu);
            j += 4;
        }
        while j < ow {
            grad_at::<1>(r0, r1, drow, d0, d1, j, fuse_relu);
            j += 1;
        }
    }
}

/// [`grad_block`] for the windows `j..j + L` of one output row (input rows `r0`, `r1`).
#[inline(always)]
fn grad_at<const L: usize>(
    r0: &[f32],
    r1: &[f32],
    drow: &[f32],
    d0: &mut [f32],
    d1: &mut [f32],
    j: usize,
    fuse_relu: bool,
) {
    let x = 2 * j..2 * (j + L);
    grad_block::<L>(
        r0[x.clone()].as_chunks().0.try_into().unwrap(),
        r1[x.clone()].as_chunks().0.try_into().unwrap(),
        drow[j..j + L].try_into().unwrap(),
        d0[x.clone()].as_chunks_mut().0.try_into().unwrap(),
        d1[x].as_chunks_mut().0.try_into().unwrap(),
        fuse_relu,
    );
}

/// Output columns per block of [`grad_block`]: one AVX-512 register of windows.
const LANES: usize = 16;

/// [`pool2x2_grad_plane`] for `L` consecutive windows of one output row: the two input rows
/// are split into the windows' four corners first and the first maximum is found with compares
/// and selects only, so the lane loop vectorises (the per-window loop with its boolean masks and
/// NaN rule does not). A block holding a NaN takes the per-window path.
#[inline(always)]
fn grad_block<const L: usize>(
    r0: &[[f32; 2]; L],
    r1: &[[f32; 2]; L],
    gy: &[f32; L],
    q0: &mut [[f32; 2]; L],
    q1: &mut [[f32; 2]; L],
    fuse_relu: bool,
) {
    let nan = r0
        .iter()
        .chain(r1.iter())
        .flatten()
        .fold(false, |acc, v| acc | v.is_nan());
    if nan {
        for k in 0..L {
            let ([e0, e1, e2, e3], m) = first_max4_mask(r0[k][0], r0[k][1], r1[k][0], r1[k][1]);
            let g = if !fuse_relu || m > 0.0 { gy[k] } else { 0.0 };
            q0[k][0] = if e0 { g } else { 0.0 };
            q0[k][1] = if e1 { g } else { 0.0 };
            q1[k][0] = if e2 { g } else { 0.0 };
            q1[k][1] = if e3 { g } else { 0.0 };
        }
        return;
    }
    let mut c = [[0f32; L]; 4];
    for k in 0..L {
        c[0][k] = r0[k][0];
        c[1][k] = r0[k][1];
        c[2][k] = r1[k][0];
        c[3][k] = r1[k][1];
    }
    // Bit masks rather than branches or `f32::max` (whose NaN rule costs extra instructions),
    // so the loop compiles to vector compares and ands.
    let all = |t: bool| 0u32.wrapping_sub(t as u32);
    let mut out = [[0u32; L]; 4];
    for k in 0..L {
        let (a, b, cc, d) = (c[0][k], c[1][k], c[2][k], c[3][k]);
        // No NaN here, so `v == m` finds the first maximum (−0 == +0, as the `>` rule of
        // `first_max4`, which keeps the earlier of two zeros).
        let ab = if b > a { b } else { a };
        let cd = if d > cc { d } else { cc };
        let m = if cd > ab { cd } else { ab };
        let g = gy[k].to_bits() & all(!fuse_relu | (m > 0.0));
        let e0 = all(a == m);
        let e1 = all(b == m) & !e0;
        let e2 = all(cc == m) & !(e0 | e1);
        out[0][k] = g & e0;
        out[1][k] = g & e1;
        out[2][k] = g & e2;
        out[3][k] = g & !(e0 | e1 | e2);
    }
    for k in 0..L {
        q0[k][0] = f32::from_bits(out[0][k]);
        q0[k][1] = f32::from_bits(out[1][k]);
        q1[k][0] = f32::from_bits(out[2][k]);
        q1[k][1] = f32::from_bits(out[3][k]);
    }
}

struct MaxPoolOp {
    kernel: usize,
    stride: usize,
    fuse_relu: bool,
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "candle-face-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let g = PoolGeom::new(h, w, self.kernel, self.stride)?;
        let x = f32_data(s, l, self.name())?;
        // SAFETY: `job` writes every one of a plane's oh·ow outputs.
        let mut y = unsafe { uninit_f32(n * c * g.oh * g.ow) };
        let job = |rows: &mut Vec<f32>, (out, plane): (&mut [f32], &[f32])| {
            if g.kernel == 2 && g.stride == 2 {
                pool2x2_plane(plane, out, &g, self.fuse_relu);
            } else {
                pool_plane(plane, out, &g, self.fuse_relu, rows);
            }
        };
        let scratch = || vec![0f32; h * g.ow];
        if x.len() < CHUNK {
            // Small inputs (batch-1 inference): handing them to the thread pool costs more than
            // the pooling itself.
            let mut rows = scratch();
            y.chunks_mut(g.oh * g.ow)
                .zip(x.chunks(h * w))
                .for_each(|p| job(&mut rows, p));
        } else if !y.is_empty() {
            y.par_chunks_mut(g.oh * g.ow)
                .zip(x.par_chunks(h * w))
                .for_each_init(scratch, job);
        }
        Ok((CpuStorage::F32(y), Shape::from((n, c, g.oh, g.ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = MaxPoolGrad {
            kernel: self.kernel,
            stride: self.stride,
            fuse_relu: self.fuse_relu,
        };
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &Op2(op))?))
    }
}

/// `(x, dY) → dX` for [`MaxPoolOp`].
struct MaxPoolGrad {
    kernel: usize,
    stride: usize,
    fuse_relu: bool,
}

impl Kernel2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "candle-face-max-pool2d-grad"
    }

    fn cpu_fwd(&self, (x, l1): Input, (dy, l2): Input) -> Output {
        let (n, c, h, w) = l1.shape().dims4()?;
        let g = PoolGeom::new(h, w, self.kernel, self.stride)?;
        check_grad_shape(l2.dims() == [n, c, g.oh, g.ow], self.name(), l2.dims())?;
        let mut dx = vec![0f32; n * c * h * w];
        if !dx.is_empty() && g.oh * g.ow > 0 {
            dx.par_chunks_mut(h * w)
                .zip(x.par_chunks(h * w).zip(dy.par_chunks(g.oh * g.ow)))
                .for_each(|(dplane, (plane, dout))| {
                    if g.kernel == 2 && g.stride == 2 {
                        pool2x2_grad_plane(plane, dout, dplane, &g, self.fuse_relu);
                        return;
                    }
                    for i in 0..g.oh {
                        for j in 0..g.ow {
                            let (idx, m) = g.argmax(plane, i, j);
                            if !self.fuse_relu || m > 0.0 {
                                dplane[idx] += dout[i * g.ow + j];
                            }
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(dx), Shape::from((n, c, h, w))))
    }
}

struct ReluOp;

impl CustomOp1 for ReluOp {
    fn name(&self) -> &'static str {
        "candle-face-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        // SAFETY: the zip below writes every element (same chunking of x and y).
        let mut y = unsafe { uninit_f32(x.len()) };
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y = relu1(x)));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &Op2(ReluGrad))?,
        ))
    }
}

/// `(x, dY) → dY · [x > 0]`.
struct ReluGrad;

impl Kernel2 for ReluGrad {
    fn name(&self) -> &'static str {
        "candle-face-relu-grad"
    }

    fn cpu_fwd(&self, (x, l1): Input, (dy, l2): Input) -> Output {
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "{}: shapes {:?} and {:?} differ",
                self.name(),
                l1.dims(),
                l2.dims()
            )
        }
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dx, (x, dy))| {
                for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                    *d = if x > 0.0 { g } else { 0.0 };
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::vals;
    use candle_core::{Device, Var};

    /// Brute-force reference: forward values and PyTorch-rule gradient of `Σ y · r`.
    fn pool_ref(
        x: &[f32],
        d: [usize; 4],
        k: usize,
        s: usize,
        relu: bool,
        r: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let [n, c, h, w] = d;
        let (oh, ow) = ((h - k) / s + 1, (w - k) / s + 1);
        let (mut y, mut dx) = (Vec::new(), vec![0f32; x.len()]);
        for p in 0..n * c {
            for i in 0..oh {
                for j in 0..ow {
                    let mut best: Option<(usize, f32)> = None;
                    for a in 0..k {
                        for b in 0..k {
                            let idx = p * h * w + (i * s + a) * w + j * s + b;
                            let v = if relu { x[idx].max(0.0) } else { x[idx] };
                            if best.is_none_or(|(_, m)| v > m) {
                                best = Some((idx, v));
                            }
                        }
                    }
                    let (idx, m) = best.unwrap();
                    let out = y.len();
                    y.push(m);
                    if !relu || x[idx] > 0.0 {
                        dx[idx] += r[out];
                    }
                }
            }
        }
        (y, dx)
    }

    fn check(d: [usize; 4], k: usize, s: usize, relu: bool, x: Tensor) {
        let xv = Var::from_tensor(&x).unwrap();
        let y = if relu {
            relu_max_pool2d(&xv, k, s)
        } else {
            max_pool2d(&xv, k, s)
        }
        .unwrap();
        let r = Tensor::randn(0f32, 1., y.dims(), &Device::Cpu).unwrap();
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let xs = vals(&x);
        let rs = vals(&r);
        let (want_y, want_dx) = pool_ref(&xs, d, k, s, relu, &rs);
        assert_eq!(vals(&y), want_y);
        let dx = vals(g.get(&xv).unwrap());
        for (a, b) in dx.iter().zip(&want_dx) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn fast_2x2_window_follows_the_general_rule_with_ties_nan_and_infinities() {
        let vals = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            2.5,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let g = PoolGeom::new(2, 2, 2, 2).unwrap();
        let same = |a: f32, b: f32| (a.is_nan() && b.is_nan()) || a == b;
        // Every window over these eight values (4096 windows).
        for code in 0..8usize.pow(4) {
            let w = [0, 1, 2, 3].map(|k| vals[(code >> (3 * k)) & 7]);
            let (idx, m) = g.argmax(&w, 0, 0);
            let (fi, fm) = first_max4(w[0], w[1], w[2], w[3]);
            assert_eq!(fi as usize, idx, "{w:?}");
            assert!(same(fm, m), "{w:?}: {fm} vs {m}");
            assert!(same(max4(w[0], w[1], w[2], w[3]), m), "{w:?}");
            let (mask, mm) = first_max4_mask(w[0], w[1], w[2], w[3]);
            let want: [bool; 4] = std::array::from_fn(|k| k == idx);
            assert_eq!(mask, want, "{w:?}");
            assert!(same(mm, m), "{w:?}");
            // The forward's index-free maximum: the same value, signed zeros included.
            let wm = g.window_max(&w, 0, 0);
            assert!(
                same(wm, m) && (m.is_nan() || wm.to_bits() == m.to_bits()),
                "{w:?}"
            );
        }
        // 3×3 windows (the pools of Inception-ResNet and MTCNN), drawn pseudo-randomly.
        let g3 = PoolGeom::new(3, 3, 3, 2).unwrap();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let w: [f32; 9] = std::array::from_fn(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                vals[(state % 8) as usize]
            });
            let (_, m) = g3.argmax(&w, 0, 0);
            let (mut sep, mut rows) = ([0f32], [0f32; 3]);
            pool_plane(&w, &mut sep, &g3, false, &mut rows);
            for wm in [g3.window_max(&w, 0, 0), sep[0]] {
                assert!(
                    same(wm, m) && (m.is_nan() || wm.to_bits() == m.to_bits()),
                    "{w:?}"
                );
            }
        }
    }

    /// The blocked backward of wide planes against the per-window rule of [`first_max4`], on
    /// values full of ties, signed zeros and infinities: once with NaNs (nearly every block then
    /// takes the per-window path) and once without (the bit-mask path sees the ties and zeros).
    #[test]
    fn wide_2x2_backward_follows_the_window_rule() {
        let with_nan = [0.0f32, -0.0, 1.0, -1.0, f32::NAN, f32::INFINITY, 1.0, -2.0];
        let without_nan = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            1.0,
            -2.0,
        ];
        let (h, w) = (5, 75);
        let g = PoolGeom::new(h, w, 2, 2).unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (vals, relu) in [
            (with_nan, false),
            (with_nan, true),
            (without_nan, false),
            (without_nan, true),
        ] {
            let plane: Vec<f32> = (0..h * w).map(|_| vals[(next() % 8) as usize]).collect();
            let dout: Vec<f32> = (0..g.oh * g.ow).map(|k| k as f32 + 1.0).collect();
            let mut got = vec![0f32; h * w];
            pool2x2_grad_plane(&plane, &dout, &mut got, &g, relu);
            let mut want = vec![0f32; h * w];
            for i in 0..g.oh {
                for j in 0..g.ow {
                    let at = |a: usize, b: usize| (2 * i + a) * w + 2 * j + b;
                    let (k, m) = first_max4(
                        plane[at(0, 0)],
                        plane[at(0, 1)],
                        plane[at(1, 0)],
                        plane[at(1, 1)],
                    );
                    if !relu || m > 0.0 {
                        want[at(k as usize / 2, k as usize % 2)] = dout[i * g.ow + j];
                    }
                }
            }
            assert_eq!(got, want, "relu {relu}, values {vals:?}");
        }
    }

    #[test]
    fn matches_brute_force_for_several_windows() {
        for (d, k, s) in [
            ([2, 3, 8, 8], 2, 2),
            ([1, 2, 9, 7], 2, 2),
            ([1, 1, 2, 3], 2, 2),
            ([1, 2, 9, 7], 3, 2),
            ([2, 1, 5, 6], 2, 1),
            ([1, 2, 7, 7], 3, 3),
            // Wide rows: blocks of 16 windows plus a remainder, and an odd last row/column.
            ([2, 2, 7, 71], 2, 2),
            ([1, 1, 4, 32], 2, 2),
        ] {
            for relu in [false, true] {
                let x = Tensor::randn(0f32, 1., &d, &Device::Cpu).unwrap();
                check(d, k, s, relu, x);
            }
        }
    }

    /// `(y, dL/dx)` of `L = Σ pool(x)` for a 2×2 input, flattened.
    fn pooled_and_grad(
        x: [[f32; 2]; 2],
        pool: fn(&Tensor, usize, usize) -> Result<Tensor>,
    ) -> (Vec<f32>, Vec<f32>) {
        let xv = Var::from_tensor(&Tensor::new(&[[x]], &Device::Cpu).unwrap()).unwrap();
        let y = pool(&xv, 2, 2).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        (vals(&y), vals(g.get(&xv).unwrap()))
    }

    #[test]
    fn unique_maximum_gets_the_whole_gradient_and_ties_go_to_the_first() {
        let (_, dx) = pooled_and_grad([[1., 2.], [3., 4.]], max_pool2d);
        assert_eq!(dx, [0., 0., 0., 1.]);
        let (_, dx) = pooled_and_grad([[5., 5.], [1., 5.]], max_pool2d);
        assert_eq!(dx, [1., 0., 0., 0.]);
        // All-negative window under the fused ReLU: output 0, no gradient.
        let (y, dx) = pooled_and_grad([[-1., -2.], [-3., -4.]], relu_max_pool2d);
        assert_eq!(y, [0.]);
        assert_eq!(dx, [0., 0., 0., 0.]);
    }

    /// Central finite differences of `L = Σ max_pool(x) · r` (distinct values, so the argmax
    /// does not move under the perturbation), overlapping 3/2 windows.
    #[test]
    fn gradient_matches_finite_differences() {
        let d = [1, 2, 7, 7];
        let n: usize = d.iter().product();
        // A random permutation of distinct values spaced 0.1 apart.
        let mut values: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 4.0).collect();
        let perm = Tensor::rand(0f32, 1., n, &Device::Cpu)
            .unwrap()
            .arg_sort_last_dim(true)
            .unwrap();
        let perm = perm.to_vec1::<u32>().unwrap();
        values = perm.iter().map(|&p| values[p as usize]).collect();
        let x = Tensor::from_vec(values.clone(), &d, &Device::Cpu).unwrap();
        for relu in [false, true] {
            let xv = Var::from_tensor(&x).unwrap();
            let f = |t: &Tensor| {
                if relu {
                    relu_max_pool2d(t, 3, 2)
                } else {
                    max_pool2d(t, 3, 2)
                }
            };
            let y = f(&xv).unwrap();
            let r = Tensor::randn(0f32, 1., y.dims(), &Device::Cpu).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = vals(g.get(&xv).unwrap());
            let loss = |v: &[f32]| -> f64 {
                let t = Tensor::from_vec(v.to_vec(), &d, &Device::Cpu).unwrap();
                let y = vals(&f(&t).unwrap());
                let r = vals(&r);
                y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let eps = 0.01f32;
            for i in 0..n {
                let (mut p, mut m) = (values.clone(), values.clone());
                p[i] += eps;
                m[i] -= eps;
                let fd = (loss(&p) - loss(&m)) / (2. * eps as f64);
                assert!(
                    (fd - dx[i] as f64).abs() < 1e-3,
                    "x[{i}]: fd {fd} vs {}",
                    dx[i]
                );
            }
        }
    }

    #[test]
    fn relu_matches_candle_values_and_gradient() {
        let x = Tensor::randn(0f32, 1., (3, 4, 5), &Device::Cpu).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let r = Tensor::randn(0f32, 1., (3, 4, 5), &Device::Cpu).unwrap();
        let y = relu(&xv).unwrap();
        assert_eq!(
            vals(&y),
            xv.relu()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
        let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = vals(g.get(&xv).unwrap());
        let xs = vals(&x);
        let rs = vals(&r);
        for ((d, x), r) in dx.iter().zip(&xs).zip(&rs) {
            assert_eq!(*d, if *x > 0.0 { *r } else { 0.0 });
        }
    }

    #[test]
    fn rejects_windows_larger_than_the_input() {
        let x = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&x, 3, 1).is_err());
        assert!(max_pool2d(&x, 2, 0).is_err());
    }
}
