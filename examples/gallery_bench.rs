//! Enrolment throughput, identification latency and recall@1 of the gallery backends on
//! synthetic galleries shaped like face embeddings: `faces / per` people, random unit vectors in
//! 128-d, each enrolled as `per` noisy unit copies, queried with fresh noisy copies of enrolled
//! people. recall@1 is the fraction of queries whose answered person is the person of the exact
//! nearest face (the file gallery's exact search).
//!
//! ```text
//! cargo run --release --example gallery_bench -- [--faces N] [--per K] [--queries Q]
//!     [--pg URL] [--ef-search E] [--no-ivf] [--no-pg]
//! ```
//!
//! `--pg` (or `CANDLE_FACE_PG_URL`) benchmarks a PostgreSQL gallery too: the faces are loaded
//! with one binary COPY per 50 000 rows into a fresh table (`bench_<faces>`, dropped at the end)
//! and the HNSW index is built after the load with `maintenance_work_mem = 2GB`. Prints one JSON
//! line per backend.

use candle_face::distance::Distance;
use candle_face::gallery::file::FileGallery;
use candle_face::gallery::{Face, GalleryStore, ModelId, SearchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const DIM: usize = 128;

struct Args {
    faces: usize,
    per: usize,
    queries: usize,
    pg: Option<String>,
    ef_search: usize,
    ivf: bool,
}

fn args() -> Args {
    let mut a = Args {
        faces: 100_000,
        per: 5,
        queries: 500,
        pg: std::env::var("CANDLE_FACE_PG_URL").ok(),
        ef_search: candle_face::gallery::DEFAULT_EF_SEARCH,
        ivf: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} takes a number"))
        };
        match k.as_str() {
            "--faces" => a.faces = num(),
            "--per" => a.per = num(),
            "--queries" => a.queries = num(),
            "--ef-search" => a.ef_search = num(),
            "--no-ivf" => a.ivf = false,
            "--no-pg" => a.pg = None,
            "--pg" => a.pg = it.next(),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

fn unit(v: impl Iterator<Item = f32>) -> Vec<f32> {
    let v: Vec<f32> = v.collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// The enrolled faces and `(person, query)` pairs.
fn synthetic(a: &Args) -> (Vec<Face>, Vec<(usize, Vec<f32>)>) {
    let mut rng = StdRng::seed_from_u64(a.faces as u64);
    let people = a.faces / a.per;
    let centres: Vec<Vec<f32>> = (0..people)
        .map(|_| unit((0..DIM).map(|_| rng.random_range(-1.0f32..1.0))))
        .collect();
    let mut noisy = |c: &[f32]| unit(c.iter().map(|x| x + 0.1 * rng.random_range(-1.0f32..1.0)));
    let mut faces = Vec::with_capacity(a.faces);
    for (p, c) in centres.iter().enumerate() {
        for k in 0..a.per {
            faces.push(Face {
                person: format!("p{p}"),
                source: format!("p{p}/{k}.jpg"),
                embedding: noisy(c),
            });
        }
    }
    let queries = (0..a.queries)
        .map(|i| {
            let p = (i * 7919) % people;
            (p, noisy(&centres[p]))
        })
        .collect();
    (faces, queries)
}

/// Per-query latency percentiles (ms) and the answered people.
fn run_queries(
    g: &mut dyn GalleryStore,
    queries: &[(usize, Vec<f32>)],
    opts: &SearchOptions,
) -> candle_face::Result<(f64, f64, Vec<String>)> {
    let mut ms = Vec::with_capacity(queries.len());
    let mut names = Vec::with_capacity(queries.len());
    for (_, q) in queries {
        let t = Instant::now();
        let r = g.identify(q, opts)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        names.push(r[0].candidates[0].name.clone());
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    Ok((pct(0.5), pct(0.99), names))
}

fn recall(exact: &[String], got: &[String]) -> f64 {
    let hits = exact.iter().zip(got).filter(|(a, b)| a == b).count();
    hits as f64 / exact.len() as f64
}

fn main() -> candle_face::Result<()> {
    let a = args();
    let t = Instant::now();
    let (faces, queries) = synthetic(&a);
    eprintln!(
        "{} faces generated in {:.1} s",
        faces.len(),
        t.elapsed().as_secs_f64()
    );
    let model = ModelId {
        fingerprint: "synthetic".into(),
        dim: DIM,
        distance: Distance::Euclidean,
    };
    let opts = SearchOptions {
        ef_search: a.ef_search,
        ..SearchOptions::new(1, 1.0)
    };

    // File gallery: enrolment (in memory + one save), exact search, then the k-means index.
    let dir = tempfile::tempdir().map_err(|e| candle_face::Error::io("temp dir", e))?;
    let mut g = FileGallery::new(model.clone());
    g.set_path(dir.path().join("g.safetensors"));
    g.set_index_policy(candle_face::gallery::file::IndexPolicy::None);
    let t = Instant::now();
    g.enroll(&faces)?;
    g.commit()?;
    let enrol_s = t.elapsed().as_secs_f64();
    let (p50, p99, exact) = run_queries(&mut g, &queries, &opts.clone().exact())?;
    let truth: Vec<String> = queries.iter().map(|(p, _)| format!("p{p}")).collect();
    println!(
        "{}",
        serde_json::json!({"backend": "file-exact", "faces": a.faces, "enrol_faces_per_s":
            (a.faces as f64 / enrol_s).round(), "p50_ms": p50, "p99_ms": p99, "recall_at_1": 1.0,
            "true_person_at_1": recall(&truth, &exact)})
    );
    if a.ivf {
        let t = Instant::now();
        g.build_index(None)?;
        let build_s = t.elapsed().as_secs_f64();
        let (p50, p99, got) = run_queries(&mut g, &queries, &opts)?;
        println!(
            "{}",
            serde_json::json!({"backend": "file-ivf", "faces": a.faces, "nlist":
                g.index().map(|i| i.nlist()), "nprobe": opts.nprobe, "index_build_s": build_s,
                "p50_ms": p50, "p99_ms": p99, "recall_at_1": recall(&exact, &got)})
        );
    }
    drop(g);
    if let Some(url) = &a.pg {
        pg(url, &a, &model, &faces, &queries, &opts, &exact)?;
    }
    Ok(())
}

#[cfg(feature = "postgres")]
fn pg(
    url: &str,
    a: &Args,
    model: &ModelId,
    faces: &[Face],
    queries: &[(usize, Vec<f32>)],
    opts: &SearchOptions,
    exact: &[String],
) -> candle_face::Result<()> {
    use candle_face::gallery::postgres::PgGallery;
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}table=bench_{}", a.faces);
    if let Ok(old) = PgGallery::open(&url) {
        old.destroy()?;
    }
    let mut g = PgGallery::open_or_create(&url, model)?;
    let t = Instant::now();
    for chunk in faces.chunks(50_000) {
        g.bulk_load(chunk)?;
    }
    let copy_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    g.build_index(Some("2GB"))?;
    let index_s = t.elapsed().as_secs_f64();
    // Upsert path (what `enroll` uses): re-enrol 10 000 faces in batches of 256.
    let n_up = faces.len().min(10_000);
    let t = Instant::now();
    for chunk in faces[..n_up].chunks(256) {
        g.enroll(chunk)?;
    }
    let upsert_s = t.elapsed().as_secs_f64();
    let (p50, p99, got) = run_queries(&mut g, queries, opts)?;
    println!(
        "{}",
        serde_json::json!({"backend": "pgvector-hnsw", "faces": a.faces, "copy_faces_per_s":
            (a.faces as f64 / copy_s).round(), "index_build_s": index_s,
            "enrol_faces_per_s_with_index": (a.faces as f64 / (copy_s + index_s)).round(),
            "upsert_faces_per_s": (n_up as f64 / upsert_s).round(), "ef_search": opts.ef_search,
            "p50_ms": p50, "p99_ms": p99, "recall_at_1": recall(exact, &got)})
    );
    g.destroy()
}

#[cfg(not(feature = "postgres"))]
fn pg(
    _: &str,
    _: &Args,
    _: &ModelId,
    _: &[Face],
    _: &[(usize, Vec<f32>)],
    _: &SearchOptions,
    _: &[String],
) -> candle_face::Result<()> {
    eprintln!("built without the postgres feature: PostgreSQL skipped");
    Ok(())
}
