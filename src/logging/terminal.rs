//! stderr shared by the log and `fetch`'s live progress lines: a log line printed while the
//! progress is drawn first erases it, so the line stays on screen above the progress, which is
//! drawn anew below it at its next redraw.

use std::io::Write;
use std::sync::Mutex;

/// Lines of live progress on screen below the cursor's line, drawn by [`draw`].
static DRAWN: Mutex<usize> = Mutex::new(0);

/// Prints `text` (whole lines) on stderr, above any progress drawn.
pub fn print(text: &str) {
    let mut drawn = DRAWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = String::with_capacity(text.len() + 16);
    erase(&mut out, *drawn);
    *drawn = 0;
    out.push_str(text);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(out.as_bytes());
    let _ = err.flush();
}

/// Replaces the progress drawn with `lines` (each without its newline); none erases it.
pub fn draw(lines: &[String]) {
    let mut drawn = DRAWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = String::new();
    erase(&mut out, *drawn);
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    *drawn = lines.len();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(out.as_bytes());
    let _ = err.flush();
}

/// Moves up over `n` lines drawn and clears from there to the end of the screen.
fn erase(out: &mut String, n: usize) {
    if n > 0 {
        out.push_str(&format!("\x1b[{n}A\x1b[J"));
    }
}
