//! The models built into the crate (so `cargo install` users have them too), by name:
//!
//! | name | folder | what it is |
//! |---|---|---|
//! | `default`, `dlib` | `models/dlib-resnet-v1/` | dlib's face-recognition ResNet (public domain), converted: what `--model` means when it is omitted |
//! | `compact` | `models/compact/` | the compact CNN trained from scratch on LFW's training people: the example of training from nothing |

use crate::infer::Embedder;
use crate::model::{EmbeddingNet, ModelConfig};
use crate::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::fmt;
use std::path::{Path, PathBuf};

/// A model built into the crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BundledModel {
    /// dlib's face-recognition ResNet (`default`, `dlib`).
    Dlib,
    /// The compact CNN trained from scratch on LFW (`compact`).
    Compact,
}

#[cfg(bundled_dlib)]
const DLIB: Option<(&str, &[u8])> = Some((
    include_str!("../../models/dlib-resnet-v1/config.json"),
    include_bytes!("../../models/dlib-resnet-v1/model.safetensors"),
));
#[cfg(not(bundled_dlib))]
const DLIB: Option<(&str, &[u8])> = None;

#[cfg(bundled_compact)]
const COMPACT: Option<(&str, &[u8])> = Some((
    include_str!("../../models/compact/config.json"),
    include_bytes!("../../models/compact/model.safetensors"),
));
#[cfg(not(bundled_compact))]
const COMPACT: Option<(&str, &[u8])> = None;

impl BundledModel {
    /// The model a name stands for (`default`, `dlib`, `compact`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "default" | "dlib" => Some(BundledModel::Dlib),
            "compact" => Some(BundledModel::Compact),
            _ => None,
        }
    }

    /// The model's name.
    pub fn name(self) -> &'static str {
        match self {
            BundledModel::Dlib => "dlib",
            BundledModel::Compact => "compact",
        }
    }

    /// The folder under `models/` it is built from.
    pub fn folder(self) -> &'static str {
        match self {
            BundledModel::Dlib => "models/dlib-resnet-v1",
            BundledModel::Compact => "models/compact",
        }
    }

    fn files(self) -> Result<(&'static str, &'static [u8])> {
        let files = match self {
            BundledModel::Dlib => DLIB,
            BundledModel::Compact => COMPACT,
        };
        files.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "this build has no `{}` model ({}/ was empty when it was compiled): pass \
                 --model with a model folder, a checkpoint or hf:owner/name",
                self.name(),
                self.folder()
            ))
        })
    }

    /// Whether this build carries the model.
    pub fn is_built_in(self) -> bool {
        self.files().is_ok()
    }

    /// The name it reports as its source, e.g. `<bundled models/dlib-resnet-v1>`.
    pub fn source_name(self) -> String {
        format!("<bundled {}>", self.folder())
    }

    /// The model's config.
    pub fn config(self) -> Result<ModelConfig> {
        let (text, _) = self.files()?;
        ModelConfig::from_json(text, Path::new(&self.source_name()))
    }

    /// The model, loaded for inference on `device`, with face detection on when it expects
    /// photos (the default model does: [`Embedder::with_model_defaults`]).
    pub fn embedder(self, device: &Device) -> Result<Embedder> {
        let cfg = self.config()?;
        let (_, weights) = self.files()?;
        let vb = VarBuilder::from_buffered_safetensors(weights.to_vec(), DType::F32, device)
            .map_err(|e| Error::weights(self.source_name(), e))?;
        let net = EmbeddingNet::new(&cfg.architecture, vb)?;
        let source = PathBuf::from(self.source_name());
        Embedder::from_parts(cfg, net, device.clone(), source)
            .with_weight_bytes(weights)
            .with_model_defaults()
    }

    /// The model's config and weights as f32 tensors on the CPU.
    pub fn weights(
        self,
    ) -> Result<(
        ModelConfig,
        std::collections::HashMap<String, candle_core::Tensor>,
    )> {
        let cfg = self.config()?;
        let (_, weights) = self.files()?;
        let t = candle_core::safetensors::load_buffer(weights, &Device::Cpu)
            .map_err(|e| Error::weights(self.source_name(), e))?
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        Ok((cfg, t))
    }
}

impl fmt::Display for BundledModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this build carries the default model.
pub fn has_bundled_model() -> bool {
    BundledModel::Dlib.is_built_in()
}
