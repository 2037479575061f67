//! Loading a model folder whose weights file holds arbitrary bytes (with a valid tiny config):
//! a clear error or a working model, never a panic. Mutations start from a real weights file in
//! the corpus (see fuzz/README.md).
#![no_main]

use candle_face::image::preprocess::Preprocess;
use candle_face::model::{load_model, Architecture, CompactCnnConfig, ModelConfig};
use candle_core::{Device, ModuleT, Tensor};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn folder() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let arch = Architecture::CompactCnn(CompactCnnConfig {
            channels: vec![4, 8],
            embedding_dim: 8,
            image_size: 16,
            ..Default::default()
        });
        let pre = Preprocess {
            image_size: 16,
            ..Preprocess::compact_default()
        };
        ModelConfig::new(arch, pre).save(dir.path()).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    std::fs::write(dir.path().join("model.safetensors"), data).unwrap();
    match load_model(dir.path(), &Device::Cpu) {
        Ok((_, net)) => {
            let x = Tensor::zeros((1, 3, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
            let _ = net.forward_t(&x, false);
        }
        Err(e) => assert!(e.to_string().contains("model.safetensors"), "{e}"),
    }
});
