//! Logging: the filter grammar popfetch accepts (for `log_level`, `POPFETCH_LOG` and
//! `RUST_LOG`) and the subscriber set up once at start, on stderr or the journal. Both sinks
//! show the same [`Line`]: the message with the account it concerns, so a line read alone says
//! what happened to whom; the journal also gets every field as `POPFETCH_<NAME>`.

mod journal;
mod line;
pub mod terminal;

use serde::Deserialize;
use tracing_subscriber::filter::{LevelFilter, Targets};

pub use journal::{encode as journal_datagram, field_name as journal_field};
pub use line::{Line, compose};

/// Where the daemon's log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when stderr is connected to it; else stderr when stderr is a terminal; else
    /// the journal when its socket exists; else stderr.
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
/// at info). The target: the journal or stderr, as [`LogTarget`] says (`target` is the config's
/// `log_target`; stderr without a config).
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
    let journal = target
        .wants_journal(
            std::env::var_os("JOURNAL_STREAM").is_some(),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            journal::socket_path().exists(),
        )
        .then(journal::Journal::open)
        // No journal listening after all: stderr rather than nowhere.
        .and_then(Result::ok);
    let sink = match journal {
        Some(j) => Sink::Journal(j),
        None => Sink::Stderr,
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(sink)
        .try_init();
}

impl LogTarget {
    /// Whether the log goes to the journal. `auto` picks the journal when stderr is connected to
    /// it (`JOURNAL_STREAM`, set by systemd), else stderr when stderr is a terminal (someone is
    /// watching), else the journal when its socket exists.
    pub fn wants_journal(self, journal_stream: bool, stderr_tty: bool, socket: bool) -> bool {
        match self {
            LogTarget::Stderr => false,
            LogTarget::Journald => true,
            LogTarget::Auto => journal_stream || (!stderr_tty && socket),
        }
    }
}

/// Where the lines go: the journal, or stderr (one line each, after what the terminal shows
/// live, see [`terminal`]).
#[derive(Debug)]
enum Sink {
    Journal(journal::Journal),
    Stderr,
}

impl<S> tracing_subscriber::Layer<S> for Sink
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        line::on_new_span(attrs, id, &ctx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        line::on_record(id, values, &ctx);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let line = Line::of(event, &ctx);
        match self {
            Sink::Journal(j) => j.send(&line),
            Sink::Stderr => terminal::print(&stderr_text(&line, std::time::SystemTime::now())),
        }
    }
}

/// A line as stderr shows it: the time (UTC, to the second), the level, the text.
pub fn stderr_text(line: &Line, now: std::time::SystemTime) -> String {
    format!(
        "{} {:>5} {}\n",
        humantime::format_rfc3339_seconds(now),
        line.level,
        line.text
    )
}

#[cfg(test)]
mod tests;
