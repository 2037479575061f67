//! The filtering side of dlib's HOG detector: `build_fhog_filterbank`'s split of each filter
//! channel into rank-1 pieces by SVD, and `float_spatially_filter_image_separable`, which
//! correlates an fHOG plane with one piece in dlib's order of `f32` operations.

/// One rank-1 piece `col ⊗ row` of a filter channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Separable {
    /// Row (horizontal) filter.
    pub row: Vec<f32>,
    /// Column (vertical) filter.
    pub col: Vec<f32>,
}

/// dlib's `float_spatially_filter_image_separable(plane, out, row, col, scratch, add_to=true)`
/// on a `rows × cols` plane: the row filter then the column filter, eight output columns at a
/// time with three interleaved accumulators (dlib's `simd8f` loop), a scalar tail.
pub(crate) fn filter_separable(
    plane: &[f32],
    (nr, nc): (usize, usize),
    p: &Separable,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let (rf, cf) = (&p.row, &p.col);
    let (first_col, first_row) = (rf.len() / 2, cf.len() / 2);
    let last_col = nc.saturating_sub(rf.len().saturating_sub(1) / 2);
    let last_row = nr.saturating_sub(cf.len().saturating_sub(1) / 2);
    if rf.is_empty() || cf.is_empty() || last_col <= first_col || last_row <= first_row {
        return;
    }
    for (row, dst) in plane.chunks_exact(nc).zip(scratch.chunks_exact_mut(nc)) {
        // Output column c reads row[c − first_col ..][..len].
        correlate(rf, first_col, last_col, dst, |c| &row[c - first_col..]);
    }
    let scratch = &*scratch;
    for r in first_row..last_row {
        let dst = &mut out[r * nc..(r + 1) * nc];
        let mut col = vec![0f32; nc];
        // Tap m of output column c reads scratch[(r − first_row + m)·nc + c]: gather the
        // column block as rows of the window.
        let window = &scratch[(r - first_row) * nc..];
        correlate_cols(cf, nc, first_col, last_col, window, &mut col);
        for c in first_col..last_col {
            dst[c] += col[c];
        }
    }
}

/// The row pass of [`filter_separable`]: `dst[c] = Σ_n src(c)[n]·f[n]` for `c` in
/// `first..last`, dlib's eight-column blocks (three accumulators) then a scalar tail.
fn correlate<'a>(
    f: &[f32],
    first: usize,
    last: usize,
    dst: &mut [f32],
    src: impl Fn(usize) -> &'a [f32],
) {
    let len = f.len();
    let mut c = first;
    while c + 7 < last {
        let base = &src(c)[..len + 7];
        let (mut t1, mut t2, mut t3) = ([0f32; 8], [0f32; 8], [0f32; 8]);
        let mut n = 0;
        while n + 2 < len {
            let (a, b, d) = (f[n], f[n + 1], f[n + 2]);
            for j in 0..8 {
                t1[j] += base[n + j] * a;
                t2[j] += base[n + 1 + j] * b;
                t3[j] += base[n + 2 + j] * d;
            }
            n += 3;
        }
        for (n, &fv) in f.iter().enumerate().skip(n) {
            for j in 0..8 {
                t1[j] += base[n + j] * fv;
            }
        }
        for j in 0..8 {
            dst[c + j] = t1[j] + (t2[j] + t3[j]);
        }
        c += 8;
    }
    for (c, d) in dst.iter_mut().enumerate().take(last).skip(c) {
        let mut t = 0f32;
        for (&x, &fv) in src(c).iter().zip(f) {
            t += x * fv;
        }
        *d = t;
    }
}

