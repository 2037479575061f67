//! Command-line parsing and dispatch. Each command lives in its own module and only parses,
//! calls the library and prints.

mod convert;
mod demo;
mod detect;
mod embed;
mod eval;
mod gallery;
mod model_arg;
mod prepare;
mod train;
mod verify;

use clap::{Parser, Subcommand};

/// Face embeddings with triplet loss on candle: train, embed, verify.
#[derive(Debug, Parser)]
#[command(name = "candle-face", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train (or fine-tune) an embedding model on a labelled folder `root/<person>/<image>`.
    Train(Box<train::TrainArgs>),
    /// Decide whether two face images show the same person.
    Verify(verify::VerifyArgs),
    /// Embed images and write the embeddings to a safetensors file.
    Embed(embed::EmbedArgs),
    /// Evaluate a model on labelled pairs (k-fold accuracy, AUC, EER, TAR@FAR, ROC plot).
    Eval(eval::EvalArgs),
    /// Calibrate a model's threshold on labelled pairs and store it in its config.json.
    Calibrate(eval::CalibrateArgs),
    /// Generate same/different pairs from a labelled folder (CSV).
    Pairs(eval::PairsArgs),
    /// Enroll people into a gallery for identification.
    Enroll(gallery::EnrollArgs),
    /// Identify faces against an enrolled gallery.
    Identify(gallery::IdentifyArgs),
    /// List or remove the people of a gallery (a file or a PostgreSQL URL).
    Gallery(gallery::GalleryArgs),
    /// Find faces and landmarks in photos (bundled MTCNN); optionally write face crops.
    Detect(detect::DetectCmdArgs),
    /// Detect and crop the main face of every image of a labelled folder into a new folder
    /// (training data from raw photos).
    Prepare(prepare::PrepareArgs),
    /// Convert dlib and facenet-pytorch weights (dlib ResNet, InceptionResnetV1, MTCNN) into
    /// candle-face folders.
    Convert(convert::ConvertArgs),
    /// Generate a small synthetic labelled set, train on it for a short while and verify
    /// held-out pairs (no data needed).
    Demo(demo::DemoArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Verify(a) => verify::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Prepare(a) => prepare::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Eval(a) => eval::run_eval(a),
        Command::Calibrate(a) => eval::run_calibrate(a),
        Command::Pairs(a) => eval::run_pairs(a),
        Command::Enroll(a) => gallery::run_enroll(a),
        Command::Identify(a) => gallery::run_identify(a),
        Command::Gallery(a) => gallery::run_gallery(a),
    }
}
