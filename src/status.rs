//! The per-account status file, `STATE_DIR/ACCOUNT.status` (JSON, [`SCHEMA`]): what the last
//! poll did, what the account's health is, and when the daemon polls it next, so that
//! `popfetch status` can answer without a running daemon and even without a valid config.
//! Written by atomic replace after every poll, also one that failed (its deliveries count all
//! the same), and again by the daemon once it knows the next poll; losing it loses nothing but
//! statistics. Files of schema 1 (no `schema` field) are read, their missing fields empty.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// The version of the status file's fields and of `popfetch status --json`. Raised when a field
/// changes meaning or goes away; new fields may appear within a version.
pub const SCHEMA: u32 = 2;

/// How a poll ended (`last_result`).
pub mod result {
    /// Every message it could take was delivered.
    pub const OK: &str = "ok";
    /// It finished, and messages were newly refused for good and held on the server.
    pub const HELD: &str = "held";
    /// It finished, but a delivery failed for now: that mail waits on the server. A failure.
    pub const PARTIAL: &str = "partial";
    /// It ended in an error (connection, login, state, the target down…). A failure.
    pub const FAILED: &str = "failed";
}

/// An account's health as `popfetch status` judges it (`health`), from its status file.
pub mod health {
    /// Its last poll failed, or left mail waiting after a delivery that failed for now.
    pub const FAILING: &str = "failing";
    /// Its last poll was fine, but messages are held on the server after a permanent failure
    /// until `popfetch retry` (or a change of what delivery does).
    pub const HOLDING: &str = "holding";
    pub const OK: &str = "ok";
    /// Never polled (or its status file is gone).
    pub const UNKNOWN: &str = "unknown";
}

/// What the status file holds. Times are Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// [`SCHEMA`]; 1 for a file written before the field existed.
    pub schema: u32,
    pub account: String,
    /// When the last poll ended.
    pub last_poll: Option<u64>,
    /// How it ended: one of [`result`].
    pub last_result: Option<String>,
    /// How long it took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// When the last poll that was not a failure ended.
    pub last_success: Option<u64>,
    /// Polls in a row that failed (`failed` or `partial`); 0 after one that did not.
    pub consecutive_failures: u32,
    /// The last failure's error, until a poll that is not a failure moves it to
    /// `previous_error`.
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    pub previous_error: Option<String>,
    pub previous_error_at: Option<u64>,
    /// Messages the last poll delivered (a failed poll's too).
    pub delivered: u64,
    /// Messages whose delivery failed for now in the last poll that finished.
    pub failed: u64,
    /// Messages held on the server after a permanent failure, as the last poll that finished
    /// found them.
    pub held: u64,
    /// Why the last message newly held was refused for good; kept while messages are held.
    pub held_error: Option<String>,
    /// Messages over `max_size` left on the server, as the last poll that finished found them.
    pub too_large: u64,
    /// Messages the last poll that finished left on the server undelivered (failed, held, too
    /// large, left for a later poll by a per-poll limit, or not reached).
    pub waiting: Option<u64>,
    /// Messages delivered by every poll so far, failed ones included.
    pub delivered_total: u64,
    /// Their bytes.
    pub bytes_total: u64,
    /// Messages held because they arrived far short of their LIST size, with both sizes; kept
    /// until a poll finds nothing held.
    pub held_short: Vec<crate::report::ShortMessage>,
    /// When the daemon polls next; `null` after `popfetch fetch` and while suspended.
    pub next_poll: Option<u64>,
    /// Why then: `interval`, `login-delay`, `backoff`, `auth` or `suspended`
    /// ([`crate::scheduler::Why`]).
    pub next_reason: Option<String>,
    /// When the server's certificate ends (Unix seconds), as last seen.
    #[serde(default)]
    pub tls_not_after: Option<u64>,
    /// When a poll last warned that it ends soon (at most once a day).
    #[serde(default)]
    pub tls_expiry_warned: Option<u64>,
}

