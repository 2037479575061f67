//! [`FileGallery`]: a gallery in one safetensors file, the embedded default.
//!
//! The file holds the embeddings tensor (`N × D`) and JSON metadata: every row's person and
//! source, and the model's fingerprint and distance. Search is exact ([`super::search`]: matrix
//! products over the whole gallery) unless the gallery carries an approximate index
//! ([`FileGallery::build_index`], an [`IvfIndex`]); `candle-face enroll` builds one from
//! [`APPROXIMATE_FROM`] enrolled faces on ([`IndexPolicy::Auto`]). With an index a query is
//! compared exactly with the faces of the nearest cells only ([`SearchOptions::nprobe`] of them).

use super::ivf::{default_nlist, IvfIndex};
use super::search::{scan_all, scan_rows, squared_norms, Best, Rows};
use super::{
    check_queries, Candidate, Face, GalleryStore, Identification, ModelId, Person, SearchOptions,
};
use crate::distance::Distance;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const EMB_KEY: &str = "embeddings";
const META_LABELS: &str = "labels";
const META_SOURCES: &str = "sources";
const META_MODEL: &str = "model_fingerprint";
const META_DISTANCE: &str = "distance";
const META_KIND: &str = "candle_face_gallery";
const IVF_CENTROIDS: &str = "ivf_centroids";
const IVF_ASSIGN: &str = "ivf_assign";

/// Gallery size from which [`IndexPolicy::Auto`] builds an approximate index.
pub const APPROXIMATE_FROM: usize = 100_000;

/// Queries searched together by one scan of the gallery.
const QUERY_CHUNK: usize = 32;

/// Whether [`GalleryStore::commit`] gives a file gallery an approximate index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IndexPolicy {
    /// From [`APPROXIMATE_FROM`] faces on.
    #[default]
    Auto,
    /// Always, with this many cells (default about 4√N).
    Ivf(Option<usize>),
    /// Never: exact search only.
    None,
}

/// Enrolled embeddings with their people's names (see the module documentation).
#[derive(Debug, Clone)]
pub struct FileGallery {
    model: ModelId,
    /// Row-major embeddings, `labels.len()` rows of `model.dim` values.
    embeddings: Vec<f32>,
    labels: Vec<String>,
    /// Every row's source; empty for rows of files written before sources were stored.
    sources: Vec<String>,
    norms2: Vec<f32>,
    /// Person id of every row, into `names`.
    person: Vec<u32>,
    names: Vec<String>,
    ids: HashMap<String, u32>,
    index: Option<IvfIndex>,
    path: Option<PathBuf>,
    policy: IndexPolicy,
}

impl FileGallery {
    /// An empty gallery for `model`'s embeddings.
    pub fn new(model: ModelId) -> Self {
        Self {
            model,
            embeddings: Vec::new(),
            labels: Vec::new(),
            sources: Vec::new(),
            norms2: Vec::new(),
            person: Vec::new(),
            names: Vec::new(),
            ids: HashMap::new(),
            index: None,
            path: None,
            policy: IndexPolicy::Auto,
        }
    }

    /// An empty gallery for embeddings of `dim` values of the model `fingerprint`.
    pub fn with_model(dim: usize, fingerprint: impl Into<String>, distance: Distance) -> Self {
        Self::new(ModelId {
            fingerprint: fingerprint.into(),
            dim,
            distance,
        })
    }

    /// The file [`GalleryStore::commit`] writes.
    pub fn set_path(&mut self, path: PathBuf) {
        self.path = Some(path);
    }

    /// The approximate index [`GalleryStore::commit`] gives the gallery.
    pub fn set_index_policy(&mut self, policy: IndexPolicy) {
        self.policy = policy;
    }

    /// Adds one embedding for `name` without a source (never replaced by a later one).
    pub fn add(&mut self, name: &str, embedding: &[f32]) -> Result<()> {
        self.check_dim(embedding.len())?;
        self.push_row(name, "", embedding);
        Ok(())
    }

