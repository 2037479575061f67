//! Face-verification metrics on pair distances: accuracy at a threshold, the best threshold,
//! 10-fold accuracy (the LFW protocol of Huang et al., UMass TR 07-49, 2007), the exact ROC, its
//! AUC, the equal error rate, TAR at a given FAR (as `calculate_val` in davidsandberg/facenet),
//! and threshold calibration.
//!
//! Conventions used everywhere in this module:
//! - `distances[i]` is the distance between the two faces of pair `i` (smaller = more similar) and
//!   `same[i]` says whether the pair shows one person.
//! - **Tie rule:** a pair is *predicted same* iff `distance <= threshold`. A pair whose distance
//!   equals the threshold is therefore accepted.
//! - TAR (true accept rate) = accepted same pairs / same pairs; FAR (false accept rate) = accepted
//!   different pairs / different pairs; FRR = 1 − TAR.
//! - Counts are exact integers; rates are computed in `f64` and reported as `f32`.
//! - Distances must be finite: NaN or infinite distances are rejected with an error naming the pair.

use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// One operating point of the ROC curve: at `threshold`, the fraction of same pairs accepted
/// (`tar`) and the fraction of different pairs accepted (`far`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    /// Pairs with `distance <= threshold` are accepted as same.
    pub threshold: f32,
    /// True accept rate at this threshold.
    pub tar: f32,
    /// False accept rate at this threshold.
    pub far: f32,
}

/// The result of k-fold cross-validated accuracy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KFold {
    /// Mean of the held-out fold accuracies.
    pub mean: f32,
    /// Population standard deviation (divisor k, as `np.std`) of the held-out fold accuracies.
    pub std: f32,
    /// Threshold chosen on the other folds, for each held-out fold.
    pub thresholds: Vec<f32>,
    /// Accuracy on each held-out fold at its threshold.
    pub accuracies: Vec<f32>,
}

/// Everything `candle-face evaluate` reports about a set of scored pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerificationReport {
    /// Number of pairs evaluated.
    pub pairs: usize,
    /// 10-fold cross-validated accuracy (mean over held-out folds, see [`kfold_accuracy`]).
    pub accuracy: f32,
    /// Standard deviation of the 10 held-out fold accuracies.
    pub accuracy_std: f32,
    /// Accuracy of the whole set at `model_threshold`, when one was given.
    pub accuracy_at_model_threshold: Option<f32>,
    /// The threshold that maximises accuracy on the whole set ([`best_threshold`]).
    pub best_threshold: f32,
    /// Area under the exact ROC curve ([`auc`]).
    pub auc: f32,
    /// Equal error rate ([`eer`]).
    pub eer: f32,
    /// TAR at FAR ≤ target ([`tar_at_far`]), keyed by the target: `"0.001"`, `"0.01"`.
    pub tar_at_far: BTreeMap<String, f32>,
    /// The model's stored threshold, when one was given.
    pub model_threshold: Option<f32>,
}

/// What a calibrated threshold should achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalibrationTarget {
    /// Maximise accuracy ([`best_threshold`]).
    Accuracy,
    /// Accept as many same pairs as possible while keeping FAR at most this value ([`tar_at_far`]).
    Far(f32),
}

impl FromStr for CalibrationTarget {
    type Err = Error;

    /// Parses `"accuracy"` or `"far=<rate>"` (for example `"far=0.001"`), rate in `[0, 1]`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("accuracy") {
            return Ok(CalibrationTarget::Accuracy);
        }
        let bad = || {
            Error::InvalidArgument(format!(
                "calibration target {s:?}: expected \"accuracy\" or \"far=<rate>\" with a rate in [0, 1], e.g. \"far=0.001\""
            ))
        };
        let (key, value) = t.split_once('=').ok_or_else(bad)?;
        if !key.trim().eq_ignore_ascii_case("far") {
            return Err(bad());
        }
        let rate: f32 = value.trim().parse().map_err(|_| bad())?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(bad());
        }
        Ok(CalibrationTarget::Far(rate))
    }
}

impl std::fmt::Display for CalibrationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalibrationTarget::Accuracy => write!(f, "accuracy"),
            CalibrationTarget::Far(r) => write!(f, "far={r}"),
        }
    }
}

/// Checks that `distances` and `same` have the same non-zero length and that every distance is
/// finite.
fn validate(distances: &[f32], same: &[bool]) -> Result<()> {
    if distances.len() != same.len() {
        return Err(Error::InvalidArgument(format!(
            "{} distances but {} same/different labels",
            distances.len(),
            same.len()
        )));
    }
    if distances.is_empty() {
        return Err(Error::InvalidArgument("no pairs to evaluate".into()));
    }
    if let Some(i) = distances.iter().position(|d| !d.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "distance of pair {i} is {} (distances must be finite numbers)",
            distances[i]
        )));
    }
    Ok(())
}

