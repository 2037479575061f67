//! `candle-face convert`: other projects' weights into candle-face model folders.

use anyhow::{Context, Result};
use candle_face::convert::convert_facenet_checkpoint;
use candle_face::infer::source::Fetched;
use candle_face::infer::ModelSource;
use std::path::PathBuf;

/// Arguments of `convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    #[command(subcommand)]
    what: ConvertWhat,
}

#[derive(Debug, clap::Subcommand)]
enum ConvertWhat {
    /// A facenet-pytorch InceptionResnetV1 checkpoint (.pth/.pt/.safetensors, or
    /// hf:owner/name[/file]) into a model folder with facenet-pytorch's preprocessing.
    Facenet {
        /// The checkpoint: a file or hf:owner/name[@rev][/file].
        source: String,
        /// Output model folder.
        #[arg(long)]
        out: PathBuf,
        /// Hub models must already be in the local cache.
        #[arg(long)]
        offline: bool,
    },
    /// dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`, dlib's own
    /// binary format) into a model folder with dlib's preprocessing, face chip and threshold.
    Dlib {
        /// The `.dat` file.
        file: PathBuf,
        /// Output model folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// facenet-pytorch's MTCNN `pnet.pt`, `rnet.pt`, `onet.pt` (legacy torch.save files, as
    /// in its wheel's `facenet_pytorch/data/`) into an MTCNN folder of safetensors.
    Mtcnn {
        /// Folder holding pnet.pt, rnet.pt and onet.pt.
        dir: PathBuf,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `convert`.
pub fn run(a: ConvertArgs) -> Result<()> {
    match a.what {
        ConvertWhat::Facenet {
            source,
            out,
            offline,
        } => {
            let src = match source.parse::<ModelSource>()? {
                ModelSource::FacenetCheckpoint(p) => p,
                s @ ModelSource::Hub { .. } => fetch(&s, offline)?,
                other => anyhow::bail!(
                    "{other}: expected a .pth/.pt/.safetensors checkpoint or hf:owner/name/<file>"
                ),
            };
            let cfg = convert_facenet_checkpoint(&src, &out)
                .with_context(|| format!("cannot convert {}", src.display()))?;
            println!(
                "wrote {} (InceptionResnetV1, {}-d embeddings, {}×{} input); no threshold yet: \
                 run `candle-face calibrate -m {}` on labelled pairs",
                out.display(),
                cfg.embedding_dim,
                cfg.preprocess.image_size,
                cfg.preprocess.image_size,
                out.display()
            );
        }
        ConvertWhat::Dlib { file, out } => {
            let cfg = candle_face::convert::convert_dlib_resnet(&file, &out)?;
            println!(
                "wrote {} (dlib ResNet, {}-d embeddings, {}×{} input, threshold {})",
                out.display(),
                cfg.embedding_dim,
                cfg.preprocess.image_size,
                cfg.preprocess.image_size,
                cfg.threshold.map_or("none".into(), |t| t.to_string())
            );
        }
        ConvertWhat::Mtcnn { dir, out } => {
            candle_face::convert::convert_mtcnn_pt(
                dir.join("pnet.pt"),
                dir.join("rnet.pt"),
                dir.join("onet.pt"),
                &out,
            )?;
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

#[cfg(feature = "hub")]
fn fetch(s: &ModelSource, offline: bool) -> Result<PathBuf> {
    let mut opts = candle_face::infer::LoadOptions::default();
    opts.hub.offline |= offline;
    match s.fetch(&opts)? {
        Fetched::Checkpoint(p) => Ok(p),
        Fetched::Folder { .. } => {
            anyhow::bail!("{s} is already a candle-face model folder: use it with --model")
        }
    }
}

#[cfg(not(feature = "hub"))]
fn fetch(s: &ModelSource, _offline: bool) -> Result<PathBuf> {
    let _ = std::marker::PhantomData::<Fetched>;
    anyhow::bail!("{s}: this build has no Hub support (rebuild with the `hub` feature)")
}
