//! Property tests of the triplet-loss family against brute-force loops over every (a, p, n),
//! written in plain f64 Rust straight from the definitions in `shared/reference/triplet_ref.py`
//! (independent of the tensor code), plus finite-difference gradient checks and the equality of
//! the chunked and naive batch-all.

use candle_core::{DType, Device, Tensor, Var};
use candle_face::distance::{pairwise_distance, Distance};
use candle_face::loss::{
    batch_all_chunked, batch_hard_loss, labels_to_vec, offline_triplet_loss, BatchHardReduction,
    Mining, TripletLoss, TripletTerm,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

#[path = "support/batch_all_naive.rs"]
mod batch_all_naive;
use batch_all_naive::batch_all_naive;

// ---------------------------------------------------------------- brute force (plain f64 loops)

fn dist(x: &[Vec<f64>], i: usize, j: usize, distance: Distance) -> f64 {
    let sq: f64 = x[i].iter().zip(&x[j]).map(|(a, b)| (a - b) * (a - b)).sum();
    match distance {
        Distance::SquaredEuclidean => sq,
        Distance::Euclidean => sq.sqrt(),
        Distance::Cosine => {
            let dot: f64 = x[i].iter().zip(&x[j]).map(|(a, b)| a * b).sum();
            let ni = x[i].iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-6);
            let nj = x[j].iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-6);
            if i == j {
                0.0
            } else {
                (1.0 - dot / (ni * nj)).max(0.0)
            }
        }
    }
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        (1.0 + x.exp()).ln()
    }
}

/// The reference loss for a configuration, by brute force.
fn brute(x: &[Vec<f64>], y: &[u32], cfg: &TripletLoss, all_anchors: bool) -> f64 {
    let b = x.len();
    let d = |i, j| dist(x, i, j, cfg.distance);
    let soft = cfg.term == TripletTerm::SoftPlus;
    let term = |dap: f64, dan: f64| match cfg.term {
        TripletTerm::SoftPlus => softplus(dap - dan),
        TripletTerm::Hinge { margin } => (dap - dan + f64::from(margin)).max(0.0),
    };
    match cfg.mining {
        Mining::BatchAll => {
            let (mut sum, mut pos, mut valid) = (0.0, 0usize, 0usize);
            for a in 0..b {
                for p in 0..b {
                    for n in 0..b {
                        if a == p || a == n || p == n || y[a] != y[p] || y[a] == y[n] {
                            continue;
                        }
                        let t = term(d(a, p), d(a, n));
                        valid += 1;
                        sum += t;
                        if t > 1e-16 {
                            pos += 1;
                        }
                    }
                }
            }
            if soft {
                if valid == 0 {
                    0.0
                } else {
                    sum / valid as f64
                }
            } else {
                sum / (pos as f64 + 1e-16)
            }
        }
        Mining::BatchHard => {
            let (mut sum, mut n_anchors) = (0.0, 0usize);
            for a in 0..b {
                let pos: Vec<f64> = (0..b)
                    .filter(|&j| j != a && y[j] == y[a])
                    .map(|j| d(a, j))
                    .collect();
                let neg: Vec<f64> = (0..b).filter(|&j| y[j] != y[a]).map(|j| d(a, j)).collect();
                let hp = pos.iter().copied().fold(0.0, f64::max);
                let row_max = (0..b).map(|j| d(a, j)).fold(0.0, f64::max);
                let hn = neg
                    .iter()
                    .copied()
                    .fold(f64::INFINITY, f64::min)
                    .min(if neg.is_empty() {
                        row_max
                    } else {
                        f64::INFINITY
                    });
                if all_anchors || (!pos.is_empty() && !neg.is_empty()) {
                    sum += term(hp, hn);
                    n_anchors += 1;
                }
            }
            if n_anchors == 0 {
                0.0
            } else {
                sum / n_anchors as f64
            }
        }
        Mining::SemiHard => {
            let (mut sum, mut pairs) = (0.0, 0usize);
            for a in 0..b {
                let negs: Vec<f64> = (0..b).filter(|&j| y[j] != y[a]).map(|j| d(a, j)).collect();
                for p in (0..b).filter(|&j| j != a && y[j] == y[a]) {
                    pairs += 1;
                    if negs.is_empty() {
                        continue;
                    }
                    let dap = d(a, p);
                    let farther = negs
                        .iter()
                        .copied()
                        .filter(|&v| v > dap)
                        .fold(f64::INFINITY, f64::min);
                    let dan = if farther.is_finite() {
                        farther
                    } else {
                        negs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    };
                    sum += term(dap, dan);
                }
            }
            if pairs == 0 {
                0.0
            } else {
                sum / pairs as f64
            }
        }
    }
}

