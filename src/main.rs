//! The `candle-face` command line: a thin layer over the library.

mod cli;

use clap::Parser;

fn main() {
    candle_face::tune_allocator();
    candle_face::pin_thread_count();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
