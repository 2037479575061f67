//! facenet-pytorch's InceptionResnetV1 checkpoints (`.pt`/`.pth`/`.safetensors`): which tensors
//! a file must hold, inferring the [`InceptionResnetV1Config`] from them, explaining the first
//! mismatch, the config candle-face gives such a checkpoint, and loading or converting it into
//! a model folder.
//!
//! Reference: the state dict of `facenet_pytorch.InceptionResnetV1(classify=False)` (keys such as
//! `conv2d_1a.conv.weight`, `repeat_2.3.branch1.2.bn.running_var`, `last_linear.weight`). Keys
//! that the embedding model never reads are ignored: the classifier head `logits.*` and
//! BatchNorm's integer `num_batches_tracked` counters.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::detect::FaceCrop;
use crate::image::preprocess::Preprocess;
use crate::model::inception_resnet_v1::{
    InceptionResnetV1, InceptionResnetV1Config, IRV1_FEATURES,
};
use crate::model::{write_model_folder, Architecture, EmbeddingNet, ModelConfig};
use crate::{Error, Result};

/// Name, shape and dtype of each tensor in a checkpoint, without the data.
pub type TensorSpecs = HashMap<String, (Vec<usize>, DType)>;

/// Whether a checkpoint key is one the embedding model ignores (`logits.*`,
/// `*.num_batches_tracked`).
pub fn is_ignored_key(name: &str) -> bool {
    name.starts_with("logits.") || name.ends_with("num_batches_tracked")
}

/// A [`SimpleBackend`] that records every tensor the model asks for and hands back zeros
/// (broadcast, so nothing large is allocated).
struct Recorder(Arc<Mutex<NameShapes>>);

/// Tensor names with their shapes, in order.
type NameShapes = Vec<(String, Vec<usize>)>;

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut r) = self.0.lock() {
            r.push((name.to_string(), s.dims().to_vec()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("Recorder: tensor {name} requested without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// Every tensor [`InceptionResnetV1`] reads for `cfg`, with its shape, in the order the model
/// reads them (facenet-pytorch's state dict less `num_batches_tracked`; within a BatchNorm the
/// order differs).
///
/// The list is taken from the model itself (built once on a recording [`VarBuilder`]), so it
/// cannot drift from what [`InceptionResnetV1::new`] loads.
pub fn expected_tensors(cfg: &InceptionResnetV1Config) -> Result<Vec<(String, Vec<usize>)>> {
    let record = Arc::new(Mutex::new(Vec::new()));
    let vb = VarBuilder::from_backend(Box::new(Recorder(record.clone())), DType::F32, Device::Cpu);
    InceptionResnetV1::new(cfg, vb)?;
    let list = record
        .lock()
        .map_err(|_| Error::Msg("expected_tensors: poisoned lock".into()))?
        .clone();
    Ok(list)
}

/// Infers the configuration of a facenet-pytorch InceptionResnetV1 checkpoint from its tensor
/// names and shapes: `embedding_dim` from `last_linear.weight` (`[embedding_dim, 1792]`).
/// Fields a checkpoint cannot encode (dropout, BatchNorm epsilon, image size) keep
/// facenet-pytorch's defaults.
pub fn infer_config(tensors: &TensorSpecs, path: &Path) -> Result<InceptionResnetV1Config> {
    let name = "last_linear.weight";
    let Some((shape, _)) = tensors.get(name) else {
        return Err(Error::weights(
            path,
            format!(
                "not a facenet-pytorch InceptionResnetV1 checkpoint: missing tensor `{name}` \
                 (expected shape [embedding_dim, {IRV1_FEATURES}])"
            ),
        ));
    };
    match shape.as_slice() {
        &[d, f] if f == IRV1_FEATURES && d > 0 => Ok(InceptionResnetV1Config {
            embedding_dim: d,
            ..Default::default()
        }),
        _ => Err(Error::weights(
            path,
            format!(
                "tensor `{name}` has shape {shape:?}, expected [embedding_dim, {IRV1_FEATURES}]"
            ),
        )),
    }
}

/// Checks that `tensors` holds exactly what [`InceptionResnetV1`] needs for `cfg`: the error
/// names the first missing tensor, the first with a wrong shape or a non-float dtype, or the
/// first unexpected one (ignoring `logits.*` and `num_batches_tracked`), with its shapes.
pub fn check_tensors(
    cfg: &InceptionResnetV1Config,
    tensors: &TensorSpecs,
    path: &Path,
) -> Result<()> {
    let expected = expected_tensors(cfg)?;
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => {
                return Err(Error::weights(
                    path,
                    format!("missing tensor `{name}` (expected shape {shape:?})"),
                ))
            }
            Some((got, _)) if got != shape => {
                return Err(Error::weights(
                    path,
                    format!("tensor `{name}` has shape {got:?}, expected {shape:?}"),
                ))
            }
            Some((_, dtype)) if !dtype.is_float() => {
                return Err(Error::weights(
                    path,
                    format!("tensor `{name}` has dtype {dtype:?}, expected a float type"),
                ))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|n| !known.contains(n.as_str()) && !is_ignored_key(n))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        let shape = &tensors[*name].0;
        return Err(Error::weights(
            path,
            format!(
                "unexpected tensor `{name}` with shape {shape:?} ({} unexpected in all): \
                 not a facenet-pytorch InceptionResnetV1 layout",
                extra.len()
            ),
        ));
    }
    Ok(())
}

/// The safetensors dtype name → candle dtype, for the types candle can load.
fn safetensors_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F8_E4M3" => DType::F8E4M3,
        _ => return None,
    })
}

