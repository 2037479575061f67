//! Models: the `config.json` schema, the compact CNN, InceptionResnetV1, and model folders
//! (safetensors weights + config) on disk.

pub mod compact;
pub mod config;
pub mod dlib_resnet;
pub mod inception_resnet_v1;
pub mod layers;
pub mod model_folder;

pub use compact::{Blocks, CompactCnn, CompactCnnConfig, Head};
pub use config::{Architecture, ModelConfig, TrainingSummary};
pub use dlib_resnet::{DlibResNet, DlibResNetConfig};
pub use inception_resnet_v1::{InceptionResnetV1, InceptionResnetV1Config};
pub use model_folder::{load_model, save_model, write_model_folder};

use crate::Result;
use candle_core::{ModuleT, Tensor};
use candle_nn::VarBuilder;

/// Name prefix of parameters that exist only for training (the identity classifier trained
/// beside the triplet loss): kept in checkpoints, left out of the model folder and of `--init`.
pub const TRAINING_ONLY_PREFIX: &str = "training_only.";

/// Any embedding network candle-face knows, built from an [`Architecture`].
#[derive(Debug, Clone)]
pub enum EmbeddingNet {
    /// The compact CNN.
    CompactCnn(CompactCnn),
    /// InceptionResnetV1 (boxed: it holds several hundred tensors).
    InceptionResnetV1(Box<InceptionResnetV1>),
    /// dlib's face-recognition ResNet.
    DlibResNet(Box<DlibResNet>),
}

impl EmbeddingNet {
    /// Builds the network described by `arch`, taking its parameters from `vb`.
    pub fn new(arch: &Architecture, vb: VarBuilder) -> Result<Self> {
        Ok(match arch {
            Architecture::CompactCnn(c) => EmbeddingNet::CompactCnn(CompactCnn::new(c, vb)?),
            Architecture::InceptionResnetV1(c) => {
                EmbeddingNet::InceptionResnetV1(Box::new(InceptionResnetV1::new(c, vb)?))
            }
            Architecture::DlibResnet(c) => {
                EmbeddingNet::DlibResNet(Box::new(DlibResNet::new(c, vb)?))
            }
        })
    }

    /// Embeddings of a preprocessed (N, 3, H, W) batch in evaluation mode. With `flip_tta` the
    /// embedding of the horizontally flipped batch is added and the sum renormalised. The one
    /// embedding path of inference and of validation during training.
    pub fn embed(&self, x: &Tensor, flip_tta: bool) -> Result<Tensor> {
        let e = self.forward_t(x, false)?;
        if !flip_tta {
            return Ok(e);
        }
        let flipped = self.forward_t(&x.flip(&[3])?, false)?;
        Ok(crate::distance::l2_normalize(&(e + flipped)?)?)
    }
}

impl ModuleT for EmbeddingNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            EmbeddingNet::CompactCnn(m) => m.forward_t(x, train),
            EmbeddingNet::InceptionResnetV1(m) => m.forward_t(x, train),
            EmbeddingNet::DlibResNet(m) => m.forward_t(x, train),
        }
    }
}
