//! `candle-face enroll`, `identify` and `gallery` (list / remove people).

use super::model_arg::{DetectArgs, ModelArgs};
use anyhow::{bail, Result};
use candle_face::gallery::file::IndexPolicy;
use candle_face::gallery::{
    self, EnrollOptions, Face, HnswParams, Location, ModelId, SearchOptions, DEFAULT_EF_SEARCH,
};

/// Faces per enrolment transaction (whole people only: a person is never split).
const BATCH_FACES: usize = 256;

/// Arguments of `enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// Folder of people to enroll: `DIR/<person>/<image>` (one or more images each).
    #[arg(long)]
    data: std::path::PathBuf,
    /// The gallery: a safetensors file (created, or added to) or
    /// `postgres://user@host:port/db[?table=NAME]`. Enrolling a photo again replaces it.
    #[arg(long, short = 'o', visible_alias = "out", value_name = "FILE|URL")]
    gallery: Location,
    /// The file gallery's approximate index: `auto` (built from 100 000 enrolled faces on),
    /// `ivf` (always), `none` (exact search only).
    #[arg(long, default_value = "auto", value_parser = ["auto", "ivf", "none"])]
    index: String,
    /// Cells of the file gallery's approximate index (default about 4√N).
    #[arg(long, value_name = "N")]
    nlist: Option<usize>,
    /// Links per node of a PostgreSQL gallery's HNSW index, when this enrolment creates it
    /// (more: better recall at a given --ef-search, slower build, larger index).
    #[arg(long, default_value_t = HnswParams::default().m, value_name = "M")]
    hnsw_m: usize,
    /// Candidate list while building a PostgreSQL gallery's HNSW index, when this enrolment
    /// creates it (more: better recall, slower build).
    #[arg(long, default_value_t = HnswParams::default().ef_construction, value_name = "N")]
    hnsw_ef_construction: usize,
}

/// Runs `enroll`.
pub fn run_enroll(a: EnrollArgs) -> Result<()> {
    let embedder = a.detect.apply(a.model.load()?)?;
    let folder = candle_face::data::ImageFolder::scan(&a.data)?;
    let index = match a.index.as_str() {
        "ivf" => IndexPolicy::Ivf(a.nlist),
        "none" => IndexPolicy::None,
        _ => IndexPolicy::Auto,
    };
    let model = ModelId::of(&embedder)?;
    let hnsw = HnswParams {
        m: a.hnsw_m,
        ef_construction: a.hnsw_ef_construction,
    };
    let mut g = gallery::open_for_enroll(&a.gallery, &model, &EnrollOptions { index, hnsw })?;
    let (mut skipped, mut faceless, mut enrolled) = (0usize, 0usize, 0usize);
    let mut batch: Vec<Face> = Vec::new();
    for person in &folder.people {
        let (emb, kept, failures) = match embedder.embed_images_lossy(&person.images) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("skipped person {}: {e}", person.name);
                skipped += person.images.len();
                continue;
            }
        };
        for f in &failures {
            eprintln!("skipped {f}");
            faceless += matches!(f, candle_face::Error::NoFace { .. }) as usize;
        }
        skipped += failures.len();
        for (row, i) in emb.to_vec2::<f32>()?.into_iter().zip(kept) {
            batch.push(Face {
                person: person.name.clone(),
                source: source_of(&person.images[i]),
                embedding: row,
            });
        }
        if batch.len() >= BATCH_FACES {
            g.enroll(&batch)?;
            enrolled += std::mem::take(&mut batch).len();
        }
    }
    if !batch.is_empty() {
        g.enroll(&batch)?;
        enrolled += batch.len();
    }
    if enrolled == 0 {
        bail!("{}: no image could be enrolled", a.data.display());
    }
    let t = std::time::Instant::now();
    g.commit()?;
    eprintln!("saved and indexed in {:.1} s", t.elapsed().as_secs_f64());
    eprintln!(
        "enrolled {enrolled} images{} into {} (now {} people, {} images)",
        if skipped > 0 {
            format!(" ({skipped} skipped, {faceless} of them without a face)")
        } else {
            String::new()
        },
        g.describe(),
        g.people()?.len(),
        g.len()?,
    );
    Ok(())
}

/// A face's source: the image's absolute path (so that enrolling the same photo again, from
/// any working directory, replaces it).
fn source_of(image: &std::path::Path) -> String {
    std::fs::canonicalize(image)
        .unwrap_or_else(|_| image.to_path_buf())
        .display()
        .to_string()
}

