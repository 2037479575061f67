//! Detects which built-in models are present under `models/` so the crate can build them into
//! the binary (`cfg(bundled_dlib)`, `cfg(bundled_compact)`); a build without them needs
//! `--model`.

fn main() {
    for (cfg, dir) in [
        ("bundled_dlib", "models/dlib-resnet-v1"),
        ("bundled_compact", "models/compact"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-changed={dir}/config.json");
        println!("cargo::rerun-if-changed={dir}/model.safetensors");
        let dir = std::path::Path::new(dir);
        if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
