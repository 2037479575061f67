//! `candle-face demo`: train and verify on generated data, no download, no dataset.

use super::train::Reporter;
use anyhow::{Context, Result};
use candle_face::data::augment::Augment;
use candle_face::image::preprocess::Preprocess;
use candle_face::infer::{Embedder, Verifier};
use candle_face::loss::Mining;
use candle_face::model::{Architecture, CompactCnnConfig};
use candle_face::train::{train, Duration, TrainOptions};
use std::path::PathBuf;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where to write the generated data and the model (default: a temporary folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of synthetic people.
    #[arg(long, default_value_t = 60)]
    people: usize,
    /// Images per person.
    #[arg(long, default_value_t = 8)]
    images: usize,
    /// Training steps.
    #[arg(long, default_value_t = 800)]
    steps: u64,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `demo`.
pub fn run(a: DemoArgs) -> Result<()> {
    let tmp;
    let root = match &a.out {
        Some(p) => p.clone(),
        None => {
            tmp = tempfile::tempdir().context("creating a temporary folder")?;
            tmp.path().to_path_buf()
        }
    };
    let data = root.join("data");
    let model = root.join("model");
    eprintln!(
        "generating {} synthetic people × {} images in {}",
        a.people,
        a.images,
        data.display()
    );
    candle_face::synthetic::write_dataset(&data, a.people, a.images, 48, a.seed)?;
    let mut opts = TrainOptions::new(&data, &model);
    let arch = CompactCnnConfig {
        channels: vec![16, 32, 64],
        embedding_dim: 64,
        image_size: 32,
        ..Default::default()
    };
    opts.architecture = Architecture::CompactCnn(arch);
    opts.preprocess = Preprocess {
        image_size: 32,
        crop_fraction: 0.9,
        ..Preprocess::compact_default()
    };
    opts.augment = Augment::default();
    opts.duration = Duration::Steps(a.steps);
    opts.people_per_batch = 12;
    opts.images_per_person = 4;
    opts.val_fraction = 0.25;
    opts.warmup_steps = 30;
    opts.optimizer.lr = 3e-3;
    // Semi-hard mining: from random weights on so few people, batch-hard pulls every embedding
    // into one small region (all distances under 0.1) before it separates anyone.
    opts.loss.mining = Mining::SemiHard;
    opts.validate_every_epochs = 5.0;
    opts.checkpoint_every = 1000;
    opts.seed = a.seed;
    opts.resume = model.join("checkpoints").exists();
    let mut reporter = Reporter::new(a.quiet);
    let outcome = train(&opts, &mut |e| reporter.event(e))?;
    let s = outcome.config.training.clone().unwrap_or_default();
    println!(
        "validation accuracy on held-out synthetic people: {:.1}% before training, {:.1}% after",
        s.val_accuracy_before.unwrap_or(f32::NAN) * 100.0,
        s.val_accuracy.unwrap_or(f32::NAN) * 100.0
    );

    let verifier = Verifier::new(Embedder::load(&model)?, None)?;
    let folder = candle_face::data::ImageFolder::scan(&data)?;
    let people = folder.split(opts.val_fraction, opts.seed).val.people;
    verify_held_out(&verifier, &people)?;
    if a.out.is_some() {
        println!("model folder: {}", model.display());
    }
    Ok(())
}

/// Verifies, through the inference path, each held-out person's first two images (same person)
/// and each person's first image against the next person's (two people); prints how many are
/// right and the first pair of each kind.
fn verify_held_out(verifier: &Verifier, people: &[candle_face::data::Person]) -> Result<()> {
    if people.len() < 2 {
        return Ok(());
    }
    let mut pairs = Vec::new();
    for (i, p) in people.iter().enumerate() {
        if p.images.len() >= 2 {
            pairs.push((&p.images[0], &p.images[1], true));
        }
        let next = &people[(i + 1) % people.len()];
        pairs.push((&p.images[0], &next.images[0], false));
    }
    let mut right = 0;
    let mut shown = [false; 2];
    for (x, y, same) in &pairs {
        let v = verifier.verify_paths(x, y)?;
        right += usize::from(v.same == *same);
        if !std::mem::replace(&mut shown[usize::from(*same)], true) {
            println!(
                "verify {} vs {} ({}): distance {:.3}, threshold {:.3} → {}",
                x.display(),
                y.display(),
                if *same { "same person" } else { "two people" },
                v.distance,
                v.threshold,
                if v.same { "SAME" } else { "DIFFERENT" }
            );
        }
    }
    println!(
        "verify on held-out pairs (inference path): {right} of {} right",
        pairs.len()
    );
    Ok(())
}