    fn check_dim(&self, len: usize) -> Result<()> {
        if len != self.model.dim {
            return Err(Error::InvalidArgument(format!(
                "{}: embedding of size {len} for a gallery of size {}",
                self.describe(),
                self.model.dim
            )));
        }
        Ok(())
    }

    fn person_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    fn push_row(&mut self, name: &str, source: &str, embedding: &[f32]) {
        let id = self.person_id(name);
        self.embeddings.extend_from_slice(embedding);
        self.norms2.push(super::search::dot(embedding, embedding));
        self.labels.push(name.to_string());
        self.sources.push(source.to_string());
        self.person.push(id);
        // The index does not cover the new row: searches are exact until it is rebuilt.
        self.index = None;
    }

    fn replace_row(&mut self, row: usize, name: &str, embedding: &[f32]) {
        let id = self.person_id(name);
        let dim = self.model.dim;
        self.embeddings[row * dim..(row + 1) * dim].copy_from_slice(embedding);
        self.norms2[row] = super::search::dot(embedding, embedding);
        self.labels[row] = name.to_string();
        self.person[row] = id;
        self.index = None;
    }

    /// Rebuilds the person ids and norms from the rows (after loading or removing rows).
    fn reindex_people(&mut self) {
        self.names.clear();
        self.ids.clear();
        self.person.clear();
        for i in 0..self.labels.len() {
            let name = std::mem::take(&mut self.labels[i]);
            let id = self.person_id(&name);
            self.person.push(id);
            self.labels[i] = name;
        }
        self.norms2 = squared_norms(&self.embeddings, self.model.dim);
    }

    /// Builds the approximate index ([`IvfIndex`], `nlist` cells, default about 4√N, 10 k-means
    /// iterations, fixed seed), replacing any earlier one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty gallery or an `nlist` above its size.
    pub fn build_index(&mut self, nlist: Option<usize>) -> Result<()> {
        let n = self.labels.len();
        if n == 0 {
            return Err(Error::InvalidArgument(
                "cannot index an empty gallery".into(),
            ));
        }
        let nlist = nlist.unwrap_or_else(|| default_nlist(n));
        self.index = Some(IvfIndex::build(
            &self.embeddings,
            self.model.dim,
            nlist,
            10,
            0,
        )?);
        Ok(())
    }

    /// The approximate index, when the gallery has one.
    pub fn index(&self) -> Option<&IvfIndex> {
        self.index.as_ref()
    }

    /// Removes the approximate index (searches become exact).
    pub fn drop_index(&mut self) {
        self.index = None;
    }

    /// Number of enrolled embeddings.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when nothing is enrolled.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The row-major embeddings.
    pub fn embeddings(&self) -> &[f32] {
        &self.embeddings
    }

    fn rows(&self) -> Rows<'_> {
        Rows {
            data: &self.embeddings,
            dim: self.model.dim,
            norms2: &self.norms2,
            person: &self.person,
            people: self.names.len(),
            distance: self.model.distance,
        }
    }

    /// The nearest people to every query (row-major); approximate when the gallery has an index
    /// and `opts.exact` is false.
    pub fn search(&self, queries: &[f32], opts: &SearchOptions) -> Result<Vec<Identification>> {
        let dim = self.model.dim;
        check_queries(queries, dim, &self.describe())?;
        let rows = self.rows();
        let mut out = Vec::with_capacity(queries.len() / dim.max(1));
        for chunk in queries.chunks(QUERY_CHUNK * dim) {
            let best: Vec<Best> = match (&self.index, opts.exact) {
                (Some(idx), false) => chunk
                    .chunks_exact(dim)
                    .map(|q| Ok(scan_rows(&rows, q, &idx.candidates(q, opts.nprobe)?)))
                    .collect::<Result<_>>()?,
                _ => scan_all(&rows, chunk),
            };
            for (q, b) in chunk.chunks_exact(dim).zip(best) {
                let candidates = b
                    .top(&rows, q, opts.top_k)
                    .into_iter()
                    .map(|(p, _, distance)| Candidate {
                        name: self.names[p as usize].clone(),
                        distance,
                    })
                    .collect();
                out.push(Identification::new(candidates, opts.threshold));
            }
        }
        Ok(out)
    }

    /// The nearest people to one query (see [`search`](Self::search)).
    pub fn identify_one(&self, query: &[f32], opts: &SearchOptions) -> Result<Identification> {
        Ok(self.search(query, opts)?.remove(0))
    }
}

