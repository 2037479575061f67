//! Where a model comes from: the values `--model` accepts, and loading each of them for
//! inference.
//!
//! | `--model` value | what is loaded |
//! |---|---|
//! | *(omitted)*, `default` or `dlib` | dlib's face-recognition ResNet, built into the crate ([`crate::infer::bundled_models`]) |
//! | `compact` | the compact CNN trained from scratch on LFW, built into the crate |
//! | `path/to/folder` | a model folder: `config.json` + weights |
//! | `weights.pth`, `weights.pt`, `weights.safetensors` | a facenet-pytorch InceptionResnetV1 checkpoint (no `config.json`) |
//! | `hf:owner/name[@rev]` | a Hub repository holding a model folder (feature `hub`) |
//! | `hf:owner/name[@rev]/file.pth` | one checkpoint file in a Hub repository (feature `hub`) |
//!
//! A facenet-pytorch checkpoint gets facenet-pytorch's own preprocessing (160×160, whole crop,
//! `(x − 127.5)/128`), its face crop (MTCNN box, margin 0) and BatchNorm epsilon 0.001, and no
//! threshold: calibrate one (`candle-face calibrate`) or pass `--threshold`. `candle-face convert
//! facenet` turns such a checkpoint into a model folder with a `config.json`.

use crate::convert::facenet::{load_facenet_checkpoint, read_facenet_checkpoint};
use crate::infer::bundled_models::BundledModel;
use crate::infer::Embedder;
use crate::model::{write_model_folder, ModelConfig};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Checkpoint files known Hub repositories hold, for `hf:owner/name` without a file name.
pub const KNOWN_HUB_CHECKPOINTS: &[(&str, &str)] =
    &[("py-feat/facenet", "facenet_20180402_114759_vggface2.pth")];

/// A model to load, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model built into the crate.
    Bundled(BundledModel),
    /// A model folder (`config.json` + weights).
    Folder(PathBuf),
    /// A facenet-pytorch InceptionResnetV1 checkpoint (`.pt`/`.pth` zip state dict or
    /// `.safetensors`) without a `config.json`.
    FacenetCheckpoint(PathBuf),
    /// A Hub repository at a revision, optionally one file inside it.
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit (`main` when not given).
        revision: String,
        /// A checkpoint file inside the repository; `None`: the repository's model folder
        /// (`config.json` + `model.safetensors`) or a known checkpoint.
        file: Option<String>,
    },
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Bundled(m) => write!(f, "{m}"),
            ModelSource::Folder(p) | ModelSource::FacenetCheckpoint(p) => {
                write!(f, "{}", p.display())
            }
            ModelSource::Hub {
                repo,
                revision,
                file,
            } => {
                write!(f, "hf:{repo}@{revision}")?;
                if let Some(file) = file {
                    write!(f, "/{file}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for ModelSource {
    type Err = Error;

    /// Parses a `--model` value (see the module documentation). Local paths must exist.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(ModelSource::Bundled(BundledModel::Dlib));
        }
        if let Some(m) = BundledModel::from_name(s) {
            return Ok(ModelSource::Bundled(m));
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            return parse_hub(s, rest);
        }
        let path = PathBuf::from(s);
        if path.is_dir() {
            return Ok(ModelSource::Folder(path));
        }
        if path.is_file() {
            return if is_checkpoint_name(&path) {
                Ok(ModelSource::FacenetCheckpoint(path))
            } else {
                Err(Error::InvalidArgument(format!(
                    "{s}: not a model folder or a .pth/.pt/.safetensors checkpoint \
                     (a model folder holds config.json and model.safetensors)"
                )))
            };
        }
        Err(Error::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "model not found (expected a model folder, a checkpoint file, \
                 hf:owner/name, or a built-in model: `default`, `dlib`, `compact`)",
            ),
        ))
    }
}

fn is_checkpoint_name(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("pt" | "pth" | "safetensors")
    )
}

