//! Defaults for fine-tuning a pretrained model (`train --init`): a pretrained network needs a
//! far smaller learning rate than one trained from scratch, and its early layers (edges,
//! textures) are better left as they are when the new data is small.

use crate::model::Architecture;

/// The fine-tuning settings `train --init` uses for what the user did not set.
#[derive(Debug, Clone, PartialEq)]
pub struct FineTuneDefaults {
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Linear warm-up steps, so the first updates of a converged network are small.
    pub warmup_steps: u64,
    /// Parameter-name prefixes kept fixed.
    pub freeze: Vec<String>,
    /// Weight of the term keeping embeddings near the starting model's
    /// ([`crate::train::TrainOptions::keep_init`]).
    pub keep_init: f64,
}

/// Default weight of the term keeping embeddings near the starting model's.
pub const KEEP_INIT: f64 = 10.0;

/// The defaults for fine-tuning a model of architecture `arch`.
///
/// Every architecture keeps its embeddings near the starting model's with weight
/// [`KEEP_INIT`] ([`crate::train::TrainOptions::keep_init`]).
///
/// - dlib's ResNet: learning rate 1e-5 with 50 warm-up steps, the stem and the 32-channel
///   stage (`stem.`, `units.0.`–`units.2.`) frozen. Adam moves every trained weight by about
///   the learning rate each step whatever its gradient, and on 25 Yale B people 1e-4 cost
///   LFW two points even with the last stages alone trained; 1e-5 with the embedding kept
///   near the start left LFW where it was (`docs/BENCHMARKS.md`). Its affine maps (dlib's frozen batch
///   normalisation) are fixed in any case (see [`crate::model::dlib_resnet`]).
/// - InceptionResnetV1: learning rate 1e-4, 50 warm-up steps, the stem convolutions frozen.
/// - The compact CNN: the from-scratch settings' learning rate divided by 10, nothing frozen.
pub fn fine_tune_defaults(arch: &Architecture) -> FineTuneDefaults {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    match arch {
        Architecture::DlibResnet(_) => FineTuneDefaults {
            lr: 1e-5,
            warmup_steps: 50,
            freeze: owned(&["stem.", "units.0.", "units.1.", "units.2."]),
            keep_init: KEEP_INIT,
        },
        Architecture::InceptionResnetV1(_) => FineTuneDefaults {
            lr: 1e-4,
            warmup_steps: 50,
            freeze: owned(&[
                "conv2d_1a",
                "conv2d_2a",
                "conv2d_2b",
                "conv2d_3b",
                "conv2d_4a",
                "conv2d_4b",
            ]),
            keep_init: KEEP_INIT,
        },
        Architecture::CompactCnn(_) => FineTuneDefaults {
            lr: 1e-4,
            warmup_steps: 50,
            freeze: Vec::new(),
            keep_init: KEEP_INIT,
        },
    }
}
