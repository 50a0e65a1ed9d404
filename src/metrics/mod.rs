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

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};

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
    /// The per-account series, kept compact (see [`PerAccount`]) and registered in `registry`.
    per_account: Arc<PerAccount>,
    accounts: IntGauge,
    in_flight: IntGauge,
    textfile: Mutex<Textfile>,
}

/// The per-account families, in the order of [`PerAccount::descs`].
const FAMILIES: [(&str, &str, MetricType); 10] = [
    (
        "polls_total",
        "Polls of the account, by how they ended (ok or failed).",
        MetricType::COUNTER,
    ),
    (
        "delivered_messages_total",
        "Messages delivered, failed polls' deliveries included.",
        MetricType::COUNTER,
    ),
    (
        "delivered_bytes_total",
        "Bytes of the messages delivered, failed polls' deliveries included.",
        MetricType::COUNTER,
    ),
    (
        "held_messages",
        "Messages the target refused for good, held on the server, at the last successful poll.",
        MetricType::GAUGE,
    ),
    (
        "too_large_messages",
        "Messages over max_size left on the server, at the last successful poll.",
        MetricType::GAUGE,
    ),
    (
        "waiting_messages",
        "Messages left undelivered on the server (failed, held, deferred, too large), at the \
         last successful poll.",
        MetricType::GAUGE,
    ),
    (
        "last_success_timestamp_seconds",
        "When the account's last successful poll ended, in seconds since the epoch.",
        MetricType::GAUGE,
    ),
    (
        "next_poll_timestamp_seconds",
        "When the account's next poll is due, in seconds since the epoch.",
        MetricType::GAUGE,
    ),
    (
        "tls_certificate_expiry_timestamp_seconds",
        "When the server's TLS certificate ends, as last seen, in seconds since the epoch.",
        MetricType::GAUGE,
    ),
    (
        "poll_duration_seconds",
        "How long polls took.",
        MetricType::HISTOGRAM,
    ),
];

/// The series of every account in force, a few words each: the `prometheus` crate's vectors
/// keep a copy of their family's description and label names with every series, about 400
/// bytes, so an idle daemon of 10,000 accounts spent 25 MB on them. The families it collects
/// are the same, and the registry sorts and encodes them as it does its own.
struct PerAccount {
    descs: Vec<Desc>,
    /// The accounts of the config in force, by name. A poll of any other (a removed account's
    /// task finishing its last poll) is not counted, so its series stay gone.
    series: Mutex<BTreeMap<Box<str>, Series>>,
}

/// One account's numbers; `None` is a series not (or no longer) exported.
#[derive(Default)]
struct Series {
    polls: [u64; 3],
    delivered_messages: u64,
    delivered_bytes: u64,
    held: Option<i64>,
    too_large: Option<i64>,
    waiting: Option<i64>,
    last_success: Option<f64>,
    next_poll: Option<f64>,
    cert_expiry: Option<f64>,
    /// Boxed: most idle accounts have not polled yet.
    duration: Option<Box<Durations>>,
}

