//! Detects whether a default model is present in `models/default/` so the crate can build it
//! into the binary (`cfg(bundled_model)`); without one, `--model` is required.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(bundled_model)");
    println!("cargo::rerun-if-changed=models/default/config.json");
    println!("cargo::rerun-if-changed=models/default/model.safetensors");
    let dir = std::path::Path::new("models/default");
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        println!("cargo::rustc-cfg=bundled_model");
    }
}