fn parse_hub(s: &str, rest: &str) -> Result<ModelSource> {
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "{s}: {why} (expected hf:owner/name[@revision][/file])"
        ))
    };
    let (owner, rest) = rest.split_once('/').ok_or_else(|| bad("missing `/name`"))?;
    let (name_rev, file) = match rest.split_once('/') {
        Some((n, f)) => (n, Some(f)),
        None => (rest, None),
    };
    let (name, revision) = match name_rev.split_once('@') {
        Some((n, r)) if !r.is_empty() => (n, r),
        Some(_) => return Err(bad("empty revision after `@`")),
        None => (name_rev, "main"),
    };
    if owner.is_empty() || name.is_empty() {
        return Err(bad("empty owner or name"));
    }
    if let Some(f) = file {
        if f.is_empty() || f.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(bad("invalid file path"));
        }
    }
    #[cfg(feature = "hub")]
    crate::hub::HubRef::new(&format!("{owner}/{name}"), revision)?;
    Ok(ModelSource::Hub {
        repo: format!("{owner}/{name}"),
        revision: revision.to_string(),
        file: file.map(str::to_string),
    })
}

/// How to load a [`ModelSource`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Device to run the model on.
    pub device: Device,
    /// Hub settings (endpoint, cache, offline mode).
    #[cfg(feature = "hub")]
    pub hub: crate::hub::HubOptions,
}

impl Default for LoadOptions {
    /// CPU, Hub settings from the environment.
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            #[cfg(feature = "hub")]
            hub: crate::hub::HubOptions::from_env(),
        }
    }
}

impl ModelSource {
    /// Loads the model for inference, with face detection on when the model expects photos
    /// ([`Embedder::with_model_defaults`]).
    pub fn load(&self, opts: &LoadOptions) -> Result<Embedder> {
        self.load_plain(opts)?.with_model_defaults()
    }

    fn load_plain(&self, opts: &LoadOptions) -> Result<Embedder> {
        match self {
            ModelSource::Bundled(m) => m.embedder(&opts.device),
            ModelSource::Folder(dir) => Embedder::load_on(dir, &opts.device),
            ModelSource::FacenetCheckpoint(p) => {
                let (cfg, net) = load_facenet_checkpoint(p, &opts.device)?;
                Ok(Embedder::from_parts(
                    cfg,
                    net,
                    opts.device.clone(),
                    p.clone(),
                ))
            }
            ModelSource::Hub { .. } => self.load_hub(opts),
        }
    }

    #[cfg(feature = "hub")]
    fn load_hub(&self, opts: &LoadOptions) -> Result<Embedder> {
        let files = self.fetch(opts)?;
        match files {
            Fetched::Folder { config, weights } => {
                let cfg = ModelConfig::load_file(&config)?;
                let net = crate::model::model_folder::load_weights(&cfg, &weights, &opts.device)?;
                Ok(Embedder::from_parts(cfg, net, opts.device.clone(), weights))
            }
            Fetched::Checkpoint(p) => {
                let (cfg, net) = load_facenet_checkpoint(&p, &opts.device)?;
                Ok(Embedder::from_parts(cfg, net, opts.device.clone(), p))
            }
        }
    }

    #[cfg(not(feature = "hub"))]
    fn load_hub(&self, _opts: &LoadOptions) -> Result<Embedder> {
        Err(Error::Hub(format!(
            "{self}: this build has no Hub support (rebuild with the `hub` feature)"
        )))
    }

