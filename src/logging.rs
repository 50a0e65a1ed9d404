//! Logging: the filter grammar popfetch accepts (for `log_level`, `POPFETCH_LOG` and
//! `RUST_LOG`) and the subscriber set up once at start, on stderr or the journal.

use serde::Deserialize;

/// Where the daemon's log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when stderr is connected to it or its socket exists, else stderr.
    Auto,
    Journald,
    Stderr,
}

/// A tracing filter from a directive string, or `None` when it is not one. Only the plain
/// grammar is taken, `level` or `target=level` separated by commas: tracing-subscriber 0.3
/// panics on some other inputs and compiles field filters into regexes that can take seconds
/// and gigabytes (both found by fuzzing the config loader).
pub fn filter(directives: &str) -> Option<tracing_subscriber::EnvFilter> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if directives.len() > 1024 {
        return None;
    }
    let mut cleaned = Vec::new();
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, d),
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return None;
        }
        if let Some(t) = target
            && (t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')))
        {
            return None;
        }
        cleaned.push(match target {
            Some(t) => format!("{t}={level}"),
            None => level.to_string(),
        });
    }
    if cleaned.is_empty() {
        return None;
    }
    tracing_subscriber::EnvFilter::try_new(cleaned.join(",")).ok()
}

/// Sets up logging. The level: `POPFETCH_LOG` or `RUST_LOG` (filter directives), else the
/// config's `log_level`, else by `-v` (`fetch` and `check` are quiet by default, the daemon logs
/// at info). The target: journald or stderr, per `target` (the config's `log_target`, stderr without a config) (`auto`: journald when stderr is
/// connected to the journal or its socket exists).
pub fn init(verbose: u8, daemon: bool, log_level: Option<&str>, target: LogTarget) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = ["POPFETCH_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().and_then(|v| filter(&v)))
        .or_else(|| log_level.and_then(filter))
        .unwrap_or_else(|| EnvFilter::new(format!("popfetch={default},warn")));
    let journald = match target {
        LogTarget::Stderr => false,
        LogTarget::Journald => true,
        LogTarget::Auto => {
            std::env::var_os("JOURNAL_STREAM").is_some()
                || std::path::Path::new("/run/systemd/journal/socket").exists()
        }
    };
    if journald {
        // No journal socket after all: fall back to stderr rather than log nowhere.
        if let Ok(layer) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
