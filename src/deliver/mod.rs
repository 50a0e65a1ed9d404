//! Delivery backends behind one small interface. A delivery is a [`Sink`] that takes the message
//! in chunks, then [`Sink::finish`]: an mbox, an MDA or an SMTP relay has delivered it then; a
//! Maildir file is complete, and becomes durable with [`Backend::sync_batch`] (its [`Sink::key`]
//! is what the state journal records) and visible with [`Backend::publish_batch`], many
//! messages at once. A sink dropped before that leaves nothing behind. Errors say whether a
//! retry can help ([`ErrorKind`]).
//!
//! One file per backend: [`maildir`], [`mbox`], [`mda`], [`smtp`], [`lmtp`]; [`envelope`] reads the
//! envelope sender from a message's header section.

pub mod envelope;
pub mod fan;
pub mod lmtp;
pub mod maildir;
pub mod mbox;
pub mod mda;
pub mod smtp;
mod spool;

use std::time::SystemTime;

use crate::config::{Account, Deliver, TlsMode};
use crate::pop3::Uidl;

/// Whether a failed delivery may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// This message failed for now (an MDA that exited 75): leave it on the server, try it at
    /// the next poll, go on with the others.
    Transient,
    /// Retrying the same message will fail the same way: the account's
    /// `on_permanent_failure` policy applies.
    Permanent,
    /// The target is down or full (connection refused, no space left): leave the message on
    /// the server and stop this poll, since the next messages would fail the same way.
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeliverError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DeliverError {
    /// A local I/O error: a full disk or quota, a read-only file system and the like make the
    /// whole target unavailable; anything else fails just this message, for now.
    pub(crate) fn io(context: impl std::fmt::Display, e: std::io::Error) -> DeliverError {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::StorageFull
            | K::QuotaExceeded
            | K::ReadOnlyFilesystem
            | K::PermissionDenied
            | K::NotFound => ErrorKind::Unavailable,
            _ => ErrorKind::Transient,
        };
        DeliverError {
            kind,
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
    /// How the POP3 connection was protected: the trace header names the protocol after it
    /// (RFC 8314 keeps POP3S for implicit TLS; STLS is POP3 upgraded in place).
    pub tls: TlsMode,
    /// Prepend a `Received:` trace line.
    pub received_header: bool,
    /// A routed message (`[account.route]`): its recipients still to deliver to, and the
    /// mailbox it came from (`USER@HOST`) for the loop guard's header.
    pub routed: Option<(&'a [String], &'a str)>,
}

/// An opened delivery target.
#[derive(Debug)]
pub enum Backend {
    Maildir(maildir::Maildir),
    Mbox(mbox::Mbox),
    Mda(mda::Mda),
    Smtp(smtp::Smtp),
    Lmtp(lmtp::Lmtp),
    /// A single-recipient target with `{recipient}` in it, for a routed account.
    Fan(fan::Fan),
}

impl Backend {
    /// Opens `target` for `account`, creating what it needs (a Maildir's `tmp`, `new` and
    /// `cur`). Network backends connect at their first message.
    pub fn open(target: &Deliver, account: &Account) -> Result<Backend, DeliverError> {
        let single = !matches!(target, Deliver::Smtp(_) | Deliver::Lmtp(_));
        // The account's own target (not its quarantine) takes one copy per routed recipient.
        if account.route.is_some() && single && *target == account.deliver {
            return Ok(Backend::Fan(fan::Fan::new(
                target,
                account.mda_timeout,
                &account.name,
                &account.user,
            )));
        }
        Ok(match target {
            Deliver::Maildir(path) => Backend::Maildir(maildir::Maildir::open(path)?),
            Deliver::Mbox(path) => Backend::Mbox(mbox::Mbox::open(path)?),
            Deliver::Mda(argv) => Backend::Mda(mda::Mda::new(
                argv.clone(),
                account.mda_timeout,
                &account.name,
                &account.user,
            )),
            Deliver::Smtp(t) => Backend::Smtp(smtp::Smtp::new(t, account.timeout)),
            Deliver::Lmtp(t) => Backend::Lmtp(lmtp::Lmtp::new(t, account.timeout)),
        })
    }

    /// Starts delivering one message.
    pub fn begin(&self, info: &MessageInfo<'_>) -> Result<Sink, DeliverError> {
        let mut header = info.received_header.then(|| received_header(info));
        let recipients = info.routed.map(|(r, _)| r);
        if let Some((_, mailbox)) = info.routed {
            // The loop guard's mark (see `crate::route`), on every copy of a routed message.
            let h = header.get_or_insert_with(Vec::new);
            h.extend_from_slice(format!("{}: {mailbox}\n", crate::route::LOOP_HEADER).as_bytes());
        }
        let header = header.as_deref();
        let uidl = info.uidl.map(Uidl::as_str);
        Ok(match self {
            Backend::Maildir(m) => Sink::Maildir(m.begin(header)?),
            Backend::Mbox(m) => Sink::Mbox(m.begin(header)?),
            Backend::Mda(m) => Sink::Mda(Box::new(m.begin(header, uidl)?)),
            Backend::Smtp(m) => Sink::Smtp(m.begin(header, recipients)?),
            Backend::Lmtp(m) => Sink::Lmtp(m.begin(header, recipients)?),
            Backend::Fan(f) => Sink::Fan(Box::new(f.begin(
                header,
                uidl,
                recipients.unwrap_or(&[]),
            )?)),
        })
    }

    /// After a crash: whether the delivery recorded under `key` was committed. A backend that
    /// cannot tell answers `false`, and the message is fetched again.
    pub fn was_delivered(&self, key: &str) -> bool {
        match self {
            Backend::Maildir(m) => m.was_delivered(key),
            _ => false,
        }
    }

    /// Removes what deliveries of dead popfetch processes left behind; returns how many.
    pub fn clean_stale(&self) -> usize {
        match self {
            Backend::Maildir(m) => m.clean_stale_tmp(),
            _ => 0,
        }
    }

    /// After a crash: removes whatever an unfinished delivery under `key` left behind.
    pub fn discard(&self, key: &str) {
        if let Backend::Maildir(m) = self {
            m.discard(key);
        }
    }

    /// Makes a batch of finished messages durable (for a Maildir: their files fsync'd at once).
    pub async fn sync_batch(&self, sinks: &mut [Sink]) -> Result<(), DeliverError> {
        let mut maildir: Vec<&mut maildir::Sink> = sinks
            .iter_mut()
            .filter_map(|s| match s {
                Sink::Maildir(m) => Some(m),
                _ => None,
            })
            .collect();
        if maildir.is_empty() {
            return Ok(());
        }
        maildir::sync_all(&mut maildir).await
    }

    /// Makes a synced batch visible, durably (for a Maildir: renames, then one fsync of `new/`).
    pub async fn publish_batch(&self, sinks: Vec<Sink>) -> Result<(), DeliverError> {
        let maildir: Vec<maildir::Sink> = sinks
            .into_iter()
            .filter_map(|s| match s {
                Sink::Maildir(m) => Some(m),
                _ => None,
            })
            .collect();
        maildir::publish(maildir).await
    }

    /// Ends the poll: closes connections the backend kept open.
    pub async fn close(&self) {
        match self {
            Backend::Smtp(s) => s.close().await,
            Backend::Lmtp(s) => s.close().await,
            _ => {}
        }
    }
}

/// One message being delivered. Dropping it before it is delivered abandons the delivery and
/// leaves nothing behind (a temp file is removed, an MDA is killed).
#[derive(Debug)]
pub enum Sink {
    Maildir(maildir::Sink),
    Mbox(mbox::Sink),
    Mda(Box<mda::Sink>),
    Smtp(smtp::Sink),
    Lmtp(lmtp::Sink),
    Fan(Box<fan::Sink>),
}

impl Sink {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        match self {
            Sink::Maildir(s) => s.write(data),
            Sink::Mbox(s) => s.write(data),
            Sink::Mda(s) => s.write(data),
            Sink::Smtp(s) => s.write(data),
            Sink::Lmtp(s) => s.write(data),
            Sink::Fan(s) => s.write(data),
        }
    }

    /// Ends the message. For a Maildir the file is complete but neither durable nor visible
    /// until [`Backend::sync_batch`] and [`Backend::publish_batch`]; the other backends deliver
    /// here (an mbox append with fsync, an MDA's exit 0, a relay's 2xx).
    pub async fn finish(&mut self) -> Result<(), DeliverError> {
        match self {
            Sink::Maildir(s) => s.finish(),
            Sink::Mbox(s) => s.prepare().await,
            Sink::Mda(s) => s.prepare().await,
            Sink::Smtp(s) => s.prepare().await,
            Sink::Lmtp(s) => s.prepare().await,
            Sink::Fan(s) => Box::pin(s.finish()).await,
        }
    }

    /// The key under which [`Backend::was_delivered`] can later find this delivery, for the
    /// backends that can tell.
    pub fn key(&self) -> Option<&str> {
        match self {
            Sink::Maildir(s) => Some(s.key()),
            _ => None,
        }
    }

    /// Recipients that have this message already (from an earlier, partly successful try):
    /// left out this time. Only LMTP delivers per recipient; the others ignore it.
    pub fn skip_recipients(&mut self, reached: Vec<String>) {
        if let Sink::Lmtp(s) = self {
            s.skip_recipients(reached);
        }
    }

    /// After [`Sink::finish`] failed: the recipients that got the message all the same (an LMTP
    /// 2xx after the data, a routed copy delivered), to be recorded so a retry leaves them out.
    pub fn reached(&self) -> &[String] {
        match self {
            Sink::Lmtp(s) => s.reached(),
            Sink::Fan(s) => s.reached(),
            _ => &[],
        }
    }

    /// Whether the journal record of this finished delivery may wait for a batch's one fsync.
    /// True for LMTP: its 2xx says the server stored the message, so a crash before the record
    /// costs a repeat of the batch's messages (at most a batch: 64 messages, half a second),
    /// never a loss. The other backends that cannot be
    /// asked later are recorded one by one, so a crash repeats at most the message in flight.
    pub fn group_commit(&self) -> bool {
        matches!(self, Sink::Lmtp(_))
    }

    /// Message bytes written so far (trace header included).
    pub fn bytes(&self) -> u64 {
        match self {
            Sink::Maildir(s) => s.bytes(),
            Sink::Mbox(s) => s.bytes(),
            Sink::Mda(s) => s.bytes(),
            Sink::Smtp(s) => s.bytes(),
            Sink::Lmtp(s) => s.bytes(),
            Sink::Fan(s) => s.bytes(),
        }
    }
}

