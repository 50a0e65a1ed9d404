//! The daemon's Prometheus metrics: what each poll did, per account, and the process's own
//! gauges, in the Prometheus text format (0.0.4). The daemon feeds [`Metrics`] after every poll
//! from its [`Report`] and the scheduler's next poll time; [`serve`] answers `GET /metrics` on
//! `metrics_listen`, and [`Metrics::write_textfile`] replaces `metrics_textfile` for
//! node_exporter's textfile collector.
//!
//! The encoding is the `prometheus` crate's `TextEncoder`, not hand-written: it escapes label
//! values and writes `# HELP`/`# TYPE` lines that Prometheus, node_exporter and
//! `promtool check metrics` read as they are.

pub mod serve;

use std::collections::BTreeSet;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::report::Report;

/// The content type of what [`Metrics::encode`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the poll duration histogram, in seconds: from a quick poll of an empty
/// mailbox on a LAN to a large transfer over a slow link.
const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// How a poll ended, the `result` label of `popfetch_polls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    Ok,
    /// The poll ended, but left mail on the server after a transient delivery failure.
    Partial,
    Failed,
}

impl PollResult {
    const ALL: [PollResult; 3] = [PollResult::Ok, PollResult::Partial, PollResult::Failed];

    fn label(self) -> &'static str {
        match self {
            PollResult::Ok => "ok",
            PollResult::Partial => "partial",
            PollResult::Failed => "failed",
        }
    }
}

/// Every metric popfetch exports, in one registry. Shared by the account tasks, the HTTP
/// endpoint and the textfile writer; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    polls: IntCounterVec,
    delivered_messages: IntCounterVec,
    delivered_bytes: IntCounterVec,
    held: IntGaugeVec,
    too_large: IntGaugeVec,
    waiting: IntGaugeVec,
    last_success: GaugeVec,
    /// When the server's certificate ends, as last seen.
    cert_expiry: GaugeVec,
    next_poll: GaugeVec,
    duration: HistogramVec,
    accounts: IntGauge,
    in_flight: IntGauge,
    /// The accounts of the config in force. A poll of any other (a removed account's task
    /// finishing its last poll) is not counted, so its series stay gone.
    known: Mutex<BTreeSet<String>>,
    textfile: Mutex<Textfile>,
}

