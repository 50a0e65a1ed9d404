//! `popfetch check --connect`: a look at an account's server before fetching, as fetchmail's
//! `--check` and mpop's `--serverinfo` give. It connects, negotiates TLS, logs in exactly as a
//! poll does, reads CAPA, UIDL and LIST, and QUITs: no RETR or DELE is sent, so nothing is
//! retrieved or deleted (an `EXPIRE 0` server deletes only what was retrieved). TOP is sent
//! only for an account with a route, to preview where the first new messages would go (`TOP n
//! 0`, their header alone), and never to a server that announces EXPIRE: some count TOP as a
//! retrieval. No state is
//! written: what is new is decided from a [`Snapshot`] of the journal, and no status file is
//! recorded (an OAuth2 login may still cache its access token and store a rotated refresh
//! token, as any login does: dropping them could lock the account out). The mailbox's lock
//! is held while it looks, when a poll ever made one: a look never overlaps a poll, and a poll
//! that starts meanwhile is refused as busy and tried again later. What it finds is plain
//! data, [`Serverinfo`], which the command line prints as text or JSON.

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Account, TlsMode};
use crate::fetch::FetchError;
use crate::net::CertInfo;
use crate::pop3::MsgNum;
use crate::state::{Mailbox, Snapshot};

/// What the look found.
#[derive(Debug, Clone, Serialize)]
pub struct Serverinfo {
    pub account: String,
    pub host: String,
    pub port: u16,
    /// The account's `tls` setting: `implicit`, `starttls` or `none`.
    pub tls_mode: &'static str,
    /// The TLS connection and the server's certificate; `None` in clear text.
    pub tls: Option<Certificate>,
    /// The server's `IMPLEMENTATION` capability, when it sent one.
    pub implementation: Option<String>,
    /// The CAPA lines (after STLS, when used), as the server sent them.
    pub capabilities: Vec<String>,
    /// The login method chosen (`USER/PASS`, `APOP`, `PLAIN`, `CRAM-MD5`, …).
    pub login_method: &'static str,
    /// Whether the server lists unique-ids (without them every message counts as new).
    pub uidl: bool,
    pub on_server: u64,
    /// Octets of all messages, as LIST gives them.
    pub total_bytes: u64,
    /// Messages a poll would fetch: neither delivered before nor held.
    pub new: u64,
    pub new_bytes: u64,
    /// Of the new ones, those over `max_size` (left on the server or deleted unread, as the
    /// account says).
    pub new_over_max_size: u64,
    /// Held on the server after a permanent delivery failure (`popfetch retry` releases them).
    pub held: u64,
    /// The largest message, in octets.
    pub largest: Option<u64>,
    /// `LOGIN-DELAY`: the least seconds between logins (RFC 2449 §6.5), the user's own.
    pub login_delay: Option<u64>,
    /// `EXPIRE`: days the server keeps a retrieved message; `never`, or absent.
    pub expire: Option<Expire>,
    /// The journal the new messages were told by; `None` when the account has none yet.
    pub journal: Option<String>,
    /// With `[account.route]`: where the first new messages would go.
    pub routing: Option<Routing>,
}

/// Most new messages whose header the routing preview reads.
pub const PREVIEW_MAX: usize = 50;

/// Most bytes of a header the routing preview reads (what a poll reads to route one).
const PREVIEW_HEAD: usize = 64 * 1024;

/// How the account's route would send the new messages on the server: the first
/// [`PREVIEW_MAX`] of them, told by their header alone (`TOP n 0`).
#[derive(Debug, Clone, Serialize)]
pub struct Routing {
    /// Why no header was read, when none was (the server's EXPIRE, or nothing new).
    pub not_previewed: Option<String>,
    /// New messages beyond the ones looked at.
    pub not_looked_at: u64,
    /// One entry per message looked at, in message-number order.
    pub messages: Vec<RoutedMessage>,
}

