//! Standard output of the client subcommands. Every line they print goes through [`line`],
//! the one place that handles a reader that went away (`statecast watch … | head -1`):
//! the command ends quietly, as Unix tools do.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe is an error (which `println!` turns
//! into a panic, exit 101) instead of the signal that ends `cat` (exit 141). Here it is
//! exit 0: the reader has all it wanted, and a script under `set -o pipefail` (where
//! `| head -1` is common) must not fail for it; ripgrep does the same. The server never
//! prints here, so this cannot end a hub.

use std::io::{ErrorKind, Write};

/// Prints `text` and a newline, flushed at once (`watch` prints as changes happen).
pub fn line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let written = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("statecast: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}
