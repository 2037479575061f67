//! Enrolment throughput, identification latency and recall@1 of the gallery backends on
//! synthetic galleries of `faces / per` people, each enrolled as `per` faces and queried with
//! fresh faces of enrolled people. recall@1 is the fraction of queries whose answered person is
//! the person of the exact nearest face (the file gallery's exact search).
//!
//! ```text
//! cargo run --release --example gallery_bench -- [--faces N] [--per K] [--queries Q]
//!     [--shape face|isotropic] [--pg URL] [--ef-search E[,E...]] [--m M]
//!     [--ef-construction N] [--reuse] [--keep] [--no-ivf] [--no-pg]
//! ```
//!
//! Two shapes of embeddings:
//! - `face` (default): spread like the default model's embeddings of real faces. People are
//!   Gaussian with the spectrum of the between-person covariance of LFW's training people
//!   ([`BETWEEN_SD`]), faces are their person plus Gaussian noise with the spectrum of the
//!   within-person covariance ([`WITHIN_SD`]) in a random orthonormal basis.
//! - `isotropic`: people are random unit vectors, faces noisy unit copies: every direction
//!   matters equally, the worst case for a graph index (all people nearly equidistant).
//!
//! `--pg` (or `CANDLE_FACE_PG_URL`) benchmarks a PostgreSQL gallery too: the faces are loaded
//! with one binary COPY per 50 000 rows into a fresh table (`bench_<faces>_<shape>_m<M>_ef<N>`,
//! dropped at the end unless `--keep`; `--reuse` searches a kept one) and the HNSW index is
//! built after the load with `maintenance_work_mem = 2GB`, then searched with each
//! `--ef-search`. Prints one JSON line per backend and setting.

use candle_face::distance::Distance;
use candle_face::gallery::file::FileGallery;
use candle_face::gallery::{Face, GalleryStore, HnswParams, ModelId, SearchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const DIM: usize = 128;
/// Unmeasured queries (of other faces) before each measured run: the index pages in memory.
const WARMUP: usize = 100;

mod spectra;
use spectra::{BETWEEN_SD, WITHIN_SD};

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Face,
    Isotropic,
}

struct Args {
    faces: usize,
    per: usize,
    queries: usize,
    shape: Shape,
    pg: Option<String>,
    ef_search: Vec<usize>,
    hnsw: HnswParams,
    reuse: bool,
    keep: bool,
    ivf: bool,
}