/// Like [`validate`], and also requires at least one same and one different pair.
fn validate_both_classes(distances: &[f32], same: &[bool]) -> Result<(usize, usize)> {
    validate(distances, same)?;
    let n_same = same.iter().filter(|&&s| s).count();
    let n_diff = same.len() - n_same;
    if n_same == 0 {
        return Err(Error::InvalidArgument(format!(
            "all {} pairs are different-person pairs; need at least one same-person pair",
            same.len()
        )));
    }
    if n_diff == 0 {
        return Err(Error::InvalidArgument(format!(
            "all {} pairs are same-person pairs; need at least one different-person pair",
            same.len()
        )));
    }
    Ok((n_same, n_diff))
}

/// The largest `f32` strictly below `x` (for finite `x`); `f32::next_down` needs Rust 1.86.
fn next_down(x: f32) -> f32 {
    if x == 0.0 {
        return -f32::from_bits(1);
    }
    let bits = x.to_bits();
    if x > 0.0 {
        f32::from_bits(bits - 1)
    } else {
        f32::from_bits(bits + 1)
    }
}

/// A threshold strictly between `a < b` that splits the same way as `a` (accepts `a`, rejects
/// `b`): their midpoint, or `a` itself when the two are adjacent floats and the midpoint rounds
/// to `b`.
fn midpoint(a: f32, b: f32) -> f32 {
    let m = ((a as f64 + b as f64) / 2.0) as f32;
    if m >= b || m < a {
        a
    } else {
        m
    }
}

/// A threshold below `min` that rejects every pair: `min − max(1, |min|)·2⁻¹⁰`, or the next float
/// down if that rounds back to `min`.
fn below(min: f32) -> f32 {
    let t = min - min.abs().max(1.0) / 1024.0;
    if t < min && t.is_finite() {
        t
    } else {
        next_down(min)
    }
}

/// A threshold above `max` that accepts every pair: `max + max(1, |max|)·2⁻¹⁰` (or `max` itself
/// when that overflows, which accepts every pair as well).
fn above(max: f32) -> f32 {
    let t = max + max.abs().max(1.0) / 1024.0;
    if t.is_finite() {
        t
    } else {
        max
    }
}

/// Fraction of pairs classified correctly when pairs with `distance <= threshold` are predicted
/// same.
pub fn accuracy_at(distances: &[f32], same: &[bool], threshold: f32) -> Result<f32> {
    validate(distances, same)?;
    if threshold.is_nan() {
        return Err(Error::InvalidArgument("threshold is NaN".into()));
    }
    let correct = distances
        .iter()
        .zip(same)
        .filter(|&(&d, &s)| (d <= threshold) == s)
        .count();
    Ok((correct as f64 / distances.len() as f64) as f32)
}

/// Sorted distinct distances with, for each, how many same and different pairs lie at it.
fn distinct_counts(distances: &[f32], same: &[bool]) -> Vec<(f32, usize, usize)> {
    let mut order: Vec<usize> = (0..distances.len()).collect();
    order.sort_by(|&i, &j| distances[i].total_cmp(&distances[j]));
    let mut out: Vec<(f32, usize, usize)> = Vec::new();
    for i in order {
        let d = distances[i];
        let (s, n) = if same[i] { (1, 0) } else { (0, 1) };
        match out.last_mut() {
            // `==` (not bit equality) so that -0.0 and 0.0 are one value, as `<=` sees them.
            Some(last) if last.0 == d => {
                last.1 += s;
                last.2 += n;
            }
            _ => out.push((d, s, n)),
        }
    }
    out
}

/// The threshold that maximises accuracy, and that accuracy, found exactly.
///
/// Candidates are: a value below the smallest distance (everything rejected), the midpoint
/// between each two consecutive distinct distances, and a value above the largest distance
/// (everything accepted). Thresholds that give the same partition give the same accuracy, so this
/// covers every possible classification. Among equally accurate candidates the **smallest**
/// threshold is returned (as `np.argmax` over ascending thresholds does in facenet). The sweep
/// costs O(n log n).
pub fn best_threshold(distances: &[f32], same: &[bool]) -> Result<(f32, f32)> {
    validate(distances, same)?;
    let groups = distinct_counts(distances, same);
    let n = distances.len();
    let n_diff = same.iter().filter(|&&s| !s).count();
    // Threshold below everything: all predicted different, correct = number of different pairs.
    let mut correct = n_diff;
    let mut best = (below(groups[0].0), correct);
    for (k, &(d, s, nd)) in groups.iter().enumerate() {
        // Moving the threshold past `d` accepts the pairs at `d`.
        correct = correct + s - nd;
        if correct > best.1 {
            let t = match groups.get(k + 1) {
                Some(&(next, _, _)) => midpoint(d, next),
                None => above(d),
            };
            best = (t, correct);
        }
    }
    Ok((best.0, (best.1 as f64 / n as f64) as f32))
}