/// The RCPT list of a relay: `configured` as it is, or with each `routed` recipient put in place
/// of `{recipient}` (an entry without it once), without repeats.
pub(crate) fn recipients(configured: &[String], routed: Option<&[String]>) -> Vec<String> {
    let Some(routed) = routed else {
        return configured.to_vec();
    };
    let mut out: Vec<String> = Vec::new();
    for t in configured {
        let each: Vec<String> = match t.contains(fan::PLACEHOLDER) {
            true => routed
                .iter()
                .map(|r| t.replace(fan::PLACEHOLDER, r))
                .collect(),
            false => vec![t.clone()],
        };
        for a in each {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// The local host name, for trace headers and Maildir file names (read once per process).
pub fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
    .clone()
}

/// `Received: from SERVER by HOST with PROTO (popfetch VERSION) (account A, uidl U); DATE`,
/// folded over two lines, with `\n` line endings. PROTO is `POP3S` for implicit TLS, `POP3
/// (STLS; …` after STLS and `POP3` in clear text, so the line says how the message travelled.
pub fn received_header(info: &MessageInfo<'_>) -> Vec<u8> {
    let proto = match info.tls {
        TlsMode::Implicit => "POP3S (",
        TlsMode::Starttls => "POP3 (STLS; ",
        TlsMode::None => "POP3 (",
    };
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
        "Received: from {} by {} with {proto}popfetch {})\n\t({comment}); {}\n",
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
