//! What one poll did: the counts `fetch` fills in and `status`, `daemon` and the command line
//! read. Plain data, so the modules that read a report need not know how a poll runs.

use std::time::Duration;

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages on the server at login.
    pub on_server: usize,
    /// Of those, the ones not delivered before this poll.
    pub new: usize,
    /// Messages delivered in this poll.
    pub delivered: usize,
    pub bytes: u64,
    /// Messages removed from the server (QUIT answered +OK).
    pub deleted: usize,
    /// Deliveries a crashed run left pending that were found complete.
    pub recovered: usize,
    /// Messages whose delivery failed for now; they stay on the server for the next poll.
    pub failed: usize,
    /// Messages the backend refused for good in this poll, now held on the server.
    pub newly_held: usize,
    /// Messages held from earlier polls, skipped.
    pub held: usize,
    /// Messages the backend refused for good that went to the quarantine Maildir.
    pub quarantined: usize,
    /// Messages this poll did not reach: it was stopped, or the target became unavailable.
    pub unreached: usize,
    /// The poll stopped early because shutdown was requested.
    pub interrupted: bool,
    /// Messages over `max_size` left on the server (all of them, reported or not).
    pub too_large: usize,
    /// Messages over `max_size` deleted unread (`max_size_action = "delete"`).
    pub too_large_deleted: usize,
    /// Delivered messages deleted now that `delete_after` has passed.
    pub expired: usize,
    /// Messages whose Message-ID and size were delivered before: recorded, not delivered again.
    pub duplicates: usize,
    /// New messages left for a later poll by `max_messages_per_poll` / `max_bytes_per_poll`.
    pub deferred: usize,
    /// The server's `LOGIN-DELAY` capability: the least time between two logins.
    pub login_delay: Option<Duration>,
    /// Messages that arrived far short of their LIST size in this poll: not delivered, held on
    /// the server (counted in `newly_held`, or in `failed` without a UIDL to hold them by).
    pub short: Vec<ShortMessage>,
    /// Why the first delivery that failed for now failed (the others are most likely alike).
    pub delivery_error: Option<String>,
    /// Why the last message newly held in this poll was refused for good.
    pub held_error: Option<String>,
    /// Round trips the poll's session took (see `Session::round_trips`), QUIT included when
    /// it was waited for.
    pub round_trips: u32,
    /// When the server's certificate ends (Unix seconds), when the session was TLS.
    pub cert_expires: Option<u64>,
    /// This poll warned that the certificate ends soon (said at most once a day).
    pub cert_warned: bool,
}

impl Report {
    /// What the poll did, in words: `3 new messages delivered (12.0 KiB), 3 deleted from the
    /// server, 5 on it at login`, then every other count that is not zero.
    pub fn summary(&self) -> String {
        if *self == Report::stopped_before_transfer() {
            return "stopped by a signal before the transfer began".into();
        }
        let mut line = format!(
            "{} new message{} delivered ({}), {} deleted from the server, {} on it at login",
            self.delivered,
            if self.delivered == 1 { "" } else { "s" },
            crate::text::human_bytes(self.bytes),
            self.deleted,
            self.on_server
        );
        for (n, what) in [
            (self.failed, "failed for now (left on the server)"),
            (
                self.newly_held + self.held,
                "held after a permanent failure (see `popfetch retry`)",
            ),
            (self.quarantined, "quarantined"),
            (self.too_large, "over max_size (left on the server)"),
            (self.too_large_deleted, "over max_size (deleted unread)"),
            (self.expired, "deleted after delete_after"),
            (
                self.duplicates,
                "already delivered (same Message-ID), not again",
            ),
            (self.deferred, "left for the next poll (per-poll limit)"),
        ] {
            if n > 0 {
                line.push_str(&format!("; {n} {what}"));
            }
        }
        for short in &self.short {
            line.push_str(&format!("; held: {short}"));
        }
        if let Some(e) = &self.delivery_error {
            line.push_str(&format!(" (delivery failed: {e})"));
        }
        line
    }

    /// Whether the poll changed anything: a poll that found nothing new, or only failed to
    /// deliver again (said once per change by whoever polls), is not worth an info line.
    pub fn eventful(&self) -> bool {
        self.delivered
            + self.deleted
            + self.newly_held
            + self.quarantined
            + self.too_large_deleted
            + self.expired
            + self.duplicates
            + self.recovered
            > 0
            || !self.short.is_empty()
    }
}

/// A message that arrived far short of its LIST size.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShortMessage {
    /// Its message number in the session.
    pub num: u64,
    pub uidl: Option<String>,
    /// Its size by LIST.
    pub listed: u64,
    /// What arrived, counted with CRLF line endings.
    pub received: u64,
}

impl std::fmt::Display for ShortMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "message {}", self.num)?;
        if let Some(u) = &self.uidl {
            write!(f, " (uidl {u})")?;
        }
        write!(
            f,
            " arrived with {} octets, far short of the {} its LIST size announced",
            self.received, self.listed
        )
    }
}

impl Report {
    /// The report of a poll that shutdown stopped before its transfer began: nothing was
    /// fetched, not even a listing.
    pub fn stopped_before_transfer() -> Report {
        Report {
            interrupted: true,
            ..Report::default()
        }
    }

    /// Messages left undelivered on the server: failed, held, deferred, too large, or not
    /// reached. Computed here, in one place, from the counts the poll keeps.
    pub fn waiting(&self) -> usize {
        self.failed + self.held + self.newly_held + self.deferred + self.too_large + self.unreached
    }

    /// Whether the poll left mail on the server after a delivery that failed for now (an MDA's
    /// exit 75, an SMTP 4xx, a refused RETR): it finished, but counts as a failure for the
    /// daemon's backoff and for `popfetch status`.
    pub fn partial(&self) -> bool {
        self.failed > 0
    }

    /// Whether something in this poll needs the administrator's attention.
    pub fn has_failures(&self) -> bool {
        self.failed > 0 || self.newly_held > 0
    }
}
