//! The triplet-loss family, composed from separate pieces as in pytorch-metric-learning, and
//! CosFace's identity loss. Distances live apart, in [`crate::distance`].
//!
//! - [`mask`]: anchor–positive, anchor–negative and triplet masks from integer labels;
//! - [`mining`]: the miners ([`Mining`]: batch-all, batch-hard, semi-hard);
//! - [`term`]: the per-triplet term ([`TripletTerm`]: hinge with a margin, or soft margin);
//! - [`triplet`]: [`TripletLoss`] (distance + miner + term, with each miner's reduction) and the
//!   offline loss on given triplets;
//! - [`batch_all`]: the batch-all loss without the B³ tensor (a chunked custom op);
//! - [`cosface`]: CosFace's identity-classification loss, trained beside the triplet loss.

pub mod batch_all;
pub mod cosface;
pub mod mask;
pub mod mining;
pub mod term;
pub mod triplet;

pub use batch_all::{batch_all_chunked, BatchAllScan, DEFAULT_CHUNK};
pub use cosface::{cosface_loss, IdLoss};
pub use mask::{anchor_negative_mask, anchor_positive_mask, labels_to_vec, triplet_mask};
pub use mining::{BatchHardReduction, Mining};
pub use term::{softplus_tensor, TripletTerm};
pub use triplet::{batch_hard_loss, offline_triplet_loss, LossOutput, TripletLoss, TripletStats};
