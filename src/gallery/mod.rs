//! Galleries: enrolled faces for 1:N identification ("who is this?"), behind one trait
//! ([`GalleryStore`]) with two backends:
//!
//! - [`file::FileGallery`]: one safetensors file, exact search by matrix products (and an
//!   optional k-means index, [`ivf::IvfIndex`]); the embedded default, for one machine;
//! - `postgres::PgGallery` (feature `postgres`): a PostgreSQL table searched by pgvector's HNSW
//!   index, for galleries shared by several servers, concurrent enrolment, replicas and backups.
//!
//! [`open_for_enroll`] and [`open_existing`] pick the backend from a location: a path, or a
//! `postgres://` / `postgresql://` URL
//! ([`Location`]).
//!
//! A gallery stores one row per enrolled face: the person, the face's source (the image path),
//! and its embedding. It belongs to one model ([`ModelId`]: fingerprint, embedding size and
//! distance): embeddings of different models are not comparable, so a gallery refuses another
//! model's embeddings and queries. Enrolling a source that is already enrolled replaces it. A
//! person's distance to a query is that of their nearest enrolled face.

pub mod file;
pub mod ivf;
mod location;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod search;

pub use file::FileGallery;
pub use ivf::IvfIndex;
pub use location::Location;

use crate::distance::Distance;
use crate::infer::Embedder;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The model a gallery belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// [`Embedder::fingerprint`] of the model.
    pub fingerprint: String,
    /// Embedding size.
    pub dim: usize,
    /// The distance embeddings are compared with.
    pub distance: Distance,
}

impl ModelId {
    /// The identity of `embedder`'s model.
    pub fn of(embedder: &Embedder) -> Result<Self> {
        Ok(Self {
            fingerprint: embedder.fingerprint()?,
            dim: embedder.embedding_dim(),
            distance: embedder.config().distance,
        })
    }

    /// Errors unless `other` is the same model; `gallery` names the gallery in the message.
    pub fn ensure_same(&self, other: &ModelId, gallery: &str) -> Result<()> {
        if self == other {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "{gallery} holds embeddings of another model (fingerprint {}, {} values, {} \
             distance), not of this one (fingerprint {}, {} values, {} distance): use the model \
             it was enrolled with, or enroll into another gallery",
            self.fingerprint, self.dim, self.distance, other.fingerprint, other.dim, other.distance
        )))
    }
}

/// One face to enroll.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// The person's name.
    pub person: String,
    /// Where the face came from (its image path): enrolling the same source again replaces it.
    pub source: String,
    /// The model's embedding of the face.
    pub embedding: Vec<f32>,
}

/// An enrolled person and their number of faces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    /// The person's name.
    pub name: String,
    /// Enrolled faces.
    pub faces: usize,
}

/// One candidate of an identification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The person's name.
    pub name: String,
    /// Distance to the person's nearest enrolled face.
    pub distance: f32,
}

/// The answer to "who is this?".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identification {
    /// The best match, or `None` ("unknown") when even the nearest person is beyond the threshold.
    pub identity: Option<String>,
    /// The nearest people, nearest first (at most `top_k`).
    pub candidates: Vec<Candidate>,
    /// The threshold used.
    pub threshold: f32,
}

impl Identification {
    /// The answer for `candidates` (nearest first): the first one if within `threshold`.
    pub fn new(candidates: Vec<Candidate>, threshold: f32) -> Self {
        let identity = candidates
            .first()
            .filter(|c| c.distance <= threshold)
            .map(|c| c.name.clone());
        Self {
            identity,
            candidates,
            threshold,
        }
    }
}

/// How to search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Number of nearest people to return (at least 1).
    pub top_k: usize,
    /// Distance beyond which the answer is "unknown".
    pub threshold: f32,
    /// Compare with every enrolled face, ignoring any approximate index.
    pub exact: bool,
    /// Cells of the file gallery's k-means index to probe.
    pub nprobe: usize,
    /// pgvector's `hnsw.ef_search`: the candidate list of an HNSW search (more: slower, closer
    /// to exact; it also caps the faces one search returns).
    pub ef_search: usize,
}

/// `ef_search` unless told otherwise.
pub const DEFAULT_EF_SEARCH: usize = 100;

impl SearchOptions {
    /// Approximate search (where the gallery has an index) for `top_k` people.
    pub fn new(top_k: usize, threshold: f32) -> Self {
        Self {
            top_k,
            threshold,
            exact: false,
            nprobe: ivf::DEFAULT_NPROBE,
            ef_search: DEFAULT_EF_SEARCH,
        }
    }

    /// The same options with exact search.
    pub fn exact(mut self) -> Self {
        self.exact = true;
        self
    }
}

/// What every gallery backend does.
pub trait GalleryStore {
    /// The gallery's model.
    fn model(&self) -> &ModelId;

    /// Where the gallery is, for messages (never with a password).
    fn describe(&self) -> String;

    /// Enrolls `faces` as one unit: either all of them are stored or none (for the file
    /// gallery: once [`commit`](Self::commit) has written them). A face whose source is already
    /// enrolled replaces the old one.
    fn enroll(&mut self, faces: &[Face]) -> Result<()>;