impl GalleryStore for FileGallery {
    fn model(&self) -> &ModelId {
        &self.model
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "in-memory gallery".into(),
        }
    }

    fn enroll(&mut self, faces: &[Face]) -> Result<()> {
        for f in faces {
            self.check_dim(f.embedding.len())?;
        }
        let mut by_source: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            if !s.is_empty() {
                by_source.insert(s.as_str(), i);
            }
        }
        let mut replace = Vec::new();
        let mut append = Vec::new();
        for f in faces {
            match by_source.get(f.source.as_str()) {
                Some(&row) => replace.push((row, f)),
                None => append.push(f),
            }
        }
        for (row, f) in replace {
            self.replace_row(row, &f.person, &f.embedding);
        }
        for f in append {
            self.push_row(&f.person, &f.source, &f.embedding);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let want = match self.policy {
            IndexPolicy::Auto => self.labels.len() >= APPROXIMATE_FROM,
            IndexPolicy::Ivf(_) => true,
            IndexPolicy::None => false,
        };
        if !want {
            self.index = None;
        } else if self.index.is_none() || matches!(self.policy, IndexPolicy::Ivf(Some(_))) {
            let nlist = match self.policy {
                IndexPolicy::Ivf(n) => n,
                _ => None,
            };
            self.build_index(nlist)?;
        }
        match self.path.clone() {
            Some(p) => self.save(&p),
            None => Ok(()),
        }
    }

    fn identify(&mut self, queries: &[f32], opts: &SearchOptions) -> Result<Vec<Identification>> {
        self.search(queries, opts)
    }

    fn people(&mut self) -> Result<Vec<Person>> {
        let mut counts = vec![0usize; self.names.len()];
        for &p in &self.person {
            counts[p as usize] += 1;
        }
        let mut out: Vec<Person> = self
            .names
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(n, faces)| Person {
                name: n.clone(),
                faces,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn len(&mut self) -> Result<usize> {
        Ok(self.labels.len())
    }

    fn remove_person(&mut self, name: &str) -> Result<usize> {
        let dim = self.model.dim;
        let keep: Vec<bool> = self.labels.iter().map(|l| l != name).collect();
        let removed = keep.iter().filter(|k| !**k).count();
        if removed == 0 {
            return Ok(0);
        }
        let mut k = keep.iter();
        self.embeddings = std::mem::take(&mut self.embeddings)
            .chunks_exact(dim)
            .zip(keep.iter())
            .filter(|(_, k)| **k)
            .flat_map(|(r, _)| r.iter().copied())
            .collect();
        self.labels.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.sources.retain(|_| *k.next().unwrap_or(&true));
        self.index = None;
        self.reindex_people();
        Ok(removed)
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Msg(e.to_string()))
}

impl FileGallery {
    /// Writes the gallery atomically as safetensors (embeddings tensor + JSON metadata).
    pub fn save(&self, path: &Path) -> Result<()> {
        let dim = self.model.dim;
        let t = Tensor::from_slice(&self.embeddings, (self.len(), dim), &Device::Cpu)?;
        let meta: HashMap<String, String> = [
            (META_KIND.to_string(), "1".to_string()),
            (META_LABELS.to_string(), json(&self.labels)?),
            (META_SOURCES.to_string(), json(&self.sources)?),
            (META_MODEL.to_string(), self.model.fingerprint.clone()),
            (META_DISTANCE.to_string(), json(&self.model.distance)?),
        ]
        .into();
        let mut tensors: HashMap<String, Tensor> = [(EMB_KEY.to_string(), t)].into();
        if let Some(idx) = &self.index {
            tensors.insert(
                IVF_CENTROIDS.to_string(),
                Tensor::from_slice(idx.centroids(), (idx.nlist(), dim), &Device::Cpu)?,
            );
            tensors.insert(
                IVF_ASSIGN.to_string(),
                Tensor::from_slice(idx.assignments(), idx.len(), &Device::Cpu)?,
            );
        }
        crate::fsutil::write_atomic_with(path, |tmp| {
            safetensors::serialize_to_file(&tensors, Some(meta), tmp)
                .map_err(|e| Error::io(tmp, std::io::Error::other(e.to_string())))
        })
    }

    /// Reads a gallery written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |why: String| Error::weights(path, format!("not a candle-face gallery: {why}"));
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        if !meta.contains_key(META_KIND) {
            return Err(bad("missing gallery marker".into()));
        }
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no {k}")));
        let labels: Vec<String> =
            serde_json::from_str(get(META_LABELS)?).map_err(|e| bad(e.to_string()))?;
        let distance: Distance =
            serde_json::from_str(get(META_DISTANCE)?).map_err(|e| bad(e.to_string()))?;
        let fingerprint = get(META_MODEL)?.clone();
        let sources: Vec<String> = match meta.get(META_SOURCES) {
            Some(s) => serde_json::from_str(s).map_err(|e| bad(e.to_string()))?,
            None => vec![String::new(); labels.len()],
        };
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        let t = tensors
            .get(EMB_KEY)
            .ok_or_else(|| bad("no embeddings".into()))?;
        let (n, dim) = t.dims2().map_err(|e| bad(e.to_string()))?;
        if n != labels.len() || n != sources.len() {
            return Err(bad(format!(
                "{n} embeddings but {} labels and {} sources",
                labels.len(),
                sources.len()
            )));
        }
        let index = load_index(&tensors, n, dim).map_err(bad)?;
        let mut g = Self::with_model(dim, fingerprint, distance);
        g.embeddings = t.flatten_all()?.to_vec1::<f32>()?;
        g.labels = labels;
        g.sources = sources;
        g.reindex_people();
        g.index = index;
        g.path = Some(path.to_path_buf());
        Ok(g)
    }
}

