//! Embedding files: a safetensors file with the tensor `embeddings` (N×D, f32) and the metadata
//! key `paths` (a JSON array of the image paths, in row order).

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Name of the embeddings tensor.
pub const EMBEDDINGS_KEY: &str = "embeddings";
/// Metadata key of the JSON array of paths.
pub const PATHS_KEY: &str = "paths";

/// Writes `embeddings` (N×D) and their `paths` atomically to `out`.
pub fn write_embeddings(out: &Path, embeddings: &Tensor, paths: &[String]) -> Result<()> {
    let (n, _) = embeddings.dims2()?;
    if n != paths.len() {
        return Err(Error::InvalidArgument(format!(
            "{n} embeddings but {} paths",
            paths.len()
        )));
    }
    let e = embeddings
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .contiguous()?;
    let meta: HashMap<String, String> = [(
        PATHS_KEY.to_string(),
        serde_json::to_string(paths).map_err(|e| Error::Msg(e.to_string()))?,
    )]
    .into();
    let tensors: HashMap<String, Tensor> = [(EMBEDDINGS_KEY.to_string(), e)].into();
    crate::fsutil::write_atomic_with(out, |tmp| {
        safetensors::serialize_to_file(&tensors, Some(meta), tmp)
            .map_err(|e| Error::io(tmp, std::io::Error::other(e.to_string())))
    })
}

/// Reads a file written by [`write_embeddings`]: the (N×D) tensor and the paths.
pub fn read_embeddings(path: &Path) -> Result<(Tensor, Vec<String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::weights(path, format!("not a safetensors file: {e}")))?;
    let paths: Vec<String> = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(PATHS_KEY))
        .map(|s| serde_json::from_str(s))
        .transpose()
        .map_err(|e| Error::weights(path, format!("invalid `paths` metadata: {e}")))?
        .unwrap_or_default();
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::weights(path, e))?;
    let e = tensors
        .remove(EMBEDDINGS_KEY)
        .ok_or_else(|| Error::weights(path, "no `embeddings` tensor"))?;
    Ok((e, paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.safetensors");
        let t = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let names = vec!["a b.jpg".to_string(), "é.png".to_string()];
        write_embeddings(&p, &t, &names).unwrap();
        let (t2, n2) = read_embeddings(&p).unwrap();
        assert_eq!(n2, names);
        assert_eq!(
            t2.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
    }
}
