//! The `candle-face` command line: a thin layer over the library.

mod cli;

use clap::Parser;

fn main() {
    candle_face::tune_allocator();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