fn brute_valid_triplets(y: &[u32]) -> usize {
    let b = y.len();
    let mut n = 0;
    for a in 0..b {
        for p in 0..b {
            for q in 0..b {
                if a != p && a != q && p != q && y[a] == y[p] && y[a] != y[q] {
                    n += 1;
                }
            }
        }
    }
    n
}

// ---------------------------------------------------------------- helpers

fn tensor(x: &[Vec<f64>], dtype: DType) -> Tensor {
    let (b, d) = (x.len(), x[0].len());
    let flat: Vec<f64> = x.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (b, d), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn labels(y: &[u32]) -> Tensor {
    Tensor::from_vec(y.to_vec(), y.len(), &Device::Cpu).unwrap()
}

fn value(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Our loss, evaluated on f64 embeddings (for finite differences).
fn ours(x: &Tensor, y: &Tensor, cfg: &TripletLoss, all_anchors: bool) -> Tensor {
    if all_anchors {
        let all = BatchHardReduction::AllAnchors;
        batch_hard_loss(x, y, cfg.term, cfg.distance, all)
            .unwrap()
            .loss
    } else {
        cfg.forward(x, y).unwrap().loss
    }
}

/// Checks the autograd gradient against central differences, skipping coordinates at a kink
/// (where the one-sided differences disagree). Returns the number of coordinates checked.
fn check_gradient(
    x: &[Vec<f64>],
    y: &[u32],
    cfg: &TripletLoss,
    all_anchors: bool,
) -> Result<usize, TestCaseError> {
    let yt = labels(y);
    let e = tensor(x, DType::F64);
    let v = Var::from_tensor(&e).unwrap();
    let loss = ours(v.as_tensor(), &yt, cfg, all_anchors);
    let grads = loss.backward().unwrap();
    let g: Vec<f64> = match grads.get(v.as_tensor()) {
        Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
        None => vec![0.0; e.elem_count()],
    };
    prop_assert!(g.iter().all(|v| v.is_finite()), "non-finite gradient {g:?}");
    let f0 = value(&loss);
    let h = 1e-6;
    let d = x[0].len();
    let mut checked = 0;
    for (i, gi) in g.iter().enumerate() {
        let eval = |delta: f64| {
            let mut xp = x.to_vec();
            xp[i / d][i % d] += delta;
            value(&ours(&tensor(&xp, DType::F64), &yt, cfg, all_anchors))
        };
        let (fp, fm) = (eval(h), eval(-h));
        let (fwd, bwd) = ((fp - f0) / h, (f0 - fm) / h);
        if (fwd - bwd).abs() > 1e-4 {
            continue; // a kink (tie, hinge at 0, or a change in the active count)
        }
        let central = (fp - fm) / (2.0 * h);
        prop_assert!(
            (central - gi).abs() <= 1e-5 * gi.abs().max(1.0),
            "{cfg:?} all_anchors={all_anchors}: d/dx[{i}] autograd {gi} vs finite differences {central}"
        );
        checked += 1;
    }
    Ok(checked)
}

fn configs() -> Vec<(TripletLoss, bool)> {
    let mut out = Vec::new();
    for distance in [
        Distance::Euclidean,
        Distance::SquaredEuclidean,
        Distance::Cosine,
    ] {
        for mining in [Mining::BatchAll, Mining::BatchHard, Mining::SemiHard] {
            for soft in [false, true] {
                out.push((
                    TripletLoss {
                        mining,
                        term: if soft {
                            TripletTerm::SoftPlus
                        } else {
                            TripletTerm::Hinge { margin: 0.3 }
                        },
                        distance,
                    },
                    false,
                ));
            }
        }
        let cfg = TripletLoss {
            mining: Mining::BatchHard,
            term: TripletTerm::Hinge { margin: 0.3 },
            distance,
        };
        out.push((cfg, true));
    }
    out
}

// ---------------------------------------------------------------- strategies

/// (embeddings on a grid of halves, so f32 arithmetic is exact and duplicates are common; labels).
fn grid_batch() -> impl Strategy<Value = (Vec<Vec<f64>>, Vec<u32>)> {
    (2usize..=9, 1usize..=3, 1u32..=4).prop_flat_map(|(b, d, nl)| {
        (
            prop::collection::vec(
                prop::collection::vec((-3i32..=3).prop_map(|v| f64::from(v) * 0.5), d),
                b,
            ),
            prop::collection::vec(0..nl, b),
        )
    })
}

/// Continuous embeddings (no ties almost surely) and labels.
fn smooth_batch() -> impl Strategy<Value = (Vec<Vec<f64>>, Vec<u32>)> {
    (3usize..=7, 2usize..=3, 1u32..=3).prop_flat_map(|(b, d, nl)| {
        (
            prop::collection::vec(prop::collection::vec(-1.5f64..1.5, d), b),
            prop::collection::vec(0..nl, b),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Values (f32, the production path) equal the brute force for every configuration, including
    /// singletons, one-label batches and duplicate embeddings; nothing is NaN.
    #[test]
    fn values_match_brute_force((x, y) in grid_batch()) {
        let e = tensor(&x, DType::F32);
        let yt = labels(&y);
        for (cfg, all) in configs() {
            if cfg.distance == Distance::Cosine && cfg.mining == Mining::SemiHard {
                // Rounding of 1 − cos on duplicates can flip "farther than the positive"; covered
                // on continuous inputs by `gradients_match_finite_differences`.
                continue;
            }
            let want = brute(&x, &y, &cfg, all);
            let v = Var::from_tensor(&e).unwrap();
            let loss = ours(v.as_tensor(), &yt, &cfg, all);
            let got = value(&loss);
            prop_assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{cfg:?} all_anchors={all}: {got} vs brute force {want} (x={x:?}, y={y:?})");
            let grads = loss.backward().unwrap();
            if let Some(g) = grads.get(v.as_tensor()) {
                let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
                prop_assert!(g.iter().all(|v| v.is_finite()), "{cfg:?}: non-finite gradient");
            }
        }
        let out = TripletLoss::default().forward(&e, &yt).unwrap();
        let valid = brute_valid_triplets(&y);
        prop_assert_eq!(out.stats.valid_triplets, valid);
        prop_assert_eq!(out.stats.no_valid_triplets, valid == 0);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Gradients (f64 autograd) equal central finite differences away from kinks; values equal
    /// the brute force (f64, continuous inputs, every distance including cosine semi-hard).
    #[test]
    fn gradients_match_finite_differences((x, y) in smooth_batch()) {
        let mut checked = 0;
        let mut total = 0;
        for (cfg, all) in configs() {
            let want = brute(&x, &y, &cfg, all);
            let got = value(&ours(&tensor(&x, DType::F64), &labels(&y), &cfg, all));
            prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{cfg:?} all_anchors={all}: {got} vs brute force {want}");
            checked += check_gradient(&x, &y, &cfg, all)?;
            total += x.len() * x[0].len();
        }
        // Kinks are rare for continuous inputs: most coordinates must have been checked.
        prop_assert!(2 * checked >= total, "only {checked}/{total} coordinates away from kinks");
    }

    /// The offline loss equals its brute force.
    #[test]
    fn offline_matches_brute_force(rows in prop::collection::vec(prop::collection::vec(-2.0f64..2.0, 12), 1..6)) {
        let a: Vec<Vec<f64>> = rows.iter().map(|r| r[..4].to_vec()).collect();
        let p: Vec<Vec<f64>> = rows.iter().map(|r| r[4..8].to_vec()).collect();
        let n: Vec<Vec<f64>> = rows.iter().map(|r| r[8..].to_vec()).collect();
        for distance in [Distance::Euclidean, Distance::SquaredEuclidean] {
            let want: f64 = (0..a.len()).map(|i| {
                let all = [a[i].clone(), p[i].clone(), n[i].clone()];
                (dist(&all, 0, 1, distance) - dist(&all, 0, 2, distance) + f64::from(0.2f32)).max(0.0)
            }).sum::<f64>() / a.len() as f64;
            let out = offline_triplet_loss(&tensor(&a, DType::F64), &tensor(&p, DType::F64), &tensor(&n, DType::F64), 0.2, distance).unwrap();
            let got = value(&out.loss);
            prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{got} vs {want}");
        }
    }
}

/// The chunked batch-all (custom op) has the same value and gradient as the naive B³ one, for
/// several batch sizes, chunk sizes, terms and distances.
#[test]
fn chunked_batch_all_equals_naive() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for &(b, classes) in &[(1usize, 1u32), (5, 2), (17, 4), (40, 10), (64, 16)] {
        for dtype in [DType::F32, DType::F64] {
            let x: Vec<Vec<f64>> = (0..b)
                .map(|_| (0..6).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            let y: Vec<u32> = (0..b).map(|_| rng.random_range(0..classes)).collect();
            let e = tensor(&x, dtype);
            let yt = labels(&y);
            let yv = labels_to_vec(&yt).unwrap();
            for distance in [Distance::Euclidean, Distance::SquaredEuclidean] {
                for term in [TripletTerm::Hinge { margin: 0.5 }, TripletTerm::SoftPlus] {
                    let run = |chunk: Option<usize>| {
                        let v = Var::from_tensor(&e).unwrap();
                        let d = pairwise_distance(v.as_tensor(), distance).unwrap();
                        let (loss, scan) = match chunk {
                            Some(c) => batch_all_chunked(&d, &yv, term, c).unwrap(),
                            None => batch_all_naive(&d, &yt, term).unwrap(),
                        };
                        let g: Vec<f64> = loss
                            .backward()
                            .unwrap()
                            .get(v.as_tensor())
                            .unwrap()
                            .to_dtype(DType::F64)
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1()
                            .unwrap();
                        (value(&loss), g, scan.active, scan.valid)
                    };
                    let (v0, g0, a0, n0) = run(None);
                    let tol = if dtype == DType::F32 { 2e-6 } else { 1e-12 };
                    for chunk in [1, 3, 8, 64, 1000] {
                        let (v1, g1, a1, n1) = run(Some(chunk));
                        assert_eq!((a0, n0), (a1, n1), "b={b} chunk={chunk} {term:?}: counts");
                        assert!(
                            (v0 - v1).abs() <= tol * v0.abs().max(1.0),
                            "b={b} chunk={chunk} {term:?} {dtype:?}: {v0} vs {v1}"
                        );
                        for (i, (p, q)) in g0.iter().zip(&g1).enumerate() {
                            assert!(
                                (p - q).abs() <= tol,
                                "b={b} chunk={chunk} {term:?} {dtype:?}: grad[{i}] {p} vs {q}"
                            );
                        }
                    }
                }
            }
        }
    }
}
