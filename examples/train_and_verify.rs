//! Train a small model from code on generated data, then verify two images through the
//! inference path. The same calls the `candle-face train` and `verify` commands make.
//!
//! ```sh
//! cargo run --release --example train_and_verify
//! ```

use candle_face::image::preprocess::Preprocess;
use candle_face::infer::{Embedder, Verifier};
use candle_face::model::{Architecture, CompactCnnConfig};
use candle_face::train::{train, Duration, TrainEvent, TrainOptions};

fn main() -> candle_face::Result<()> {
    candle_face::tune_allocator();
    let tmp = tempfile::tempdir().map_err(|e| candle_face::Error::io("tempdir", e))?;
    let data = tmp.path().join("data");
    let out = tmp.path().join("model");
    // 40 synthetic people × 6 images, 48×48 pixels.
    let people = candle_face::synthetic::write_dataset(&data, 40, 6, 48, 1)?;

    let mut opts = TrainOptions::new(&data, &out);
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
    opts.duration = Duration::Steps(200);
    opts.val_fraction = 0.25;
    opts.optimizer.lr = 3e-3;
    let outcome = train(&opts, &mut |event| {
        if let TrainEvent::Validation { step, result, .. } = event {
            println!("step {step}: validation accuracy {:.3}", result.accuracy);
        }
    })?;
    println!("threshold: {:?}", outcome.config.threshold);

    let verifier = Verifier::new(Embedder::load(&out)?, None)?;
    let v = verifier.verify_paths(&people[0][0], &people[0][1])?;
    println!("same person:  {v:?}");
    let v = verifier.verify_paths(&people[0][0], &people[1][0])?;
    println!("two people:   {v:?}");
    Ok(())
}