/// Where one new message would go.
#[derive(Debug, Clone, Serialize)]
pub struct RoutedMessage {
    pub num: u32,
    pub uidl: Option<String>,
    /// The local recipients, one copy each; empty when held.
    pub to: Vec<String>,
    /// Why it would be held on the server instead (or why its header could not be read).
    pub held: Option<String>,
}

/// The server's `EXPIRE` capability (RFC 2449 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Expire {
    Days(u64),
    #[serde(serialize_with = "never")]
    Never,
}

fn never<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("never")
}

/// The TLS connection and what the server's certificate says.
#[derive(Debug, Clone, Serialize)]
pub struct Certificate {
    /// `implicit`, or `stls` for an upgraded connection.
    pub how: &'static str,
    pub protocol: String,
    pub cipher: String,
    /// Whether the certificate was checked (`tls_verify`) and passed.
    pub verified: bool,
    pub subject: String,
    pub issuer: String,
    /// RFC 3339 (UTC).
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// `sha256:AB:CD:…` of the certificate.
    pub fingerprint: String,
    /// `spki-sha256:AB:CD:…` of its public key: stays the same across a renewal that keeps
    /// the key.
    pub spki_fingerprint: String,
    /// Whole days until `not_after` (negative once it has passed).
    pub days_left: Option<i64>,
}

impl Certificate {
    fn new(c: CertInfo, how: &'static str, verified: bool) -> Certificate {
        let rfc3339 =
            |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339_seconds(t).to_string());
        let days_left = c.not_after.map(|t| {
            let now = SystemTime::now();
            match t.duration_since(now) {
                Ok(d) => (d.as_secs() / 86_400) as i64,
                Err(e) => -((e.duration().as_secs() / 86_400) as i64) - 1,
            }
        });
        Certificate {
            how,
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            fingerprint: format!("sha256:{}", c.sha256),
            spki_fingerprint: format!("spki-sha256:{}", c.spki_sha256),
            protocol: c.protocol,
            cipher: c.cipher,
            verified,
            subject: c.subject,
            issuer: c.issuer,
            days_left,
        }
    }
}

/// Looks at `account`'s server (see the module doc). `stop` ends every wait.
pub async fn serverinfo(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
) -> Result<Serverinfo, FetchError> {
    // Read first: a mailbox being polled is said before any login.
    let journal = Snapshot::read(state_dir, &Mailbox::of(account), &account.name)?;
    let (mut session, method, _) = crate::fetch::log_in(account, state_dir, stop).await?;
    session.reread_login_delay().await?;
    let caps = session.capabilities().cloned().unwrap_or_default();
    let tls = session.certificate().map(|c| {
        let how = match account.tls {
            TlsMode::Starttls => "stls",
            _ => "implicit",
        };
        Certificate::new(c, how, account.tls_verify)
    });
    let mut info = Serverinfo {
        account: account.name.clone(),
        host: account.host.clone(),
        port: account.port,
        tls_mode: match account.tls {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
            TlsMode::None => "none",
        },
        tls,
        implementation: caps.implementation.clone(),
        capabilities: caps.advertised.clone(),
        login_method: method.name(),
        uidl: false,
        on_server: 0,
        total_bytes: 0,
        new: 0,
        new_bytes: 0,
        new_over_max_size: 0,
        held: 0,
        largest: None,
        login_delay: caps.login_delay,
        expire: caps.expire.map(|e| e.map_or(Expire::Never, Expire::Days)),
        journal: journal.path.as_ref().map(|p| p.display().to_string()),
        routing: None,
    };
    // The new messages whose header the routing preview reads: the first few, with their
    // unique-ids and (from LIST) sizes.
    let mut preview: Vec<(MsgNum, Option<String>, u64)> = Vec::new();
    let previewing = account.route.is_some();
    // The numbers of the new messages, one bit each: a mailbox may list millions.
    let mut new = Bits::default();
    info.uidl = session
        .uidl_each(|num, uidl| {
            info.on_server += 1;
            if journal.is_held(uidl) {
                info.held += 1;
            } else if !journal.is_delivered(uidl) {
                info.new += 1;
                new.insert(num.get());
                if previewing && preview.len() < PREVIEW_MAX {
                    preview.push((num, Some(uidl.as_str().to_string()), 0));
                }
            }
            Ok(())
        })
        .await?;
    let max_size = account.max_size.unwrap_or(u64::MAX);
    let has_uidl = info.uidl;
    session
        .list_each(|num, size| {
            info.total_bytes = info.total_bytes.saturating_add(size);
            info.largest = info.largest.max(Some(size));
            if !has_uidl {
                // Without unique-ids a poll fetches everything listed.
                info.on_server += 1;
                info.new += 1;
                if previewing && preview.len() < PREVIEW_MAX {
                    preview.push((num, None, size));
                }
            }
            if let Some(p) = preview.iter_mut().find(|p| p.0 == num) {
                p.2 = size;
            }
            if !has_uidl || new.contains(num.get()) {
                info.new_bytes = info.new_bytes.saturating_add(size);
                info.new_over_max_size += u64::from(size > max_size);
            }
            Ok(())
        })
        .await?;
    if let Some(route) = &account.route {
        info.routing = Some(preview_routes(&mut session, account, route, &info, &preview).await?);
    }
    session.quit().await?;
    drop(journal);
    Ok(info)
}

