//! Logging: the filter grammar popfetch accepts (for `log_level`, `POPFETCH_LOG` and
//! `RUST_LOG`) and the subscriber set up once at start, on stderr or the journal.

use serde::Deserialize;
use tracing_subscriber::filter::{LevelFilter, Targets};

/// Where the daemon's log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when stderr is connected to it or its socket exists, else stderr.
    Auto,
    Journald,
    Stderr,
}

/// The level names the filter grammar takes, in any case.
const LEVELS: [(&str, LevelFilter); 6] = [
    ("trace", LevelFilter::TRACE),
    ("debug", LevelFilter::DEBUG),
    ("info", LevelFilter::INFO),
    ("warn", LevelFilter::WARN),
    ("error", LevelFilter::ERROR),
    ("off", LevelFilter::OFF),
];

/// A tracing filter from a directive string, or `None` when it is not one. The grammar:
/// directives separated by commas, each `level` or `target=level`, blanks around each part
/// ignored, empty directives skipped; a level is one of [`LEVELS`], a target is ASCII letters,
/// digits, `_`, `:` and `-`. The result is tracing-subscriber's [`Targets`], built here rather
/// than parsed by it, because its parser takes more than this grammar (a bare word as
/// `word=trace`, numbers and an empty level as levels, `[{field}]` lists, blanks inside
/// names), and a typo must be refused, not turned into a filter. (No `EnvFilter`: its parser
/// panics on some inputs and compiles field filters into regexes that can take seconds and
/// gigabytes, both found by fuzzing the config loader.)
pub fn filter(directives: &str) -> Option<Targets> {
    if directives.len() > 1024 {
        return None;
    }
    let mut filter = None;
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, d),
        };
        let (_, level) = LEVELS.iter().find(|(l, _)| l.eq_ignore_ascii_case(level))?;
        let f: Targets = filter.take().unwrap_or_default();
        filter = Some(match target {
            None => f.with_default(*level),
            Some(t)
                if !t.is_empty()
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')) =>
            {
                f.with_target(t, *level)
            }
            Some(_) => return None,
        });
    }
    filter
}

/// Sets up logging. The level: `POPFETCH_LOG` or `RUST_LOG` (filter directives), else the
/// config's `log_level`, else by `-v` (`fetch` and `check` are quiet by default, the daemon logs
/// at info). The target: journald or stderr, per `target` (the config's `log_target`, stderr without a config) (`auto`: journald when stderr is
/// connected to the journal or its socket exists).
pub fn init(verbose: u8, daemon: bool, log_level: Option<&str>, target: LogTarget) {
    use tracing_subscriber::prelude::*;
    let default = match (verbose, daemon) {
        (0, false) => LevelFilter::WARN,
        (0, true) | (1, _) => LevelFilter::INFO,
        (2, _) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let filter = ["POPFETCH_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().and_then(|v| filter(&v)))
        .or_else(|| log_level.and_then(filter))
        .unwrap_or_else(|| {
            Targets::new()
                .with_target("popfetch", default)
                .with_default(LevelFilter::WARN)
        });
    let journald = match target {
        LogTarget::Stderr => false,
        LogTarget::Journald => true,
        LogTarget::Auto => {
            std::env::var_os("JOURNAL_STREAM").is_some()
                || std::path::Path::new("/run/systemd/journal/socket").exists()
        }
    };
    let journald = journald.then(tracing_journald::layer);
    match journald {
        Some(Ok(layer)) => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
        }
        // No journal socket after all: fall back to stderr rather than log nowhere.
        _ => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                        .with_writer(std::io::stderr)
                        .with_target(false),
                )
                .try_init();
        }
    }
}

#[cfg(test)]
mod tests;
