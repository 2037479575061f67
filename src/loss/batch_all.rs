//! Batch-all triplet loss (Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss for Person
//! Re-Identification"; reduction as in Moindrot 2018): every valid triplet of the batch counts.
//!
//! With a margin `m` the loss is the mean of `relu(d(a,p) − d(a,n) + m)` over the triplets whose
//! term is positive (`> 1e-16`), that is
//! `sum / (num_positive + 1e-16)`, as Moindrot's reference does (`tests/triplet_parity.rs`
//! compares with a PyTorch implementation of it). The soft variant averages `softplus(d(a,p) − d(a,n))` over all
//! valid triplets.
//!
//! [`batch_all_chunked`] is a [`CustomOp1`] on the (B, B) distance matrix that loops over the
//! triplets anchor by anchor (rows processed in parallel chunks with rayon), and whose backward
//! returns `dLoss/dDist` directly. Peak memory is O(B²); the number of positive triplets is a
//! constant in the backward, as autograd treats it in the naive formulation that materialises the
//! (B, B, B) triplet tensor (kept beside the tests, `tests/support/batch_all_naive.rs`, as the
//! independent check of this one).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::mask::LabelSets;
use super::term::{sigmoid, softplus, TripletTerm};
use crate::{Error, Result};

/// Default number of anchors processed per chunk by [`batch_all_chunked`].
pub const DEFAULT_CHUNK: usize = 32;

/// Triplets whose hinge term is at most this are not counted as positive (omoindrot's threshold).
const POSITIVE_EPS: f64 = 1e-16;

/// Counts from one pass of batch-all over a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchAllScan {
    /// Sum of the per-triplet terms.
    pub sum: f64,
    /// Triplets with a positive term (`> 1e-16` for the hinge; `d(a,p) > d(a,n)` for soft-plus).
    pub active: usize,
    /// Valid triplets.
    pub valid: usize,
}

impl BatchAllScan {
    fn merge(self, o: Self) -> Self {
        Self {
            sum: self.sum + o.sum,
            active: self.active + o.active,
            valid: self.valid + o.valid,
        }
    }

    /// The denominator of the mean (as a float): `active + 1e-16` for the hinge, `valid` for soft-plus.
    fn denominator(&self, term: TripletTerm) -> f64 {
        match term {
            TripletTerm::Hinge { .. } => self.active as f64 + POSITIVE_EPS,
            TripletTerm::SoftPlus => self.valid as f64,
        }
    }

    /// The loss value: the mean of the terms (0 when there is nothing to average).
    pub fn loss(&self, term: TripletTerm) -> f64 {
        if self.sum == 0.0 {
            0.0
        } else {
            self.sum / self.denominator(term)
        }
    }
}

/// Scans the triplets of anchors `rows`, reading distances from the row-major `d` (B × B).
/// When `grad` is given (the rows' slice of a B × B buffer), accumulates the unscaled gradient
/// `∂ sum / ∂ d` into it (hinge: ±1 per positive triplet; soft-plus: ±σ(x)).
fn scan_rows<T: Copy + Into<f64>>(
    d: &[T],
    b: usize,
    sets: &LabelSets,
    term: TripletTerm,
    rows: Range<usize>,
    mut grad: Option<&mut [f64]>,
) -> BatchAllScan {
    let mut acc = BatchAllScan::default();
    let mut neg_d: Vec<f64> = Vec::new();
    for (ri, a) in rows.enumerate() {
        let row = &d[a * b..(a + 1) * b];
        let negs = &sets.negatives[a];
        neg_d.clear();
        neg_d.extend(negs.iter().map(|&n| row[n].into()));
        let mut g_row = grad.as_deref_mut().map(|g| &mut g[ri * b..(ri + 1) * b]);
        acc.valid += sets.positives[a].len() * negs.len();
        for &p in &sets.positives[a] {
            let pair = Pair {
                p,
                dap: row[p].into(),
                negs,
                neg_d: &neg_d,
            };
            match term {
                TripletTerm::Hinge { margin } => pair.hinge(margin, g_row.as_deref_mut(), &mut acc),
                TripletTerm::SoftPlus => pair.soft_plus(g_row.as_deref_mut(), &mut acc),
            }
        }
    }
    acc
}

/// One (anchor, positive) pair and the anchor's negatives.
struct Pair<'a> {
    /// The positive.
    p: usize,
    /// `d(a, p)`.
    dap: f64,
    /// The negatives.
    negs: &'a [usize],
    /// `d(a, n)` for each negative.
    neg_d: &'a [f64],
}

impl Pair<'_> {
    /// Adds the pair's hinge terms to `acc` and, with `g` (the anchor's gradient row), their
    /// gradient.
    fn hinge(&self, margin: f32, mut g: Option<&mut [f64]>, acc: &mut BatchAllScan) {
        let base = self.dap + f64::from(margin);
        let mut sum = 0.0;
        let mut count = 0usize;
        let mut pos = 0usize;
        for (k, &dan) in self.neg_d.iter().enumerate() {
            let t = base - dan;
            if t > 0.0 {
                sum += t;
                pos += 1;
                if let Some(g) = g.as_deref_mut() {
                    g[self.negs[k]] -= 1.0;
                }
                if t > POSITIVE_EPS {
                    count += 1;
                }
            }
        }
        if let Some(g) = g {
            g[self.p] += pos as f64;
        }
        acc.sum += sum;
        acc.active += count;
    }

    /// Adds the pair's soft-plus terms to `acc` and, with `g`, their gradient.
    fn soft_plus(&self, mut g: Option<&mut [f64]>, acc: &mut BatchAllScan) {
        let mut sum = 0.0;
        let mut gp = 0.0;
        for (k, &dan) in self.neg_d.iter().enumerate() {
            let x = self.dap - dan;
            sum += softplus(x);
            if x > 0.0 {
                acc.active += 1;
            }
            if let Some(g) = g.as_deref_mut() {
                let s = sigmoid(x);
                g[self.negs[k]] -= s;
                gp += s;
            }
        }
        if let Some(g) = g {
            g[self.p] += gp;
        }
        acc.sum += sum;
    }
}