fn args() -> Args {
    let mut a = Args {
        faces: 100_000,
        per: 5,
        queries: 500,
        shape: Shape::Face,
        pg: std::env::var("CANDLE_FACE_PG_URL").ok(),
        ef_search: vec![candle_face::gallery::DEFAULT_EF_SEARCH],
        hnsw: HnswParams::default(),
        reuse: false,
        keep: false,
        ivf: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{k} takes a value"));
        let num =
            |v: String| -> usize { v.parse().unwrap_or_else(|_| panic!("not a number: {v}")) };
        match k.as_str() {
            "--faces" => a.faces = num(value()),
            "--per" => a.per = num(value()),
            "--queries" => a.queries = num(value()),
            "--ef-search" => a.ef_search = value().split(',').map(|v| num(v.into())).collect(),
            "--m" => a.hnsw.m = num(value()),
            "--ef-construction" => a.hnsw.ef_construction = num(value()),
            "--shape" => {
                a.shape = match value().as_str() {
                    "face" => Shape::Face,
                    "isotropic" => Shape::Isotropic,
                    v => panic!("--shape is face or isotropic, not {v}"),
                }
            }
            "--reuse" => a.reuse = true,
            "--keep" => a.keep = true,
            "--no-ivf" => a.ivf = false,
            "--no-pg" => a.pg = None,
            "--pg" => a.pg = Some(value()),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

/// A standard normal draw (Box-Muller).
fn gauss(rng: &mut StdRng) -> f32 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

fn unit(v: impl Iterator<Item = f32>) -> Vec<f32> {
    let v: Vec<f32> = v.collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// A random orthonormal basis (Gram-Schmidt of Gaussian rows), row-major.
fn random_basis(rng: &mut StdRng) -> Vec<Vec<f32>> {
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(DIM);
    while rows.len() < DIM {
        let mut v: Vec<f32> = (0..DIM).map(|_| gauss(rng)).collect();
        for r in &rows {
            let d: f32 = v.iter().zip(r).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(r).for_each(|(a, b)| *a -= d * b);
        }
        rows.push(unit(v.into_iter()));
    }
    rows
}

/// Draws people and their faces of one [`Shape`].
struct Generator {
    shape: Shape,
    rng: StdRng,
    basis: Vec<Vec<f32>>,
}

impl Generator {
    fn new(shape: Shape, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let basis = random_basis(&mut rng);
        Self { shape, rng, basis }
    }

    fn person(&mut self) -> Vec<f32> {
        let rng = &mut self.rng;
        match self.shape {
            Shape::Face => BETWEEN_SD.iter().map(|sd| sd * gauss(rng)).collect(),
            Shape::Isotropic => unit((0..DIM).map(|_| rng.random_range(-1.0f32..1.0))),
        }
    }

    fn face(&mut self, person: &[f32]) -> Vec<f32> {
        let rng = &mut self.rng;
        match self.shape {
            Shape::Face => {
                let z: Vec<f32> = WITHIN_SD.iter().map(|sd| sd * gauss(rng)).collect();
                let mut f = person.to_vec();
                for (zi, row) in z.iter().zip(&self.basis) {
                    f.iter_mut().zip(row).for_each(|(a, b)| *a += zi * b);
                }
                f
            }
            Shape::Isotropic => unit(
                person
                    .iter()
                    .map(|x| x + 0.1 * rng.random_range(-1.0f32..1.0)),
            ),
        }
    }
}

/// The enrolled faces and `(person, query)` pairs.
fn synthetic(a: &Args) -> (Vec<Face>, Vec<(usize, Vec<f32>)>) {
    let mut g = Generator::new(a.shape, a.faces as u64);
    let people = a.faces / a.per;
    let centres: Vec<Vec<f32>> = (0..people).map(|_| g.person()).collect();
    let mut faces = Vec::with_capacity(a.faces);
    for (p, c) in centres.iter().enumerate() {
        for k in 0..a.per {
            faces.push(Face {
                person: format!("p{p}"),
                source: format!("p{p}/{k}.jpg"),
                embedding: g.face(c),
            });
        }
    }
    let queries = (0..a.queries + WARMUP)
        .map(|i| {
            let p = (i * 7919) % people;
            (p, g.face(&centres[p]))
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
    let (warmup, queries) = queries.split_at(WARMUP.min(queries.len()));
    for (_, q) in warmup {
        g.identify(q, opts)?;
    }
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

fn shape_name(s: Shape) -> &'static str {
    match s {
        Shape::Face => "face",
        Shape::Isotropic => "isotropic",
    }
}

fn main() -> candle_face::Result<()> {
    let a = args();
    a.hnsw.check()?;
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
    let opts = SearchOptions::new(1, 0.6);
    let exact = file_gallery(&a, &model, &faces, &queries, &opts)?;
    if let Some(url) = &a.pg {
        pg(url, &a, &model, &faces, &queries, &exact)?;
    }
    Ok(())
}

/// The file gallery: enrolment (in memory + one save), exact search, then the k-means index.
/// Returns the exact answers.
fn file_gallery(
    a: &Args,
    model: &ModelId,
    faces: &[Face],
    queries: &[(usize, Vec<f32>)],
    opts: &SearchOptions,
) -> candle_face::Result<Vec<String>> {
    let dir = tempfile::tempdir().map_err(|e| candle_face::Error::io("temp dir", e))?;
    let mut g = FileGallery::new(model.clone());
    g.set_path(dir.path().join("g.safetensors"));
    g.set_index_policy(candle_face::gallery::file::IndexPolicy::None);
    let t = Instant::now();
    g.enroll(faces)?;
    g.commit()?;
    let enrol_s = t.elapsed().as_secs_f64();
    let (p50, p99, exact) = run_queries(&mut g, queries, &opts.clone().exact())?;
    let truth: Vec<String> = queries[WARMUP..]
        .iter()
        .map(|(p, _)| format!("p{p}"))
        .collect();
    println!(
        "{}",
        serde_json::json!({"backend": "file-exact", "faces": a.faces, "shape":
            shape_name(a.shape), "enrol_faces_per_s": (a.faces as f64 / enrol_s).round(),
            "p50_ms": p50, "p99_ms": p99, "recall_at_1": 1.0,
            "true_person_at_1": recall(&truth, &exact)})
    );
    if a.ivf {
        let t = Instant::now();
        g.build_index(None)?;
        let build_s = t.elapsed().as_secs_f64();
        let (p50, p99, got) = run_queries(&mut g, queries, opts)?;
        println!(
            "{}",
            serde_json::json!({"backend": "file-ivf", "faces": a.faces, "shape":
                shape_name(a.shape), "nlist": g.index().map(|i| i.nlist()), "nprobe":
                opts.nprobe, "index_build_s": build_s, "p50_ms": p50, "p99_ms": p99,
                "recall_at_1": recall(&exact, &got)})
        );
    }
    Ok(exact)
}

#[cfg(feature = "postgres")]
fn pg(
    url: &str,
    a: &Args,
    model: &ModelId,
    faces: &[Face],
    queries: &[(usize, Vec<f32>)],
    exact: &[String],
) -> candle_face::Result<()> {
    use candle_face::gallery::postgres::PgGallery;
    let sep = if url.contains('?') { '&' } else { '?' };
    let HnswParams { m, ef_construction } = a.hnsw;
    let table = format!(
        "bench_{}_{}_m{m}_ef{ef_construction}",
        a.faces,
        shape_name(a.shape)
    );
    let url = format!("{url}{sep}table={table}");
    let mut load = serde_json::json!({});
    let mut g = match PgGallery::open(&url) {
        Ok(g) if a.reuse => g,
        old => {
            if let Ok(old) = old {
                old.destroy()?;
            }
            let mut g = PgGallery::open_or_create(&url, model)?.with_hnsw(a.hnsw);
            load = pg_load(&mut g, faces)?;
            g
        }
    };
    for &ef_search in &a.ef_search {
        let opts = SearchOptions {
            ef_search,
            ..SearchOptions::new(1, 0.6)
        };
        let (p50, p99, got) = run_queries(&mut g, queries, &opts)?;
        println!(
            "{}",
            serde_json::json!({"backend": "pgvector-hnsw", "faces": a.faces, "shape":
                shape_name(a.shape), "m": m, "ef_construction": ef_construction, "load": load,
                "ef_search": ef_search, "p50_ms": p50, "p99_ms": p99,
                "recall_at_1": recall(exact, &got)})
        );
    }
    if a.keep {
        Ok(())
    } else {
        g.destroy()
    }
}

/// Loads `faces` into a fresh gallery, builds its index, and times an upsert of 10 000 faces.
#[cfg(feature = "postgres")]
fn pg_load(
    g: &mut candle_face::gallery::postgres::PgGallery,
    faces: &[Face],
) -> candle_face::Result<serde_json::Value> {
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
    let n = faces.len() as f64;
    Ok(
        serde_json::json!({"copy_faces_per_s": (n / copy_s).round(), "index_build_s": index_s,
        "enrol_faces_per_s_with_index": (n / (copy_s + index_s)).round(),
        "upsert_faces_per_s": (n_up as f64 / upsert_s).round()}),
    )
}

#[cfg(not(feature = "postgres"))]
fn pg(
    _: &str,
    _: &Args,
    _: &ModelId,
    _: &[Face],
    _: &[(usize, Vec<f32>)],
    _: &[String],
) -> candle_face::Result<()> {
    eprintln!("built without the postgres feature: PostgreSQL skipped");
    Ok(())
}
