//! The `config.json` of a model folder: architecture, preprocessing recipe, distance, calibrated
//! threshold and a training summary.
//!
//! A model folder is a directory holding `config.json` and the weights (`model.safetensors`).
//! Everything a consumer needs to embed an image the way the model was trained is in the config:
//! nothing is an implicit default.

use crate::detect::FaceCrop;
use crate::distance::Distance;
use crate::image::preprocess::Preprocess;
use crate::model::compact::CompactCnnConfig;
use crate::model::dlib_resnet::DlibResNetConfig;
use crate::model::inception_resnet_v1::InceptionResnetV1Config;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the `config.json` schema written by this crate. A config with a larger version is
/// refused with a clear error rather than misread.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the config inside a model folder.
pub const CONFIG_FILE: &str = "config.json";

/// Default file name of the weights inside a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The network architecture and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Architecture {
    /// The compact CNN ([`crate::model::CompactCnn`]).
    CompactCnn(CompactCnnConfig),
    /// FaceNet's InceptionResnetV1 with facenet-pytorch's tensor names
    /// ([`crate::model::InceptionResnetV1`]).
    InceptionResnetV1(InceptionResnetV1Config),
    /// dlib's face-recognition ResNet ([`crate::model::DlibResNet`]).
    DlibResnet(DlibResNetConfig),
}

impl Architecture {
    /// Size of the embedding this architecture produces.
    pub fn embedding_dim(&self) -> usize {
        match self {
            Architecture::CompactCnn(c) => c.embedding_dim,
            Architecture::InceptionResnetV1(c) => c.embedding_dim,
            Architecture::DlibResnet(c) => c.embedding_dim,
        }
    }

    /// Input side in pixels.
    pub fn image_size(&self) -> usize {
        match self {
            Architecture::CompactCnn(c) => c.image_size,
            Architecture::InceptionResnetV1(c) => c.image_size,
            Architecture::DlibResnet(c) => c.image_size,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::CompactCnn(_) => "compact_cnn",
            Architecture::InceptionResnetV1(_) => "inception_resnet_v1",
            Architecture::DlibResnet(_) => "dlib_resnet",
        }
    }
}

/// One entry of the threshold history: where a threshold came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRecord {
    /// The threshold value.
    pub threshold: f32,
    /// How it was chosen (e.g. `"train: best accuracy on 400 validation pairs"`).
    pub source: String,
    /// Seconds since the Unix epoch when it was set.
    pub unix_time: u64,
}

/// A summary of the training run that produced the weights.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// The dataset the model was trained on.
    pub data: String,
    /// People and images used for training.
    pub train_people: usize,
    /// Training images.
    pub train_images: usize,
    /// Validation people (identity-disjoint from training).
    pub val_people: usize,
    /// Number of validation pairs used for the figures and the threshold.
    pub val_pairs: usize,
    /// True when the threshold was calibrated on training pairs because the set was too small for
    /// a validation split.
    pub calibrated_on_train: bool,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Epochs (passes of the sampler over the training people' images).
    pub epochs: f64,
    /// The loss configuration, as text (`batch-hard, margin 0.2, euclidean`).
    pub loss: String,
    /// Validation accuracy at the best threshold before training.
    pub val_accuracy_before: Option<f32>,
    /// Validation accuracy at the best threshold after training.
    pub val_accuracy: Option<f32>,
    /// Validation ROC AUC after training.
    pub val_auc: Option<f32>,
    /// Training wall time in seconds.
    pub wall_time_s: f64,
    /// Mean training throughput in images per second.
    pub images_per_s: f64,
    /// Free-form notes (e.g. why the threshold was calibrated on training pairs).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The schema of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Schema version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Network architecture and its parameters.
    pub architecture: Architecture,
    /// Size of the embedding.
    pub embedding_dim: usize,
    /// How an image is turned into the network's input.
    pub preprocess: Preprocess,
    /// The distance used to compare embeddings (and that the threshold refers to).
    pub distance: Distance,
    /// Calibrated decision threshold: same person iff `distance <= threshold`.
    pub threshold: Option<f32>,
    /// Every threshold this model has had, oldest first; the last entry is the current one.
    #[serde(default)]
    pub threshold_history: Vec<ThresholdRecord>,
    /// How `--detect` cuts a detected face out of a photo before [`preprocess`](Self::preprocess)
    /// runs; `None` means [`FaceCrop::lfw_deep_funneled`] (the framing of LFW's images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_crop: Option<FaceCrop>,
    /// Whether the model expects whole photos: the commands then detect and align the main
    /// face of every image unless told `--no-detect` (models trained on ready crops leave it
    /// off, and detect only with `--detect`).
    #[serde(default)]
    pub detect_faces: bool,
    /// Name of the weights file inside the folder.
    #[serde(default = "default_weights_file")]
    pub weights: String,
    /// Summary of the training run, when the weights were trained by candle-face.
    #[serde(default)]
    pub training: Option<TrainingSummary>,
    /// Version of candle-face that wrote this file.
    pub crate_version: String,
}

