//! Standard output of the command-line tools. A reader that goes away early
//! (`clusterd demo | head -2`, `clusterd ctl ... | head`) ends the output quietly: `println!`
//! would panic on the broken pipe; [`line()`] notes it instead, [`closed()`] tells the caller to stop
//! producing output, and the tools then exit with status 0.

use std::fmt::Display;
use std::io::{ErrorKind, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` and a newline to standard output (flushed). Returns `false`, writing nothing,
/// once standard output is closed (a broken pipe) or failed; another failure than a broken
/// pipe is named once on standard error.
pub fn line(text: impl Display) -> bool {
    write(format_args!("{text}\n"))
}

/// Writes `text` as it is to standard output (flushed); see [`line()`].
pub fn text(text: impl Display) -> bool {
    write(format_args!("{text}"))
}

fn write(args: std::fmt::Arguments<'_>) -> bool {
    if closed() {
        return false;
    }
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => true,
        Err(e) => {
            if e.kind() != ErrorKind::BrokenPipe {
                eprintln!("cannot write to standard output: {e} (output stops here)");
            }
            CLOSED.store(true, Ordering::Relaxed);
            false
        }
    }
}

/// Whether standard output has been closed by its reader (or failed): nothing more will be
/// written, the caller may stop early.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}
