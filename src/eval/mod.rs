//! Evaluation: verification pair protocols (LFW `pairs.txt`, CSV, generated pairs) and
//! face-verification metrics (accuracy, 10-fold accuracy, ROC, AUC, EER, TAR at FAR), plus a ROC
//! plot.

pub mod metrics;
pub mod pairs;
pub mod roc_plot;
pub mod score;

pub use metrics::{
    accuracy_at, auc, best_threshold, calibrate, eer, evaluate, kfold_accuracy, roc,
    stratified_folds, tar_at_far, CalibrationTarget, KFold, RocPoint, VerificationReport,
};
pub use pairs::{generate_pairs, read_pairs, write_pairs_csv, GeneratedPairs, Pair};
pub use roc_plot::{plot_roc_png, ROC_PNG_SIZE};
pub use score::{operating_point, score_pairs, ScoredPairs};
