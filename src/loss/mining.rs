//! Triplet miners: which (anchor, positive, negative) triplets of a batch a loss averages over.
//!
//! A miner reads the distance values (no gradient) and returns the picked distances as entries
//! of the flattened distance matrix; the loss gathers them with `index_select`, so the gradient
//! flows to exactly those entries. Ties follow PyTorch (checked by `tests/triplet_parity.rs`): a `max`/`min`
//! along a row picks the first index (as PyTorch's `max(dim)`), a whole-set `max`/`min`
//! (semi-hard's negative) splits the gradient evenly among the tied entries (as PyTorch's
//! `max()`). Batch-all has no per-triplet list: it runs as one chunked scan
//! ([`super::batch_all`]).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::mask::{labels_to_vec, LabelSets};
use crate::distance::{ensure_float, pairwise_distance, Distance};
use crate::{Error, Result};

/// How triplets are mined from a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mining {
    /// Every valid triplet (mean over those with a positive loss).
    BatchAll,
    /// For each anchor, its hardest positive and hardest negative.
    #[default]
    BatchHard,
    /// For each (anchor, positive) pair, the closest negative farther than the positive.
    SemiHard,
}

impl fmt::Display for Mining {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mining::BatchAll => "batch-all",
            Mining::BatchHard => "batch-hard",
            Mining::SemiHard => "semi-hard",
        })
    }
}

impl FromStr for Mining {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "batch-all" => Ok(Mining::BatchAll),
            "batch-hard" => Ok(Mining::BatchHard),
            "semi-hard" => Ok(Mining::SemiHard),
            other => Err(Error::InvalidArgument(format!(
                "unknown mining {other:?} (expected batch-all, batch-hard or semi-hard)"
            ))),
        }
    }
}

/// Which anchors batch-hard averages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchHardReduction {
    /// Every anchor (Moindrot's formulation): an anchor without a positive has hardest positive 0,
    /// one without a negative has hardest negative = its largest distance.
    AllAnchors,
    /// Only anchors with at least one positive and one negative (the default).
    ValidAnchors,
}

/// A batch checked and prepared: labels, label sets, distances and their values.
pub(crate) struct Prepared {
    pub y: Vec<i64>,
    pub sets: LabelSets,
    pub dist: Tensor,
    /// Row-major copy of the distances, in f64 (exact for f32 inputs).
    pub d: Vec<f64>,
}

impl Prepared {
    /// Checks `embeddings` (B, D) against `labels` (B,) and computes their distances.
    pub fn new(embeddings: &Tensor, labels: &Tensor, distance: Distance) -> Result<Self> {
        ensure_float(embeddings, "embeddings")?;
        let y = labels_to_vec(labels)?;
        let b = match embeddings.dims() {
            [b, _] => *b,
            dims => {
                return Err(Error::InvalidArgument(format!(
                    "embeddings must be (B, D), got shape {dims:?}"
                )))
            }
        };
        if y.len() != b {
            return Err(Error::InvalidArgument(format!(
                "{} labels for {b} embeddings",
                y.len()
            )));
        }
        let dist = pairwise_distance(embeddings, distance)?;
        let d = dist.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let sets = LabelSets::new(&y);
        Ok(Prepared { y, sets, dist, d })
    }

    /// The distances from anchor `a`.
    fn row(&self, a: usize) -> &[f64] {
        let b = self.y.len();
        &self.d[a * b..(a + 1) * b]
    }
}

/// One distance of a mined triplet: entries of the flattened distance matrix with weights.
type Combo = Vec<(usize, f64)>;

/// Triplets picked by a miner.
pub(crate) struct Mined {
    /// `d(a,p)` of each triplet.
    pos: Vec<Combo>,
    /// `d(a,n)` of each triplet.
    neg: Vec<Combo>,
    /// What the sum of the terms is divided by (batch-hard: the anchors averaged over; semi-hard:
    /// every (anchor, positive) pair, with or without a negative).
    pub denominator: usize,
}

impl Mined {
    /// Number of mined triplets.
    pub fn len(&self) -> usize {
        self.pos.len()
    }

    /// `d(a,p) − d(a,n)` for each mined triplet, differentiable with respect to `dist`.
    pub fn differences(&self, dist: &Tensor) -> Result<Tensor> {
        Ok((gather_combos(dist, &self.pos)? - gather_combos(dist, &self.neg)?)?)
    }
}

