//! The default model, built into the crate from `models/default/` (so `cargo install` users
//! have it too): what `--model` means when it is omitted.

use crate::infer::Embedder;
use crate::model::{EmbeddingNet, ModelConfig};
use crate::{Error, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};

#[cfg(bundled_model)]
const CONFIG: Option<&str> = Some(include_str!("../../models/default/config.json"));
#[cfg(bundled_model)]
const WEIGHTS: &[u8] = include_bytes!("../../models/default/model.safetensors");
#[cfg(not(bundled_model))]
const CONFIG: Option<&str> = None;
#[cfg(not(bundled_model))]
const WEIGHTS: &[u8] = &[];

/// Whether this build carries a default model.
pub fn has_bundled_model() -> bool {
    CONFIG.is_some()
}

/// The name the bundled model reports as its source.
pub const BUNDLED_SOURCE: &str = "<bundled models/default>";

/// The bundled model's config.
pub fn bundled_config() -> Result<ModelConfig> {
    let text = CONFIG.ok_or_else(no_model)?;
    ModelConfig::from_json(text, Path::new(BUNDLED_SOURCE))
}

/// The bundled model, loaded for inference on `device`.
pub fn bundled_embedder(device: &Device) -> Result<Embedder> {
    let cfg = bundled_config()?;
    let vb = VarBuilder::from_buffered_safetensors(WEIGHTS.to_vec(), DType::F32, device)
        .map_err(|e| Error::weights(BUNDLED_SOURCE, e))?;
    let net = EmbeddingNet::new(&cfg.architecture, vb)?;
    Ok(
        Embedder::from_parts(cfg, net, device.clone(), PathBuf::from(BUNDLED_SOURCE))
            .with_weight_bytes(WEIGHTS),
    )
}

/// The bundled model's config and weights as tensors on the CPU.
pub fn bundled_weights() -> Result<(
    ModelConfig,
    std::collections::HashMap<String, candle_core::Tensor>,
)> {
    let cfg = bundled_config()?;
    let t = candle_core::safetensors::load_buffer(WEIGHTS, &Device::Cpu)
        .map_err(|e| Error::weights(BUNDLED_SOURCE, e))?;
    Ok((cfg, t))
}

fn no_model() -> Error {
    Error::InvalidArgument(
        "this build has no default model (models/default/ was empty when it was compiled): \
         pass --model with a model folder, a checkpoint or hf:owner/name"
            .into(),
    )
}
