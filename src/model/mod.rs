//! Models: the `config.json` schema, the compact CNN, InceptionResnetV1, and save/load.

pub mod facenet_layout;
pub mod fill;
pub mod inception_resnet_v1;

pub use facenet_layout::{check_tensors, inspect_facenet_safetensors, load_pth_tensors};
pub use inception_resnet_v1::{InceptionResnetV1, InceptionResnetV1Config};
