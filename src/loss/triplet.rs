//! The triplet-loss family on a batch of labelled embeddings, composed like
//! pytorch-metric-learning's losses from separate pieces: a [`Distance`], a miner ([`Mining`]:
//! batch-all, batch-hard as in Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss for
//! Person Re-Identification", semi-hard as in Schroff, Kalenichenko & Philbin 2015, "FaceNet"), a
//! per-triplet [`TripletTerm`] (hinge with a margin, or the soft margin) and the miner's reduction
//! (a mean over what it mined). [`offline_triplet_loss`] takes given (a, p, n) triplets.
//!
//! Every definition matches the PyTorch formulation that `tests/triplet_parity.rs` compares with,
//! including which distance receives the gradient when several are tied (see [`super::mining`]).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::batch_all::{batch_all_chunked, DEFAULT_CHUNK};
use super::mining::{mine_batch_hard, mine_semi_hard, BatchHardReduction, Mined, Mining, Prepared};
use super::term::TripletTerm;
use crate::distance::{ensure_float, paired_distance, Distance};
use crate::Result;

/// Configuration of an online triplet loss: distance, miner and term.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TripletLoss {
    /// Triplet mining strategy.
    pub mining: Mining,
    /// The per-triplet term: `relu(d(a,p) − d(a,n) + m)` or `softplus(d(a,p) − d(a,n))`.
    pub term: TripletTerm,
    /// Distance between embeddings.
    pub distance: Distance,
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
    /// Checks that the term is usable (a hinge's margin finite and ≥ 0).
    pub fn validate(&self) -> Result<()> {
        self.term.validate()
    }

    /// The same loss with another miner.
    pub fn with_mining(self, mining: Mining) -> Self {
        Self { mining, ..self }
    }

    /// The loss of a batch of embeddings (B, D) with integer labels (B,), as configured.
    ///
    /// Batch-all runs the chunked O(B²)-memory implementation ([`super::batch_all`]) and averages
    /// over the positive triplets (hinge) or all valid ones (soft margin); batch-hard averages
    /// over valid anchors ([`BatchHardReduction::ValidAnchors`]); semi-hard (TensorFlow Addons'
    /// `triplet_semihard_loss`) divides the sum of its terms by the number of (anchor, positive)
    /// pairs.
    pub fn forward(&self, embeddings: &Tensor, labels: &Tensor) -> Result<LossOutput> {
        self.validate()?;
        let p = Prepared::new(embeddings, labels, self.distance)?;
        match self.mining {
            Mining::BatchAll => batch_all(embeddings, &p, self.term),
            Mining::BatchHard => {
                let mined = mine_batch_hard(&p, BatchHardReduction::ValidAnchors);
                reduce_mined(embeddings, &p, &mined, self.term)
            }
            Mining::SemiHard => reduce_mined(embeddings, &p, &mine_semi_hard(&p), self.term),
        }
    }

    /// The configuration as text, e.g. `batch-hard, margin 0.2, euclidean`.
    pub fn describe(&self) -> String {
        format!("{}, {}, {}", self.mining, self.term, self.distance)
    }
}

/// A scalar 0 that participates in backward (zero gradient for `x`).
fn zero_loss(x: &Tensor) -> Result<Tensor> {
    Ok((x * 0.0)?.sum_all()?)
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

/// The reduction of mined triplets: the sum of their terms over the miner's denominator (0, with
/// a zero gradient, when nothing was mined).
fn reduce_mined(
    embeddings: &Tensor,
    p: &Prepared,
    mined: &Mined,
    term: TripletTerm,
) -> Result<LossOutput> {
    let mut stats = base_stats(p);
    if mined.len() == 0 {
        return Ok(LossOutput {
            loss: zero_loss(embeddings)?,
            stats,
        });
    }
    let (t, active) = term.apply(&mined.differences(&p.dist)?)?;
    stats.active_triplets = active;
    stats.active_fraction = fraction(active, mined.len());
    Ok(LossOutput {
        loss: (t.sum_all()? / mined.denominator as f64)?,
        stats,
    })
}

/// Batch-all triplet loss over every valid triplet (chunked, O(B²) memory; see
/// [`super::batch_all`]). Hinge: mean over positive triplets (Moindrot's reduction); soft margin:
/// mean over all valid triplets.
fn batch_all(embeddings: &Tensor, p: &Prepared, term: TripletTerm) -> Result<LossOutput> {
    let mut stats = base_stats(p);
    if stats.no_valid_triplets {
        return Ok(LossOutput {
            loss: zero_loss(embeddings)?,
            stats,
        });
    }
    let (loss, scan) = batch_all_chunked(&p.dist, &p.y, term, DEFAULT_CHUNK)?;
    stats.active_triplets = scan.active;
    stats.active_fraction = fraction(scan.active, scan.valid);
    Ok(LossOutput { loss, stats })
}

/// Batch-hard triplet loss averaged over the anchors of `reduction`: for each, the farthest
/// positive and the closest negative. [`TripletLoss::forward`] averages over valid anchors; with
/// the hinge and [`BatchHardReduction::AllAnchors`] this is Moindrot's `batch_hard_triplet_loss`.
pub fn batch_hard_loss(
    embeddings: &Tensor,
    labels: &Tensor,
    term: TripletTerm,
    distance: Distance,
    reduction: BatchHardReduction,
) -> Result<LossOutput> {
    term.validate()?;
    let p = Prepared::new(embeddings, labels, distance)?;
    reduce_mined(embeddings, &p, &mine_batch_hard(&p, reduction), term)
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
    let term = TripletTerm::Hinge { margin };
    term.validate()?;
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
    let (t, active) = term.apply(&(dap - dan)?)?;
    stats.active_triplets = active;
    stats.active_fraction = fraction(active, n);
    Ok(LossOutput {
        loss: t.mean_all()?,
        stats,
    })
}