/// The stored index of a gallery of `n` rows, if any.
fn load_index(
    tensors: &HashMap<String, Tensor>,
    n: usize,
    dim: usize,
) -> std::result::Result<Option<IvfIndex>, String> {
    match (tensors.get(IVF_CENTROIDS), tensors.get(IVF_ASSIGN)) {
        (Some(c), Some(a)) => {
            let assign = a
                .to_vec1::<u32>()
                .map_err(|e| format!("index assignments: {e}"))?;
            if assign.len() != n {
                return Err(format!(
                    "the index covers {} embeddings, the gallery holds {n}",
                    assign.len()
                ));
            }
            let centroids = c
                .flatten_all()
                .and_then(|c| c.to_vec1::<f32>())
                .map_err(|e| format!("index centroids: {e}"))?;
            IvfIndex::from_parts(dim, centroids, assign)
                .map(Some)
                .map_err(|e| e.to_string())
        }
        (None, None) => Ok(None),
        _ => Err("half an index (centroids or assignments missing)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(top_k: usize, threshold: f32) -> SearchOptions {
        SearchOptions::new(top_k, threshold)
    }

    fn face(person: &str, source: &str, embedding: &[f32]) -> Face {
        Face {
            person: person.into(),
            source: source.into(),
            embedding: embedding.to_vec(),
        }
    }

    #[test]
    fn identify_nearest_person_and_unknown() {
        let mut g = FileGallery::with_model(2, "m", Distance::Euclidean);
        g.add("ann", &[1.0, 0.0]).unwrap();
        g.add("ann", &[0.8, 0.6]).unwrap();
        g.add("bob", &[0.0, 1.0]).unwrap();
        g.add("cy", &[-1.0, 0.0]).unwrap();
        let r = g.identify_one(&[0.6, 0.8], &opts(2, 0.5)).unwrap();
        assert_eq!(r.identity.as_deref(), Some("ann"));
        assert_eq!(r.candidates.len(), 2);
        assert_eq!(r.candidates[0].name, "ann");
        assert!((r.candidates[0].distance - 0.28284).abs() < 1e-4);
        assert_eq!(r.candidates[1].name, "bob");
        let far = g.identify_one(&[0.0, -1.0], &opts(3, 0.5)).unwrap();
        assert_eq!(far.identity, None);
        assert_eq!(far.candidates.len(), 3);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.safetensors");
        g.save(&p).unwrap();
        let mut g2 = FileGallery::load(&p).unwrap();
        assert_eq!(g2.identify_one(&[0.6, 0.8], &opts(2, 0.5)).unwrap(), r);
        let names: Vec<String> = g2.people().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, vec!["ann", "bob", "cy"]);
        assert!(g.add("x", &[1.0]).is_err());
        assert!(g.search(&[1.0, 2.0, 3.0], &opts(1, 0.5)).is_err());
    }

    #[test]
    fn re_enrolment_replaces_by_source_and_removal_forgets() {
        let mut g = FileGallery::with_model(2, "m", Distance::Euclidean);
        g.enroll(&[
            face("ann", "a.jpg", &[1.0, 0.0]),
            face("bob", "b.jpg", &[0.0, 1.0]),
        ])
        .unwrap();
        // The same photo again, now named differently and embedded elsewhere: replaced.
        g.enroll(&[face("cy", "a.jpg", &[-1.0, 0.0])]).unwrap();
        assert_eq!(GalleryStore::len(&mut g).unwrap(), 2);
        let people = g.people().unwrap();
        assert_eq!(
            people,
            vec![
                Person {
                    name: "bob".into(),
                    faces: 1
                },
                Person {
                    name: "cy".into(),
                    faces: 1
                }
            ]
        );
        let r = g.identify_one(&[-1.0, 0.0], &opts(1, 0.1)).unwrap();
        assert_eq!(
            (r.identity.as_deref(), r.candidates[0].distance),
            (Some("cy"), 0.0)
        );
        assert_eq!(g.remove_person("cy").unwrap(), 1);
        assert_eq!(g.remove_person("cy").unwrap(), 0);
        let r = g.identify_one(&[-1.0, 0.0], &opts(5, 0.1)).unwrap();
        assert_eq!(r.candidates.len(), 1);
        assert_eq!(r.candidates[0].name, "bob");
        // A face of the wrong size refuses the whole batch.
        assert!(g
            .enroll(&[
                face("dan", "d.jpg", &[1.0, 1.0]),
                face("eve", "e.jpg", &[1.0])
            ])
            .is_err());
        assert_eq!(GalleryStore::len(&mut g).unwrap(), 1);
    }

    #[test]
    fn index_round_trips_and_agrees_with_exact_search() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let dim = 8;
        let mut g = FileGallery::with_model(dim, "m", Distance::Euclidean);
        let mut rows = Vec::new();
        for p in 0..300 {
            let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            g.add(&format!("p{p:03}"), &v).unwrap();
            rows.push(v);
        }
        g.build_index(Some(30)).unwrap();
        let idx = g.index().unwrap().clone();
        assert_eq!((idx.len(), idx.nlist()), (300, 30));
        for q in rows.iter().take(20) {
            // Probing every cell is exact search.
            let all = SearchOptions {
                nprobe: 30,
                ..opts(3, 0.5)
            };
            assert_eq!(
                g.identify_one(q, &all).unwrap(),
                g.identify_one(q, &opts(3, 0.5).exact()).unwrap()
            );
            // An enrolled embedding is always found in its own cell.
            let r = g.identify_one(q, &opts(1, 0.5)).unwrap();
            assert_eq!(r.candidates[0].distance, 0.0);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.safetensors");
        g.save(&p).unwrap();
        let g2 = FileGallery::load(&p).unwrap();
        assert_eq!(g2.index(), Some(&idx));
        assert_eq!(
            g2.identify_one(&rows[7], &opts(2, 0.5)).unwrap(),
            g.identify_one(&rows[7], &opts(2, 0.5)).unwrap()
        );
        // Adding a face drops the stale index; a gallery without one loads without one.
        g.add("late", &rows[0]).unwrap();
        assert!(g.index().is_none());
        g.save(&p).unwrap();
        assert!(FileGallery::load(&p).unwrap().index().is_none());
    }
}
