//! End to end on real faces: training on `shared/data/small` for a few dozen steps raises the
//! validation accuracy above the untrained model's, and the model folder round-trips.

mod common;

use candle_face::image::preprocess::Preprocess;
use candle_face::infer::{Embedder, Verifier};
use candle_face::model::{Architecture, CompactCnnConfig};
use candle_face::train::{train, Duration, TrainOptions};

#[test]
fn training_on_small_real_faces_beats_untrained() {
    let Some(data) = common::shared_path("data/small/dlib_johns") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let mut opts = TrainOptions::new(&data, out.path());
    opts.architecture = Architecture::CompactCnn(CompactCnnConfig {
        channels: vec![16, 32, 64],
        embedding_dim: 64,
        image_size: 32,
        ..Default::default()
    });
    opts.preprocess = Preprocess {
        image_size: 32,
        crop_fraction: 0.9,
        ..Preprocess::compact_default()
    };
    // 5 people: no validation split is possible, so calibration happens on training pairs (and
    // the config says so). With 2 held-out people we could not measure much either: the test
    // checks that training separates the people it trains on, and the log states it.
    opts.val_fraction = 0.0;
    opts.people_per_batch = 5;
    opts.images_per_person = 4;
    opts.duration = Duration::Steps(40);
    opts.warmup_steps = 5;
    opts.optimizer.lr = 3e-3;
    opts.validate_every_epochs = 0.0;
    let mut events = Vec::new();
    let outcome = train(&opts, &mut |e| events.push(format!("{e:?}"))).unwrap();
    let s = outcome.config.training.clone().unwrap();
    assert!(s.calibrated_on_train);
    let before = s.val_accuracy_before.unwrap();
    let after = s.val_accuracy.unwrap();
    eprintln!("accuracy before {before:.3}, after {after:.3}");
    // Weight initialisation is not seeded, so figures vary from run to run (seen here: 0.62-0.64
    // before, 0.78-0.82 after 40 steps); the margins below leave room for that.
    assert!(
        after > before + 0.05,
        "accuracy did not rise: {before} -> {after}"
    );
    assert!(after >= 0.7, "accuracy after training too low: {after}");

    // The model folder verifies through the inference path with the calibrated threshold.
    let verifier = Verifier::new(Embedder::load(out.path()).unwrap(), None).unwrap();
    assert_eq!(verifier.threshold(), outcome.config.threshold.unwrap());
    let metrics = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 4);
}
