//! [`Gallery`]: enrolled people for 1:N identification ("who is this?").
//!
//! A gallery stores one embedding per enrolled image with the person's name, and the fingerprint
//! of the model that produced them: embeddings of different models are not comparable, so a
//! gallery refuses to be searched with another model. Search is exact (every enrolled embedding is
//! compared); a person's distance is that of their nearest enrolled image.

use crate::infer::{embedding_distance, Embedder};
use crate::loss::Distance;
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

/// Enrolled embeddings with their people's names.
#[derive(Debug, Clone)]
pub struct Gallery {
    /// Row-major embeddings, `labels.len()` rows of `dim` values.
    embeddings: Vec<f32>,
    dim: usize,
    labels: Vec<String>,
    model_fingerprint: String,
    distance: Distance,
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
        Ok(())
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

    /// The nearest `top_k` people to `query`; `identity` is the nearest one if within `threshold`.
    pub fn identify(&self, query: &[f32], top_k: usize, threshold: f32) -> Result<Identification> {
        if query.len() != self.dim {
            return Err(Error::InvalidArgument(format!(
                "query embedding of size {} for a gallery of size {}",
                query.len(),
                self.dim
            )));
        }
        let mut best: HashMap<&str, f32> = HashMap::new();
        for (i, name) in self.labels.iter().enumerate() {
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
        let tensors: HashMap<String, Tensor> = [(EMB_KEY.to_string(), t)].into();
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
        Ok(Self {
            embeddings: t.flatten_all()?.to_vec1::<f32>()?,
            dim,
            labels,
            model_fingerprint,
            distance,
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
}
