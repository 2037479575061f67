//! Recall and speed of the approximate gallery index ([`IvfIndex`]) against exact search, on
//! synthetic galleries shaped like face embeddings: `people` random unit vectors in 128-d, each
//! enrolled as `per` noisy unit copies, queried with fresh noisy copies of enrolled people.
//!
//! `cargo run --release --example gallery_index -- [FACES...]` (default: 10000 100000).
//! Prints one JSON line per gallery size: build time, recall@1 (the person of the exact nearest
//! face is the person answered) at several `nprobe`, and the mean query time of each search.

use candle_face::distance::Distance;
use candle_face::infer::ivf::{default_nlist, IvfIndex};
use candle_face::infer::Gallery;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn unit(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn main() -> candle_face::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("gallery sizes are numbers"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let (dim, per, noise) = (128usize, 5usize, 0.1f32);
    for n in sizes {
        let people = n / per;
        let mut rng = StdRng::seed_from_u64(n as u64);
        let centres: Vec<Vec<f32>> = (0..people)
            .map(|_| unit((0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect()))
            .collect();
        let mut noisy = |c: &[f32]| -> Vec<f32> {
            unit(
                c.iter()
                    .map(|x| x + noise * rng.random_range(-1.0f32..1.0))
                    .collect(),
            )
        };
        let mut g = Gallery::new(dim, "synthetic".into(), Distance::Euclidean);
        for (p, c) in centres.iter().enumerate() {
            for _ in 0..per {
                g.add(&format!("p{p}"), &noisy(c))?;
            }
        }
        let queries: Vec<(usize, Vec<f32>)> = (0..200)
            .map(|i| {
                let p = (i * 7919) % people;
                (p, noisy(&centres[p]))
            })
            .collect();
        let t = Instant::now();
        g.build_index(None)?;
        let build_s = t.elapsed().as_secs_f64();
        let time = |f: &dyn Fn(&[f32]) -> candle_face::Result<String>| -> candle_face::Result<(f64, Vec<String>)> {
            let t = Instant::now();
            let mut out = Vec::new();
            for (_, q) in &queries {
                out.push(f(q)?);
            }
            Ok((t.elapsed().as_secs_f64() * 1e3 / queries.len() as f64, out))
        };
        let (exact_ms, exact) =
            time(&|q| Ok(g.identify_exact(q, 1, 1.0)?.candidates[0].name.clone()))?;
        let mut probes = serde_json::Map::new();
        for nprobe in [8usize, 16, 32, 64] {
            let (ms, approx) = time(&|q| {
                Ok(g.identify_probing(q, 1, 1.0, nprobe)?.candidates[0]
                    .name
                    .clone())
            })?;
            let agree = exact.iter().zip(&approx).filter(|(a, b)| a == b).count();
            probes.insert(
                nprobe.to_string(),
                serde_json::json!({
                    "recall_at_1": agree as f64 / queries.len() as f64,
                    "query_ms": ms,
                }),
            );
        }
        let right = exact
            .iter()
            .zip(&queries)
            .filter(|(name, (p, _))| **name == format!("p{p}"))
            .count();
        let idx: &IvfIndex = g.index().expect("built");
        println!(
            "{}",
            serde_json::json!({
                "faces": n, "dim": dim, "nlist": idx.nlist(), "default_nlist": default_nlist(n),
                "build_s": build_s, "exact_query_ms": exact_ms,
                "exact_top1_correct": right as f64 / queries.len() as f64,
                "nprobe": probes,
            })
        );
    }
    Ok(())
}
