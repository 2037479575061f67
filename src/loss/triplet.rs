//! The triplet-loss family on a batch of labelled embeddings: batch-all, batch-hard (Hermans,
//! Beyer & Leibe 2017, "In Defense of the Triplet Loss for Person Re-Identification"), semi-hard
//! (Schroff, Kalenichenko & Philbin 2015, "FaceNet"; as TensorFlow Addons' `triplet_semihard_loss`),
//! the soft margin (Hermans 2017) and the offline loss on given (a, p, n) triplets.
//!
//! Every definition matches `shared/reference/triplet_ref.py` exactly, including which distance
//! receives the gradient when several are tied: a `max`/`min` along a row sends it to the first
//! index (as PyTorch's `max(dim)`), a whole-set `max`/`min` (semi-hard's negative) splits it evenly
//! among the tied entries (as PyTorch's `max()`). Mining picks indices from the distance values
//! (no gradient), and the loss gathers the picked distances with `index_select`, so the gradient
//! flows to exactly those entries.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::batch_all::{batch_all_chunked, BatchAllScan, TripletTerm, DEFAULT_CHUNK};
use super::distance::{ensure_float, paired_distance, pairwise_distance, Distance};
use super::mask::{labels_to_vec, LabelSets};
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

/// Configuration of an online triplet loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TripletLoss {
    /// Triplet mining strategy.
    pub mining: Mining,
    /// The margin `m` of `relu(d(a,p) − d(a,n) + m)` (unused when `soft`).
    pub margin: f32,
    /// Distance between embeddings.
    pub distance: Distance,
    /// Soft margin: `softplus(d(a,p) − d(a,n))` instead of the hinge.
    pub soft: bool,
}

impl Default for TripletLoss {
    fn default() -> Self {
        Self {
            mining: Mining::BatchHard,
            margin: 0.2,
            distance: Distance::Euclidean,
            soft: false,
        }
    }
}

/// What a triplet loss observed in a batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TripletStats {
    /// Valid (a, p, n) triplets in the batch (distinct indices, `y_a = y_p ≠ y_n`).
    pub valid_triplets: usize,
    /// Mined triplets whose loss term is positive (hinge: `> 0`, batch-all `> 1e-16`; soft margin:
    /// `d(a,p) > d(a,n)`).
    pub active_triplets: usize,
    /// `active_triplets` over the number of mined triplets (batch-all: all valid triplets;
    /// batch-hard: one per averaged anchor; semi-hard: one per (anchor, positive) pair with a
    /// negative; offline: every row). 0 when nothing was mined.
    pub active_fraction: f32,
    /// Anchors with at least one positive and one negative.
    pub valid_anchors: usize,
    /// Mean over valid anchors of the distance to the farthest positive.
    pub mean_hardest_positive: f32,
    /// Mean over valid anchors of the distance to the closest negative.
    pub mean_hardest_negative: f32,
    /// True when the batch has no valid triplet (the loss is then 0).
    pub no_valid_triplets: bool,
}

/// A loss value and its statistics.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Scalar loss (rank 0), differentiable with respect to the embeddings.
    pub loss: Tensor,
    /// What the loss observed.
    pub stats: TripletStats,
}

impl TripletLoss {
    /// Checks that the margin is usable.
    pub fn validate(&self) -> Result<()> {
        if !self.margin.is_finite() || self.margin < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "triplet margin must be finite and ≥ 0, got {}",
                self.margin
            )));
        }
        Ok(())
    }

    /// The loss of a batch of embeddings (B, D) with integer labels (B,), as configured.
    ///
    /// Batch-hard averages over valid anchors ([`BatchHardReduction::ValidAnchors`]); batch-all
    /// runs the chunked O(B²)-memory implementation.
    pub fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<LossOutput> {
        self.validate()?;
        let term = if self.soft {
            TripletTerm::SoftPlus
        } else {
            TripletTerm::Hinge {
                margin: self.margin,
            }
        };
        match self.mining {
            Mining::BatchAll => batch_all_loss(embeddings, labels, term, self.distance),
            Mining::BatchHard => batch_hard_loss(
                embeddings,
                labels,
                term,
                self.distance,
                BatchHardReduction::ValidAnchors,
            ),
            Mining::SemiHard => semi_hard_loss(embeddings, labels, term, self.distance),
        }
    }
}

/// `softplus(x) = log(1 + eˣ)` elementwise, with PyTorch's threshold (the identity above 20).
pub fn softplus_tensor(x: &Tensor) -> Result<Tensor> {
    let big = x.gt(20.0)?.to_dtype(x.dtype())?;
    let small = (1.0 - &big)?;
    let xs = x.mul(&small)?;
    let soft = ((xs.exp()? + 1.0)?.log()? * &small)?;
    Ok((soft + x.mul(&big)?)?)
}

/// `relu(x)` with PyTorch's gradient convention (0 at 0).
fn hinge(x: &Tensor) -> Result<Tensor> {
    Ok(x.mul(&x.gt(0.0)?.to_dtype(x.dtype())?)?)
}

