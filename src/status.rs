//! The per-account status file, `STATE_DIR/ACCOUNT.status` (JSON): what the last poll did, so
//! that `popfetch status` can answer without a running daemon. Written by atomic replace after
//! every poll, also one that failed (its deliveries count all the same); losing it loses nothing
//! but statistics.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// What the status file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub account: String,
    /// Unix seconds of the last poll's end.
    pub last_poll: Option<u64>,
    /// `"ok"` or `"failed"`.
    pub last_result: Option<String>,
    /// Unix seconds of the last poll that succeeded.
    pub last_success: Option<u64>,
    /// Messages delivered by every poll so far.
    pub delivered_total: u64,
    /// Messages the last poll left undelivered on the server (failed, held, or not reached).
    pub waiting: Option<u64>,
    pub last_error: Option<String>,
    /// Messages held because they arrived far short of their LIST size, with both sizes; kept
    /// until a poll finds nothing held.
    #[serde(default)]
    pub held_short: Vec<crate::report::ShortMessage>,
}

pub fn path(state_dir: &Path, account: &str) -> PathBuf {
    state_dir.join(format!("{account}.status"))
}

/// Reads an account's status; a missing or unreadable file is an empty status.
pub fn read(state_dir: &Path, account: &str) -> Status {
    std::fs::read(path(state_dir, account))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| Status {
            account: account.to_string(),
            ..Status::default()
        })
}

/// Records the end of a poll: what `report` says it did, and its `error` if it failed. Every
/// delivery counts, also those of a poll that failed after them.
pub fn record(state_dir: &Path, account: &str, report: &Report, error: Option<String>) {
    let mut st = read(state_dir, account);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    update(&mut st, account, now, report, error);
    let Ok(json) = serde_json::to_vec_pretty(&st) else {
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

/// `st` after a poll that ended at `now` (Unix seconds).
fn update(st: &mut Status, account: &str, now: u64, report: &Report, error: Option<String>) {
    st.account = account.to_string();
    st.last_poll = Some(now);
    st.delivered_total += report.delivered as u64;
    if !report.short.is_empty() {
        st.held_short = report.short.clone();
    }
    match error {
        None => {
            st.last_result = Some("ok".into());
            st.last_success = Some(now);
            st.waiting = Some(report.waiting() as u64);
            if report.held + report.newly_held == 0 && report.short.is_empty() {
                st.held_short.clear();
            }
        }
        Some(e) => {
            st.last_result = Some("failed".into());
            st.last_error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_poll_counts_its_deliveries() {
        let mut st = Status::default();
        let report = Report {
            delivered: 91,
            ..Report::default()
        };
        update(
            &mut st,
            "a",
            10,
            &report,
            Some("the server closed the connection".into()),
        );
        assert_eq!(st.delivered_total, 91);
        assert_eq!(st.last_result.as_deref(), Some("failed"));
        assert_eq!(st.last_success, None);
        let report = Report {
            delivered: 109,
            ..Report::default()
        };
        update(&mut st, "a", 20, &report, None);
        assert_eq!(st.delivered_total, 200);
        assert_eq!(st.last_success, Some(20));
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
        update(&mut st, "a", 10, &report, None);
        assert_eq!(st.held_short, vec![short.clone()]);
        let held = Report {
            held: 1,
            ..Report::default()
        };
        update(&mut st, "a", 20, &held, None);
        update(&mut st, "a", 25, &Report::default(), Some("timeout".into()));
        assert_eq!(st.held_short, vec![short]);
        update(&mut st, "a", 30, &Report::default(), None);
        assert!(st.held_short.is_empty());
    }
}
