//! [`Gallery`]: enrolled people for 1:N identification ("who is this?").
//!
//! A gallery stores one embedding per enrolled image with the person's name, and the fingerprint
//! of the model that produced them: embeddings of different models are not comparable, so a
//! gallery refuses to be searched with another model. A person's distance is that of their
//! nearest enrolled image.
//!
//! Search is exact (every enrolled embedding is compared) unless the gallery carries an
//! approximate index ([`Gallery::build_index`], an [`IvfIndex`]); `candle-face enroll` builds one
//! from [`APPROXIMATE_FROM`] enrolled faces on. With an index, [`Gallery::identify`] compares the
//! query exactly with the embeddings of the nearest cells only ([`DEFAULT_NPROBE`] of them);
//! [`Gallery::identify_exact`] always compares all.

use crate::distance::Distance;
use crate::infer::ivf::{default_nlist, IvfIndex, DEFAULT_NPROBE};
use crate::infer::{embedding_distance, Embedder};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

const EMB_KEY: &str = "embeddings";
const META_LABELS: &str = "labels";
const META_MODEL: &str = "model_fingerprint";
const META_DISTANCE: &str = "distance";
const META_KIND: &str = "candle_face_gallery";
const IVF_CENTROIDS: &str = "ivf_centroids";
const IVF_ASSIGN: &str = "ivf_assign";

/// Gallery size from which `enroll` builds an approximate index by default.
pub const APPROXIMATE_FROM: usize = 100_000;

/// Enrolled embeddings with their people's names.
#[derive(Debug, Clone)]
pub struct Gallery {
    /// Row-major embeddings, `labels.len()` rows of `dim` values.
    embeddings: Vec<f32>,
    dim: usize,
    labels: Vec<String>,
    model_fingerprint: String,
    distance: Distance,
    index: Option<IvfIndex>,
}

/// One candidate of an identification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The person's name.
    pub name: String,
    /// Distance to the person's nearest enrolled image.
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

impl Gallery {
    /// An empty gallery for embeddings of `dim` values produced by the model with
    /// `model_fingerprint`.
    pub fn new(dim: usize, model_fingerprint: String, distance: Distance) -> Self {
        Self {
            embeddings: Vec::new(),
            dim,
            labels: Vec::new(),
            model_fingerprint,
            distance,
            index: None,
        }
    }

    /// An empty gallery for `embedder`'s model.
    pub fn for_embedder(embedder: &Embedder) -> Result<Self> {
        Ok(Self::new(
            embedder.embedding_dim(),
            embedder.fingerprint()?,
            embedder.config().distance,
        ))
    }

    /// Adds one embedding for `name`.
    pub fn add(&mut self, name: &str, embedding: &[f32]) -> Result<()> {
        if embedding.len() != self.dim {
            return Err(Error::InvalidArgument(format!(
                "embedding of size {} added to a gallery of size {}",
                embedding.len(),
                self.dim
            )));
        }
        self.embeddings.extend_from_slice(embedding);
        self.labels.push(name.to_string());
        // The index does not cover the new row: searches are exact until it is rebuilt.
        self.index = None;
        Ok(())
    }