/// A scalar 0 that participates in backward (zero gradient for `x`).
fn zero_loss(x: &Tensor) -> Result<Tensor> {
    Ok((x * 0.0)?.sum_all()?)
}

/// A batch checked and prepared: labels, label sets, distances and their values.
struct Prepared {
    y: Vec<i64>,
    sets: LabelSets,
    dist: Tensor,
    /// Row-major copy of the distances, in f64 (exact for f32 inputs).
    d: Vec<f64>,
}

fn prepare(embeddings: &Tensor, labels: &Tensor, distance: Distance) -> Result<Prepared> {
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

/// Statistics common to every mining: triplet and anchor counts and the hardest distances.
fn base_stats(p: &Prepared) -> TripletStats {
    let b = p.y.len();
    let (mut n, mut sp, mut sn) = (0usize, 0.0f64, 0.0f64);
    for a in 0..b {
        if !p.sets.is_valid_anchor(a) {
            continue;
        }
        let row = &p.d[a * b..(a + 1) * b];
        n += 1;
        sp += p.sets.positives[a]
            .iter()
            .map(|&j| row[j])
            .fold(f64::NEG_INFINITY, f64::max);
        sn += p.sets.negatives[a]
            .iter()
            .map(|&j| row[j])
            .fold(f64::INFINITY, f64::min);
    }
    let valid_triplets = p.sets.valid_triplets();
    let mean = |s: f64| if n == 0 { 0.0 } else { (s / n as f64) as f32 };
    TripletStats {
        valid_triplets,
        active_triplets: 0,
        active_fraction: 0.0,
        valid_anchors: n,
        mean_hardest_positive: mean(sp),
        mean_hardest_negative: mean(sn),
        no_valid_triplets: valid_triplets == 0,
    }
}

fn fraction(active: usize, mined: usize) -> f32 {
    if mined == 0 {
        0.0
    } else {
        (active as f64 / mined as f64) as f32
    }
}

/// Linear combinations of entries of the flattened distance matrix, one per output element:
/// `out[i] = Σ coef · d_flat[index]` over `combos[i]`. Differentiable; gradient goes to exactly
/// the listed entries with the listed weights.
fn gather_combos(dist: &Tensor, combos: &[Vec<(usize, f64)>]) -> Result<Tensor> {
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

/// Applies the per-triplet term to `x = d(a,p) − d(a,n)` and returns (terms, active count).
fn apply_term(x: &Tensor, term: TripletTerm) -> Result<(Tensor, usize)> {
    let (t, gate) = match term {
        TripletTerm::Hinge { margin } => {
            let t = (x + f64::from(margin))?;
            (hinge(&t)?, t)
        }
        TripletTerm::SoftPlus => (softplus_tensor(x)?, x.clone()),
    };
    let active = gate
        .gt(0.0)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()? as usize;
    Ok((t, active))
}

/// Batch-all triplet loss over every valid triplet (chunked, O(B²) memory; see
/// [`super::batch_all`]). `Hinge`: mean over positive triplets; `SoftPlus`: mean over all.
pub fn batch_all_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    term: TripletTerm,
    distance: Distance,
) -> Result<LossOutput> {
    let p = prepare(embeddings, labels, distance)?;
    let mut stats = base_stats(&p);
    if stats.no_valid_triplets {
        return Ok(LossOutput {
            loss: zero_loss(embeddings)?,
            stats,
        });
    }
    let (loss, scan): (Tensor, BatchAllScan) =
        batch_all_chunked(&p.dist, &p.y, term, DEFAULT_CHUNK)?;
    stats.active_triplets = scan.active;
    stats.active_fraction = fraction(scan.active, scan.valid);
    Ok(LossOutput { loss, stats })
}

/// Batch-all with a margin (Moindrot's omoindrot reduction). See [`batch_all_loss`].
pub fn batch_all_triplet_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    margin: f32,
    distance: Distance,
) -> Result<LossOutput> {
    batch_all_loss(embeddings, labels, TripletTerm::Hinge { margin }, distance)
}

/// Batch-all with the soft margin: mean of `softplus(d(a,p) − d(a,n))` over all valid triplets.
pub fn soft_batch_all_triplet_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    distance: Distance,
) -> Result<LossOutput> {
    batch_all_loss(embeddings, labels, TripletTerm::SoftPlus, distance)
}