    /// The model's config and all its weights as tensors on the CPU (the starting point of
    /// fine-tuning). A facenet-pytorch checkpoint gets
    /// [`facenet_model_config`](crate::convert::facenet::facenet_model_config).
    pub fn read_weights(
        &self,
        opts: &LoadOptions,
    ) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
        let folder = |cfg: ModelConfig, weights: &Path| -> Result<_> {
            let t = candle_core::safetensors::load(weights, &Device::Cpu).map_err(|e| {
                Error::weights(weights, format!("not a readable safetensors file: {e}"))
            })?;
            Ok((cfg, t))
        };
        match self {
            ModelSource::Bundled(m) => m.weights(),
            ModelSource::Folder(dir) => {
                let cfg = ModelConfig::load(dir)?;
                let w = dir.join(&cfg.weights);
                folder(cfg, &w)
            }
            ModelSource::FacenetCheckpoint(p) => read_facenet_checkpoint(p),
            #[cfg(feature = "hub")]
            ModelSource::Hub { .. } => match self.fetch(opts)? {
                Fetched::Folder { config, weights } => {
                    folder(ModelConfig::load_file(&config)?, &weights)
                }
                Fetched::Checkpoint(p) => read_facenet_checkpoint(&p),
            },
            #[cfg(not(feature = "hub"))]
            ModelSource::Hub { .. } => {
                let _ = opts;
                Err(Error::Hub(format!(
                    "{self}: this build has no Hub support (rebuild with the `hub` feature)"
                )))
            }
        }
    }

    /// Resolves a Hub source to local files in the Hub cache (downloading them unless
    /// offline). Other sources are an error.
    #[cfg(feature = "hub")]
    pub fn fetch(&self, opts: &LoadOptions) -> Result<Fetched> {
        use crate::hub::{fetch_file, fetch_model, HubRef};
        let ModelSource::Hub {
            repo,
            revision,
            file,
        } = self
        else {
            return Err(Error::InvalidArgument(format!("{self}: not a Hub model")));
        };
        let r = HubRef::new(repo, revision)?;
        let known = KNOWN_HUB_CHECKPOINTS
            .iter()
            .find(|(k, _)| k == repo)
            .map(|(_, f)| *f);
        if let Some(f) = file.as_deref().or(known) {
            return Ok(Fetched::Checkpoint(fetch_file(&r, f, &opts.hub)?));
        }
        let files = fetch_model(&r, None, &opts.hub).map_err(|e| {
            Error::Hub(format!(
                "{e}\n  (a candle-face model repository holds config.json and model.safetensors; \
                 for a single checkpoint file use hf:{repo}@{revision}/<file>)"
            ))
        })?;
        Ok(match files.config {
            Some(config) => Fetched::Folder {
                config,
                weights: files.weights,
            },
            None => Fetched::Checkpoint(files.weights),
        })
    }
}

/// Local files of a Hub model ([`ModelSource::fetch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A candle-face model: `config.json` and the weights it names.
    Folder {
        /// `config.json`.
        config: PathBuf,
        /// The weights file.
        weights: PathBuf,
    },
    /// A facenet-pytorch checkpoint without a config.
    Checkpoint(PathBuf),
}

/// Writes any model source as a candle-face model folder `out` (`config.json` and the weights
/// it names, each written atomically): how the built-in model, a Hub model or a checkpoint
/// becomes a folder that can be calibrated or shipped. Returns the config written.
pub fn export_model(source: &ModelSource, opts: &LoadOptions, out: &Path) -> Result<ModelConfig> {
    let (cfg, tensors) = source.read_weights(opts)?;
    write_model_folder(out, &cfg, &tensors)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_references_with_files() {
        let s: ModelSource = "hf:py-feat/facenet".parse().unwrap();
        assert_eq!(
            s,
            ModelSource::Hub {
                repo: "py-feat/facenet".into(),
                revision: "main".into(),
                file: None
            }
        );
        let s: ModelSource = "hf:owner/name@v1.0/sub/w.pth".parse().unwrap();
        assert_eq!(
            s,
            ModelSource::Hub {
                repo: "owner/name".into(),
                revision: "v1.0".into(),
                file: Some("sub/w.pth".into())
            }
        );
        assert_eq!(s.to_string(), "hf:owner/name@v1.0/sub/w.pth");
        for bad in [
            "hf:",
            "hf:owner",
            "hf:/name",
            "hf:o/n@",
            "hf:o/n/../x",
            "hf:o/n/",
        ] {
            assert!(bad.parse::<ModelSource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_local_sources() {
        assert_eq!(
            "default".parse::<ModelSource>().unwrap(),
            ModelSource::Bundled(BundledModel::Dlib)
        );
        assert_eq!(
            "compact".parse::<ModelSource>().unwrap(),
            ModelSource::Bundled(BundledModel::Compact)
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            d.parse::<ModelSource>().unwrap(),
            ModelSource::Folder(dir.path().into())
        );
        let pth = dir.path().join("w.PTH");
        std::fs::write(&pth, b"x").unwrap();
        assert_eq!(
            pth.to_str().unwrap().parse::<ModelSource>().unwrap(),
            ModelSource::FacenetCheckpoint(pth.clone())
        );
        let txt = dir.path().join("notes.txt");
        std::fs::write(&txt, b"x").unwrap();
        let err = txt.to_str().unwrap().parse::<ModelSource>().unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        let missing = dir.path().join("nope");
        let err = missing
            .to_str()
            .unwrap()
            .parse::<ModelSource>()
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