/// Largest safetensors header this reader accepts (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// Reads the names, shapes and dtypes of a `.safetensors` file from its header alone, and checks
/// that the file is long enough for the data the header describes (a truncated download fails
/// here, naming the file).
pub fn read_safetensors_specs(path: &Path) -> Result<TensorSpecs> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| {
        Error::weights(
            path,
            "not a safetensors file: shorter than its 8-byte header length",
        )
    })?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n + 8 > file_len {
        return Err(Error::weights(
            path,
            format!("not a safetensors file: header length {n} for a {file_len}-byte file"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| Error::weights(path, format!("invalid safetensors header: {e}")))?;
    let mut specs = TensorSpecs::new();
    let mut data_end = 0u64;
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| {
            Error::weights(
                path,
                format!("invalid safetensors header: tensor `{name}` {what}"),
            )
        };
        let dtype_name = info
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("has no dtype"))?;
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("has no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("has a non-integer shape"))?;
        let end = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| o.get(1))
            .and_then(|e| e.as_u64())
            .ok_or_else(|| bad("has no data_offsets"))?;
        data_end = data_end.max(end);
        match safetensors_dtype(dtype_name) {
            Some(dtype) => {
                specs.insert(name.clone(), (shape, dtype));
            }
            None if is_ignored_key(name) => {}
            None => return Err(bad(&format!("has unsupported dtype {dtype_name}"))),
        }
    }
    if 8 + n + data_end > file_len {
        return Err(Error::weights(
            path,
            format!(
                "truncated: the header describes {} bytes, the file has {file_len}",
                8 + n + data_end
            ),
        ));
    }
    Ok(specs)
}

/// Reads a facenet-pytorch InceptionResnetV1 `.safetensors` checkpoint's header, infers its
/// configuration ([`infer_config`]) and checks every tensor against it ([`check_tensors`]).
pub fn inspect_facenet_safetensors(path: impl AsRef<Path>) -> Result<InceptionResnetV1Config> {
    let path = path.as_ref();
    let specs = read_safetensors_specs(path)?;
    let cfg = infer_config(&specs, path)?;
    check_tensors(&cfg, &specs, path)?;
    Ok(cfg)
}

/// Loads every tensor of a PyTorch zip checkpoint (`torch.save` since PyTorch 1.6: `.pt`/`.pth`)
/// holding a state dict, through candle's pickle reader, onto the CPU.
///
/// Legacy (pre-1.6, non-zip) files are refused with an explanation: candle cannot read them;
/// convert them to safetensors with PyTorch first.
pub fn load_pth_tensors(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| Error::io(path, e))?;
    if &magic != b"PK\x03\x04" {
        return Err(Error::weights(
            path,
            "not a zip PyTorch checkpoint (a legacy pre-1.6 `torch.save` file?); re-save it with \
             PyTorch ≥ 1.6 or convert it to safetensors",
        ));
    }
    let tensors = candle_core::pickle::read_all(path)
        .map_err(|e| Error::weights(path, format!("cannot read PyTorch checkpoint: {e}")))?;
    Ok(tensors.into_iter().collect())
}

