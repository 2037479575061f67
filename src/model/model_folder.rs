//! Model folders on disk: `config.json` + `model.safetensors`.
//!
//! Saving writes the weights, then the config, each to a temporary name that is synced and
//! renamed, so a crash never leaves a half-written file under the final name. Loading memory-maps
//! the weights (no `VarMap`, nothing trainable) and names the file and the first tensor that does not
//! fit when the weights and the architecture disagree.

use crate::model::config::{ModelConfig, CONFIG_FILE};
use crate::model::EmbeddingNet;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::Path;

/// Writes `cfg` and the variables of `varmap` as a model folder in `dir` (created if needed).
///
/// Only model parameters and BatchNorm running statistics should be in `varmap`: the weights file
/// holds no optimizer state.
pub fn save_model(dir: &Path, cfg: &ModelConfig, varmap: &VarMap) -> Result<()> {
    // Training-only parameters (the identity classifier) are not part of the model.
    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
        data.iter()
            .filter(|(n, _)| !n.starts_with(crate::model::TRAINING_ONLY_PREFIX))
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect()
    };
    write_model_folder(dir, cfg, &tensors)
}

/// Writes `tensors` under the weights name of `cfg`, then `cfg` itself, as the model folder
/// `dir` (created if needed), each file atomically.
pub fn write_model_folder(
    dir: &Path,
    cfg: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights = dir.join(&cfg.weights);
    crate::fsutil::write_atomic_with(&weights, |tmp| {
        candle_core::safetensors::save(tensors, tmp)
            .map_err(|e| Error::weights(tmp, format!("cannot write: {e}")))
    })?;
    cfg.save(dir)
}

/// Loads the model folder `dir` for inference: its config and the network with memory-mapped
/// weights, BatchNorm in evaluation mode when called with `forward_t(x, false)`.
pub fn load_model(dir: &Path, device: &Device) -> Result<(ModelConfig, EmbeddingNet)> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "model folder not found (expected a directory with config.json and model.safetensors)",
            ),
        ));
    }
    let cfg = ModelConfig::load(dir)?;
    let weights = dir.join(&cfg.weights);
    let net = load_weights(&cfg, &weights, device)?;
    Ok((cfg, net))
}

/// Builds the network of `cfg` from the safetensors file `weights` (memory-mapped).
pub fn load_weights(cfg: &ModelConfig, weights: &Path, device: &Device) -> Result<EmbeddingNet> {
    if !weights.is_file() {
        return Err(Error::io(
            weights,
            std::io::Error::new(std::io::ErrorKind::NotFound, "weights file not found"),
        ));
    }
    // SAFETY: the file is memory-mapped read-only; like every mmap user we rely on nobody
    // truncating it while it is in use. Loading copies nothing until a tensor is used.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, device) }
        .map_err(|e| Error::weights(weights, format!("not a readable safetensors file: {e}")))?;
    EmbeddingNet::new(&cfg.architecture, vb).map_err(|e| match e {
        Error::Candle(c) => Error::weights(
            weights,
            format!(
                "weights do not fit the {} architecture of {}: {c}",
                cfg.architecture.name(),
                CONFIG_FILE
            ),
        ),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::preprocess::Preprocess;
    use crate::model::{Architecture, CompactCnnConfig};
    use candle_core::{ModuleT, Tensor};

    fn tiny() -> ModelConfig {
        let arch = Architecture::CompactCnn(CompactCnnConfig {
            channels: vec![4, 8],
            embedding_dim: 8,
            image_size: 16,
            ..Default::default()
        });
        ModelConfig::new(
            arch,
            Preprocess {
                image_size: 16,
                ..Preprocess::compact_default()
            },
        )
    }

    #[test]
    fn save_load_round_trip_is_bit_exact_and_keeps_bn_stats() {
        let dev = Device::Cpu;
        let cfg = tiny();
        let varmap = VarMap::new();
        let net = EmbeddingNet::new(
            &cfg.architecture,
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )
        .unwrap();
        // Training-mode passes move the BatchNorm running statistics away from 0 / 1.
        let x = Tensor::randn(0f32, 1.0, (6, 3, 16, 16), &dev).unwrap();
        for _ in 0..3 {
            net.forward_t(&(&x * 2.0).unwrap(), true).unwrap();
        }
        let mean = varmap.data().lock().unwrap()["stages.0.0.bn.running_mean"]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap();
        assert!(mean.iter().any(|v| v.abs() > 1e-3), "BN stats did not move");
        let expected = net.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();

        let dir = tempfile::tempdir().unwrap();
        save_model(dir.path(), &cfg, &varmap).unwrap();
        let (cfg2, net2) = load_model(dir.path(), &dev).unwrap();
        assert_eq!(cfg2, cfg);
        let got = net2.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(got, expected);
        let stored =
            candle_core::safetensors::load(dir.path().join("model.safetensors"), &dev).unwrap();
        assert_eq!(
            stored["stages.0.0.bn.running_mean"]
                .to_vec1::<f32>()
                .unwrap(),
            mean
        );
    }

    #[test]
    fn weights_that_do_not_fit_name_the_tensor() {
        let dev = Device::Cpu;
        let cfg = tiny();
        let varmap = VarMap::new();
        EmbeddingNet::new(
            &cfg.architecture,
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_model(dir.path(), &cfg, &varmap).unwrap();
        let mut wider = cfg.clone();
        wider.architecture = Architecture::CompactCnn(CompactCnnConfig {
            channels: vec![4, 12],
            embedding_dim: 8,
            image_size: 16,
            ..Default::default()
        });
        wider.save(dir.path()).unwrap();
        let err = load_model(dir.path(), &dev).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        assert!(err.contains("stages.1.0"), "{err}");

        std::fs::write(dir.path().join("model.safetensors"), b"truncated").unwrap();
        cfg.save(dir.path()).unwrap();
        let err = load_model(dir.path(), &dev).unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
    }
}