/// Assigns each pair to one of `folds` folds, stratified: the same pairs and the different pairs
/// are each cut into `folds` consecutive chunks in input order, and fold `i` is chunk `i` of each.
/// For LFW View 2 `pairs.txt` these are exactly its ten sets.
///
/// Chunk `i` of `m` items is `[⌊i·m/k⌋, ⌊(i+1)·m/k⌋)`. Every fold must receive at least one same
/// and one different pair, so each class needs at least `folds` pairs.
pub fn stratified_folds(same: &[bool], folds: usize) -> Result<Vec<usize>> {
    if folds < 2 {
        return Err(Error::InvalidArgument(format!(
            "k-fold evaluation needs at least 2 folds, got {folds}"
        )));
    }
    let n_same = same.iter().filter(|&&s| s).count();
    let n_diff = same.len() - n_same;
    if n_same < folds || n_diff < folds {
        return Err(Error::InvalidArgument(format!(
            "{folds}-fold evaluation needs at least {folds} same and {folds} different pairs; got {n_same} same and {n_diff} different"
        )));
    }
    let chunk = |rank: usize, m: usize| {
        // The fold i with ⌊i·m/k⌋ <= rank < ⌊(i+1)·m/k⌋.
        let mut i = rank * folds / m;
        while (i + 1) * m / folds <= rank {
            i += 1;
        }
        while i * m / folds > rank {
            i -= 1;
        }
        i
    };
    let (mut rs, mut rd) = (0usize, 0usize);
    Ok(same
        .iter()
        .map(|&s| {
            if s {
                rs += 1;
                chunk(rs - 1, n_same)
            } else {
                rd += 1;
                chunk(rd - 1, n_diff)
            }
        })
        .collect())
}

/// k-fold cross-validated accuracy: for each fold, the threshold is chosen with
/// [`best_threshold`] on the other `folds − 1` folds and the accuracy is measured on the held-out
/// fold. Folds are [`stratified_folds`]. `mean` and `std` (population, divisor k) are over the k
/// held-out accuracies, as in facenet's `calculate_roc`.
pub fn kfold_accuracy(distances: &[f32], same: &[bool], folds: usize) -> Result<KFold> {
    validate(distances, same)?;
    let fold = stratified_folds(same, folds)?;
    let mut thresholds = Vec::with_capacity(folds);
    let mut accuracies = Vec::with_capacity(folds);
    for f in 0..folds {
        let (mut train_d, mut train_s, mut test_d, mut test_s) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((&d, &s), &fi) in distances.iter().zip(same).zip(&fold) {
            if fi == f {
                test_d.push(d);
                test_s.push(s);
            } else {
                train_d.push(d);
                train_s.push(s);
            }
        }
        let (t, _) = best_threshold(&train_d, &train_s)?;
        thresholds.push(t);
        accuracies.push(accuracy_at(&test_d, &test_s, t)?);
    }
    let k = folds as f64;
    let mean = accuracies.iter().map(|&a| a as f64).sum::<f64>() / k;
    let var = accuracies
        .iter()
        .map(|&a| (a as f64 - mean).powi(2))
        .sum::<f64>()
        / k;
    Ok(KFold {
        mean: mean as f32,
        std: var.sqrt() as f32,
        thresholds,
        accuracies,
    })
}

/// The exact ROC curve: one point per distinct distance `d` (threshold `d`, so pairs at exactly
/// `d` are accepted), preceded by a point below the smallest distance where nothing is accepted
/// (TAR = FAR = 0). Points are in ascending threshold order, so TAR and FAR never decrease; the
/// last point is (FAR, TAR) = (1, 1). Needs at least one same and one different pair.
pub fn roc(distances: &[f32], same: &[bool]) -> Result<Vec<RocPoint>> {
    let (n_same, n_diff) = validate_both_classes(distances, same)?;
    let groups = distinct_counts(distances, same);
    let mut out = Vec::with_capacity(groups.len() + 1);
    out.push(RocPoint {
        threshold: below(groups[0].0),
        tar: 0.0,
        far: 0.0,
    });
    let (mut ts, mut fs) = (0usize, 0usize);
    for (d, s, nd) in groups {
        ts += s;
        fs += nd;
        out.push(RocPoint {
            threshold: d,
            tar: (ts as f64 / n_same as f64) as f32,
            far: (fs as f64 / n_diff as f64) as f32,
        });
    }
    Ok(out)
}

/// Area under a ROC curve from [`roc`], by the trapezoid rule over its points in order.
///
/// On the exact ROC this equals the Mann–Whitney probability that a random different pair is
/// farther apart than a random same pair, counting ties as one half:
/// `P(d_diff > d_same) + ½·P(d_diff = d_same)`. An empty or one-point slice gives 0.
pub fn auc(roc: &[RocPoint]) -> f32 {
    roc.windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            (b.far as f64 - a.far as f64) * (a.tar as f64 + b.tar as f64) / 2.0
        })
        .sum::<f64>() as f32
}

/// Equal error rate of a ROC curve from [`roc`]: the rate where FAR = FRR (= 1 − TAR), found by
/// linear interpolation along the curve's segments (the same as facenet's
/// `brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)` where FAR strictly increases; vertical
/// segments are handled as well). `FAR − FRR = FAR + TAR − 1` never decreases along the curve and
/// goes from −1 to 1, so the crossing exists and is unique up to a flat stretch, where the first
/// crossing is taken. Returns 1 for an empty slice.
pub fn eer(roc: &[RocPoint]) -> f32 {
    let g = |p: &RocPoint| p.far as f64 + p.tar as f64 - 1.0;
    if let Some(p) = roc.first() {
        if g(p) >= 0.0 {
            return p.far;
        }
    }
    for w in roc.windows(2) {
        let (a, b) = (w[0], w[1]);
        let (ga, gb) = (g(&a), g(&b));
        if ga < 0.0 && gb >= 0.0 {
            let alpha = -ga / (gb - ga);
            let far = a.far as f64 + alpha * (b.far as f64 - a.far as f64);
            return far as f32;
        }
    }
    1.0
}