fn default_weights_file() -> String {
    WEIGHTS_FILE.to_string()
}

impl ModelConfig {
    /// A config for `architecture` with the given preprocessing, no threshold yet.
    pub fn new(architecture: Architecture, preprocess: Preprocess) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            embedding_dim: architecture.embedding_dim(),
            architecture,
            preprocess,
            distance: Distance::Euclidean,
            threshold: None,
            threshold_history: Vec::new(),
            face_crop: None,
            detect_faces: false,
            weights: default_weights_file(),
            training: None,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Parses and validates a config from JSON text; `path` is used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::config(path, format!("invalid JSON: {e}")))?;
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| Error::config(path, "missing or invalid \"format_version\""))?;
        if version > FORMAT_VERSION as u64 {
            return Err(Error::config(
                path,
                format!(
                    "format_version {version} is newer than this candle-face understands \
                     ({FORMAT_VERSION}); upgrade candle-face"
                ),
            ));
        }
        let cfg: ModelConfig = serde_json::from_value(value)
            .map_err(|e| Error::config(path, format!("not a candle-face model config: {e}")))?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_file(&dir.join(CONFIG_FILE))
    }

    /// Reads and validates the config file `path` (a `config.json` anywhere, e.g. in the Hub
    /// cache).
    pub fn load_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Writes `dir/config.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::config(&path, format!("cannot serialize: {e}")))?;
        crate::fsutil::write_atomic(&path, text.as_bytes())
    }

    /// Checks internal consistency.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.embedding_dim != self.architecture.embedding_dim() {
            return Err(Error::config(
                path,
                format!(
                    "embedding_dim {} disagrees with the architecture's {}",
                    self.embedding_dim,
                    self.architecture.embedding_dim()
                ),
            ));
        }
        if self.preprocess.image_size as usize != self.architecture.image_size() {
            return Err(Error::config(
                path,
                format!(
                    "preprocess.image_size {} disagrees with the architecture's input size {}",
                    self.preprocess.image_size,
                    self.architecture.image_size()
                ),
            ));
        }
        if let Some(t) = self.threshold {
            if !t.is_finite() || t < 0.0 {
                return Err(Error::config(path, format!("invalid threshold {t}")));
            }
        }
        if self.weights.contains('/') || self.weights.contains('\\') || self.weights.is_empty() {
            return Err(Error::config(
                path,
                format!("invalid weights file name {:?}", self.weights),
            ));
        }
        match &self.architecture {
            Architecture::CompactCnn(c) => c.validate(),
            Architecture::InceptionResnetV1(c) => c.validate(),
            Architecture::DlibResnet(c) => c.validate(),
        }
        .map_err(|e| Error::config(path, e.to_string()))?;
        if let Some(fc) = &self.face_crop {
            fc.validate()
                .map_err(|e| Error::config(path, e.to_string()))?;
        }
        Ok(())
    }

    /// The face-crop recipe for detection: [`face_crop`](Self::face_crop) or the LFW framing.
    pub fn face_crop_or_default(&self) -> FaceCrop {
        self.face_crop
            .clone()
            .unwrap_or_else(FaceCrop::lfw_deep_funneled)
    }

    /// Sets a new threshold and records it (with where it came from) at the end of
    /// [`threshold_history`](Self::threshold_history); earlier thresholds stay in the history.
    pub fn set_threshold(&mut self, threshold: f32, source: impl Into<String>) {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.threshold = Some(threshold);
        self.threshold_history.push(ThresholdRecord {
            threshold,
            source: source.into(),
            unix_time,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelConfig {
        ModelConfig::new(
            Architecture::CompactCnn(CompactCnnConfig::default()),
            Preprocess::compact_default(),
        )
    }

    #[test]
    fn json_round_trip() {
        let mut c = sample();
        c.set_threshold(0.9, "first");
        c.set_threshold(1.1, "second");
        let text = serde_json::to_string_pretty(&c).unwrap();
        let back = ModelConfig::from_json(&text, Path::new("config.json")).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.threshold, Some(1.1));
        assert_eq!(back.threshold_history.len(), 2);
        assert_eq!(back.threshold_history[0].threshold, 0.9);
    }

    #[test]
    fn clear_errors() {
        let p = Path::new("m/config.json");
        let err = ModelConfig::from_json("{not json", p)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m/config.json") && err.contains("invalid JSON"),
            "{err}"
        );

        let mut v = serde_json::to_value(sample()).unwrap();
        v["format_version"] = (FORMAT_VERSION + 1).into();
        let err = ModelConfig::from_json(&v.to_string(), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer"), "{err}");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["architecture"]["type"] = "transformer_xl".into();
        let err = ModelConfig::from_json(&v.to_string(), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("transformer_xl"), "{err}");

        let mut v = serde_json::to_value(sample()).unwrap();
        v["embedding_dim"] = 7.into();
        let err = ModelConfig::from_json(&v.to_string(), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("embedding_dim"), "{err}");
    }
}