/// The config candle-face gives a facenet-pytorch checkpoint: its InceptionResnetV1 layout,
/// facenet-pytorch's preprocessing and face crop, euclidean distance, no threshold.
pub fn facenet_model_config(arch: InceptionResnetV1Config) -> ModelConfig {
    let mut pre = Preprocess::facenet();
    pre.image_size = arch.image_size as u32;
    let mut cfg = ModelConfig::new(Architecture::InceptionResnetV1(arch), pre);
    cfg.face_crop = Some(FaceCrop::facenet());
    cfg
}

/// The tensors of a facenet-pytorch checkpoint that the embedding model uses (the `logits`
/// head and `num_batches_tracked` counters dropped), as f32 on the CPU.
pub fn read_facenet_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    let all = if ext.as_deref() == Some("safetensors") {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::weights(path, format!("not a readable safetensors file: {e}")))?
    } else {
        load_pth_tensors(path)?
    };
    all.into_iter()
        .filter(|(k, _)| !is_ignored_key(k))
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect()
}

/// Reads a facenet-pytorch InceptionResnetV1 checkpoint: its tensors (see
/// [`read_facenet_tensors`]) and the config candle-face gives it, with the architecture inferred
/// from the tensor shapes and every tensor checked (the first that does not fit is named).
pub fn read_facenet_checkpoint(path: &Path) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let tensors = read_facenet_tensors(path)?;
    let specs = tensors
        .iter()
        .map(|(k, t)| (k.clone(), (t.dims().to_vec(), t.dtype())))
        .collect();
    let arch = infer_config(&specs, path)?;
    check_tensors(&arch, &specs, path)?;
    Ok((facenet_model_config(arch), tensors))
}

/// Loads a facenet-pytorch InceptionResnetV1 checkpoint (`.pt`/`.pth`/`.safetensors`): infers
/// its configuration from the tensor shapes, checks every tensor (naming the first that does
/// not fit), and builds the network on `device`.
pub fn load_facenet_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(ModelConfig, EmbeddingNet)> {
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint not found"),
        ));
    }
    let (cfg, tensors) = read_facenet_checkpoint(path)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let net = EmbeddingNet::new(&cfg.architecture, vb).map_err(|e| Error::weights(path, e))?;
    Ok((cfg, net))
}