/// Reads the header of each message in `preview` by `TOP n 0` and routes it as a poll would.
/// Not under an `EXPIRE` the server announces: a server may count TOP as a retrieval, and
/// under `EXPIRE 0` delete at QUIT what was only looked at.
async fn preview_routes(
    session: &mut crate::session::Session,
    account: &Account,
    route: &crate::config::Route,
    info: &Serverinfo,
    preview: &[(MsgNum, Option<String>, u64)],
) -> Result<Routing, FetchError> {
    let mut routing = Routing {
        not_previewed: None,
        not_looked_at: info.new.saturating_sub(preview.len() as u64),
        messages: Vec::new(),
    };
    if let Some(e) = info.expire.filter(|e| *e != Expire::Never) {
        let days = match e {
            Expire::Days(d) => d,
            Expire::Never => 0,
        };
        routing.not_previewed = Some(format!(
            "the server announces EXPIRE {days}, and may count reading a header (TOP) as \
             retrieving the message; the next poll routes them"
        ));
        routing.not_looked_at = info.new;
        return Ok(routing);
    }
    if preview.is_empty() {
        routing.not_previewed = Some("nothing new on the server".to_string());
        return Ok(routing);
    }
    let mailbox = format!("{}@{}", account.user, account.host);
    let nums: Vec<(MsgNum, u64)> = preview.iter().map(|p| (p.0, p.2)).collect();
    let mut heads = Vec::with_capacity(preview.len());
    session
        .heads_each(&nums, PREVIEW_HEAD, |num, head| {
            let (to, held) = match head {
                None => (Vec::new(), Some("the server refused TOP".to_string())),
                Some(head) => match crate::route::decide(route, head, &mailbox) {
                    crate::route::Decision::To(to) => (to, None),
                    crate::route::Decision::Hold(why) => (Vec::new(), Some(why)),
                },
            };
            heads.push((num, to, held));
        })
        .await?;
    for ((num, to, held), (_, uidl, _)) in heads.into_iter().zip(preview) {
        routing.messages.push(RoutedMessage {
            num: num.get(),
            uidl: uidl.clone(),
            to,
            held,
        });
    }
    Ok(routing)
}

/// A set of message numbers, one bit each.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn insert(&mut self, n: u32) {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn contains(&self, n: u32) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }
}

