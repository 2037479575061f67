//! Writes seed corpora for the fuzz targets in `fuzz/` (generated images in several formats, a
//! config.json and a tiny weights file written by the crate), so no real photo is committed.
//!
//! `cargo run --example fuzz_seeds -- fuzz/corpus`

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let images = root.join("image_decode");
    let configs = root.join("config_json");
    let models = root.join("model_folder");
    for d in [&images, &configs, &models] {
        std::fs::create_dir_all(d)?;
    }
    let img = candle_face::synthetic::Identity::new(1, 0).render(12, 0);
    let dynimg = image::DynamicImage::ImageRgb8(img.clone());
    for (ext, fmt) in [
        ("png", image::ImageFormat::Png),
        ("jpg", image::ImageFormat::Jpeg),
        ("gif", image::ImageFormat::Gif),
        ("bmp", image::ImageFormat::Bmp),
        ("webp", image::ImageFormat::WebP),
        ("pnm", image::ImageFormat::Pnm),
    ] {
        dynimg.save_with_format(images.join(format!("seed.{ext}")), fmt)?;
    }
    image::DynamicImage::ImageLuma8(dynimg.to_luma8()).save(images.join("grey.png"))?;
    image::DynamicImage::ImageRgba8(dynimg.to_rgba8()).save(images.join("rgba.png"))?;

    let tmp = tempfile::tempdir()?;
    candle_face::synthetic::write_untrained_model(tmp.path(), 0.5, false)?;
    std::fs::copy(tmp.path().join("config.json"), configs.join("config.json"))?;
    std::fs::copy(
        tmp.path().join("model.safetensors"),
        models.join("model.safetensors"),
    )?;
    println!("seeds written under {}", root.display());
    Ok(())
}