/// TAR at FAR ≤ `target` on a single set of pairs: the point of the ROC curve (from [`roc`]) with
/// the **largest threshold whose FAR ≤ `target`**, returned whole (threshold, TAR, FAR).
///
/// Because TAR never decreases with the threshold, this is the highest TAR reachable on this set
/// without exceeding the target FAR, and its threshold is a distance of the set (so pairs at
/// exactly that distance are accepted). The first ROC point (FAR = 0) always qualifies.
///
/// Relation to facenet's `calculate_val` (davidsandberg/facenet, `facenet.py`): there, on each
/// training fold the threshold is interpolated (`interp1d(far_train, thresholds, kind='slinear')`)
/// on a fixed grid of thresholds to hit FAR ≈ target, predictions use `distance < threshold`, and
/// VAL/FAR are averaged over the held-out folds. This is the single-set, exact counterpart: no
/// grid, no interpolation, the achieved FAR never exceeds the target.
pub fn tar_at_far(roc: &[RocPoint], target: f32) -> Result<RocPoint> {
    if !(0.0..=1.0).contains(&target) {
        return Err(Error::InvalidArgument(format!(
            "target FAR {target} is not in [0, 1]"
        )));
    }
    roc.iter()
        .rev()
        .find(|p| p.far <= target)
        .copied()
        .ok_or_else(|| Error::InvalidArgument("empty ROC curve".into()))
}

/// A threshold calibrated on these pairs for `target`: the [`best_threshold`] for
/// [`CalibrationTarget::Accuracy`], the threshold of [`tar_at_far`] for
/// [`CalibrationTarget::Far`]. Needs at least one same and one different pair.
pub fn calibrate(distances: &[f32], same: &[bool], target: CalibrationTarget) -> Result<f32> {
    validate_both_classes(distances, same)?;
    match target {
        CalibrationTarget::Accuracy => Ok(best_threshold(distances, same)?.0),
        CalibrationTarget::Far(rate) => Ok(tar_at_far(&roc(distances, same)?, rate)?.threshold),
    }
}

/// The FAR targets reported in [`VerificationReport::tar_at_far`], with their keys.
pub const REPORT_FAR_TARGETS: [(&str, f32); 2] = [("0.001", 0.001), ("0.01", 0.01)];

/// Number of folds used for [`VerificationReport::accuracy`].
pub const REPORT_FOLDS: usize = 10;

