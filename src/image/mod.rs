//! Image primitives shared by training and inference: decoding files into RGB
//! ([`load_image`]), resampling square windows ([`resample`]), area resampling of float images
//! ([`FloatImage`]), similarity warps ([`Similarity`], [`warp_similarity`]), brightness
//! equalization ([`equalize()`]), and a model's preprocessing recipe, from image to input tensor
//! ([`Preprocess`]).

pub mod equalize;
pub mod float_image;
pub mod io;
#[cfg(feature = "libjpeg")]
mod libjpeg;
pub mod preprocess;
pub mod resample;
pub mod warp;

pub use equalize::equalize;
pub use float_image::FloatImage;
pub use io::{decode_image_bytes, load_image};
pub use preprocess::Preprocess;
pub use warp::{warp_similarity, Similarity};