/// Converts a facenet-pytorch InceptionResnetV1 checkpoint into a candle-face model folder
/// `out` (`config.json` with facenet-pytorch's preprocessing, `model.safetensors` without the
/// classifier head), written atomically. Returns the config written.
pub fn convert_facenet_checkpoint(src: &Path, out: &Path) -> Result<ModelConfig> {
    let (cfg, tensors) = read_facenet_checkpoint(src)?;
    write_model_folder(out, &cfg, &tensors)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A facenet-pytorch-style state dict for `cfg` (zeros: only names, shapes and dtypes
    /// matter here), plus the keys the model ignores (`num_batches_tracked`, a `logits` head).
    fn state_dict(cfg: &InceptionResnetV1Config) -> HashMap<String, Tensor> {
        let specs = expected_tensors(cfg).unwrap();
        let zeros = |s: &Vec<usize>| Tensor::zeros(s.as_slice(), DType::F32, &Device::Cpu);
        let mut t: HashMap<String, Tensor> = specs
            .iter()
            .map(|(n, s)| (n.clone(), zeros(s).unwrap()))
            .collect();
        t.insert(
            "conv2d_1a.bn.num_batches_tracked".into(),
            Tensor::new(0i64, &Device::Cpu).unwrap(),
        );
        t.insert(
            "logits.weight".into(),
            Tensor::zeros((10, cfg.embedding_dim), DType::F32, &Device::Cpu).unwrap(),
        );
        t
    }

    fn message(r: Result<InceptionResnetV1Config>) -> String {
        match r {
            Ok(cfg) => panic!("expected an error, got {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn inspects_config_and_names_the_first_bad_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = InceptionResnetV1Config {
            embedding_dim: 128,
            ..Default::default()
        };
        let good = state_dict(&cfg);
        let path = dir.path().join("irv1.safetensors");
        candle_core::safetensors::save(&good, &path).unwrap();
        assert_eq!(inspect_facenet_safetensors(&path).unwrap(), cfg);
        // What the header promises, the model loads.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu) }
            .unwrap();
        InceptionResnetV1::new(&cfg, vb).unwrap();

        // A wrong shape, named with both shapes.
        let mut bad = good.clone();
        bad.insert(
            "repeat_2.3.branch1.1.conv.weight".into(),
            Tensor::zeros((128, 128, 7, 1), DType::F32, &Device::Cpu).unwrap(),
        );
        let p = dir.path().join("shape.safetensors");
        candle_core::safetensors::save(&bad, &p).unwrap();
        let m = message(inspect_facenet_safetensors(&p));
        assert!(
            m.contains("repeat_2.3.branch1.1.conv.weight")
                && m.contains("[128, 128, 7, 1]")
                && m.contains("[128, 128, 1, 7]")
                && m.contains("shape.safetensors"),
            "{m}"
        );

        // A missing tensor.
        let mut missing = good.clone();
        missing.remove("mixed_7a.branch1.0.bn.running_var");
        let p = dir.path().join("missing.safetensors");
        candle_core::safetensors::save(&missing, &p).unwrap();
        let m = message(inspect_facenet_safetensors(&p));
        assert!(
            m.contains("missing tensor `mixed_7a.branch1.0.bn.running_var`") && m.contains("[256]"),
            "{m}"
        );

        // A truncated download.
        let bytes = std::fs::read(&path).unwrap();
        let p = dir.path().join("truncated.safetensors");
        std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
        let m = message(inspect_facenet_safetensors(&p));
        assert!(m.contains("truncated"), "{m}");
    }

    #[test]
    fn check_tensors_reports_shapes_dtypes_and_extras() {
        let cfg = InceptionResnetV1Config::default();
        let specs: TensorSpecs = expected_tensors(&cfg)
            .unwrap()
            .into_iter()
            .map(|(n, s)| (n, (s, DType::F32)))
            .collect();
        let path = Path::new("w.safetensors");
        check_tensors(&cfg, &specs, path).unwrap();
        assert_eq!(infer_config(&specs, path).unwrap(), cfg);

        let mut s = specs.clone();
        s.insert("last_bn.weight".into(), (vec![256], DType::F32));
        let m = check_tensors(&cfg, &s, path).unwrap_err().to_string();
        assert!(
            m.contains("`last_bn.weight` has shape [256], expected [512]"),
            "{m}"
        );

        let mut s = specs.clone();
        s.insert(
            "conv2d_1a.conv.weight".into(),
            (vec![32, 3, 3, 3], DType::I64),
        );
        let m = check_tensors(&cfg, &s, path).unwrap_err().to_string();
        assert!(
            m.contains("conv2d_1a.conv.weight") && m.contains("I64"),
            "{m}"
        );

        let mut s = specs.clone();
        s.insert("logits.weight".into(), (vec![8631, 512], DType::F32));
        s.insert(
            "repeat_1.0.branch0.bn.num_batches_tracked".into(),
            (vec![], DType::I64),
        );
        check_tensors(&cfg, &s, path).unwrap();
        s.insert("module.extra".into(), (vec![1], DType::F32));
        let m = check_tensors(&cfg, &s, path).unwrap_err().to_string();
        assert!(m.contains("unexpected tensor `module.extra`"), "{m}");

        let mut s = specs.clone();
        s.remove("last_linear.weight");
        let m = infer_config(&s, path).unwrap_err().to_string();
        assert!(m.contains("missing tensor `last_linear.weight`"), "{m}");
    }

    #[test]
    fn legacy_pth_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.pt");
        // The first bytes of a legacy torch.save file: a pickled magic number (protocol 2).
        std::fs::write(
            &p,
            [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20],
        )
        .unwrap();
        let m = load_pth_tensors(&p).unwrap_err().to_string();
        assert!(m.contains("old.pt") && m.contains("legacy"), "{m}");
    }

    #[test]
    fn a_text_file_named_pth_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let pth = dir.path().join("w.pth");
        std::fs::write(&pth, b"not a checkpoint").unwrap();
        let err = load_facenet_checkpoint(&pth, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("w.pth"), "{err}");
    }
}
