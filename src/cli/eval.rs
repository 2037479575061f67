//! `candle-face eval`, `calibrate` and `pairs`.

use super::model_arg::{DetectArgs, ModelArgs};
use anyhow::{bail, Context, Result};
use candle_face::eval::{self, CalibrationTarget};
use candle_face::infer::ModelSource;
use std::path::PathBuf;

/// The pairs `eval` and `calibrate` score.
#[derive(Debug, clap::Args)]
struct ScoredPairsArgs {
    /// Pairs file: LFW `pairs.txt` (View 1 or View 2) or CSV `img1,img2,same`.
    #[arg(long)]
    pairs: PathBuf,
    /// Folder the pair paths are relative to.
    #[arg(long)]
    images: PathBuf,
}

impl ScoredPairsArgs {
    /// Reads the pairs and scores them with `embedder`.
    fn score(
        &self,
        embedder: &candle_face::infer::Embedder,
    ) -> Result<(Vec<eval::Pair>, eval::ScoredPairs)> {
        let pairs = eval::read_pairs(&self.pairs)?;
        let scored = eval::score_pairs(embedder, &pairs, &self.images)?;
        Ok((pairs, scored))
    }
}

/// Arguments of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    detect: DetectArgs,
    #[command(flatten)]
    pairs: ScoredPairsArgs,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Draw the ROC curve to this PNG file.
    #[arg(long)]
    roc: Option<PathBuf>,
    /// Write every pair's distance to this CSV file (`img1,img2,same,distance`; the distance
    /// is empty for an unscored pair).
    #[arg(long, value_name = "CSV")]
    scores: Option<PathBuf>,
}

/// Runs `eval`.
pub fn run_eval(a: EvalArgs) -> Result<()> {
    let embedder = a.detect.apply(a.model.load()?)?;
    let (pairs, scored) = a.pairs.score(&embedder)?;
    report_unscored(&scored, &pairs);
    if let Some(path) = &a.scores {
        write_scores(path, &scored, &pairs)?;
    }
    let report = eval::evaluate(&scored.distances, &scored.same, embedder.config().threshold)?;
    if let Some(path) = &a.roc {
        let roc = eval::roc(&scored.distances, &scored.same)?;
        let op = embedder
            .config()
            .threshold
            .map(|t| eval::operating_point(&scored.distances, &scored.same, t));
        eval::plot_roc_png(path, &roc, report.auc, op)
            .with_context(|| format!("drawing {}", path.display()))?;
        eprintln!("ROC curve written to {}", path.display());
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["pairs_total"] = scored.total().into();
        v["pairs_scored"] = scored.kept.len().into();
        v["images_skipped"] = scored.skipped.len().into();
        v["unscored_pairs"] = scored
            .unscored
            .iter()
            .map(|&i| serde_json::json!([pairs[i].a, pairs[i].b]))
            .collect();
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "pairs scored               {} of {} ({:.1}%)",
            scored.kept.len(),
            scored.total(),
            100.0 * scored.scored_fraction()
        );
        if !scored.skipped.is_empty() {
            println!("images skipped             {}", scored.skipped.len());
        }
        println!(
            "accuracy (10-fold)          {:.4} ± {:.4}",
            report.accuracy, report.accuracy_std
        );
        println!("best threshold             {:.4}", report.best_threshold);
        if let (Some(t), Some(acc)) = (report.model_threshold, report.accuracy_at_model_threshold) {
            println!("accuracy at model's {t:.4}  {acc:.4}");
        }
        println!("AUC                        {:.4}", report.auc);
        println!("EER                        {:.4}", report.eer);
        for (far, tar) in &report.tar_at_far {
            println!("TAR @ FAR={far:<6}          {tar:.4}");
        }
    }
    Ok(())
}

