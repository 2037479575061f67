//! MTCNN face detection (Zhang et al., "Joint Face Detection and Alignment using Multi-task
//! Cascaded Convolutional Networks", IEEE SPL 2016) and face cropping/alignment, ported from
//! facenet-pytorch (`models/mtcnn.py`, `models/utils/detect_face.py`) so that a port of its
//! pretrained weights reproduces its detections.
//!
//! - [`PNet`], [`RNet`], [`ONet`]: the three networks, with facenet-pytorch's parameter names;
//! - [`Mtcnn`]: the cascade ([`Mtcnn::detect`] → [`Face`]s, largest first);
//! - [`extract_face`], [`align_face`]: cutting a face out for the embedding net;
//! - [`FaceCrop`]: the crop recipe a model's `config.json` records for detection; [`FacePick`]:
//!   which face of several is the main one;
//! - [`FaceFinder`]: detection + crop recipe + pick, the main face of a photo ready for a model;
//! - [`DlibFrontalDetector`]: dlib's HOG face detector, whose boxes [`FaceCrop::DlibChip`] starts
//!   dlib's landmark model from;
//! - [`bundled_mtcnn`], [`bundled_hog_detector`]: the detector weights built into the crate (no
//!   download needed);
//!
//! Model folder layout: three files `pnet.safetensors`, `rnet.safetensors`, `onet.safetensors`,
//! each with facenet-pytorch's tensor names and no prefix.
//!
//! ```no_run
//! # fn main() -> candle_face::Result<()> {
//! use candle_face::detect::{FaceCrop, FaceFinder, Mtcnn};
//! let mtcnn = Mtcnn::load("models/mtcnn", &candle_core::Device::Cpu)?;
//! let finder = FaceFinder::new(mtcnn, FaceCrop::Aligned { size: 112 })?;
//! // libjpeg-turbo decoding (feature `libjpeg`) gives the pixels facenet-pytorch sees.
//! let img = candle_face::image::load_image("photo.jpg".as_ref())?;
//! for (face, crop) in finder.find_all(&img)? {
//!     println!("{:?} p={} → {}×{}", face.bbox, face.score, crop.width(), crop.height());
//! }
//! # Ok(())
//! # }
//! ```

pub mod align;
pub mod bundled_weights;
pub mod dlib_chip;
mod dlib_geometry;
pub mod face_crop;
pub mod face_finder;
mod fhog;
pub mod hog_detector;
mod hog_filter;
pub mod mtcnn;
pub mod mtcnn_nets;
pub mod nms;
pub mod shape_predictor;

pub use align::{align_face, align_face_to, extract_face, template, ARCFACE_TEMPLATE_112};
pub use bundled_weights::{
    bundled_hog_detector, bundled_landmarks, bundled_mtcnn, BUNDLED_HOG_NOTICE,
    BUNDLED_LANDMARKS_NOTICE, BUNDLED_MTCNN_NOTICE,
};
pub use dlib_chip::{extract_image_chip, get_face_chip_details, ChipDetails, DRect};
pub use face_crop::{FaceCrop, FacePick};
pub use face_finder::FaceFinder;
pub use hog_detector::{DlibFrontalDetector, HogDetection};
pub use mtcnn::{DetectTrace, Face, Mtcnn, MtcnnConfig};
pub use mtcnn_nets::{ONet, PNet, RNet};
pub use shape_predictor::{Rect, ShapePredictor};
