//! Parity of the triplet-loss family with the PyTorch reference
//! (`shared/reference/triplet_ref.py`, fixture `shared/fixtures/triplet_parity.safetensors`):
//! values and gradients (candle autograd) within 1e-5 (absolute, or relative above 1).

mod common;

use common::shared_dir;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_face::distance::{pairwise_distance, Distance};
use candle_face::loss::{
    batch_all_chunked, batch_hard_loss, labels_to_vec, offline_triplet_loss, BatchHardReduction,
    LossOutput, Mining, TripletLoss, TripletTerm,
};

#[path = "support/batch_all_naive.rs"]
mod batch_all_naive;
use batch_all_naive::batch_all_naive;

fn fixture() -> Option<HashMap<String, Tensor>> {
    let path = shared_dir()?.join("fixtures/triplet_parity.safetensors");
    if !path.is_file() {
        eprintln!("skipping: {} not found", path.display());
        return None;
    }
    Some(candle_core::safetensors::load(&path, &Device::Cpu).expect("fixture loads"))
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0]
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Runs `f` on a fresh `Var` of `e`, returns (loss, gradient, output).
fn run(
    e: &Tensor,
    f: impl Fn(&Tensor) -> candle_face::Result<LossOutput>,
) -> (f64, Vec<f64>, LossOutput) {
    let v = Var::from_tensor(e).unwrap();
    let out = f(v.as_tensor()).unwrap();
    assert_eq!(out.loss.rank(), 0, "loss must be a scalar");
    let grads = out.loss.backward().unwrap();
    let g = grads
        .get(v.as_tensor())
        .map(flat)
        .unwrap_or_else(|| vec![0.0; e.elem_count()]);
    (scalar(&out.loss), g, out)
}

fn check(
    key: &str,
    fx: &HashMap<String, Tensor>,
    value: f64,
    grad: &[f64],
    failures: &mut Vec<String>,
) {
    let want = scalar(&fx[key]);
    if !close(value, want) {
        failures.push(format!("{key}: value {value} vs reference {want}"));
    }
    let want_g = flat(&fx[&format!("{key}.grad")]);
    assert_eq!(want_g.len(), grad.len(), "{key}: gradient size");
    for (i, (&g, &w)) in grad.iter().zip(&want_g).enumerate() {
        assert!(g.is_finite(), "{key}: non-finite gradient at {i}");
        if (g - w).abs() > 1e-5 {
            failures.push(format!("{key}.grad[{i}]: {g} vs reference {w}"));
            break;
        }
    }
}

const BATCHES: [&str; 4] = [
    "random",
    "edge_single_and_duplicates",
    "all_same_label",
    "normalized_16x4",
];

