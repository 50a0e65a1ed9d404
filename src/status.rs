//! The per-account status file, `STATE_DIR/ACCOUNT.status` (JSON): what the last poll did, so
//! that `popfetch status` can answer without a running daemon. Written by atomic replace after
//! every poll; losing it loses nothing but statistics.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::io::Write;

use serde::{Deserialize, Serialize};

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

/// Records the end of a poll. `result` is the number delivered and left waiting, or the error.
pub fn record(state_dir: &Path, account: &str, result: Result<(u64, u64), String>) {
    let mut st = read(state_dir, account);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    st.account = account.to_string();
    st.last_poll = Some(now);
    match result {
        Ok((delivered, waiting)) => {
            st.last_result = Some("ok".into());
            st.last_success = Some(now);
            st.delivered_total += delivered;
            st.waiting = Some(waiting);
        }
        Err(e) => {
            st.last_result = Some("failed".into());
            st.last_error = Some(e);
        }
    }
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
    let mut f = match crate::state::create_new(&tmp) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(account, error = %e, "cannot write the status file");
            return;
        }
    };
    let written = f.write_all(&json);
    drop(f);
    if written.is_err() || std::fs::rename(&tmp, &target).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}
