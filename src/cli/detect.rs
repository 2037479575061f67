//! `candle-face detect`: faces, landmarks and crops from photos (bundled MTCNN).

use anyhow::{Context, Result};
use candle_core::Device;
use candle_face::detect::{bundled_mtcnn, FaceCrop, FacePick, Mtcnn, MtcnnConfig};
use candle_face::image::load_image;
use std::path::PathBuf;

/// Crop recipes selectable on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CropArg {
    /// LFW deep-funneled framing, 250×250 (what candle-face's LFW models expect).
    Lfw,
    /// facenet-pytorch's crop: the box, margin 0, 160×160.
    Facenet,
    /// LFW's framing, 250×250, with the five landmarks moved onto their median LFW positions.
    LfwAligned,
    /// Five-point alignment onto the ArcFace template, 112×112.
    Aligned,
    /// dlib's face chip (dlib's 5-point landmarks, 150×150, padding 0.25): what the default
    /// model expects.
    Dlib,
}

impl CropArg {
    /// The recipe this argument names.
    pub fn recipe(self) -> FaceCrop {
        match self {
            CropArg::Lfw => FaceCrop::lfw_deep_funneled(),
            CropArg::Facenet => FaceCrop::facenet(),
            CropArg::LfwAligned => FaceCrop::lfw_aligned(),
            CropArg::Aligned => FaceCrop::Aligned { size: 112 },
            CropArg::Dlib => FaceCrop::dlib(),
        }
    }
}

/// `--pick` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PickArg {
    /// The largest face.
    Largest,
    /// The face nearest the image centre.
    Central,
}

impl From<PickArg> for FacePick {
    fn from(p: PickArg) -> Self {
        match p {
            PickArg::Largest => FacePick::Largest,
            PickArg::Central => FacePick::Central,
        }
    }
}

/// Arguments of `detect`.
#[derive(Debug, clap::Args)]
pub struct DetectCmdArgs {
    /// Photos to search.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Write each face's crop as PNG into this folder (`<image stem>_face<i>.png`).
    #[arg(long)]
    crops: Option<PathBuf>,
    /// Crop recipe for --crops.
    #[arg(long, value_enum, default_value = "lfw")]
    crop: CropArg,
    /// Smallest face side in pixels to look for.
    #[arg(long, default_value_t = 20.0)]
    min_face_size: f64,
    /// MTCNN folder (pnet/rnet/onet.safetensors) instead of the bundled weights.
    #[arg(long)]
    mtcnn: Option<PathBuf>,
    /// One JSON object per image on stdout.
    #[arg(long)]
    json: bool,
}

/// The MTCNN of `--mtcnn DIR` (or the bundled one) looking for faces of at least
/// `min_face_size` pixels, on the CPU.
pub fn load_detector(dir: Option<&std::path::Path>, min_face_size: f64) -> Result<Mtcnn> {
    let dev = Device::Cpu;
    let m = match dir {
        Some(dir) => Mtcnn::load(dir, &dev)?,
        None => bundled_mtcnn(&dev)?,
    };
    Ok(m.with_config(MtcnnConfig {
        min_face_size,
        ..MtcnnConfig::default()
    })?)
}

/// Runs `detect`. Images that cannot be read are reported and skipped; the exit status is an
/// error when none could be read.
pub fn run(a: DetectCmdArgs) -> Result<()> {
    let m = load_detector(a.mtcnn.as_deref(), a.min_face_size)?;
    let recipe = a.crop.recipe();
    if let Some(dir) = &a.crops {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut ok = 0usize;
    for path in &a.images {
        let img = match load_image(path) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("skipped: {e}");
                continue;
            }
        };
        ok += 1;
        let faces = m.detect(&img)?;
        if a.json {
            let v = serde_json::json!({
                "image": path,
                "width": img.width(),
                "height": img.height(),
                "faces": faces,
            });
            println!("{v}");
        } else {
            println!("{}: {} face(s)", path.display(), faces.len());
            for (i, f) in faces.iter().enumerate() {
                println!(
                    "  face {i}: box [{:.1}, {:.1}, {:.1}, {:.1}] p={:.3}",
                    f.bbox[0], f.bbox[1], f.bbox[2], f.bbox[3], f.score
                );
            }
        }
        if let Some(dir) = &a.crops {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            // One HOG scan for all faces of the photo (dlib chips).
            let crops = recipe.apply_all(&img, &faces)?;
            for (i, crop) in crops.iter().enumerate() {
                let out = dir.join(format!("{stem}_face{i}.png"));
                crop.save(&out)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            }
        }
    }
    if ok == 0 {
        anyhow::bail!("none of the {} images could be read", a.images.len());
    }
    Ok(())
}