#[derive(Default)]
struct Textfile {
    path: Option<PathBuf>,
    /// The last error said about it, so a failing write is logged once, not at every poll.
    error: Option<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The per-process gauges, registered in `registry`: accounts and polls in flight (the build's
/// version is a constant 1 with its label).
fn process_gauges(registry: &Registry) -> (IntGauge, IntGauge) {
    let accounts =
        IntGauge::new("accounts", "Accounts in the config in force.").expect("a valid gauge");
    registry
        .register(Box::new(accounts.clone()))
        .expect("registered once");
    let in_flight = IntGauge::new("polls_in_flight", "Polls running now.").expect("a valid gauge");
    registry
        .register(Box::new(in_flight.clone()))
        .expect("registered once");
    let build = IntGauge::with_opts(
        Opts::new("build_info", "The running popfetch's version; always 1.")
            .const_label("version", env!("CARGO_PKG_VERSION")),
    )
    .expect("a valid gauge");
    build.set(1);
    registry.register(Box::new(build)).expect("registered once");
    (accounts, in_flight)
}

impl Metrics {
    pub fn new() -> Metrics {
        // Names and label names are fixed here and valid, so registration cannot fail; a
        // mistake in them fails every test at once.
        let registry =
            Registry::new_custom(Some("popfetch".into()), None).expect("a valid metric prefix");
        let account = &["account"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let int_gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), account).expect("a valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), account).expect("a valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let polls = counter(
            "polls_total",
            "Polls of the account, by how they ended (ok or failed).",
            &["account", "result"],
        );
        let delivered_messages = counter(
            "delivered_messages_total",
            "Messages delivered, failed polls' deliveries included.",
            account,
        );
        let delivered_bytes = counter(
            "delivered_bytes_total",
            "Bytes of the messages delivered, failed polls' deliveries included.",
            account,
        );
        let held = int_gauge(
            "held_messages",
            "Messages the target refused for good, held on the server, at the last successful poll.",
        );
        let too_large = int_gauge(
            "too_large_messages",
            "Messages over max_size left on the server, at the last successful poll.",
        );
        let waiting = int_gauge(
            "waiting_messages",
            "Messages left undelivered on the server (failed, held, deferred, too large), at the \
             last successful poll.",
        );
        let last_success = gauge(
            "last_success_timestamp_seconds",
            "When the account's last successful poll ended, in seconds since the epoch.",
        );
        let next_poll = gauge(
            "next_poll_timestamp_seconds",
            "When the account's next poll is due, in seconds since the epoch.",
        );
        let cert_expiry = gauge(
            "tls_certificate_expiry_timestamp_seconds",
            "When the server's TLS certificate ends, as last seen, in seconds since the epoch.",
        );
        let duration = HistogramVec::new(
            HistogramOpts::new("poll_duration_seconds", "How long polls took.")
                .buckets(DURATION_BUCKETS.to_vec()),
            account,
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(duration.clone()))
            .expect("registered once");
        let (accounts, in_flight) = process_gauges(&registry);
        Metrics {
            registry,
            polls,
            delivered_messages,
            delivered_bytes,
            held,
            too_large,
            waiting,
            last_success,
            cert_expiry,
            next_poll,
            duration,
            accounts,
            in_flight,
            known: Mutex::new(BTreeSet::new()),
            textfile: Mutex::new(Textfile::default()),
        }
    }

    /// The accounts of the config now in force: the series of the others are removed, a new
    /// one's counters start at 0 (so `rate()` sees its first poll).
    pub fn set_accounts<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut known = lock(&self.known);
        let new: BTreeSet<String> = names.into_iter().map(str::to_owned).collect();
        for gone in known.difference(&new) {
            self.remove(gone);
        }
        for added in new.difference(&known) {
            for r in PollResult::ALL {
                self.polls.with_label_values(&[added, r.label()]);
            }
            self.delivered_messages.with_label_values(&[added]);
            self.delivered_bytes.with_label_values(&[added]);
        }
        self.accounts
            .set(i64::try_from(new.len()).unwrap_or(i64::MAX));
        *known = new;
    }

    fn remove(&self, account: &str) {
        let a = &[account];
        for r in PollResult::ALL {
            let _ = self.polls.remove_label_values(&[account, r.label()]);
        }
        let _ = self.delivered_messages.remove_label_values(a);
        let _ = self.delivered_bytes.remove_label_values(a);
        let _ = self.held.remove_label_values(a);
        let _ = self.too_large.remove_label_values(a);
        let _ = self.waiting.remove_label_values(a);
        let _ = self.last_success.remove_label_values(a);
        let _ = self.cert_expiry.remove_label_values(a);
        let _ = self.next_poll.remove_label_values(a);
        let _ = self.duration.remove_label_values(a);
    }

    /// Counts a poll as running until the guard drops (also when the poll panics).
    pub fn poll_started(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// Records a poll of `account` that took `took` and ended at `ended`. Deliveries count
    /// whatever the result; the gauges of what waits on the server only follow a successful
    /// poll, since a failed one may have stopped before it saw the listing.
    pub fn poll_done(
        &self,
        account: &str,
        report: &Report,
        result: PollResult,
        took: Duration,
        ended: SystemTime,
    ) {
        let known = lock(&self.known);
        if !known.contains(account) {
            return;
        }
        let a = &[account];
        self.polls
            .with_label_values(&[account, result.label()])
            .inc();
        self.delivered_messages
            .with_label_values(a)
            .inc_by(report.delivered as u64);
        self.delivered_bytes
            .with_label_values(a)
            .inc_by(report.bytes);
        self.duration
            .with_label_values(a)
            .observe(took.as_secs_f64());
        if let Some(ends) = report.cert_expires {
            self.cert_expiry.with_label_values(a).set(ends as f64);
        }
        // A partial poll saw the whole listing: its counts hold. It is no success, though.
        if result != PollResult::Failed {
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.held
                .with_label_values(a)
                .set(count(report.held + report.newly_held));
            self.too_large
                .with_label_values(a)
                .set(count(report.too_large));
            self.waiting
                .with_label_values(a)
                .set(count(report.waiting()));
            if result == PollResult::Ok {
                self.last_success.with_label_values(a).set(epoch(ended));
            }
        }
    }

    /// When `account`'s next poll is due; `None` when none is (polling suspended).
    pub fn next_poll(&self, account: &str, at: Option<SystemTime>) {
        let known = lock(&self.known);
        if !known.contains(account) {
            return;
        }
        match at {
            Some(t) => self.next_poll.with_label_values(&[account]).set(epoch(t)),
            None => {
                let _ = self.next_poll.remove_label_values(&[account]);
            }
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Writing into a Vec fails only on an invalid family, which `new` never registers.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Where [`Metrics::write_textfile`] writes, from the config in force.
    pub fn set_textfile(&self, path: Option<PathBuf>) {
        let mut t = lock(&self.textfile);
        if t.path != path {
            *t = Textfile { path, error: None };
        }
    }

    /// Replaces the textfile (when one is configured) with the metrics now, atomically. A
    /// failure is logged once until it changes or the write succeeds again.
    pub fn write_textfile(&self) {
        // Held while writing: two polls ending at once write one after the other, the last
        // one with the newest numbers.
        let mut t = lock(&self.textfile);
        let Some(path) = t.path.clone() else {
            return;
        };
        match write_atomically(&path, self.encode().as_bytes()) {
            Ok(()) => {
                if t.error.take().is_some() {
                    tracing::info!(path = %path.display(), "metrics textfile written again");
                }
            }
            Err(e) => {
                let text = e.to_string();
                if t.error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(
                        path = %path.display(),
                        error = %text,
                        "cannot write the metrics textfile {}: {text}",
                        path.display()
                    );
                    t.error = Some(text);
                }
            }
        }
    }
}

/// Decrements `popfetch_polls_in_flight` when dropped.
pub struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `path` replaced with `contents` through `path.tmp` (which node_exporter, reading only
/// `*.prom`, never reads half-written), mode 0644 whatever the umask: the collector runs as
/// another user. Statistics, so not fsync'd: a crash leaves the previous file, never a torn one.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
    };
    let file = match create() {
        // Left by a crash mid-write; this process alone writes it (under the lock above).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            create()?
        }
        r => r?,
    };
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    crate::durable::replace(
        file,
        &tmp,
        path,
        dir,
        &[contents],
        crate::durable::Sync::Lazy,
    )
}

#[cfg(test)]
mod tests;
