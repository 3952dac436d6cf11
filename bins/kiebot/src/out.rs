//! Printing to stdout that ends quietly when the reader goes away.
//!
//! `kiebot catalog | head -1` closes the pipe after one line; Rust ignores
//! SIGPIPE, so the next write fails with `BrokenPipe`, and `println!` would
//! panic. Every command prints through [`Out`] instead, which stops at the
//! first broken pipe and lets the command exit as if it had finished.

use std::fmt::Display;
use std::io::{self, ErrorKind, Write};

/// Lines to stdout.
pub struct Out {
    inner: io::Stdout,
    closed: bool,
}

impl Out {
    /// Stdout.
    pub fn stdout() -> Out {
        Out {
            inner: io::stdout(),
            closed: false,
        }
    }

    /// Prints one line. `Ok(false)` once the reader has gone: stop printing.
    pub fn line(&mut self, text: impl Display) -> io::Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let mut lock = self.inner.lock();
        match writeln!(lock, "{text}").and_then(|()| lock.flush()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// Prints one line to stdout; a reader that has gone away is not an error.
pub fn say(text: impl Display) {
    let mut lock = io::stdout().lock();
    let _ = writeln!(lock, "{text}").and_then(|()| lock.flush());
}
