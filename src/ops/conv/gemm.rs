//! Matrix views and the GEMM call, and the gathering of several images into one matrix.

use gemm::Parallelism;

use super::geom::{im2col, Geom};

/// A row-major view of a matrix for [`matmul`]: data, column stride, row stride.
pub(super) struct Mat<'a> {
    data: &'a [f32],
    cs: usize,
    rs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix whose rows are `rs` apart.
    pub(super) fn rows(data: &'a [f32], rs: usize) -> Self {
        Self { data, cs: 1, rs }
    }

    /// The transpose of a row-major matrix whose rows are `cs` apart (a column-major view).
    pub(super) fn transposed(data: &'a [f32], cs: usize) -> Self {
        Self { data, cs, rs: 1 }
    }

    /// Checks that every element of a `rows × cols` view lies inside the slice.
    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len());
        }
    }
}

/// `dst (m×n, row-major contiguous) (+)= lhs (m×k) · rhs (k×n)` through `gemm`.
pub(super) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    par: Parallelism,
) {
    assert!(dst.len() >= m * n);
    lhs.check(m, k);
    rhs.check(k, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the three views were bounds-checked above; dst does not alias lhs or rhs (it is
    // a distinct &mut slice).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// `im2col` of images `xs` side by side: `(K, nb·P)`; pointwise kernels just gather.
pub(super) fn unfold_group<'a>(
    xs: &'a [f32],
    nb: usize,
    g: &Geom,
    col: &'a mut [f32],
) -> &'a [f32] {
    unfold_group_ld(xs, nb, g, col, nb * g.p()).0
}

/// Row stride for a matrix of `cols` columns that a GEMM packs across its rows (the unfolded
/// input of the weight gradient, read as the transposed operand): `cols` rounded up to whole
/// 64-byte lines, plus one line when that is an even number of lines. With a power-of-two
/// stride (64×64 images: 16 KB rows) the packing's reads of 64 consecutive rows all fall in
/// the same few L1 sets and evict each other; an odd number of lines spreads them over all.
pub(super) fn padded_ld(cols: usize) -> usize {
    let ld = cols.next_multiple_of(16);
    if (ld / 16).is_multiple_of(2) {
        ld + 16
    } else {
        ld
    }
}

/// [`unfold_group`] with rows `ld` apart (`ld ≥ nb·P`; the columns past `nb·P` are not
/// written): returns the matrix and its row stride, which is `P` for a single pointwise image
/// (used in place).
pub(super) fn unfold_group_ld<'a>(
    xs: &'a [f32],
    nb: usize,
    g: &Geom,
    col: &'a mut [f32],
    ld: usize,
) -> (&'a [f32], usize) {
    let (p, in_len) = (g.p(), g.in_len());
    if g.pointwise() {
        // The unfolded image is the image itself, (C, P).
        if nb == 1 {
            return (&xs[..g.c * p], p);
        }
        gather_ld(xs, nb, g.c, p, col, ld);
    } else {
        for i in 0..nb {
            im2col(&xs[i * in_len..(i + 1) * in_len], g, &mut col[i * p..], ld);
        }
    }
    let len = if g.k() == 0 {
        0
    } else {
        (g.k() - 1) * ld + nb * p
    };
    (&col[..len], ld)
}

/// Gathers `nb` per-image `(R, P)` blocks into one `(R, nb·P)` matrix (or borrows a single one).
pub(super) fn gather<'a>(
    src: &'a [f32],
    nb: usize,
    rows: usize,
    p: usize,
    dst: &'a mut [f32],
) -> &'a [f32] {
    if nb == 1 {
        return &src[..rows * p];
    }
    let ld = nb * p;
    gather_ld(src, nb, rows, p, dst, ld);
    &dst[..rows * ld]
}

/// [`gather`] into `dst` with rows `ld` apart (`ld ≥ nb·P`).
fn gather_ld(src: &[f32], nb: usize, rows: usize, p: usize, dst: &mut [f32], ld: usize) {
    for i in 0..nb {
        for r in 0..rows {
            let from = (i * rows + r) * p;
            dst[r * ld + i * p..r * ld + (i + 1) * p].copy_from_slice(&src[from..from + p]);
        }
    }
}

/// Scatters an `(R, nb·P)` matrix back into `nb` per-image `(R, P)` blocks.
pub(super) fn scatter(src: &[f32], nb: usize, rows: usize, p: usize, dst: &mut [f32]) {
    let ld = nb * p;
    for i in 0..nb {
        for r in 0..rows {
            let to = (i * rows + r) * p;
            dst[to..to + p].copy_from_slice(&src[r * ld + i * p..r * ld + (i + 1) * p]);
        }
    }
}