/// Computes a full [`VerificationReport`]. Errors (naming the problem) on empty input, mismatched
/// lengths, a non-finite distance, no same or no different pairs, fewer than 10 pairs of either
/// kind (10-fold accuracy), or a non-finite `model_threshold`.
pub fn evaluate(
    distances: &[f32],
    same: &[bool],
    model_threshold: Option<f32>,
) -> Result<VerificationReport> {
    validate_both_classes(distances, same)?;
    if let Some(t) = model_threshold {
        if !t.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "model threshold {t} is not a finite number"
            )));
        }
    }
    let kfold = kfold_accuracy(distances, same, REPORT_FOLDS)?;
    let (best, _) = best_threshold(distances, same)?;
    let curve = roc(distances, same)?;
    let mut tars = BTreeMap::new();
    for (key, rate) in REPORT_FAR_TARGETS {
        tars.insert(key.to_string(), tar_at_far(&curve, rate)?.tar);
    }
    let accuracy_at_model_threshold = match model_threshold {
        Some(t) => Some(accuracy_at(distances, same, t)?),
        None => None,
    };
    Ok(VerificationReport {
        pairs: distances.len(),
        accuracy: kfold.mean,
        accuracy_std: kfold.std,
        accuracy_at_model_threshold,
        best_threshold: best,
        auc: auc(&curve),
        eer: eer(&curve),
        tar_at_far: tars,
        model_threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---------------------------------------------------------------------------------------
    // Independent brute-force references (no sorting sweeps, no shared helpers).

    fn brute_accuracy(d: &[f32], s: &[bool], t: f32) -> f64 {
        let ok = (0..d.len()).filter(|&i| (d[i] <= t) == s[i]).count();
        ok as f64 / d.len() as f64
    }

    /// Every threshold that could matter: each distance, each midpoint of any two distances,
    /// and values beyond both ends.
    fn brute_candidates(d: &[f32]) -> Vec<f32> {
        let mut c = vec![-1e6f32, 1e6];
        for &a in d {
            c.push(a);
            for &b in d {
                if a < b {
                    c.push(((a as f64 + b as f64) / 2.0) as f32);
                }
            }
        }
        c
    }

    fn brute_best_accuracy(d: &[f32], s: &[bool]) -> f64 {
        brute_candidates(d)
            .into_iter()
            .map(|t| brute_accuracy(d, s, t))
            .fold(0.0, f64::max)
    }

    /// Smallest candidate threshold reaching the best accuracy (midpoints and ends only, which is
    /// the documented choice), by trying all of them.
    fn brute_best_threshold(d: &[f32], s: &[bool]) -> (f32, f64) {
        let mut vals: Vec<f32> = d.to_vec();
        vals.sort_by(f32::total_cmp);
        vals.dedup();
        let mut cands = vec![below(vals[0])];
        for w in vals.windows(2) {
            cands.push(midpoint(w[0], w[1]));
        }
        cands.push(above(*vals.last().unwrap()));
        let mut best = (cands[0], brute_accuracy(d, s, cands[0]));
        for &t in &cands[1..] {
            let a = brute_accuracy(d, s, t);
            if a > best.1 {
                best = (t, a);
            }
        }
        best
    }

    fn brute_rates(d: &[f32], s: &[bool], t: f32) -> (f64, f64) {
        let ns = s.iter().filter(|&&x| x).count() as f64;
        let nd = s.iter().filter(|&&x| !x).count() as f64;
        let ta = (0..d.len()).filter(|&i| s[i] && d[i] <= t).count() as f64;
        let fa = (0..d.len()).filter(|&i| !s[i] && d[i] <= t).count() as f64;
        (ta / ns, fa / nd)
    }

    /// Mann–Whitney by counting all (same, different) pairs: P(d_diff > d_same) + ½ P(tie).
    fn brute_auc(d: &[f32], s: &[bool]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (&di, &si) in d.iter().zip(s) {
            for (&dj, &sj) in d.iter().zip(s) {
                if si && !sj {
                    den += 1.0;
                    if dj > di {
                        num += 1.0;
                    } else if dj == di {
                        num += 0.5;
                    }
                }
            }
        }
        num / den
    }

    /// k-fold by explicit loops: fold of the r-th same (different) pair is the i with
    /// ⌊i·m/k⌋ <= r < ⌊(i+1)·m/k⌋.
    fn brute_kfold(d: &[f32], s: &[bool], k: usize) -> Vec<f64> {
        let ns = s.iter().filter(|&&x| x).count();
        let nd = s.len() - ns;
        let mut fold = Vec::with_capacity(d.len());
        let (mut rs, mut rd) = (0, 0);
        for &si in s {
            let (r, m) = if si { (&mut rs, ns) } else { (&mut rd, nd) };
            fold.push(
                (0..k)
                    .find(|&f| f * m / k <= *r && *r < (f + 1) * m / k)
                    .unwrap(),
            );
            *r += 1;
        }
        (0..k)
            .map(|f| {
                let tr: Vec<usize> = (0..d.len()).filter(|&i| fold[i] != f).collect();
                let te: Vec<usize> = (0..d.len()).filter(|&i| fold[i] == f).collect();
                let td: Vec<f32> = tr.iter().map(|&i| d[i]).collect();
                let ts: Vec<bool> = tr.iter().map(|&i| s[i]).collect();
                let (t, _) = brute_best_threshold(&td, &ts);
                let ed: Vec<f32> = te.iter().map(|&i| d[i]).collect();
                let es: Vec<bool> = te.iter().map(|&i| s[i]).collect();
                brute_accuracy(&ed, &es, t)
            })
            .collect()
    }

    // ---------------------------------------------------------------------------------------
    // A small example worked out by hand.
    //
    //   distance: 0.1 0.2 0.3 0.3 0.5 0.6 0.7 0.9
    //   same:      S   S   D   S   D   S   D   D        (4 same, 4 different; a tie at 0.3)
    //
    // Correct predictions as the threshold sweeps up past each distinct distance (start: all
    // rejected = 4 different pairs right): 0.1 → 5, 0.2 → 6, 0.3 → 6 (+S −D), 0.5 → 5, 0.6 → 6,
    // 0.7 → 5, 0.9 → 4. Best = 6/8 = 0.75, first reached past 0.2: threshold (0.2+0.3)/2 = 0.25.
    // ROC (threshold: FAR, TAR): below: (0, 0), 0.1: (0, .25), 0.2: (0, .5), 0.3: (.25, .75),
    // 0.5: (.5, .75), 0.6: (.5, 1), 0.7: (.75, 1), 0.9: (1, 1).
    // AUC by trapezoids: .25·(.5+.75)/2 + .25·.75 + .25·1 + .25·1 = .15625+.1875+.25+.25 = .84375.
    // Mann–Whitney: for same 0.1: 4 farther different pairs, 0.2: 4, 0.3: 3 + ½ tie, 0.6: 2 →
    // 13.5/16 = .84375, as it must.
    // EER: FAR + TAR − 1 is −.5 at 0.2 and exactly 0 at 0.3, so EER = FAR = FRR = .25.
    // TAR at FAR <= 0: point 0.2 → .5; FAR <= .25 or .3: point 0.3 → .75; FAR <= .5: point 0.6 → 1.
    // 2-fold: same pairs (in order) .1 .2 | .3 .6, different .3 .5 | .7 .9. Held-out fold 0:
    // trained on fold 1 (S .3 .6, D .7 .9) → threshold (.6+.7)/2 = .65, which on fold 0 accepts
    // all four: 2/4. Held-out fold 1: trained on fold 0 → (.2+.3)/2 = .25, which on fold 1
    // rejects all four: 2/4. Mean .5, std 0.

    const HD: [f32; 8] = [0.1, 0.2, 0.3, 0.3, 0.5, 0.6, 0.7, 0.9];
    const HS: [bool; 8] = [true, true, false, true, false, true, false, false];

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() < 1e-6
    }

    #[test]
    fn hand_example_best_threshold() {
        let (t, a) = best_threshold(&HD, &HS).unwrap();
        assert!(close(t, 0.25), "{t}");
        assert!(close(a, 0.75), "{a}");
    }

    #[test]
    fn hand_example_roc_auc_eer() {
        let r = roc(&HD, &HS).unwrap();
        let want = [
            (0.0, 0.0),
            (0.0, 0.25),
            (0.0, 0.5),
            (0.25, 0.75),
            (0.5, 0.75),
            (0.5, 1.0),
            (0.75, 1.0),
            (1.0, 1.0),
        ];
        assert_eq!(r.len(), want.len());
        for (p, &(far, tar)) in r.iter().zip(&want) {
            assert!(close(p.far, far) && close(p.tar, tar), "{p:?}");
        }
        assert!(r[0].threshold < 0.1);
        assert_eq!(r[3].threshold, 0.3);
        assert!(close(auc(&r), 0.84375));
        assert!(close(eer(&r), 0.25));
    }

    #[test]
    fn hand_example_tar_at_far() {
        let r = roc(&HD, &HS).unwrap();
        let p = tar_at_far(&r, 0.0).unwrap();
        assert_eq!((p.threshold, p.tar), (0.2, 0.5));
        assert_eq!(tar_at_far(&r, 0.25).unwrap().tar, 0.75);
        assert_eq!(tar_at_far(&r, 0.3).unwrap().threshold, 0.3);
        assert_eq!(tar_at_far(&r, 0.5).unwrap().tar, 1.0);
        assert_eq!(tar_at_far(&r, 0.5).unwrap().threshold, 0.6);
        assert!(tar_at_far(&r, 1.5).is_err());
        assert_eq!(
            calibrate(&HD, &HS, CalibrationTarget::Far(0.25)).unwrap(),
            0.3
        );
        assert!(close(
            calibrate(&HD, &HS, CalibrationTarget::Accuracy).unwrap(),
            0.25
        ));
    }

    #[test]
    fn hand_example_two_fold() {
        let k = kfold_accuracy(&HD, &HS, 2).unwrap();
        assert!(close(k.thresholds[0], 0.65) && close(k.thresholds[1], 0.25));
        assert_eq!(k.accuracies, vec![0.5, 0.5]);
        assert_eq!((k.mean, k.std), (0.5, 0.0));
    }

    #[test]
    fn tie_rule_accepts_equal_distance() {
        assert_eq!(accuracy_at(&[1.0], &[true], 1.0).unwrap(), 1.0);
        assert_eq!(accuracy_at(&[1.0], &[false], 1.0).unwrap(), 0.0);
        assert_eq!(accuracy_at(&[1.0], &[false], 0.999).unwrap(), 1.0);
        // roc: the point at threshold 1.0 counts both pairs at 1.0 as accepted.
        let r = roc(&[1.0, 1.0], &[true, false]).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].threshold, r[1].far, r[1].tar), (1.0, 1.0, 1.0));
        assert_eq!(auc(&r), 0.5);
        assert_eq!(eer(&r), 0.5);
    }

    #[test]
    fn best_threshold_adjacent_floats_and_ends() {
        // Adjacent floats: the midpoint must still separate them.
        let a = 1.0f32;
        let b = f32::from_bits(a.to_bits() + 1);
        let (t, acc) = best_threshold(&[a, b], &[true, false]).unwrap();
        assert_eq!(acc, 1.0);
        assert!(t >= a && t < b);
        // All different pairs nearer than all same pairs: best is to reject everything.
        let (t, acc) = best_threshold(&[0.0, 5.0, 5.0], &[false, true, true]).unwrap();
        assert!(close(acc, 2.0 / 3.0));
        assert!(accuracy_at(&[0.0, 5.0, 5.0], &[false, true, true], t).unwrap() == acc);
        let (t, acc) = best_threshold(&[0.0, 0.0], &[false, false]).unwrap();
        assert!(t < 0.0 && acc == 1.0);
        let (t, acc) = best_threshold(&[3.0, 3.0], &[true, true]).unwrap();
        assert!(t > 3.0 && acc == 1.0);
        assert_eq!(next_down(0.0), -f32::from_bits(1));
        assert!(below(1e30) < 1e30 && above(f32::MAX) >= f32::MAX);
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |r: Result<VerificationReport>| r.unwrap_err().to_string();
        assert!(msg(evaluate(&[], &[], None)).contains("no pairs"));
        assert!(msg(evaluate(&[0.1, f32::NAN], &[true, false], None)).contains("pair 1"));
        assert!(msg(evaluate(&[0.1, 0.2], &[true], None)).contains("2 distances but 1"));
        assert!(msg(evaluate(&[0.1; 20], &[true; 20], None)).contains("different-person"));
        assert!(msg(evaluate(&[0.1; 20], &[false; 20], None)).contains("same-person"));
        let s: Vec<bool> = (0..20).map(|i| i < 5).collect();
        assert!(msg(evaluate(&[0.1; 20], &s, None)).contains("at least 10 same"));
        let s: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
        assert!(msg(evaluate(&[0.1; 20], &s, Some(f32::INFINITY))).contains("model threshold"));
        assert!(accuracy_at(&[f32::INFINITY], &[true], 1.0).is_err());
        assert!(kfold_accuracy(&HD, &HS, 1).is_err());
        assert!(kfold_accuracy(&HD, &HS, 5).is_err());
    }

    #[test]
    fn calibration_target_parses() {
        assert_eq!(
            "accuracy".parse::<CalibrationTarget>().unwrap(),
            CalibrationTarget::Accuracy
        );
        assert_eq!(
            "far=0.001".parse::<CalibrationTarget>().unwrap(),
            CalibrationTarget::Far(0.001)
        );
        assert_eq!(
            " FAR = 0.01 ".parse::<CalibrationTarget>().unwrap(),
            CalibrationTarget::Far(0.01)
        );
        for bad in ["", "far", "far=", "far=2", "far=-0.1", "tar=0.1", "far=x"] {
            assert!(bad.parse::<CalibrationTarget>().is_err(), "{bad}");
        }
        assert_eq!(CalibrationTarget::Far(0.001).to_string(), "far=0.001");
    }

    #[test]
    fn lfw_view2_folds_are_its_sets() {
        // 10 sets of 3 same then 3 different pairs, as View 2 lays out 10 × (300 + 300).
        let same: Vec<bool> = (0..60).map(|i| i % 6 < 3).collect();
        let f = stratified_folds(&same, 10).unwrap();
        for (i, &fi) in f.iter().enumerate() {
            assert_eq!(fi, i / 6);
        }
        // View 1 layout (all same first): 23 same, 17 different into 10 folds.
        let same: Vec<bool> = (0..40).map(|i| i < 23).collect();
        let f = stratified_folds(&same, 10).unwrap();
        let sizes_same: Vec<usize> = (0..10)
            .map(|k| (0..23).filter(|&i| f[i] == k).count())
            .collect();
        let sizes_diff: Vec<usize> = (0..10)
            .map(|k| (23..40).filter(|&i| f[i] == k).count())
            .collect();
        // Boundaries ⌊i·23/10⌋ = 0 2 4 6 9 11 13 16 18 20 23; ⌊i·17/10⌋ = 0 1 3 5 6 8 10 11 13 15 17.
        assert_eq!(sizes_same, vec![2, 2, 2, 3, 2, 2, 3, 2, 2, 3]);
        assert_eq!(sizes_diff, vec![1, 2, 2, 1, 2, 2, 1, 2, 2, 2]);
        assert!(f.windows(2).take(22).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn report_serializes_with_expected_fields() {
        let d: Vec<f32> = (0..40)
            .map(|i| (i % 7) as f32 * 0.1 + if i % 2 == 0 { 0.0 } else { 0.35 })
            .collect();
        let s: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
        let r = evaluate(&d, &s, Some(0.5)).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "accuracy",
                "accuracy_at_model_threshold",
                "accuracy_std",
                "auc",
                "best_threshold",
                "eer",
                "model_threshold",
                "pairs",
                "tar_at_far",
            ]
        );
        assert_eq!(r.pairs, 40);
        assert_eq!(v["tar_at_far"].as_object().unwrap().len(), 2);
        assert!(v["tar_at_far"]["0.001"].is_number() && v["tar_at_far"]["0.01"].is_number());
        assert!(close(
            r.accuracy_at_model_threshold.unwrap(),
            brute_accuracy(&d, &s, 0.5)
        ));
        assert!(close(r.auc, brute_auc(&d, &s)));
        let folds = brute_kfold(&d, &s, 10);
        assert!(close(r.accuracy, folds.iter().sum::<f64>() / 10.0));
    }

    /// Numbers from the independent pure-Python reference `scripts/verification_metrics.py`, run
    /// on the CSV this data makes (`distance,same`, 200 rows; distances are multiples of 1/64, so
    /// f32 and Python floats hold them exactly, and they tie often, within and across classes):
    /// `python3 -c "print('distance,same'); [print(f'{((i*37)%101 + (0 if i%3 else 30))/64!r},{int(i%3!=0)}') for i in range(200)]" > ref.csv`
    /// then `python3 scripts/verification_metrics.py ref.csv`.
    #[test]
    fn matches_python_reference() {
        let s: Vec<bool> = (0..200).map(|i| i % 3 != 0).collect();
        let d: Vec<f32> = (0..200)
            .map(|i| ((i * 37) % 101 + if s[i] { 0 } else { 30 }) as f32 / 64.0)
            .collect();
        let (t, a) = best_threshold(&d, &s).unwrap();
        assert!(close(t, 1.4765625) && close(a, 0.755), "{t} {a}");
        let k = kfold_accuracy(&d, &s, 10).unwrap();
        assert!(
            (k.mean as f64 - 0.7298245614035088).abs() < 1e-6,
            "{}",
            k.mean
        );
        assert!(
            (k.std as f64 - 0.05647787790383753).abs() < 1e-6,
            "{}",
            k.std
        );
        let r = roc(&d, &s).unwrap();
        assert!((auc(&r) as f64 - 0.7445292335315902).abs() < 1e-6);
        assert!((eer(&r) as f64 - 0.355).abs() < 1e-6, "{}", eer(&r));
        assert!(close(
            tar_at_far(&r, 0.001).unwrap().tar,
            0.2857142857142857
        ));
        assert!(close(tar_at_far(&r, 0.01).unwrap().tar, 0.2857142857142857));
        assert!(close(tar_at_far(&r, 0.1).unwrap().tar, 0.37593984962406013));
        let rep = evaluate(&d, &s, None).unwrap();
        assert_eq!(rep.tar_at_far["0.01"], tar_at_far(&r, 0.01).unwrap().tar);
        assert_eq!(rep.accuracy_at_model_threshold, None);
    }

    // ---------------------------------------------------------------------------------------
    // Random arrays with many ties (distances on a coarse grid) against the brute force.

    fn arrays() -> impl Strategy<Value = (Vec<f32>, Vec<bool>)> {
        prop::collection::vec((0u8..9, any::<bool>()), 2..40).prop_map(|v| {
            let d = v.iter().map(|&(q, _)| q as f32 * 0.25 - 0.5).collect();
            let s = v.iter().map(|&(_, s)| s).collect();
            (d, s)
        })
    }

    fn both(s: &[bool]) -> bool {
        s.iter().any(|&x| x) && s.iter().any(|&x| !x)
    }

    proptest! {
        #[test]
        fn prop_best_threshold_is_optimal((d, s) in arrays()) {
            let (t, a) = best_threshold(&d, &s).unwrap();
            let (bt, ba) = brute_best_threshold(&d, &s);
            prop_assert_eq!(t, bt);
            prop_assert!(close(a, ba));
            prop_assert!(close(a, brute_best_accuracy(&d, &s)));
            prop_assert!(close(accuracy_at(&d, &s, t).unwrap(), brute_accuracy(&d, &s, t)));
        }

        #[test]
        fn prop_roc_auc_eer_tar((d, s) in arrays(), target in 0f32..1.0) {
            prop_assume!(both(&s));
            let r = roc(&d, &s).unwrap();
            let mut distinct = d.clone();
            distinct.sort_by(f32::total_cmp);
            distinct.dedup();
            prop_assert_eq!(r.len(), distinct.len() + 1);
            for p in &r {
                let (tar, far) = brute_rates(&d, &s, p.threshold);
                prop_assert!(close(p.tar, tar) && close(p.far, far));
            }
            prop_assert!(close(auc(&r), brute_auc(&d, &s)));

            // EER: the point (e, 1 − e) lies on the ROC polyline.
            let e = eer(&r) as f64;
            let on = r.windows(2).any(|w| {
                let (x0, y0, x1, y1) = (w[0].far as f64, w[0].tar as f64, w[1].far as f64, w[1].tar as f64);
                let (x, y) = (e, 1.0 - e);
                let cross = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0);
                cross.abs() < 1e-6
                    && x >= x0.min(x1) - 1e-6 && x <= x0.max(x1) + 1e-6
                    && y >= y0.min(y1) - 1e-6 && y <= y0.max(y1) + 1e-6
            });
            prop_assert!(on, "eer {} not on the curve {:?}", e, r);

            // TAR at FAR: the largest candidate threshold with FAR <= target.
            let mut cands = vec![r[0].threshold];
            cands.extend(distinct.iter().copied());
            let best = cands
                .iter()
                .copied()
                .filter(|&t| brute_rates(&d, &s, t).1 <= target as f64)
                .fold(f32::NEG_INFINITY, f32::max);
            let p = tar_at_far(&r, target).unwrap();
            prop_assert_eq!(p.threshold, best);
            prop_assert!(close(p.tar, brute_rates(&d, &s, best).0));
            prop_assert_eq!(calibrate(&d, &s, CalibrationTarget::Far(target)).unwrap(), best);
        }

        #[test]
        fn prop_kfold_matches_explicit_loops((d, s) in prop::collection::vec((0u8..6, any::<bool>()), 20..60)
            .prop_map(|v| (v.iter().map(|&(q, _)| q as f32 * 0.5).collect::<Vec<f32>>(), v.iter().map(|&(_, s)| s).collect::<Vec<bool>>())),
            k in 2usize..6)
        {
            let ns = s.iter().filter(|&&x| x).count();
            prop_assume!(ns >= k && s.len() - ns >= k);
            let got = kfold_accuracy(&d, &s, k).unwrap();
            let want = brute_kfold(&d, &s, k);
            prop_assert_eq!(got.accuracies.len(), k);
            for (a, b) in got.accuracies.iter().zip(&want) {
                prop_assert!(close(*a, *b));
            }
            let mean = want.iter().sum::<f64>() / k as f64;
            let std = (want.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / k as f64).sqrt();
            prop_assert!(close(got.mean, mean) && close(got.std, std));
        }
    }
}
