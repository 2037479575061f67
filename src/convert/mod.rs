//! Other projects' weights into candle-face model folders.
//!
//! - [`facenet`]: facenet-pytorch's InceptionResnetV1 checkpoints (`.pt`/`.pth`/`.safetensors`):
//!   layout checks, the config they get, loading and [`convert_facenet_checkpoint`];
//! - [`mtcnn_pt`]: PyTorch's legacy `torch.save` format ([`read_legacy_pt`]) and facenet-pytorch's
//!   MTCNN `.pt` files into an MTCNN model folder ([`convert_mtcnn_pt`]);
//! - [`dlib_format`]: a reader for dlib's binary serialization (the `.dat` files of its
//!   networks and shape predictors);
//! - [`dlib_resnet`]: dlib's face-recognition ResNet `.dat` file into
//!   [`crate::model::DlibResNet`] tensors; [`convert_dlib_resnet`] writes the model folder.

pub mod dlib_format;
pub mod dlib_resnet;
pub mod facenet;
pub mod mtcnn_pt;

pub use dlib_format::{DlibFormatError, DlibReader};
pub use dlib_resnet::{parse_dlib_resnet, DlibResNetFile};
pub use facenet::{
    check_tensors, convert_facenet_checkpoint, inspect_facenet_safetensors,
    load_facenet_checkpoint, load_pth_tensors, read_facenet_checkpoint,
};
pub use mtcnn_pt::{convert_mtcnn_pt, read_legacy_pt};

use crate::detect::FaceCrop;
use crate::distance::Distance;
use crate::image::preprocess::Preprocess;
use crate::model::{Architecture, ModelConfig};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Largest `.dat` file read into memory (dlib's ResNet is 22 MB).
const MAX_DAT_BYTES: u64 = 1 << 30;

/// Reads a whole file of at most [`MAX_DAT_BYTES`], naming it in errors.
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::weights(path, "not a regular file"));
    }
    if meta.len() > MAX_DAT_BYTES {
        return Err(Error::weights(
            path,
            format!("{} bytes: too large for a dlib model", meta.len()),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The model config for a parsed dlib ResNet: dlib's preprocessing and face chip, detection on
/// by default (the model reads aligned chips, not photos), Euclidean distance on raw
/// descriptors, and the file's own distance threshold (0.6 for dlib's released model).
pub fn dlib_model_config(file: &DlibResNetFile) -> ModelConfig {
    let pre = Preprocess::dlib(file.config.image_size as u32, file.mean_rgb);
    let mut cfg = ModelConfig::new(Architecture::DlibResnet(file.config.clone()), pre);
    cfg.distance = Distance::Euclidean;
    cfg.face_crop = Some(FaceCrop::dlib());
    cfg.detect_faces = true;
    cfg.set_threshold(
        file.distance_threshold,
        "dlib: the distance threshold stored in the model's loss_metric layer",
    );
    cfg
}

/// The tensors of a parsed dlib ResNet as candle tensors on the CPU.
pub fn dlib_tensors(file: &DlibResNetFile) -> Result<HashMap<String, Tensor>> {
    file.tensors
        .iter()
        .map(|(name, shape, values)| {
            let t = Tensor::from_slice(values, shape.as_slice(), &Device::Cpu)?;
            Ok((name.clone(), t))
        })
        .collect()
}

/// Converts dlib's face-recognition ResNet file `dat` (e.g.
/// `dlib_face_recognition_resnet_model_v1.dat`) into the model folder `out` (`config.json` +
/// `model.safetensors`, both written atomically). A truncated, foreign or differently shaped file
/// is refused with an error naming it and the byte offset where it stops making sense.
pub fn convert_dlib_resnet(dat: &Path, out: &Path) -> Result<ModelConfig> {
    let bytes = read_limited(dat)?;
    let file = parse_dlib_resnet(&bytes)
        .map_err(|e| Error::weights(dat, format!("not dlib's face-recognition ResNet: {e}")))?;
    let cfg = dlib_model_config(&file);
    let tensors = dlib_tensors(&file)?;
    crate::model::write_model_folder(out, &cfg, &tensors)?;
    Ok(cfg)
}