impl Status {
    /// One of [`health`].
    pub fn health(&self) -> &'static str {
        if self.last_poll.is_none() {
            return health::UNKNOWN;
        }
        let failing = matches!(
            self.last_result.as_deref(),
            Some(result::FAILED | result::PARTIAL)
        ) || self.next_reason.as_deref()
            == Some(crate::scheduler::Why::Suspended.as_str());
        if failing {
            health::FAILING
        } else if self.held > 0 || !self.held_short.is_empty() {
            health::HOLDING
        } else {
            health::OK
        }
    }
}

pub fn path(state_dir: &Path, account: &str) -> PathBuf {
    state_dir.join(format!("{account}.status"))
}

/// Reads an account's status; a missing or unreadable file is an empty status.
pub fn read(state_dir: &Path, account: &str) -> Status {
    std::fs::read(path(state_dir, account))
        .ok()
        .and_then(|b| parse(&b))
        .unwrap_or_else(|| Status {
            account: account.to_string(),
            ..Status::default()
        })
}

fn parse(bytes: &[u8]) -> Option<Status> {
    let mut st: Status = serde_json::from_slice(bytes).ok()?;
    if st.schema == 0 {
        st.schema = 1;
    }
    Some(st)
}

/// Every status file in `state_dir`, by account name: what `popfetch status` shows when the
/// config cannot say which accounts there are. `None` when the directory cannot be read.
pub fn read_all(state_dir: &Path) -> Option<Vec<Status>> {
    let mut rows: Vec<Status> = std::fs::read_dir(state_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let account = name.strip_suffix(".status")?;
            let mut st = parse(&std::fs::read(e.path()).ok()?)?;
            if st.account.is_empty() {
                st.account = account.to_string();
            }
            Some(st)
        })
        .collect();
    rows.sort_by(|a, b| a.account.cmp(&b.account));
    Some(rows)
}

/// Records the end of a poll that took `elapsed`: what `report` says it did, and its `error`
/// if it failed. Every delivery counts, also those of a poll that failed after them. The next
/// poll is unknown here: the daemon adds it with [`record_next`].
pub fn record(
    state_dir: &Path,
    account: &str,
    report: &Report,
    error: Option<String>,
    elapsed: Duration,
) {
    let mut st = read(state_dir, account);
    update(
        &mut st,
        account,
        unix(SystemTime::now()),
        report,
        error,
        elapsed,
    );
    write(state_dir, account, &st);
}

/// Records when the daemon polls `account` next (`None`: not until its config changes) and why.
pub fn record_next(
    state_dir: &Path,
    account: &str,
    at: Option<SystemTime>,
    why: crate::scheduler::Why,
) {
    let mut st = read(state_dir, account);
    st.next_poll = at.map(unix);
    st.next_reason = Some(why.as_str().to_string());
    write(state_dir, account, &st);
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn write(state_dir: &Path, account: &str, st: &Status) {
    let Ok(json) = serde_json::to_vec_pretty(st) else {
        return;
    };
    // Never into a directory others may write (nor, as root, into another user's: a root-owned
    // file there would lock that user's popfetch out).
    let trusted =
        std::fs::metadata(state_dir).is_ok_and(|m| crate::trust::state_dir(state_dir, &m).is_ok());
    if !trusted {
        return;
    }
    let target = path(state_dir, account);
    let tmp = state_dir.join(format!("{account}.status.tmp"));
    // Statistics only: no fsync; a crash at worst leaves the previous file. Mode 0600 like the
    // rest of the state directory; created afresh, never through a symlink planted there.
    let f = match crate::state::create_new(&tmp) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(account, error = %e, "cannot write the status file: {e}");
            return;
        }
    };
    let lazy = crate::durable::Sync::Lazy;
    let _ = crate::durable::replace(f, &tmp, &target, state_dir, &[&json], lazy);
}