impl Serverinfo {
    /// The rows of the TLS session and the server's certificate.
    fn tls_rows(&self, row: &mut impl FnMut(&str, String)) {
        let Some(c) = &self.tls else {
            row("tls", "none: the session is in clear text".to_string());
            return;
        };
        row(
            "tls",
            format!(
                "{}{}, {}, certificate {}",
                if c.how == "stls" { "after STLS, " } else { "" },
                c.protocol,
                c.cipher,
                if c.verified {
                    "verified"
                } else {
                    "NOT checked (tls_verify = false)"
                }
            ),
        );
        row("subject", c.subject.clone());
        row("issuer", c.issuer.clone());
        row(
            "valid",
            format!(
                "{} to {}{}",
                c.not_before.as_deref().unwrap_or("?"),
                c.not_after.as_deref().unwrap_or("?"),
                match c.days_left {
                    Some(d) if d < 0 => " (expired)".to_string(),
                    Some(d) => format!(" ({d} days left)"),
                    None => String::new(),
                }
            ),
        );
        row("fingerprint", c.fingerprint.clone());
        row("public key", c.spki_fingerprint.clone());
    }

    /// The routing preview: a summary row, then one line per message looked at.
    fn routing_rows(&self, r: &Routing, row: &mut impl FnMut(&str, String)) {
        if let Some(why) = &r.not_previewed {
            row("routing", format!("not previewed: {why}"));
            return;
        }
        let held = r.messages.iter().filter(|m| m.held.is_some()).count();
        let mut summary = format!(
            "{} new message{} told by header (TOP 0): {} routed, {held} held",
            r.messages.len(),
            if r.messages.len() == 1 { "" } else { "s" },
            r.messages.len() - held
        );
        if r.not_looked_at > 0 {
            use std::fmt::Write;
            let _ = write!(summary, ", {} more not looked at", r.not_looked_at);
        }
        row("routing", summary);
        for m in &r.messages {
            let what = match &m.uidl {
                Some(u) => format!("message {} (uidl {u})", m.num),
                None => format!("message {}", m.num),
            };
            let line = match &m.held {
                Some(why) => format!("{what}: held: {why}"),
                None => format!("{what} -> {}", m.to.join(", ")),
            };
            row("", line);
        }
    }