/// The column pass of [`filter_separable`] for one output row: `out[c] = Σ_m win[m·nc + c]·f[m]`
/// for `c` in `first..last`, in the same blocks and order as [`correlate`].
fn correlate_cols(f: &[f32], nc: usize, first: usize, last: usize, win: &[f32], out: &mut [f32]) {
    let len = f.len();
    let tap = |m: usize, c: usize| &win[m * nc + c..];
    let mut c = first;
    while c + 7 < last {
        let (mut t1, mut t2, mut t3) = ([0f32; 8], [0f32; 8], [0f32; 8]);
        let mut m = 0;
        while m + 2 < len {
            let (a, b, d) = (f[m], f[m + 1], f[m + 2]);
            let (p1, p2, p3) = (&tap(m, c)[..8], &tap(m + 1, c)[..8], &tap(m + 2, c)[..8]);
            for j in 0..8 {
                t1[j] += p1[j] * a;
                t2[j] += p2[j] * b;
                t3[j] += p3[j] * d;
            }
            m += 3;
        }
        for (m, &fv) in f.iter().enumerate().skip(m) {
            let p1 = &tap(m, c)[..8];
            for j in 0..8 {
                t1[j] += p1[j] * fv;
            }
        }
        for j in 0..8 {
            out[c + j] = t1[j] + (t2[j] + t3[j]);
        }
        c += 8;
    }
    for c in c..last {
        let mut t = 0f32;
        for (m, &fv) in f.iter().enumerate() {
            t += win[m * nc + c] * fv;
        }
        out[c] = t;
    }
}

/// The rank-1 pieces `√σ·u ⊗ √σ·v` of a `rows × cols` filter (row-major), largest singular
/// value first, keeping `σ ≥ max(1e-3, 0.01·σ_max)` (dlib's `round_zeros`).
pub(crate) fn separable_pieces(f: &[f64], rows: usize, cols: usize) -> Vec<Separable> {
    let (sigma, u, v) = svd(f, rows, cols);
    let max = sigma.iter().copied().fold(0.0, f64::max);
    let thresh = (max * 0.01).max(1e-3);
    let mut order: Vec<usize> = (0..sigma.len()).collect();
    order.sort_by(|&a, &b| sigma[b].total_cmp(&sigma[a]));
    order
        .into_iter()
        .filter(|&j| sigma[j] >= thresh)
        .map(|j| {
            let s = sigma[j].sqrt();
            Separable {
                col: (0..rows).map(|i| (u[i * cols + j] * s) as f32).collect(),
                row: (0..cols).map(|i| (v[i * cols + j] * s) as f32).collect(),
            }
        })
        .collect()
}

/// One-sided Jacobi SVD of a `rows × cols` row-major matrix (`rows ≥ cols`; the columns are
/// orthogonalised): singular values, `U` (`rows × cols`, unit columns where σ > 0)
/// and `V` (`cols × cols`), both row-major, with `A = U·diag(σ)·Vᵀ`.
fn svd(a: &[f64], rows: usize, cols: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut u = a.to_vec();
    let mut v: Vec<f64> = (0..cols * cols)
        .map(|i| if i / cols == i % cols { 1.0 } else { 0.0 })
        .collect();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..cols {
            for q in p + 1..cols {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                for i in 0..rows {
                    let (x, y) = (u[i * cols + p], u[i * cols + q]);
                    alpha += x * x;
                    beta += y * y;
                    gamma += x * y;
                }
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for (m, n) in [(&mut u, rows), (&mut v, cols)] {
                    for i in 0..n {
                        let (x, y) = (m[i * cols + p], m[i * cols + q]);
                        m[i * cols + p] = c * x - s * y;
                        m[i * cols + q] = s * x + c * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let sigma: Vec<f64> = (0..cols)
        .map(|j| {
            (0..rows)
                .map(|i| u[i * cols + j].powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    for (j, &s) in sigma.iter().enumerate() {
        if s > 0.0 {
            (0..rows).for_each(|i| u[i * cols + j] /= s);
        }
    }
    (sigma, u, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd_pieces_rebuild_a_low_rank_filter() {
        // f = a·bᵀ + c·dᵀ, rank 2.
        let (a, b) = ([1.0, -2.0, 0.5], [0.3, 0.1, -0.7]);
        let (c, d) = ([0.2, 0.4, 1.0], [1.0, 0.5, 0.25]);
        let f: Vec<f64> = (0..9)
            .map(|i| a[i / 3] * b[i % 3] + c[i / 3] * d[i % 3])
            .collect();
        let pieces = separable_pieces(&f, 3, 3);
        assert_eq!(pieces.len(), 2);
        for (i, &want) in f.iter().enumerate() {
            let v: f64 = pieces
                .iter()
                .map(|p| f64::from(p.col[i / 3]) * f64::from(p.row[i % 3]))
                .sum();
            assert!((v - want).abs() < 1e-6, "{i}: {v} vs {want}");
        }
    }
}
