//! Distances, label masks and the triplet-loss family, as plain tensor functions.
//!
//! - [`distance`]: pairwise/cross distances with a safe euclidean square root;
//! - [`mask`]: anchor–positive, anchor–negative and triplet masks from integer labels;
//! - [`triplet`]: [`TripletLoss`] (batch-all, batch-hard, semi-hard, soft margin) and the offline loss;
//! - [`cosface`]: CosFace's identity-classification loss, trained beside the triplet loss;
//! - [`batch_all`]: the batch-all loss without the B³ tensor (a chunked custom op) and its naive twin.

pub mod batch_all;
pub mod cosface;
pub mod distance;
pub mod mask;
pub mod triplet;

pub use batch_all::{batch_all_chunked, batch_all_naive, BatchAllScan, TripletTerm, DEFAULT_CHUNK};
pub use cosface::{cosface_loss, IdLoss};
pub use distance::{cross_distance, paired_distance, pairwise_distance, safe_sqrt, Distance};
pub use mask::{anchor_negative_mask, anchor_positive_mask, labels_to_vec, triplet_mask};
pub use triplet::{
    batch_all_loss, batch_all_triplet_loss, batch_hard_loss, batch_hard_triplet_loss,
    batch_hard_triplet_loss_all_anchors, offline_triplet_loss, semi_hard_loss,
    semi_hard_triplet_loss, soft_batch_all_triplet_loss, soft_batch_hard_triplet_loss,
    softplus_tensor, BatchHardReduction, LossOutput, Mining, TripletLoss, TripletStats,
};