/// Scans all anchors in parallel chunks of `chunk` rows; the chunks' sums are added in order, so
/// the loss has the same bits on every run.
fn scan_all<T: Copy + Into<f64> + Sync>(
    d: &[T],
    b: usize,
    sets: &LabelSets,
    term: TripletTerm,
    chunk: usize,
) -> BatchAllScan {
    let chunk = chunk.max(1);
    (0..b.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let rows = c * chunk..((c + 1) * chunk).min(b);
            scan_rows(d, b, sets, term, rows, None)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(BatchAllScan::default(), BatchAllScan::merge)
}

/// Scans all anchors and returns the gradient of the loss with respect to the distances
/// (row-major B × B), scaled by `upstream`.
fn gradient<T: Copy + Into<f64> + Sync>(
    d: &[T],
    b: usize,
    sets: &LabelSets,
    term: TripletTerm,
    chunk: usize,
    upstream: f64,
) -> Vec<f64> {
    let chunk = chunk.max(1);
    let mut grad = vec![0f64; b * b];
    let scan = grad
        .par_chunks_mut(chunk * b.max(1))
        .enumerate()
        .map(|(c, g)| {
            let rows = c * chunk..((c + 1) * chunk).min(b);
            scan_rows(d, b, sets, term, rows, Some(g))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(BatchAllScan::default(), BatchAllScan::merge);
    let scale = if scan.valid == 0 {
        0.0
    } else {
        upstream / scan.denominator(term)
    };
    grad.par_iter_mut().for_each(|g| *g *= scale);
    grad
}

/// The chunked batch-all loss as a candle custom op on the (B, B) distance matrix.
struct BatchAllOp {
    sets: Arc<LabelSets>,
    term: TripletTerm,
    chunk: usize,
    /// The forward scan, kept for the statistics.
    scan: Arc<Mutex<Option<BatchAllScan>>>,
}

impl CustomOp1 for BatchAllOp {
    fn name(&self) -> &'static str {
        "batch-all-triplet"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let b = self.sets.positives.len();
        if layout.shape().dims() != [b, b] {
            candle_core::bail!(
                "batch-all: distance matrix must be ({b}, {b}), got {:?}",
                layout.shape()
            );
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("batch-all: distance matrix must be contiguous")
        };
        let (scan, out) = match storage {
            CpuStorage::F32(v) => {
                let s = scan_all(&v[start..end], b, &self.sets, self.term, self.chunk);
                (s, CpuStorage::F32(vec![s.loss(self.term) as f32]))
            }
            CpuStorage::F64(v) => {
                let s = scan_all(&v[start..end], b, &self.sets, self.term, self.chunk);
                (s, CpuStorage::F64(vec![s.loss(self.term)]))
            }
            _ => candle_core::bail!("batch-all: distances must be f32 or f64"),
        };
        if let Ok(mut slot) = self.scan.lock() {
            *slot = Some(scan);
        }
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let b = self.sets.positives.len();
        let upstream = grad_res.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let grad = match arg.dtype() {
            DType::F32 => {
                let d = arg.flatten_all()?.to_vec1::<f32>()?;
                gradient(&d, b, &self.sets, self.term, self.chunk, upstream)
            }
            _ => {
                let d = arg.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                gradient(&d, b, &self.sets, self.term, self.chunk, upstream)
            }
        };
        let g = Tensor::from_vec(grad, (b, b), &Device::Cpu)?
            .to_dtype(arg.dtype())?
            .to_device(arg.device())?;
        Ok(Some(g))
    }
}

/// Batch-all triplet loss from a (B, B) distance matrix, computed anchor chunk by anchor chunk
/// without the B³ tensor. Returns the scalar loss (differentiable with respect to `dist`) and the
/// triplet counts.
///
/// `labels` has one entry per row of `dist`; `chunk` is the number of anchors per work unit (rows
/// are processed in parallel). On a non-CPU device the distance matrix is copied to the CPU (an
/// O(B²) differentiable copy) and the loss copied back.
pub fn batch_all_chunked(
    dist: &Tensor,
    labels: &[i64],
    term: TripletTerm,
    chunk: usize,
) -> Result<(Tensor, BatchAllScan)> {
    let b = labels.len();
    if dist.dims() != [b, b] {
        return Err(Error::InvalidArgument(format!(
            "batch-all: distance matrix must be ({b}, {b}), got {:?}",
            dist.dims()
        )));
    }
    if chunk == 0 {
        return Err(Error::InvalidArgument(
            "batch-all: chunk must be ≥ 1".into(),
        ));
    }
    let scan = Arc::new(Mutex::new(None));
    let op = BatchAllOp {
        sets: Arc::new(LabelSets::new(labels)),
        term,
        chunk,
        scan: scan.clone(),
    };
    let device = dist.device().clone();
    let loss = if device.is_cpu() {
        dist.contiguous()?.apply_op1(op)?
    } else {
        dist.to_device(&Device::Cpu)?
            .contiguous()?
            .apply_op1(op)?
            .to_device(&device)?
    };
    let scan = scan
        .lock()
        .ok()
        .and_then(|s| *s)
        .ok_or_else(|| Error::Msg("batch-all: the forward pass recorded no counts".into()))?;
    Ok((loss, scan))
}
