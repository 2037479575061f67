//! Image primitives shared by training and inference: decoding files into RGB
//! ([`load_image`]), resampling square windows ([`resample`]), area resampling of float images
//! ([`FloatImage`]), similarity warps ([`Similarity`], [`warp_similarity`]) and brightness
//! equalization ([`equalize()`]).

pub mod equalize;
pub mod float_image;
pub mod io;
#[cfg(feature = "libjpeg")]
mod libjpeg;
pub mod resample;
pub mod warp;

pub use equalize::equalize;
pub use float_image::FloatImage;
pub use io::{decode_image_bytes, load_image};
pub use warp::{warp_similarity, Similarity};