/// Writes `img1,img2,same,distance` for every pair, atomically.
fn write_scores(
    path: &std::path::Path,
    scored: &eval::ScoredPairs,
    pairs: &[eval::Pair],
) -> Result<()> {
    let mut distance = vec![None; pairs.len()];
    for (&k, &d) in scored.kept.iter().zip(&scored.distances) {
        distance[k] = Some(d);
    }
    let mut text = String::from("img1,img2,same,distance\n");
    for (p, d) in pairs.iter().zip(distance) {
        let d = d.map_or(String::new(), |d| d.to_string());
        text.push_str(&format!(
            "{},{},{},{d}\n",
            p.a.display(),
            p.b.display(),
            p.same as u8
        ));
    }
    candle_face::fsutil::write_atomic(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reports, on stderr, every image that could not be used and every pair left unscored.
fn report_unscored(scored: &eval::ScoredPairs, pairs: &[eval::Pair]) {
    for s in &scored.skipped {
        eprintln!("skipped {s}");
    }
    for &i in &scored.unscored {
        let p = &pairs[i];
        eprintln!(
            "unscored pair {}: {} {}",
            i + 1,
            p.a.display(),
            p.b.display()
        );
    }
}

/// Arguments of `calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// The model to calibrate: a model folder, whose config.json receives the threshold; or,
    /// with --out, any model (`default`, hf:owner/name, a checkpoint).
    #[command(flatten)]
    model: ModelArgs,
    /// Write a calibrated copy of the model into this folder instead of editing the model in
    /// place (required unless --model is a model folder).
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    detect: DetectArgs,
    #[command(flatten)]
    pairs: ScoredPairsArgs,
    /// What to optimise: `accuracy`, or `far=0.001` for a false-accept rate.
    #[arg(long, default_value = "accuracy")]
    target: CalibrationTarget,
}

/// Runs `calibrate`.
pub fn run_calibrate(a: CalibrateArgs) -> Result<()> {
    let source = a.model.source()?;
    let folder = match (&a.out, &source) {
        (Some(out), _) => {
            candle_face::infer::source::export_model(&source, &a.model.load_options(), out)
                .with_context(|| format!("cannot write {source} into {}", out.display()))?;
            eprintln!("copied {source} into {}", out.display());
            out.clone()
        }
        (None, ModelSource::Folder(dir)) => dir.clone(),
        (None, other) => bail!(
            "calibrate writes the threshold into a model folder, and {other} is not one: \
             pass --out DIR to write a calibrated copy"
        ),
    };
    let embedder = a
        .detect
        .apply(candle_face::infer::Embedder::load(&folder)?)?;
    let (_, scored) = a.pairs.score(&embedder)?;
    for s in &scored.skipped {
        eprintln!("skipped {s}");
    }
    let t = eval::calibrate(&scored.distances, &scored.same, a.target)?;
    let mut cfg = embedder.config().clone();
    let old = cfg.threshold;
    cfg.set_threshold(
        t,
        format!(
            "calibrate: {} on {} pairs of {}",
            a.target,
            scored.distances.len(),
            a.pairs.pairs.display()
        ),
    );
    cfg.save(&folder)?;
    match old {
        Some(o) => eprintln!("threshold {o:.4} → {t:.4} (the old one stays in threshold_history)"),
        None => eprintln!("threshold set to {t:.4}"),
    }
    println!("{t}");
    Ok(())
}

/// Arguments of `pairs`.
#[derive(Debug, clap::Args)]
pub struct PairsArgs {
    /// Labelled image folder: `DIR/<person>/<image>`.
    #[arg(long)]
    data: PathBuf,
    /// Number of same-person pairs.
    #[arg(long, default_value_t = 300)]
    same: usize,
    /// Number of different-person pairs.
    #[arg(long, default_value_t = 300)]
    different: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output CSV (`img1,img2,same`, paths relative to DIR).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Only the validation people of `train`'s identity-disjoint split with this fraction (and
    /// `--split-seed`): pairs of people a model trained with the same settings never saw.
    #[arg(long, value_name = "FRACTION")]
    held_out: Option<f32>,
    /// The `--seed` of the training run whose split `--held-out` reproduces.
    #[arg(long, default_value_t = 42, requires = "held_out")]
    split_seed: u64,
}

/// Runs `pairs`.
pub fn run_pairs(a: PairsArgs) -> Result<()> {
    let mut folder = candle_face::data::ImageFolder::scan(&a.data)?;
    if let Some(fraction) = a.held_out {
        let split = folder.split(fraction, a.split_seed);
        if split.val.people.is_empty() {
            bail!(
                "{}: --held-out {fraction} leaves no validation people",
                a.data.display()
            );
        }
        eprintln!(
            "held-out people of the split (fraction {fraction}, seed {}): {}",
            a.split_seed,
            split.val.people.len()
        );
        folder = split.val;
    }
    let generated = eval::generate_pairs(&folder, a.same, a.different, a.seed)?;
    if let Some(note) = &generated.note {
        eprintln!("note: {note}");
    }
    if generated.pairs.is_empty() {
        bail!("{}: no pairs can be formed", a.data.display());
    }
    eval::write_pairs_csv(&a.out, &generated.pairs)?;
    eprintln!(
        "wrote {} pairs to {}",
        generated.pairs.len(),
        a.out.display()
    );
    Ok(())
}