/// `st` after a poll that ended at `now` (Unix seconds) after `elapsed`.
fn update(
    st: &mut Status,
    account: &str,
    now: u64,
    report: &Report,
    error: Option<String>,
    elapsed: Duration,
) {
    st.schema = SCHEMA;
    st.account = account.to_string();
    st.last_poll = Some(now);
    st.last_duration_ms = Some(elapsed.as_millis().try_into().unwrap_or(u64::MAX));
    st.delivered = report.delivered as u64;
    st.delivered_total += report.delivered as u64;
    st.bytes_total += report.bytes;
    st.next_poll = None;
    st.next_reason = None;
    if report.cert_expires.is_some() {
        st.tls_not_after = report.cert_expires;
    }
    if report.cert_warned {
        st.tls_expiry_warned = Some(now);
    }
    if !report.short.is_empty() {
        st.held_short = report.short.clone();
    }
    let poll_failed = error.is_some();
    // A failed poll's counts are partial: what is on the server stays as last seen.
    let error = match error {
        Some(e) => Some(e),
        None => {
            st.failed = report.failed as u64;
            st.held = (report.held + report.newly_held) as u64;
            st.too_large = report.too_large as u64;
            st.waiting = Some(report.waiting() as u64);
            if report.held + report.newly_held == 0 && report.short.is_empty() {
                st.held_short.clear();
            }
            if report.held_error.is_some() {
                st.held_error = report.held_error.clone();
            } else if st.held == 0 {
                st.held_error = None;
            }
            report.partial().then(|| {
                let n = report.failed;
                let why = report
                    .delivery_error
                    .as_deref()
                    .unwrap_or("no reason given");
                let s = if n == 1 { "" } else { "s" };
                format!("{n} message{s} left on the server for now; the first: {why}")
            })
        }
    };
    let result = if poll_failed {
        result::FAILED
    } else if report.partial() {
        result::PARTIAL
    } else if report.newly_held > 0 {
        result::HELD
    } else {
        result::OK
    };
    st.last_result = Some(result.into());
    match error {
        Some(e) => {
            st.consecutive_failures = st.consecutive_failures.saturating_add(1);
            st.last_error = Some(e);
            st.last_error_at = Some(now);
        }
        None => {
            st.consecutive_failures = 0;
            st.last_success = Some(now);
            if let Some(e) = st.last_error.take() {
                st.previous_error = Some(e);
                st.previous_error_at = st.last_error_at.take();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn poll(st: &mut Status, now: u64, report: &Report, error: Option<&str>) {
        update(st, "a", now, report, error.map(String::from), 250 * MS);
    }

    #[test]
    fn a_failed_poll_counts_its_deliveries() {
        let mut st = Status::default();
        let report = Report {
            delivered: 91,
            ..Report::default()
        };
        poll(
            &mut st,
            10,
            &report,
            Some("the server closed the connection"),
        );
        assert_eq!(st.delivered_total, 91);
        assert_eq!(st.last_result.as_deref(), Some(result::FAILED));
        assert_eq!(st.last_success, None);
        assert_eq!(st.last_duration_ms, Some(250));
        let report = Report {
            delivered: 109,
            ..Report::default()
        };
        poll(&mut st, 20, &report, None);
        assert_eq!(st.delivered_total, 200);
        assert_eq!(st.delivered, 109);
        assert_eq!(st.last_success, Some(20));
        assert_eq!(st.schema, SCHEMA);
    }

    #[test]
    fn mail_left_for_now_is_a_failure_with_its_delivery_error() {
        let mut st = Status::default();
        let report = Report {
            failed: 3,
            delivery_error: Some("delivery of uidl u3 failed: the MDA exited with 75".into()),
            ..Report::default()
        };
        poll(&mut st, 10, &report, None);
        assert_eq!(st.last_result.as_deref(), Some(result::PARTIAL));
        assert_eq!(st.health(), health::FAILING);
        assert_eq!(st.consecutive_failures, 1);
        assert_eq!(st.waiting, Some(3));
        assert_eq!(st.last_error_at, Some(10));
        let e = st.last_error.clone().unwrap();
        assert!(
            e.starts_with("3 messages left on the server for now"),
            "{e}"
        );
        assert!(e.ends_with("the MDA exited with 75"), "{e}");
        assert_eq!(st.last_success, None);
        poll(&mut st, 20, &report, Some("connection refused"));
        assert_eq!(st.consecutive_failures, 2);
        assert_eq!(st.last_error.as_deref(), Some("connection refused"));
        // What was on the server stays as the last finished poll saw it.
        assert_eq!(st.waiting, Some(3));
        assert_eq!(st.failed, 3);
    }

    #[test]
    fn a_success_clears_the_error_into_previous_error() {
        let mut st = Status::default();
        poll(&mut st, 10, &Report::default(), Some("timeout"));
        poll(&mut st, 20, &Report::default(), None);
        assert_eq!(st.last_error, None);
        assert_eq!(st.last_error_at, None);
        assert_eq!(st.previous_error.as_deref(), Some("timeout"));
        assert_eq!(st.previous_error_at, Some(10));
        assert_eq!(st.consecutive_failures, 0);
        assert_eq!(st.health(), health::OK);
        // A later success keeps it; a later failure does not touch it either.
        poll(&mut st, 30, &Report::default(), None);
        poll(&mut st, 40, &Report::default(), Some("reset"));
        assert_eq!(st.previous_error.as_deref(), Some("timeout"));
        assert_eq!(st.last_error.as_deref(), Some("reset"));
    }

    #[test]
    fn held_mail_makes_the_account_holding() {
        let mut st = Status::default();
        assert_eq!(st.health(), health::UNKNOWN);
        let report = Report {
            newly_held: 5,
            held_error: Some("the MDA exited with 67".into()),
            ..Report::default()
        };
        poll(&mut st, 10, &report, None);
        assert_eq!(st.last_result.as_deref(), Some(result::HELD));
        assert_eq!(st.held, 5);
        assert_eq!(st.held_error.as_deref(), Some("the MDA exited with 67"));
        assert_eq!(st.health(), health::HOLDING);
        let report = Report {
            held: 5,
            ..Report::default()
        };
        poll(&mut st, 20, &report, None);
        assert_eq!(st.last_result.as_deref(), Some(result::OK));
        assert_eq!(st.health(), health::HOLDING);
        assert!(st.held_error.is_some(), "kept while held");
        poll(&mut st, 30, &Report::default(), None);
        assert_eq!(st.health(), health::OK);
        assert_eq!(st.held_error, None);
    }

    #[test]
    fn a_suspended_account_is_failing_and_fetch_leaves_no_next_poll() {
        let mut st = Status::default();
        poll(&mut st, 10, &Report::default(), None);
        st.next_poll = Some(70);
        st.next_reason = Some("suspended".into());
        assert_eq!(st.health(), health::FAILING);
        poll(&mut st, 20, &Report::default(), None);
        assert_eq!((st.next_poll, st.next_reason.as_deref()), (None, None));
    }

    #[test]
    fn a_schema_1_file_is_read_with_empty_new_fields() {
        let old = br#"{"account":"a","last_poll":10,"last_result":"failed","last_success":5,
            "delivered_total":7,"waiting":2,"last_error":"timeout","held_short":[]}"#;
        let st = parse(old).unwrap();
        assert_eq!(st.schema, 1);
        assert_eq!(st.delivered_total, 7);
        assert_eq!(st.last_error.as_deref(), Some("timeout"));
        assert_eq!(st.last_error_at, None);
        assert_eq!(st.consecutive_failures, 0);
        assert_eq!(st.health(), health::FAILING);
    }

    #[test]
    fn short_messages_stay_listed_while_something_is_held() {
        let mut st = Status::default();
        let short = crate::report::ShortMessage {
            num: 2,
            uidl: Some("u2".into()),
            listed: 100_000,
            received: 2_000,
        };
        let report = Report {
            newly_held: 1,
            short: vec![short.clone()],
            ..Report::default()
        };
        poll(&mut st, 10, &report, None);
        assert_eq!(st.held_short, vec![short.clone()]);
        let held = Report {
            held: 1,
            ..Report::default()
        };
        poll(&mut st, 20, &held, None);
        poll(&mut st, 25, &Report::default(), Some("timeout"));
        assert_eq!(st.held_short, vec![short]);
        poll(&mut st, 30, &Report::default(), None);
        assert!(st.held_short.is_empty());
    }
}