/// Batch-hard triplet loss: for each anchor, the farthest positive and the closest negative.
///
/// Exactly `_hardest` in the reference: hardest positive = `max_j d[a,j]·ap[a,j]`, hardest negative
/// = `min_j (d[a,j] + rowmax_a · (1 − an[a,j]))`, ties to the first index.
pub fn batch_hard_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    term: TripletTerm,
    distance: Distance,
    reduction: BatchHardReduction,
) -> Result<LossOutput> {
    let p = prepare(embeddings, labels, distance)?;
    let mut stats = base_stats(&p);
    let b = p.y.len();
    let anchors: Vec<usize> = match reduction {
        BatchHardReduction::AllAnchors => (0..b).collect(),
        BatchHardReduction::ValidAnchors => (0..b).filter(|&a| p.sets.is_valid_anchor(a)).collect(),
    };
    if anchors.is_empty() {
        return Ok(LossOutput {
            loss: zero_loss(embeddings)?,
            stats,
        });
    }
    let mut pos = Vec::with_capacity(anchors.len());
    let mut neg = Vec::with_capacity(anchors.len());
    for &a in &anchors {
        let row = &p.d[a * b..(a + 1) * b];
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
    let x = (gather_combos(&p.dist, &pos)? - gather_combos(&p.dist, &neg)?)?;
    let (t, active) = apply_term(&x, term)?;
    stats.active_triplets = active;
    stats.active_fraction = fraction(active, anchors.len());
    Ok(LossOutput {
        loss: t.mean_all()?,
        stats,
    })
}

/// Batch-hard with a margin, averaged over valid anchors (the default of [`TripletLoss`]).
pub fn batch_hard_triplet_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    margin: f32,
    distance: Distance,
) -> Result<LossOutput> {
    batch_hard_loss(
        embeddings,
        labels,
        TripletTerm::Hinge { margin },
        distance,
        BatchHardReduction::ValidAnchors,
    )
}

/// Batch-hard with a margin averaged over all anchors (Moindrot's `batch_hard_triplet_loss`).
pub fn batch_hard_triplet_loss_all_anchors(
    embeddings: &Tensor,
    labels: &Tensor,
    margin: f32,
    distance: Distance,
) -> Result<LossOutput> {
    batch_hard_loss(
        embeddings,
        labels,
        TripletTerm::Hinge { margin },
        distance,
        BatchHardReduction::AllAnchors,
    )
}

/// Soft-margin batch-hard (Hermans 2017): mean over valid anchors of
/// `softplus(hardest positive − hardest negative)`.
pub fn soft_batch_hard_triplet_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    distance: Distance,
) -> Result<LossOutput> {
    batch_hard_loss(
        embeddings,
        labels,
        TripletTerm::SoftPlus,
        distance,
        BatchHardReduction::ValidAnchors,
    )
}

/// Semi-hard triplet loss (TensorFlow Addons `triplet_semihard_loss`): for every (a, p) pair, the
/// negative is the closest one farther than `d(a,p)`, or, if there is none, the farthest one;
/// the sum of the terms is divided by the number of (a, p) pairs (pairs without any negative
/// count but contribute nothing). With `SoftPlus`, the term is `softplus(d(a,p) − d(a,n))` with the
/// same selection.
pub fn semi_hard_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    term: TripletTerm,
    distance: Distance,
) -> Result<LossOutput> {
    let p = prepare(embeddings, labels, distance)?;
    let mut stats = base_stats(&p);
    let b = p.y.len();
    let mut count = 0usize;
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for a in 0..b {
        let row = &p.d[a * b..(a + 1) * b];
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
    if pos.is_empty() {
        return Ok(LossOutput {
            loss: zero_loss(embeddings)?,
            stats,
        });
    }
    let x = (gather_combos(&p.dist, &pos)? - gather_combos(&p.dist, &neg)?)?;
    let (t, active) = apply_term(&x, term)?;
    stats.active_triplets = active;
    stats.active_fraction = fraction(active, pos.len());
    Ok(LossOutput {
        loss: (t.sum_all()? / count as f64)?,
        stats,
    })
}

/// Semi-hard with a margin. See [`semi_hard_loss`].
pub fn semi_hard_triplet_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    margin: f32,
    distance: Distance,
) -> Result<LossOutput> {
    semi_hard_loss(embeddings, labels, TripletTerm::Hinge { margin }, distance)
}

/// Offline triplet loss on given triplets (FaceNet; Keras formulation): the mean over rows of
/// `relu(d(a,p) − d(a,n) + m)`, with distances computed row by row from the differences.
pub fn offline_triplet_loss(
    anchor: &Tensor,
    positive: &Tensor,
    negative: &Tensor,
    margin: f32,
    distance: Distance,
) -> Result<LossOutput> {
    ensure_float(anchor, "anchor")?;
    if !margin.is_finite() || margin < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "triplet margin must be finite and ≥ 0, got {margin}"
        )));
    }
    let dap = paired_distance(anchor, positive, distance)?;
    let dan = paired_distance(anchor, negative, distance)?;
    let n = dap.dim(0)?;
    let mean = |t: &Tensor| -> Result<f32> {
        Ok(if n == 0 {
            0.0
        } else {
            t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()? as f32
        })
    };
    let mut stats = TripletStats {
        valid_triplets: n,
        valid_anchors: n,
        mean_hardest_positive: mean(&dap)?,
        mean_hardest_negative: mean(&dan)?,
        no_valid_triplets: n == 0,
        ..Default::default()
    };
    if n == 0 {
        return Ok(LossOutput {
            loss: zero_loss(anchor)?,
            stats,
        });
    }
    let (t, active) = apply_term(&(dap - dan)?, TripletTerm::Hinge { margin })?;
    stats.active_triplets = active;
    stats.active_fraction = fraction(active, n);
    Ok(LossOutput {
        loss: t.mean_all()?,
        stats,
    })
}