/// Batch-hard mining: for each anchor, the farthest positive and the closest negative.
///
/// Exactly `_hardest` in the reference: hardest positive = `max_j d[a,j]·ap[a,j]`, hardest negative
/// = `min_j (d[a,j] + rowmax_a · (1 − an[a,j]))`, ties to the first index.
pub(crate) fn mine_batch_hard(p: &Prepared, reduction: BatchHardReduction) -> Mined {
    let b = p.y.len();
    let anchors: Vec<usize> = match reduction {
        BatchHardReduction::AllAnchors => (0..b).collect(),
        BatchHardReduction::ValidAnchors => (0..b).filter(|&a| p.sets.is_valid_anchor(a)).collect(),
    };
    let mut pos = Vec::with_capacity(anchors.len());
    let mut neg = Vec::with_capacity(anchors.len());
    for &a in &anchors {
        let row = p.row(a);
        let is_pos = |j: usize| p.y[j] == p.y[a] && j != a;
        let is_neg = |j: usize| p.y[j] != p.y[a];
        let jp = first_argmax((0..b).map(|j| if is_pos(j) { row[j] } else { 0.0 }));
        pos.push(vec![(a * b + jp, if is_pos(jp) { 1.0 } else { 0.0 })]);
        let jmax = first_argmax(row.iter().copied());
        let jn = first_argmin((0..b).map(|j| row[j] + if is_neg(j) { 0.0 } else { row[jmax] }));
        let mut c = vec![(a * b + jn, 1.0)];
        if !is_neg(jn) {
            c.push((a * b + jmax, 1.0));
        }
        neg.push(c);
    }
    Mined {
        pos,
        neg,
        denominator: anchors.len(),
    }
}

/// Semi-hard mining (TensorFlow Addons `triplet_semihard_loss`): for every (a, p) pair, the
/// negative is the closest one farther than `d(a,p)`, or, if there is none, the farthest one.
/// Pairs without any negative count in the denominator but are not mined.
pub(crate) fn mine_semi_hard(p: &Prepared) -> Mined {
    let b = p.y.len();
    let mut count = 0usize;
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for a in 0..b {
        let row = p.row(a);
        let negs = &p.sets.negatives[a];
        for &j in &p.sets.positives[a] {
            count += 1;
            if negs.is_empty() {
                continue;
            }
            let dap = row[j];
            let farther = negs.iter().filter(|&&n| row[n] > dap);
            let target = match farther.clone().map(|&n| row[n]).reduce(f64::min) {
                Some(v) => v,
                None => negs
                    .iter()
                    .map(|&n| row[n])
                    .fold(f64::NEG_INFINITY, f64::max),
            };
            // A whole-set min/max: the gradient is split evenly among the tied entries.
            let tied: Vec<usize> = negs.iter().copied().filter(|&n| row[n] == target).collect();
            let w = 1.0 / tied.len() as f64;
            pos.push(vec![(a * b + j, 1.0)]);
            neg.push(tied.iter().map(|&n| (a * b + n, w)).collect());
        }
    }
    Mined {
        pos,
        neg,
        denominator: count,
    }
}

/// Linear combinations of entries of the flattened distance matrix, one per output element:
/// `out[i] = Σ coef · d_flat[index]` over `combos[i]`. Differentiable; gradient goes to exactly
/// the listed entries with the listed weights.
fn gather_combos(dist: &Tensor, combos: &[Combo]) -> Result<Tensor> {
    let n = combos.len();
    let k = combos.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut idx = Vec::with_capacity(n * k);
    let mut coef = Vec::with_capacity(n * k);
    for c in combos {
        for j in 0..k {
            let (i, w) = c.get(j).copied().unwrap_or((0, 0.0));
            idx.push(u32::try_from(i).map_err(|_| Error::Msg("batch too large".into()))?);
            coef.push(w);
        }
    }
    let dev = dist.device();
    let idx = Tensor::from_vec(idx, n * k, dev)?;
    let coef = Tensor::from_vec(coef, (n, k), dev)?.to_dtype(dist.dtype())?;
    let picked = dist.flatten_all()?.index_select(&idx, 0)?.reshape((n, k))?;
    Ok(picked.mul(&coef)?.sum(1)?)
}

/// First index of the maximum (PyTorch's `max(dim)` convention).
fn first_argmax(v: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in v.enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

/// First index of the minimum (PyTorch's `min(dim)` convention).
fn first_argmin(v: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::INFINITY);
    for (i, x) in v.enumerate() {
        if x < best.1 {
            best = (i, x);
        }
    }
    best.0
}
