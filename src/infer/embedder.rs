//! [`Embedder`]: images in, L2-normalised embeddings out, exactly as the model's config says.

use crate::detect::FaceFinder;
use crate::detect::FacePick;
use crate::image::load_image;
use crate::model::{load_model, EmbeddingNet, ModelConfig};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Default number of images per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// An inference-only embedding model.
///
/// `Embedder` is `Send + Sync`: share one behind an `Arc` between threads; results do not depend
/// on which thread asks.
#[derive(Debug, Clone)]
pub struct Embedder {
    cfg: ModelConfig,
    net: EmbeddingNet,
    device: Device,
    source: PathBuf,
    batch_size: usize,
    fingerprint: std::sync::Arc<std::sync::OnceLock<String>>,
    faces: Option<std::sync::Arc<FaceFinder>>,
}

impl Embedder {
    /// Loads the model folder `dir` (config.json + weights) on the CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// Loads the model folder `dir` on `device`, with face detection on when the model expects
    /// photos ([`with_model_defaults`](Self::with_model_defaults)).
    pub fn load_on(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let (cfg, net) = load_model(dir, device)?;
        Self::from_parts(cfg, net, device.clone(), dir.to_path_buf()).with_model_defaults()
    }

    /// Turns on what the model's config asks for: detection and alignment of the largest face
    /// ([`with_detection`](Self::with_detection)) for models that expect whole photos
    /// ([`ModelConfig::detect_faces`]). Other models are returned unchanged.
    pub fn with_model_defaults(self) -> Result<Self> {
        if self.cfg.detect_faces && self.faces.is_none() {
            self.with_detection()
        } else {
            Ok(self)
        }
    }

    /// Turns detection off: images are used as ready face crops.
    pub fn without_detection(mut self) -> Self {
        self.faces = None;
        self
    }

    /// Wraps an already built network and its config (`source` names where it came from).
    pub fn from_parts(
        cfg: ModelConfig,
        net: EmbeddingNet,
        device: Device,
        source: PathBuf,
    ) -> Self {
        Self {
            cfg,
            net,
            device,
            source,
            batch_size: DEFAULT_BATCH_SIZE,
            fingerprint: Default::default(),
            faces: None,
        }
    }

    /// Runs face detection on every image file and photo before embedding: the largest face is
    /// cut out with `finder`'s recipe, then the model's preprocessing applies. An image without
    /// a face is an [`Error::NoFace`] naming it.
    pub fn with_face_finder(mut self, finder: FaceFinder) -> Self {
        self.faces = Some(std::sync::Arc::new(finder));
        self
    }

    /// Turns detection on with the bundled MTCNN and the model's own face-crop recipe
    /// ([`ModelConfig::face_crop_or_default`]).
    pub fn with_detection(self) -> Result<Self> {
        self.with_detection_pick(FacePick::Largest)
    }

    /// [`with_detection`](Self::with_detection), choosing the main face of photos with several
    /// by `pick`.
    pub fn with_detection_pick(self, pick: FacePick) -> Result<Self> {
        let finder =
            FaceFinder::bundled(self.cfg.face_crop_or_default(), &self.device)?.with_pick(pick);
        Ok(self.with_face_finder(finder))
    }

    /// The face finder, when detection is on.
    pub fn face_finder(&self) -> Option<&FaceFinder> {
        self.faces.as_deref()
    }

    /// Fingerprints the model from weights held in memory (a model not loaded from a file).
    pub fn with_weight_bytes(self, bytes: &[u8]) -> Self {
        let mut h = self.recipe_hash();
        h.write(bytes);
        let _ = self.fingerprint.set(format!("{:016x}", h.0));
        self
    }

    fn recipe_hash(&self) -> Fnv1a64 {
        let mut h = Fnv1a64::default();
        let recipe = serde_json::json!({
            "architecture": self.cfg.architecture,
            "preprocess": self.cfg.preprocess,
        });
        h.write(recipe.to_string().as_bytes());
        h
    }

    /// Decodes one image file and, with detection on, cuts out its main face; the model's
    /// preprocessing then applies.
    fn load_one(&self, path: &Path) -> Result<RgbImage> {
        let img = load_image(path)?;
        let img = match &self.faces {
            Some(f) => f.find(&img, path)?,
            None => img,
        };
        Ok(self.cfg.preprocess.prepare(&img))
    }

