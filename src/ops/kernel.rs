//! The ops' CPU kernels behind candle's custom-op traits. A kernel sees each input as its
//! contiguous f32 values with their layout ([`Input`]); the adapters [`Op2`] and [`Op3`] read
//! the inputs out of candle's storage once, for every op, and pass the backward pass through.

use std::sync::{Mutex, MutexGuard};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::f32_data;

/// One input of a kernel: its contiguous f32 values and its layout.
pub(crate) type Input<'a> = (&'a [f32], &'a Layout);

/// What a kernel returns: its output storage and shape.
pub(crate) type Output = Result<(CpuStorage, Shape)>;

/// The gradients of a two-input op.
pub(crate) type Grads2 = Result<(Option<Tensor>, Option<Tensor>)>;

/// The gradients of a three-input op.
pub(crate) type Grads3 = Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)>;

/// A CPU f32 kernel of two inputs, run as a candle [`CustomOp2`] through [`Op2`].
pub(crate) trait Kernel2 {
    /// The op's name in candle's graph and in error messages.
    fn name(&self) -> &'static str;

    /// The forward computation.
    fn cpu_fwd(&self, a: Input, b: Input) -> Output;

    /// The gradients of the inputs given the output `res` and its gradient; none by default.
    fn bwd(&self, _a: &Tensor, _b: &Tensor, _res: &Tensor, _grad: &Tensor) -> Grads2 {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// A CPU f32 kernel of three inputs, run as a candle [`CustomOp3`] through [`Op3`].
pub(crate) trait Kernel3 {
    /// The op's name in candle's graph and in error messages.
    fn name(&self) -> &'static str;

    /// The forward computation.
    fn cpu_fwd(&self, a: Input, b: Input, c: Input) -> Output;

    /// The gradients of the inputs given the output `res` and its gradient; none by default.
    fn bwd(&self, _a: &Tensor, _b: &Tensor, _c: &Tensor, _res: &Tensor, _grad: &Tensor) -> Grads3 {
        Err(candle_core::Error::BackwardNotSupported { op: self.name() })
    }
}

/// A [`Kernel2`] as a candle custom op.
pub(crate) struct Op2<K>(pub(crate) K);

impl<K: Kernel2> CustomOp2 for Op2<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Output {
        let name = self.0.name();
        self.0
            .cpu_fwd((f32_data(s1, l1, name)?, l1), (f32_data(s2, l2, name)?, l2))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, res: &Tensor, grad: &Tensor) -> Grads2 {
        self.0.bwd(a, b, res, grad)
    }
}

/// A [`Kernel3`] as a candle custom op.
pub(crate) struct Op3<K>(pub(crate) K);

impl<K: Kernel3> CustomOp3 for Op3<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Output {
        let name = self.0.name();
        let a = (f32_data(s1, l1, name)?, l1);
        let b = (f32_data(s2, l2, name)?, l2);
        self.0.cpu_fwd(a, b, (f32_data(s3, l3, name)?, l3))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, c: &Tensor, res: &Tensor, grad: &Tensor) -> Grads3 {
        self.0.bwd(a, b, c, res, grad)
    }
}

/// The state a forward kernel saved for its backward pass, locked; `poisoned` is the error
/// when a thread panicked while holding it.
pub(crate) fn lock_saved<'a, T>(saved: &'a Mutex<T>, poisoned: &str) -> Result<MutexGuard<'a, T>> {
    saved
        .lock()
        .map_err(|_| candle_core::Error::Msg(poisoned.into()))
}

/// An error naming the kernel `op` and the gradient's `dims` unless `fits`.
pub(crate) fn check_grad_shape(fits: bool, op: &str, dims: &[usize]) -> Result<()> {
    if !fits {
        candle_core::bail!("{op}: gradient shape {dims:?} does not fit")
    }
    Ok(())
}

/// One gradient in the flat output of a backward kernel: whether autograd wants it, its
/// number of values and its shape.
pub(crate) type Piece = (bool, usize, Shape);

/// Cuts the flat output of a backward kernel, three gradients one after the other, into its
/// pieces: each wanted one reshaped, `None` for the others.
pub(crate) fn unpack_grads(out: &Tensor, pieces: [Piece; 3]) -> Grads3 {
    let mut start = 0;
    let mut cut = |(wanted, len, shape): Piece| {
        let piece = wanted
            .then(|| out.narrow(0, start, len)?.reshape(shape))
            .transpose();
        start += len;
        piece
    };
    let [a, b, c] = pieces;
    Ok((cut(a)?, cut(b)?, cut(c)?))
}