    /// The text `popfetch check --connect` prints for one account.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let hb = crate::text::human_bytes;
        let _ = writeln!(
            s,
            "{}: {}, tls = \"{}\"",
            self.account,
            crate::text::host_port(&self.host, self.port),
            self.tls_mode
        );
        let mut row = |key: &str, value: String| {
            let key = if key.is_empty() {
                String::new()
            } else {
                format!("{key}:")
            };
            let _ = writeln!(s, "  {key:<13} {value}");
        };
        self.tls_rows(&mut row);
        if let Some(i) = &self.implementation {
            row("server", i.clone());
        }
        row(
            "capabilities",
            if self.capabilities.is_empty() {
                "none (the server does not answer CAPA)".to_string()
            } else {
                self.capabilities.join(", ")
            },
        );
        row("login", self.login_method.to_string());
        let mut messages = format!(
            "{} on the server ({}), {} new for popfetch ({})",
            self.on_server,
            hb(self.total_bytes),
            self.new,
            hb(self.new_bytes)
        );
        if let Some(l) = self.largest {
            let _ = write!(messages, ", the largest {}", hb(l));
        }
        row("messages", messages);
        if !self.uidl {
            row(
                "uidl",
                "not offered: every message counts as new, and keep = true cannot be used"
                    .to_string(),
            );
        }
        if self.new_over_max_size > 0 {
            row(
                "max_size",
                format!("{} of the new messages are over it", self.new_over_max_size),
            );
        }
        if self.held > 0 {
            row(
                "held",
                format!(
                    "{} (refused for good by the delivery; `popfetch retry {}` tries them again)",
                    self.held, self.account
                ),
            );
        }
        if let Some(r) = &self.routing {
            self.routing_rows(r, &mut row);
        }
        row(
            "login-delay",
            match self.login_delay {
                Some(d) => format!("{d} s: polls of this account are at least that far apart"),
                None => "none".to_string(),
            },
        );
        row(
            "expire",
            match self.expire {
                Some(Expire::Never) => "never: the server keeps retrieved messages".to_string(),
                Some(Expire::Days(0)) => {
                    "0: the server deletes every message once retrieved, whatever keep says"
                        .to_string()
                }
                Some(Expire::Days(d)) => {
                    format!("{d} days: the server deletes a retrieved message after that")
                }
                None => "none announced".to_string(),
            },
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Serverinfo {
        Serverinfo {
            account: "home".into(),
            host: "pop.example.org".into(),
            port: 110,
            tls_mode: "starttls",
            tls: Some(Certificate {
                how: "stls",
                protocol: "TLSv1.3".into(),
                cipher: "TLS_AES_128_GCM_SHA256".into(),
                verified: true,
                subject: "CN=pop.example.org".into(),
                issuer: "CN=Example CA".into(),
                not_before: Some("2026-01-01T00:00:00Z".into()),
                not_after: Some("2027-01-01T00:00:00Z".into()),
                fingerprint: "sha256:AB:CD".into(),
                spki_fingerprint: "spki-sha256:EF:01".into(),
                days_left: Some(29),
            }),
            implementation: None,
            capabilities: vec!["UIDL".into(), "SASL PLAIN".into()],
            login_method: "PLAIN",
            uidl: true,
            on_server: 3,
            total_bytes: 3072,
            new: 1,
            new_bytes: 1024,
            new_over_max_size: 0,
            held: 1,
            largest: Some(2048),
            login_delay: Some(900),
            expire: Some(Expire::Days(0)),
            journal: None,
            routing: None,
        }
    }

    #[test]
    fn text_known_answer() {
        assert_eq!(
            sample().text(),
            "home: pop.example.org:110, tls = \"starttls\"\n\
             \x20 tls:          after STLS, TLSv1.3, TLS_AES_128_GCM_SHA256, certificate verified\n\
             \x20 subject:      CN=pop.example.org\n\
             \x20 issuer:       CN=Example CA\n\
             \x20 valid:        2026-01-01T00:00:00Z to 2027-01-01T00:00:00Z (29 days left)\n\
             \x20 fingerprint:  sha256:AB:CD\n\
             \x20 public key:   spki-sha256:EF:01\n\
             \x20 capabilities: UIDL, SASL PLAIN\n\
             \x20 login:        PLAIN\n\
             \x20 messages:     3 on the server (3.0 KiB), 1 new for popfetch (1.0 KiB), the largest 2.0 KiB\n\
             \x20 held:         1 (refused for good by the delivery; `popfetch retry home` tries them again)\n\
             \x20 login-delay:  900 s: polls of this account are at least that far apart\n\
             \x20 expire:       0: the server deletes every message once retrieved, whatever keep says\n"
        );
    }

    #[test]
    fn json_known_answer() {
        let mut info = sample();
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["expire"], 0);
        assert_eq!(v["tls"]["fingerprint"], "sha256:AB:CD");
        assert_eq!(v["tls"]["days_left"], 29);
        assert_eq!(v["login_delay"], 900);
        assert_eq!(v["journal"], serde_json::Value::Null);
        info.expire = Some(Expire::Never);
        info.tls = None;
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["expire"], "never");
        assert_eq!(v["tls"], serde_json::Value::Null);
    }

    #[test]
    fn bits_hold_what_was_inserted() {
        let mut b = Bits::default();
        for n in [1, 63, 64, 1_000_000] {
            b.insert(n);
        }
        for n in [1, 63, 64, 1_000_000] {
            assert!(b.contains(n), "{n}");
        }
        for n in [0, 2, 65, 999_999, u32::MAX] {
            assert!(!b.contains(n), "{n}");
        }
    }
}
