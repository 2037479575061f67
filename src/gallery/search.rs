//! Exact nearest-person search over row-major embeddings, by matrix products.
//!
//! The gallery is scanned in blocks of [`BLOCK`] rows; each block is multiplied with all queries
//! at once (`Q·Bᵀ`, one GEMM), and a ranking score is derived from the dot products and the
//! rows' precomputed squared norms: `‖x‖² − 2 q·x` for euclidean distances (the query's norm is
//! the same for every row), `−q·x / ‖x‖` for cosine. Each person keeps their best score and row
//! in flat arrays indexed by person id: no allocation or hashing per row. The `top_k` people are
//! then ranked by the exact distance ([`embedding_distance`]) of their best row, so the
//! distances reported are exact (a self-match is 0, not a rounding residue of the expansion).

use crate::distance::Distance;
use crate::infer::embedding_distance;

/// Gallery rows per matrix product.
pub const BLOCK: usize = 2048;

/// Row-major embeddings with what search needs beside them.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// `n × dim` values.
    pub data: &'a [f32],
    /// Values per row.
    pub dim: usize,
    /// Squared norm of every row.
    pub norms2: &'a [f32],
    /// Person id of every row, below `people`.
    pub person: &'a [u32],
    /// Number of person ids.
    pub people: usize,
    /// The distance compared with.
    pub distance: Distance,
}

/// Every person's best ranking score and the row it came from, for one query.
#[derive(Debug, Clone)]
pub struct Best {
    score: Vec<f32>,
    row: Vec<u32>,
}

impl Best {
    fn new(people: usize) -> Self {
        Self {
            score: vec![f32::INFINITY; people],
            row: vec![u32::MAX; people],
        }
    }

    #[inline]
    fn offer(&mut self, person: u32, score: f32, row: usize) {
        let p = person as usize;
        if score < self.score[p] {
            self.score[p] = score;
            self.row[p] = row as u32;
        }
    }

    /// The `top_k` people (person id, best row), nearest first by exact distance to `query`.
    pub fn top(&self, rows: &Rows, query: &[f32], top_k: usize) -> Vec<(u32, usize, f32)> {
        let mut ids: Vec<u32> = (0..self.score.len() as u32)
            .filter(|&p| self.row[p as usize] != u32::MAX)
            .collect();
        // A margin of extra people absorbs the rounding of the expanded scores.
        let keep = (top_k.max(1) + 4).min(ids.len());
        if keep > 0 && keep < ids.len() {
            ids.select_nth_unstable_by(keep - 1, |&a, &b| {
                self.score[a as usize].total_cmp(&self.score[b as usize])
            });
            ids.truncate(keep);
        }
        let mut out: Vec<(u32, usize, f32)> = ids
            .into_iter()
            .map(|p| {
                let r = self.row[p as usize] as usize;
                let x = &rows.data[r * rows.dim..(r + 1) * rows.dim];
                (p, r, embedding_distance(query, x, rows.distance))
            })
            .collect();
        out.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
        out.truncate(top_k.max(1));
        out
    }
}

/// Squared norms of the rows of `data`.
pub fn squared_norms(data: &[f32], dim: usize) -> Vec<f32> {
    data.chunks_exact(dim).map(|r| dot(r, r)).collect()
}

/// Dot product with eight independent accumulators (vectorised by the compiler).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline]
fn score(distance: Distance, dot: f32, norm2: f32) -> f32 {
    match distance {
        Distance::Cosine => -dot / norm2.sqrt().max(1e-12),
        Distance::Euclidean | Distance::SquaredEuclidean => norm2 - 2.0 * dot,
    }
}

/// Every person's best row for each query (`m × dim`, row-major), comparing with all rows.
pub fn scan_all(rows: &Rows, queries: &[f32]) -> Vec<Best> {
    let (dim, m) = (rows.dim, queries.len() / rows.dim);
    let mut best: Vec<Best> = (0..m).map(|_| Best::new(rows.people)).collect();
    let n = rows.norms2.len();
    let mut dots = vec![0f32; m * BLOCK];
    for start in (0..n).step_by(BLOCK) {
        let b = BLOCK.min(n - start);
        let block = &rows.data[start * dim..(start + b) * dim];
        matmul_transposed(queries, m, block, b, dim, &mut dots[..m * b]);
        for (qi, best) in best.iter_mut().enumerate() {
            for (j, &d) in dots[qi * b..(qi + 1) * b].iter().enumerate() {
                let r = start + j;
                best.offer(rows.person[r], score(rows.distance, d, rows.norms2[r]), r);
            }
        }
    }
    best
}

/// Every person's best row for one query among the rows `candidates` only.
pub fn scan_rows(rows: &Rows, query: &[f32], candidates: &[u32]) -> Best {
    let mut best = Best::new(rows.people);
    for &r in candidates {
        let r = r as usize;
        let x = &rows.data[r * rows.dim..(r + 1) * rows.dim];
        best.offer(
            rows.person[r],
            score(rows.distance, dot(query, x), rows.norms2[r]),
            r,
        );
    }
    best
}

/// `out (m × b) = a (m × dim) · bᵀ` for row-major `a` and `b (b × dim)`.
fn matmul_transposed(a: &[f32], m: usize, b: &[f32], nb: usize, dim: usize, out: &mut [f32]) {
    assert!(a.len() >= m * dim && b.len() >= nb * dim && out.len() >= m * nb);
    if m == 0 || nb == 0 {
        return;
    }
    // SAFETY: the three buffers were bounds-checked above for the strides given, and `out` is
    // a distinct &mut slice, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            nb,
            dim,
            out.as_mut_ptr(),
            1,
            nb as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_a_plain_loop_for_every_distance() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (n, dim, people) = (BLOCK + 37, 13, 500);
        let data: Vec<f32> = (0..n * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let person: Vec<u32> = (0..n).map(|i| (i * 7 % people) as u32).collect();
        let queries: Vec<f32> = (0..3 * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let norms2 = squared_norms(&data, dim);
        for distance in [
            Distance::Euclidean,
            Distance::SquaredEuclidean,
            Distance::Cosine,
        ] {
            let rows = Rows {
                data: &data,
                dim,
                norms2: &norms2,
                person: &person,
                people,
                distance,
            };
            for (q, best) in queries.chunks_exact(dim).zip(scan_all(&rows, &queries)) {
                // The plain loop: every person's minimum exact distance.
                let mut want = vec![f32::INFINITY; people];
                for (r, x) in data.chunks_exact(dim).enumerate() {
                    let d = embedding_distance(q, x, distance);
                    let p = person[r] as usize;
                    want[p] = want[p].min(d);
                }
                let mut order: Vec<usize> = (0..people).collect();
                order.sort_by(|&a, &b| want[a].total_cmp(&want[b]));
                let got = best.top(&rows, q, 5);
                for (k, (p, _, d)) in got.iter().enumerate() {
                    assert_eq!(*p as usize, order[k], "{distance} rank {k}");
                    assert!((d - want[order[k]]).abs() < 1e-5);
                }
                let all: Vec<u32> = (0..n as u32).collect();
                let sub = scan_rows(&rows, q, &all).top(&rows, q, 5);
                assert_eq!(sub, got);
            }
        }
    }
}