#[test]
fn every_fixture_entry_matches_pytorch() {
    let Some(fx) = fixture() else { return };
    let mut failures = Vec::new();
    let mut checked = 0;
    for batch in BATCHES {
        let e = &fx[&format!("{batch}.embeddings")];
        let y = &fx[&format!("{batch}.labels")];
        for margin in [0.2f32, 0.5] {
            for (dname, dist) in [
                ("euclidean", Distance::Euclidean),
                ("squared", Distance::SquaredEuclidean),
            ] {
                let key = format!("{batch}.m{margin}.{dname}");
                let hinge = TripletTerm::Hinge { margin };
                let loss = |mining| TripletLoss {
                    mining,
                    term: hinge,
                    distance: dist,
                };
                let (v, g, out) = run(e, |x| loss(Mining::BatchAll).forward(x, y));
                check(&format!("{key}.batch_all"), &fx, v, &g, &mut failures);
                let frac = scalar(&fx[&format!("{key}.fraction_positive")]);
                if !close(f64::from(out.stats.active_fraction), frac) {
                    failures.push(format!(
                        "{key}.fraction_positive: {} vs {frac}",
                        out.stats.active_fraction
                    ));
                }
                let all = BatchHardReduction::AllAnchors;
                let (v, g, _) = run(e, |x| batch_hard_loss(x, y, hinge, dist, all));
                check(
                    &format!("{key}.batch_hard_omoindrot"),
                    &fx,
                    v,
                    &g,
                    &mut failures,
                );
                let valid = BatchHardReduction::ValidAnchors;
                let (v, g, _) = run(e, |x| batch_hard_loss(x, y, hinge, dist, valid));
                check(
                    &format!("{key}.batch_hard_valid"),
                    &fx,
                    v,
                    &g,
                    &mut failures,
                );
                let (v, g, _) = run(e, |x| loss(Mining::SemiHard).forward(x, y));
                check(&format!("{key}.semi_hard"), &fx, v, &g, &mut failures);
                let soft = TripletTerm::SoftPlus;
                let (v, g, _) = run(e, |x| batch_hard_loss(x, y, soft, dist, valid));
                check(&format!("{key}.soft_batch_hard"), &fx, v, &g, &mut failures);
                // TripletLoss::forward's batch-hard averages over valid anchors.
                let (v, g, _) = run(e, |x| loss(Mining::BatchHard).forward(x, y));
                check(
                    &format!("{key}.batch_hard_valid"),
                    &fx,
                    v,
                    &g,
                    &mut failures,
                );
                let soft_cfg = TripletLoss {
                    term: soft,
                    ..loss(Mining::BatchHard)
                };
                let (v, g, _) = run(e, |x| soft_cfg.forward(x, y));
                check(&format!("{key}.soft_batch_hard"), &fx, v, &g, &mut failures);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn naive_batch_all_matches_pytorch() {
    let Some(fx) = fixture() else { return };
    let mut failures = Vec::new();
    for batch in BATCHES {
        let e = &fx[&format!("{batch}.embeddings")];
        let y = &fx[&format!("{batch}.labels")];
        for margin in [0.2f32, 0.5] {
            for (dname, dist) in [
                ("euclidean", Distance::Euclidean),
                ("squared", Distance::SquaredEuclidean),
            ] {
                let key = format!("{batch}.m{margin}.{dname}.batch_all");
                let (v, g, _) = run(e, |x| {
                    let d = pairwise_distance(x, dist)?;
                    let (loss, _) = batch_all_naive(&d, y, TripletTerm::Hinge { margin })?;
                    Ok(LossOutput {
                        loss,
                        stats: Default::default(),
                    })
                });
                check(&key, &fx, v, &g, &mut failures);
                let (v, g, _) = run(e, |x| {
                    let d = pairwise_distance(x, dist)?;
                    let yv = labels_to_vec(y)?;
                    let (loss, _) = batch_all_chunked(&d, &yv, TripletTerm::Hinge { margin }, 5)?;
                    Ok(LossOutput {
                        loss,
                        stats: Default::default(),
                    })
                });
                check(&key, &fx, v, &g, &mut failures);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn offline_entries_match_pytorch() {
    let Some(fx) = fixture() else { return };
    let a = &fx["offline.anchor"];
    let p = &fx["offline.positive"];
    let n = &fx["offline.negative"];
    for margin in [0.2f32, 0.5] {
        for (dname, dist) in [
            ("euclidean", Distance::Euclidean),
            ("squared", Distance::SquaredEuclidean),
        ] {
            let key = format!("offline.m{margin}.{dname}");
            let out = offline_triplet_loss(a, p, n, margin, dist).unwrap();
            let (got, want) = (scalar(&out.loss), scalar(&fx[&key]));
            assert!(close(got, want), "{key}: {got} vs {want}");
            assert_eq!(out.stats.valid_triplets, 10);
        }
    }
}

#[test]
fn all_same_label_has_no_valid_triplets_and_no_nan() {
    let Some(fx) = fixture() else { return };
    let e = &fx["all_same_label.embeddings"];
    let y = &fx["all_same_label.labels"];
    for mining in [Mining::BatchAll, Mining::BatchHard, Mining::SemiHard] {
        for soft in [false, true] {
            let cfg = TripletLoss {
                mining,
                term: if soft {
                    TripletTerm::SoftPlus
                } else {
                    TripletTerm::default()
                },
                ..Default::default()
            };
            let (v, g, out) = run(e, |x| cfg.forward(x, y));
            assert_eq!(v, 0.0, "{mining} soft={soft}");
            assert!(out.stats.no_valid_triplets);
            assert!(
                g.iter().all(|&x| x == 0.0),
                "{mining} soft={soft}: gradient not zero"
            );
        }
    }
}
