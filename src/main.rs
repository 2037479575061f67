//! The `candle-face` command line: a thin layer over the library.

mod cli;

use clap::Parser;

/// Output piped into a command that stops reading early (`candle-face detect --json … | head`)
/// ends the program quietly, as with other Unix tools, instead of a panic in `println!`.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to the default at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    restore_sigpipe();
    candle_face::tune_allocator();
    candle_face::pin_thread_count();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
