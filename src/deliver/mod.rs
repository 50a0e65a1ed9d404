//! Delivery backends behind one small interface. A delivery is a [`Sink`] that takes the message
//! in chunks, then [`Sink::prepare`] (durable but not yet visible; yields a key the state journal
//! records) and [`Sink::commit`] (visible and durable). A sink dropped before `commit` leaves
//! nothing behind. Errors say whether a retry can help ([`ErrorKind`]).
//!
//! One file per backend; today [`maildir`].

pub mod maildir;

use std::time::SystemTime;

use crate::config::Deliver;
use crate::pop3::Uidl;

/// Whether a failed delivery may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Leave the message on the server and try at the next poll (a full disk, a busy MDA).
    Transient,
    /// Retrying the same message will fail the same way.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliverError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DeliverError {
    pub(crate) fn transient(context: impl std::fmt::Display, e: std::io::Error) -> DeliverError {
        DeliverError {
            kind: ErrorKind::Transient,
            message: format!("{context}: {e}"),
        }
    }
}

/// What a backend may want to know about the message it delivers.
#[derive(Debug, Clone, Copy)]
pub struct MessageInfo<'a> {
    pub account: &'a str,
    /// The POP3 server's host name, for the trace header.
    pub server: &'a str,
    pub uidl: Option<&'a Uidl>,
    /// Whether the message came over TLS.
    pub tls: bool,
    /// Prepend a `Received:` trace line.
    pub received_header: bool,
}

/// An opened delivery target.
#[derive(Debug)]
pub enum Backend {
    Maildir(maildir::Maildir),
}

impl Backend {
    /// Opens the target, creating what it needs (a Maildir's `tmp`, `new` and `cur`).
    pub fn open(target: &Deliver) -> Result<Backend, DeliverError> {
        match target {
            Deliver::Maildir(path) => Ok(Backend::Maildir(maildir::Maildir::open(path)?)),
        }
    }

    /// Starts delivering one message.
    pub fn begin(&self, info: &MessageInfo<'_>) -> Result<Sink, DeliverError> {
        let header = info.received_header.then(|| received_header(info));
        match self {
            Backend::Maildir(m) => Ok(Sink::Maildir(m.begin(header.as_deref())?)),
        }
    }

    /// After a crash: whether the delivery recorded under `key` was committed. A backend that
    /// cannot tell answers `false`, and the message is fetched again.
    pub fn was_delivered(&self, key: &str) -> bool {
        match self {
            Backend::Maildir(m) => m.was_delivered(key),
        }
    }

    /// After a crash: removes whatever an unfinished delivery under `key` left behind.
    pub fn discard(&self, key: &str) {
        match self {
            Backend::Maildir(m) => m.discard(key),
        }
    }
}

/// One message being delivered.
#[derive(Debug)]
pub enum Sink {
    Maildir(maildir::Sink),
}

impl Sink {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        match self {
            Sink::Maildir(s) => s.write(data),
        }
    }

    /// Makes the message durable without making it visible.
    pub async fn prepare(&mut self) -> Result<(), DeliverError> {
        match self {
            Sink::Maildir(s) => s.prepare().await,
        }
    }

    /// The key under which [`Backend::was_delivered`] can later find this delivery.
    pub fn key(&self) -> &str {
        match self {
            Sink::Maildir(s) => s.key(),
        }
    }

    /// Makes the message visible, durably. Only after this returns is it delivered.
    pub async fn commit(self) -> Result<(), DeliverError> {
        match self {
            Sink::Maildir(s) => s.commit().await,
        }
    }

    /// Message bytes written so far (trace header included).
    pub fn bytes(&self) -> u64 {
        match self {
            Sink::Maildir(s) => s.bytes(),
        }
    }
}

/// The local host name, for trace headers and Maildir file names.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `Received: from SERVER by HOST with POP3[S] (popfetch VERSION) (account A, uidl U); DATE`,
/// folded over two lines, with `\n` line endings.
pub fn received_header(info: &MessageInfo<'_>) -> Vec<u8> {
    let proto = if info.tls { "POP3S" } else { "POP3" };
    let mut comment = format!("account {}", info.account);
    if let Some(u) = info.uidl {
        comment.push_str(", uidl ");
        // UIDLs may contain the characters that end or escape a comment (RFC 5322 §3.2.2).
        for c in u.as_str().chars() {
            if matches!(c, '(' | ')' | '\\') {
                comment.push('\\');
            }
            comment.push(c);
        }
    }
    format!(
        "Received: from {} by {} with {proto} (popfetch {})\n\t({comment}); {}\n",
        info.server,
        hostname(),
        env!("CARGO_PKG_VERSION"),
        rfc5322_date(SystemTime::now()),
    )
    .into_bytes()
}

/// An RFC 5322 §3.3 date in UTC: `Thu, 26 Nov 2026 11:03:51 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    const WDAY: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        WDAY[(days.rem_euclid(7)) as usize],
        MON[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
