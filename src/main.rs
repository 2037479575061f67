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
        eprintln!("error: {}", report(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, `outer: cause: …`, leaving out a cause whose text the
/// line already holds (the library's errors quote their underlying I/O error, which is also
/// their `source`, so `{:#}` would print it twice).
fn report(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