    /// Makes enrolments durable and searchable at full speed: writes the file (and its index)
    /// or builds the database's HNSW index if it has none yet.
    fn commit(&mut self) -> Result<()>;

    /// The nearest people to every query (row-major, [`ModelId::dim`] values each).
    fn identify(&mut self, queries: &[f32], opts: &SearchOptions) -> Result<Vec<Identification>>;

    /// Enrolled people with their number of faces, sorted by name.
    fn people(&mut self) -> Result<Vec<Person>>;

    /// Number of enrolled faces.
    fn len(&mut self) -> Result<usize>;

    /// True when nothing is enrolled.
    fn is_empty(&mut self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every face of `name`; returns how many there were (saved by
    /// [`commit`](Self::commit) for the file gallery, immediately for a database).
    fn remove_person(&mut self, name: &str) -> Result<usize>;
}

/// Checks that `queries` holds whole rows of `dim` values.
pub(crate) fn check_queries(queries: &[f32], dim: usize, gallery: &str) -> Result<usize> {
    if dim == 0 || !queries.len().is_multiple_of(dim) {
        return Err(Error::InvalidArgument(format!(
            "{gallery}: queries of {} values are not whole embeddings of {dim}",
            queries.len()
        )));
    }
    Ok(queries.len() / dim)
}

/// Options for opening a gallery to enroll into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnrollOptions {
    /// The file gallery's approximate index.
    pub index: file::IndexPolicy,
    /// A PostgreSQL gallery's HNSW index, when enrolment creates it.
    pub hnsw: HnswParams,
}

/// The build parameters of pgvector's HNSW index (`CREATE INDEX ... WITH (m, ef_construction)`),
/// used when a PostgreSQL gallery creates its index; an existing index keeps its own.
///
/// Larger values give a better connected graph: higher recall at a given `ef_search`, at the
/// cost of a slower build and a larger index. The defaults are pgvector's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswParams {
    /// Links per node and layer (pgvector: 2 to 100, default 16).
    pub m: usize,
    /// The candidate list while building (pgvector: 4 to 1000 and at least 2·m, default 64).
    pub ef_construction: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 64,
        }
    }
}

impl HnswParams {
    /// Errors unless pgvector accepts these values.
    pub fn check(&self) -> Result<()> {
        let Self { m, ef_construction } = *self;
        if !(2..=100).contains(&m) {
            return Err(Error::InvalidArgument(format!(
                "HNSW m = {m}: pgvector takes 2 to 100"
            )));
        }
        if !(4..=1000).contains(&ef_construction) || ef_construction < 2 * m {
            return Err(Error::InvalidArgument(format!(
                "HNSW ef_construction = {ef_construction}: pgvector takes 4 to 1000, and at \
                 least 2·m ({})",
                2 * m
            )));
        }
        Ok(())
    }
}

/// Opens the gallery at `location` to enroll `model`'s embeddings, creating it when missing.
///
/// # Errors
/// When the gallery belongs to another model, cannot be read or reached, or (for a database)
/// lacks pgvector; also for a `postgres://` URL in a build without the `postgres` feature.
pub fn open_for_enroll(
    location: &Location,
    model: &ModelId,
    opts: &EnrollOptions,
) -> Result<Box<dyn GalleryStore>> {
    match location {
        Location::File(path) => {
            let mut g = if path.exists() {
                let g = FileGallery::load(path)?;
                g.model().ensure_same(model, &g.describe())?;
                g
            } else {
                FileGallery::new(model.clone())
            };
            g.set_path(path.clone());
            g.set_index_policy(opts.index.clone());
            Ok(Box::new(g))
        }
        Location::Postgres(url) => {
            opts.hnsw.check()?;
            open_pg(url, Some((model, opts.hnsw)))
        }
    }
}

/// Opens an existing gallery at `location` (to search, list or edit it).
///
/// # Errors
/// When there is no gallery there, or it cannot be read or reached.
pub fn open_existing(location: &Location) -> Result<Box<dyn GalleryStore>> {
    match location {
        Location::File(path) => {
            let mut g = FileGallery::load(path)?;
            g.set_path(path.clone());
            Ok(Box::new(g))
        }
        Location::Postgres(url) => open_pg(url, None),
    }
}

#[cfg(feature = "postgres")]
fn open_pg(url: &str, create_for: Option<(&ModelId, HnswParams)>) -> Result<Box<dyn GalleryStore>> {
    let g = match create_for {
        Some((model, hnsw)) => postgres::PgGallery::open_or_create(url, model)?.with_hnsw(hnsw),
        None => postgres::PgGallery::open(url)?,
    };
    Ok(Box::new(g))
}

#[cfg(not(feature = "postgres"))]
fn open_pg(
    url: &str,
    _create_for: Option<(&ModelId, HnswParams)>,
) -> Result<Box<dyn GalleryStore>> {
    Err(Error::InvalidArgument(format!(
        "{}: this candle-face was built without PostgreSQL support: rebuild it with \
         `--features postgres` (cargo install candle-face --features postgres)",
        location::redact(url)
    )))
}