/// Arguments of `identify`.
#[derive(Debug, clap::Args)]
pub struct IdentifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    detect: DetectArgs,
    /// Gallery enrolled with the same model: a file or `postgres://...` URL.
    #[arg(long, short = 'g', value_name = "FILE|URL")]
    gallery: Location,
    /// Number of nearest people to list.
    #[arg(long, default_value_t = 1)]
    top_k: usize,
    /// Distance threshold beyond which the answer is "unknown" (default: the model's).
    #[arg(long)]
    threshold: Option<f32>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// Compare with every enrolled face, ignoring any approximate index.
    #[arg(long)]
    exact: bool,
    /// Cells of a file gallery's approximate index to search (more: slower, closer to exact).
    #[arg(long, default_value_t = candle_face::gallery::ivf::DEFAULT_NPROBE)]
    nprobe: usize,
    /// pgvector's hnsw.ef_search for a PostgreSQL gallery (more: slower, closer to exact).
    #[arg(long, default_value_t = DEFAULT_EF_SEARCH)]
    ef_search: usize,
    /// Query images.
    #[arg(required = true)]
    images: Vec<std::path::PathBuf>,
}

/// Runs `identify`.
pub fn run_identify(a: IdentifyArgs) -> Result<()> {
    let embedder = a.detect.apply(a.model.load()?)?;
    let mut g = gallery::open_existing(&a.gallery)?;
    g.model()
        .ensure_same(&ModelId::of(&embedder)?, &g.describe())?;
    let Some(threshold) = a.threshold.or(embedder.config().threshold) else {
        bail!("the model has no calibrated threshold: pass --threshold");
    };
    let (emb, kept, failures) = embedder.embed_images_lossy(&a.images)?;
    for f in &failures {
        eprintln!("skipped {f}");
    }
    let queries: Vec<f32> = emb.flatten_all()?.to_vec1::<f32>()?;
    let opts = SearchOptions {
        exact: a.exact,
        nprobe: a.nprobe,
        ef_search: a.ef_search,
        ..SearchOptions::new(a.top_k, threshold)
    };
    let answers = g.identify(&queries, &opts)?;
    for (r, i) in answers.iter().zip(&kept) {
        print_answer(&a.images[*i].display().to_string(), r, a.json);
    }
    if !failures.is_empty() && kept.is_empty() {
        bail!("no query image could be used");
    }
    Ok(())
}

fn print_answer(path: &str, r: &gallery::Identification, json: bool) {
    let who = r.identity.as_deref().unwrap_or("unknown");
    if json {
        let v = serde_json::json!({
            "image": path,
            "identity": who,
            "known": r.identity.is_some(),
            "candidates": r.candidates,
            "threshold": r.threshold,
        });
        println!("{v}");
    } else {
        let list: Vec<String> = r
            .candidates
            .iter()
            .map(|c| format!("{} {:.4}", c.name, c.distance))
            .collect();
        println!("{path}: {who}  [{}]", list.join(", "));
    }
}

/// Arguments of `gallery`.
#[derive(Debug, clap::Args)]
pub struct GalleryArgs {
    /// The gallery: a file or `postgres://...` URL.
    #[arg(long, short = 'g', value_name = "FILE|URL")]
    gallery: Location,
    #[command(subcommand)]
    action: GalleryAction,
}

/// What `gallery` does.
#[derive(Debug, clap::Subcommand)]
enum GalleryAction {
    /// List the enrolled people with their number of faces, and the model.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every face of these people.
    Remove {
        /// People to remove.
        #[arg(required = true)]
        people: Vec<String>,
    },
}

/// Runs `gallery`.
pub fn run_gallery(a: GalleryArgs) -> Result<()> {
    let mut g = gallery::open_existing(&a.gallery)?;
    match a.action {
        GalleryAction::List { json } => {
            let people = g.people()?;
            if json {
                let v = serde_json::json!({ "model": g.model(), "people": people });
                println!("{v}");
            } else {
                let m = g.model();
                println!(
                    "{}: model {} ({} values, {}), {} people, {} faces",
                    g.describe(),
                    m.fingerprint,
                    m.dim,
                    m.distance,
                    people.len(),
                    people.iter().map(|p| p.faces).sum::<usize>()
                );
                for p in people {
                    println!("{}\t{}", p.name, p.faces);
                }
            }
        }
        GalleryAction::Remove { people } => {
            for name in &people {
                let n = g.remove_person(name)?;
                if n == 0 {
                    eprintln!("{name}: not enrolled");
                } else {
                    eprintln!("{name}: removed {n} faces");
                }
            }
            g.commit()?;
        }
    }
    Ok(())
}