    /// Sets how many images go through the network at once (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Where the model was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// A fingerprint of the model: FNV-1a 64 of `config.json`'s architecture and preprocessing and
    /// of the weights file's bytes. Two embedders with equal fingerprints produce comparable
    /// embeddings. Computed once, on first use.
    pub fn fingerprint(&self) -> Result<String> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f.clone());
        }
        let mut h = self.recipe_hash();
        let weights = if self.source.is_dir() {
            self.source.join(&self.cfg.weights)
        } else {
            self.source.clone()
        };
        if weights.is_file() {
            use std::io::Read;
            let mut f = std::fs::File::open(&weights).map_err(|e| Error::io(&weights, e))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(&weights, e))?;
                if n == 0 {
                    break;
                }
                h.write(&buf[..n]);
            }
        }
        let fp = format!("{:016x}", h.0);
        let _ = self.fingerprint.set(fp.clone());
        Ok(fp)
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Size of the embeddings.
    pub fn embedding_dim(&self) -> usize {
        self.cfg.embedding_dim
    }

    /// Decodes and preprocesses image files in parallel; the first bad file is returned as an
    /// error naming it.
    pub fn load_prepared<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Result<Vec<RgbImage>> {
        paths
            .par_iter()
            .map(|p| self.load_one(p.as_ref()))
            .collect()
    }

    /// Embeds image files: returns an (N, D) f32 tensor on the CPU, one row per path in order.
    pub fn embed_images<P: AsRef<Path> + Sync>(&self, paths: &[P]) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(paths.len().div_ceil(self.batch_size));
        for chunk in paths.chunks(self.batch_size) {
            let imgs = self.load_prepared(chunk)?;
            rows.push(self.embed_prepared(&imgs)?);
        }
        self.concat(rows)
    }

    /// Embeds image files, skipping the ones that cannot be decoded: returns the (K, D)
    /// embeddings of the K good files, their indices in `paths`, and the failures. Errors only when
    /// no file could be used.
    pub fn embed_images_lossy<P: AsRef<Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Result<(Tensor, Vec<usize>, Vec<Error>)> {
        let mut rows = Vec::new();
        let mut kept = Vec::new();
        let mut failures = Vec::new();
        for (c, chunk) in paths.chunks(self.batch_size).enumerate() {
            let loaded: Vec<Result<RgbImage>> = chunk
                .par_iter()
                .map(|p| self.load_one(p.as_ref()))
                .collect();
            let mut imgs = Vec::with_capacity(chunk.len());
            for (i, r) in loaded.into_iter().enumerate() {
                match r {
                    Ok(img) => {
                        imgs.push(img);
                        kept.push(c * self.batch_size + i);
                    }
                    Err(e) => failures.push(e),
                }
            }
            if !imgs.is_empty() {
                rows.push(self.embed_prepared(&imgs)?);
            }
        }
        if rows.is_empty() {
            return Err(match failures.into_iter().next() {
                Some(e) if paths.len() == 1 => e,
                Some(e) => Error::InvalidArgument(format!(
                    "none of the {} images could be used; the first error: {e}",
                    paths.len()
                )),
                None => Error::InvalidArgument("no images to embed".into()),
            });
        }
        Ok((Tensor::cat(&rows, 0)?, kept, failures))
    }

    /// Embeds one image file.
    pub fn embed_image(&self, path: impl AsRef<Path>) -> Result<Vec<f32>> {
        let path = path.as_ref();
        let t = self.embed_images(&[path])?;
        Ok(t.get(0)?.to_vec1::<f32>()?)
    }

    /// Embeds decoded images of any size: each is preprocessed (crop, resize) first; with
    /// detection on, its main face is cut out before that (an image without a face is an
    /// [`Error::NoFace`] naming `<image i>`).
    pub fn embed_rgb(&self, imgs: &[RgbImage]) -> Result<Tensor> {
        let mut rows = Vec::new();
        for (c, chunk) in imgs.chunks(self.batch_size).enumerate() {
            let prepared: Vec<RgbImage> = chunk
                .par_iter()
                .enumerate()
                .map(|(i, img)| match &self.faces {
                    Some(f) => {
                        let name = format!("<image {}>", c * self.batch_size + i);
                        Ok(self.cfg.preprocess.prepare(&f.find(img, Path::new(&name))?))
                    }
                    None => Ok(self.cfg.preprocess.prepare(img)),
                })
                .collect::<Result<_>>()?;
            rows.push(self.embed_prepared(&prepared)?);
        }
        self.concat(rows)
    }

    /// Embeds images that are already preprocessed to the model's input size. With
    /// `preprocess.flip_tta` the embedding of the horizontally flipped image is added and the sum
    /// renormalised.
    pub fn embed_prepared(&self, imgs: &[RgbImage]) -> Result<Tensor> {
        if imgs.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.cfg.embedding_dim),
                candle_core::DType::F32,
                &Device::Cpu,
            )?);
        }
        let x = self.cfg.preprocess.to_tensor(imgs, &self.device)?;
        let e = self.net.embed(&x, self.cfg.preprocess.flip_tta)?;
        Ok(e.to_device(&Device::Cpu)?)
    }

    fn concat(&self, rows: Vec<Tensor>) -> Result<Tensor> {
        if rows.is_empty() {
            return Err(Error::InvalidArgument("no images to embed".into()));
        }
        Ok(Tensor::cat(&rows, 0)?)
    }
}

/// FNV-1a, 64 bit.
struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