    /// Builds the approximate index ([`IvfIndex`], `nlist` cells, default about 4√N, 10 k-means
    /// iterations, fixed seed), replacing any earlier one.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty gallery or an `nlist` above its size.
    pub fn build_index(&mut self, nlist: Option<usize>) -> Result<()> {
        let n = self.len();
        if n == 0 {
            return Err(Error::InvalidArgument(
                "cannot index an empty gallery".into(),
            ));
        }
        let nlist = nlist.unwrap_or_else(|| default_nlist(n));
        self.index = Some(IvfIndex::build(&self.embeddings, self.dim, nlist, 10, 0)?);
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

    /// Distinct enrolled people, sorted.
    pub fn people(&self) -> Vec<String> {
        let mut p: Vec<String> = self.labels.clone();
        p.sort();
        p.dedup();
        p
    }

    /// The fingerprint of the model the embeddings came from.
    pub fn model_fingerprint(&self) -> &str {
        &self.model_fingerprint
    }

    /// Errors unless `embedder` is the model this gallery was enrolled with.
    pub fn check_model(&self, embedder: &Embedder) -> Result<()> {
        let fp = embedder.fingerprint()?;
        if fp != self.model_fingerprint {
            return Err(Error::InvalidArgument(format!(
                "this gallery was enrolled with another model (fingerprint {}), not {} ({fp}): \
                 enroll again with this model",
                self.model_fingerprint,
                embedder.source().display()
            )));
        }
        Ok(())
    }

    /// The nearest `top_k` people to `query`; `identity` is the nearest one if within
    /// `threshold`. Uses the approximate index when there is one ([`DEFAULT_NPROBE`] cells).
    pub fn identify(&self, query: &[f32], top_k: usize, threshold: f32) -> Result<Identification> {
        self.identify_probing(query, top_k, threshold, DEFAULT_NPROBE)
    }

    /// Like [`identify`](Self::identify), comparing with every enrolled embedding.
    pub fn identify_exact(
        &self,
        query: &[f32],
        top_k: usize,
        threshold: f32,
    ) -> Result<Identification> {
        self.search(query, top_k, threshold, None)
    }

    /// Like [`identify`](Self::identify), probing `nprobe` cells of the index (more: slower,
    /// closer to exact); exact without an index.
    pub fn identify_probing(
        &self,
        query: &[f32],
        top_k: usize,
        threshold: f32,
        nprobe: usize,
    ) -> Result<Identification> {
        self.search(query, top_k, threshold, Some(nprobe))
    }

    fn search(
        &self,
        query: &[f32],
        top_k: usize,
        threshold: f32,
        nprobe: Option<usize>,
    ) -> Result<Identification> {
        if query.len() != self.dim {
            return Err(Error::InvalidArgument(format!(
                "query embedding of size {} for a gallery of size {}",
                query.len(),
                self.dim
            )));
        }
        let rows: Box<dyn Iterator<Item = usize>> = match (&self.index, nprobe) {
            (Some(idx), Some(p)) => {
                Box::new(idx.candidates(query, p)?.into_iter().map(|i| i as usize))
            }
            _ => Box::new(0..self.len()),
        };
        let mut best: HashMap<&str, f32> = HashMap::new();
        for i in rows {
            let name = &self.labels[i];
            let row = &self.embeddings[i * self.dim..(i + 1) * self.dim];
            let d = embedding_distance(query, row, self.distance);
            let e = best.entry(name.as_str()).or_insert(f32::INFINITY);
            if d < *e {
                *e = d;
            }
        }
        let mut candidates: Vec<Candidate> = best
            .into_iter()
            .map(|(name, distance)| Candidate {
                name: name.to_string(),
                distance,
            })
            .collect();
        candidates.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then_with(|| a.name.cmp(&b.name))
        });
        candidates.truncate(top_k.max(1));
        let identity = candidates
            .first()
            .filter(|c| c.distance <= threshold)
            .map(|c| c.name.clone());
        Ok(Identification {
            identity,
            candidates,
            threshold,
        })
    }

    /// Writes the gallery atomically as safetensors (embeddings tensor + JSON metadata).
    pub fn save(&self, path: &Path) -> Result<()> {
        let t = Tensor::from_vec(
            self.embeddings.clone(),
            (self.labels.len(), self.dim),
            &Device::Cpu,
        )?;
        let meta: HashMap<String, String> = [
            (META_KIND.to_string(), "1".to_string()),
            (
                META_LABELS.to_string(),
                serde_json::to_string(&self.labels).map_err(|e| Error::Msg(e.to_string()))?,
            ),
            (META_MODEL.to_string(), self.model_fingerprint.clone()),
            (
                META_DISTANCE.to_string(),
                serde_json::to_string(&self.distance).map_err(|e| Error::Msg(e.to_string()))?,
            ),
        ]
        .into();
        let mut tensors: HashMap<String, Tensor> = [(EMB_KEY.to_string(), t)].into();
        if let Some(idx) = &self.index {
            tensors.insert(
                IVF_CENTROIDS.to_string(),
                Tensor::from_slice(idx.centroids(), (idx.nlist(), self.dim), &Device::Cpu)?,
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
        let labels: Vec<String> = serde_json::from_str(
            meta.get(META_LABELS)
                .ok_or_else(|| bad("no labels".into()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        let distance: Distance = serde_json::from_str(
            meta.get(META_DISTANCE)
                .ok_or_else(|| bad("no distance".into()))?,
        )
        .map_err(|e| bad(e.to_string()))?;
        let model_fingerprint = meta
            .get(META_MODEL)
            .ok_or_else(|| bad("no model fingerprint".into()))?
            .clone();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        let t = tensors
            .get(EMB_KEY)
            .ok_or_else(|| bad("no embeddings".into()))?;
        let (n, dim) = t.dims2().map_err(|e| bad(e.to_string()))?;
        if n != labels.len() {
            return Err(bad(format!("{n} embeddings but {} labels", labels.len())));
        }
        let index = match (tensors.get(IVF_CENTROIDS), tensors.get(IVF_ASSIGN)) {
            (Some(c), Some(a)) => {
                let assign = a
                    .to_vec1::<u32>()
                    .map_err(|e| bad(format!("index assignments: {e}")))?;
                if assign.len() != n {
                    return Err(bad(format!(
                        "the index covers {} embeddings, the gallery holds {n}",
                        assign.len()
                    )));
                }
                let centroids = c
                    .flatten_all()?
                    .to_vec1::<f32>()
                    .map_err(|e| bad(format!("index centroids: {e}")))?;
                Some(IvfIndex::from_parts(dim, centroids, assign).map_err(|e| bad(e.to_string()))?)
            }
            (None, None) => None,
            _ => {
                return Err(bad(
                    "half an index (centroids or assignments missing)".into()
                ))
            }
        };
        Ok(Self {
            embeddings: t.flatten_all()?.to_vec1::<f32>()?,
            dim,
            labels,
            model_fingerprint,
            distance,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_nearest_person_and_unknown() {
        let mut g = Gallery::new(2, "m".into(), Distance::Euclidean);
        g.add("ann", &[1.0, 0.0]).unwrap();
        g.add("ann", &[0.8, 0.6]).unwrap();
        g.add("bob", &[0.0, 1.0]).unwrap();
        g.add("cy", &[-1.0, 0.0]).unwrap();
        let r = g.identify(&[0.6, 0.8], 2, 0.5).unwrap();
        assert_eq!(r.identity.as_deref(), Some("ann"));
        assert_eq!(r.candidates.len(), 2);
        assert_eq!(r.candidates[0].name, "ann");
        assert!((r.candidates[0].distance - 0.28284).abs() < 1e-4);
        assert_eq!(r.candidates[1].name, "bob");
        let far = g.identify(&[0.0, -1.0], 3, 0.5).unwrap();
        assert_eq!(far.identity, None);
        assert_eq!(far.candidates.len(), 3);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.safetensors");
        g.save(&p).unwrap();
        let g2 = Gallery::load(&p).unwrap();
        assert_eq!(g2.identify(&[0.6, 0.8], 2, 0.5).unwrap(), r);
        assert_eq!(g2.people(), vec!["ann", "bob", "cy"]);
        assert!(g.add("x", &[1.0]).is_err());
    }

    #[test]
    fn index_round_trips_and_agrees_with_exact_search() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let dim = 8;
        let mut g = Gallery::new(dim, "m".into(), Distance::Euclidean);
        let mut rows = Vec::new();
        for p in 0..300 {
            let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            g.add(&format!("p{p:03}"), &v).unwrap();
            rows.push(v);
        }
        g.build_index(Some(30)).unwrap();
        let idx = g.index().unwrap().clone();
        assert_eq!((idx.len(), idx.nlist()), (300, 30));
        // Probing every cell is exact search.
        for q in rows.iter().take(20) {
            assert_eq!(
                g.identify_probing(q, 3, 0.5, 30).unwrap(),
                g.identify_exact(q, 3, 0.5).unwrap()
            );
            // An enrolled embedding is always found in its own cell.
            let r = g.identify(q, 1, 0.5).unwrap();
            assert_eq!(r.candidates[0].distance, 0.0);
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.safetensors");
        g.save(&p).unwrap();
        let g2 = Gallery::load(&p).unwrap();
        assert_eq!(g2.index(), Some(&idx));
        assert_eq!(
            g2.identify(&rows[7], 2, 0.5).unwrap(),
            g.identify(&rows[7], 2, 0.5).unwrap()
        );
        // Adding a face drops the stale index; a gallery without one loads without one.
        g.add("late", &rows[0]).unwrap();
        assert!(g.index().is_none());
        g.save(&p).unwrap();
        assert!(Gallery::load(&p).unwrap().index().is_none());
    }
}