/// The poll duration histogram of one account: per bucket of [`DURATION_BUCKETS`], the polls
/// that took at most its bound and more than the one before (made cumulative when collected).
#[derive(Default)]
struct Durations {
    counts: [u64; DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// [`PerAccount`] as the registry holds it.
struct Collect(Arc<PerAccount>);

impl Collector for Collect {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = lock(&self.0.series);
        let mut families: Vec<MetricFamily> = FAMILIES
            .iter()
            .map(|(name, help, kind)| {
                let mut f = MetricFamily::default();
                f.set_name((*name).to_string());
                f.set_help((*help).to_string());
                f.set_field_type(*kind);
                f
            })
            .collect();
        let label = |name: &str, value: &str| {
            let mut l = proto::LabelPair::default();
            l.set_name(name.to_string());
            l.set_value(value.to_string());
            l
        };
        let counter = |account: &str, v: u64| {
            let mut c = proto::Counter::default();
            c.set_value(v as f64);
            let mut m = proto::Metric::from_label(vec![label("account", account)]);
            m.set_counter(c);
            m
        };
        let gauge = |account: &str, v: f64| {
            let mut g = proto::Gauge::default();
            g.set_value(v);
            let mut m = proto::Metric::from_label(vec![label("account", account)]);
            m.set_gauge(g);
            m
        };
        for (account, s) in series.iter() {
            let account: &str = account;
            for (r, n) in PollResult::ALL.iter().zip(s.polls) {
                let mut c = proto::Counter::default();
                c.set_value(n as f64);
                let mut m = proto::Metric::from_label(vec![
                    label("account", account),
                    label("result", r.label()),
                ]);
                m.set_counter(c);
                families[0].mut_metric().push(m);
            }
            families[1]
                .mut_metric()
                .push(counter(account, s.delivered_messages));
            families[2]
                .mut_metric()
                .push(counter(account, s.delivered_bytes));
            let gauges = [
                (3, s.held.map(|n| n as f64)),
                (4, s.too_large.map(|n| n as f64)),
                (5, s.waiting.map(|n| n as f64)),
                (6, s.last_success),
                (7, s.next_poll),
                (8, s.cert_expiry),
            ];
            for (i, v) in gauges {
                if let Some(v) = v {
                    families[i].mut_metric().push(gauge(account, v));
                }
            }
            if let Some(d) = &s.duration {
                let mut cumulative = 0;
                let buckets = DURATION_BUCKETS
                    .iter()
                    .zip(d.counts)
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect();
                let mut h = proto::Histogram::default();
                h.set_sample_count(d.count);
                h.set_sample_sum(d.sum);
                h.set_bucket(buckets);
                let mut m = proto::Metric::from_label(vec![label("account", account)]);
                m.set_histogram(h);
                families[9].mut_metric().push(m);
            }
        }
        families
    }
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
        let descs = FAMILIES
            .iter()
            .map(|(name, help, kind)| {
                let mut labels = vec!["account".to_string()];
                if *kind == MetricType::COUNTER && *name == "polls_total" {
                    labels.push("result".into());
                }
                Desc::new(
                    (*name).into(),
                    (*help).into(),
                    labels,
                    std::collections::HashMap::new(),
                )
                .expect("a valid family")
            })
            .collect();
        let per_account = Arc::new(PerAccount {
            descs,
            series: Mutex::new(BTreeMap::new()),
        });
        registry
            .register(Box::new(Collect(per_account.clone())))
            .expect("registered once");
        let (accounts, in_flight) = process_gauges(&registry);
        Metrics {
            registry,
            per_account,
            accounts,
            in_flight,
            textfile: Mutex::new(Textfile::default()),
        }
    }

    /// The accounts of the config now in force: the series of the others are removed, a new
    /// one's counters start at 0 (so `rate()` sees its first poll).
    pub fn set_accounts<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        // In place: a reload of thousands of accounts that changed a few copies no names.
        let names: std::collections::BTreeSet<&str> = names.into_iter().collect();
        let mut series = lock(&self.per_account.series);
        series.retain(|name, _| names.contains(&**name));
        for name in names {
            if !series.contains_key(name) {
                series.insert(name.into(), Series::default());
            }
        }
        self.accounts
            .set(i64::try_from(series.len()).unwrap_or(i64::MAX));
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
        let mut series = lock(&self.per_account.series);
        let Some(s) = series.get_mut(account) else {
            return;
        };
        s.polls[PollResult::ALL
            .iter()
            .position(|r| *r == result)
            .unwrap_or(0)] += 1;
        s.delivered_messages = s.delivered_messages.saturating_add(report.delivered as u64);
        s.delivered_bytes = s.delivered_bytes.saturating_add(report.bytes);
        let took = took.as_secs_f64();
        let d = s.duration.get_or_insert_with(Box::default);
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| took <= *b) {
            d.counts[i] += 1;
        }
        d.sum += took;
        d.count += 1;
        if let Some(ends) = report.cert_expires {
            s.cert_expiry = Some(ends as f64);
        }
        // A partial poll saw the whole listing: its counts hold. It is no success, though.
        if result != PollResult::Failed {
            let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            s.held = Some(count(report.held + report.newly_held));
            s.too_large = Some(count(report.too_large));
            s.waiting = Some(count(report.waiting()));
            if result == PollResult::Ok {
                s.last_success = Some(epoch(ended));
            }
        }
    }

    /// When `account`'s next poll is due; `None` when none is (polling suspended).
    pub fn next_poll(&self, account: &str, at: Option<SystemTime>) {
        if let Some(s) = lock(&self.per_account.series).get_mut(account) {
            s.next_poll = at.map(epoch);
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
