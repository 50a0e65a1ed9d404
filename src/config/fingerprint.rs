//! The delivery fingerprint of an account: a digest of exactly the settings that decide what
//! becomes of a message once the server offers it. The state journal keeps it beside the
//! messages held after a permanent delivery failure, and a new one releases them: a changed
//! delivery deserves a new try, and nothing else does.
//!
//! Counted: whether a message is taken (`max_size`, `max_size_action`, `dedupe_message_id`),
//! the bytes handed over (`received_header`), where they go (`deliver` with every setting of the
//! target, and the account `name` and `user` an MDA is given as `{account}` and `{user}`), and
//! what a refusal leads to (`on_permanent_failure`, `quarantine`), and who gets it (`route`).
//!
//! Not counted: how the message is fetched (server, TLS, login, `timeout`), when (`interval`,
//! the per-poll limits), what happens on the server after delivery (`keep`, `delete_after`),
//! and `mda_timeout` (an MDA that runs out of time failed for now, which never holds a message).
//! None of these can turn a refusal around. No secret is counted, nor its value: an inline
//! password counts only as being inline.
//!
//! The digest is of an explicit encoding, not of `Debug` text, so a change to a derive or a new
//! field never releases held mail by itself; a new field must be placed on one side or the other
//! here, since every struct is destructured in full.

use super::{
    Account, Deliver, Lmtp, LmtpAt, PasswordSource, PermanentFailure, Route, RouteTo, SizeAction,
    Smtp, TlsMode,
};

/// What every delivery fingerprint starts with, so that it is never taken for one of the kind
/// older popfetch wrote (16 hex digits; see `AccountState::set_fingerprint`).
pub const PREFIX: &str = "d1-";

impl Account {
    /// The digest of the settings that matter for delivery (see the module's text): `d1-` and 32
    /// hex digits.
    pub fn delivery_fingerprint(&self) -> String {
        let Account {
            name,
            host: _,
            port: _,
            tls: _,
            ca_file: _,
            tls_verify: _,
            tls_fingerprint: _,
            tls_min_version: _,
            tls_expiry_warning: _,
            tls_client: _,
            user,
            credentials: _,
            auth: _,
            allow_plaintext_auth: _,
            keep: _,
            received_header,
            timeout: _,
            deliver,
            mda_timeout: _,
            on_permanent_failure,
            quarantine,
            interval: _,
            max_size,
            max_size_action,
            delete_after: _,
            max_messages_per_poll: _,
            max_bytes_per_poll: _,
            dedupe_message_id,
            route,
        } = self;
        let mut c = Canon::default();
        match deliver {
            Deliver::Maildir(path) => c.field("maildir", path.as_os_str().as_encoded_bytes()),
            Deliver::Mbox(path) => c.field("mbox", path.as_os_str().as_encoded_bytes()),
            Deliver::Mda(argv) => {
                c.list("mda", argv);
                c.field("name", name.as_bytes());
                c.field("user", user.as_bytes());
            }
            Deliver::Smtp(smtp) => c.smtp(smtp),
            Deliver::Lmtp(lmtp) => c.lmtp(lmtp),
        }
        c.field("received_header", flag(*received_header));
        c.field(
            "on_permanent_failure",
            match on_permanent_failure {
                PermanentFailure::Keep => b"keep",
                PermanentFailure::Quarantine => b"quarantine",
            },
        );
        if let Some(q) = quarantine {
            c.field("quarantine", q.as_os_str().as_encoded_bytes());
        }
        if let Some(max) = max_size {
            c.field("max_size", max.to_string().as_bytes());
        }
        c.field(
            "max_size_action",
            match max_size_action {
                SizeAction::Keep => b"keep",
                SizeAction::Delete => b"delete",
            },
        );
        c.field("dedupe_message_id", flag(*dedupe_message_id));
        if let Some(r) = route {
            c.route(r);
        }
        let digest = openssl::sha::sha256(&c.0);
        format!("{PREFIX}{}", crate::text::hex(&digest[..16]))
    }
}

fn flag(on: bool) -> &'static [u8] {
    if on { b"yes" } else { b"no" }
}

/// An injective encoding of named fields: each one's name, then its length, then its bytes.
#[derive(Default)]
struct Canon(Vec<u8>);

impl Canon {
    fn field(&mut self, name: &str, value: &[u8]) {
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'=');
        self.0
            .extend_from_slice(&(value.len() as u64).to_be_bytes());
        self.0.extend_from_slice(value);
    }

    fn list(&mut self, name: &str, items: &[String]) {
        self.field(name, &(items.len() as u64).to_be_bytes());
        for item in items {
            self.field("", item.as_bytes());
        }
    }

    fn route(&mut self, route: &Route) {
        let Route {
            envelope_header,
            envelope_header_index,
            local_domains,
            recipient_delimiter,
            addresses,
            domains,
            any,
        } = route;
        self.field("route", envelope_header.as_bytes());
        if let Some(i) = envelope_header_index {
            self.field("index", &(*i as u64).to_be_bytes());
        }
        self.list("local_domains", local_domains);
        if let Some(d) = recipient_delimiter {
            self.field("delimiter", d.to_string().as_bytes());
        }
        for (name, map) in [("addresses", addresses), ("domains", domains)] {
            self.field(name, &(map.len() as u64).to_be_bytes());
            for (k, v) in map {
                self.field("", k.as_bytes());
                self.route_to(v);
            }
        }
        if let Some(v) = any {
            self.route_to(v);
        }
    }

    fn route_to(&mut self, to: &RouteTo) {
        match to {
            RouteTo::Recipient(r) => self.field("to", r.as_bytes()),
            RouteTo::Hold => self.field("hold", b""),
        }
    }

    fn lmtp(&mut self, lmtp: &Lmtp) {
        let Lmtp { at, to, from, lhlo } = lmtp;
        match at {
            LmtpAt::Socket(p) => self.field("lmtp_socket", p.as_os_str().as_encoded_bytes()),
            LmtpAt::Tcp {
                host,
                port,
                tls,
                ca_file,
            } => {
                self.field("lmtp", host.as_bytes());
                self.field("port", &port.to_be_bytes());
                self.field(
                    "tls",
                    match tls {
                        TlsMode::Implicit => b"implicit",
                        TlsMode::Starttls => b"starttls",
                        TlsMode::None => b"none",
                    },
                );
                if let Some(ca) = ca_file {
                    self.field("ca_file", ca.as_os_str().as_encoded_bytes());
                }
            }
        }
        self.list("to", to);
        if let Some(from) = from {
            self.field("from", from.as_bytes());
        }
        if let Some(lhlo) = lhlo {
            self.field("lhlo", lhlo.as_bytes());
        }
    }

    fn smtp(&mut self, smtp: &Smtp) {
        let Smtp {
            socket,
            host,
            port,
            tls,
            ca_file,
            tls_fingerprint,
            tls_min_version,
            tls_client,
            to,
            from,
            helo,
            credentials,
        } = smtp;
        if let Some(socket) = socket {
            // `host`, `port` and `tls` are fixed stand-ins then.
            self.field("smtp_socket", socket.as_os_str().as_encoded_bytes());
        } else {
            self.field("smtp", host.as_bytes());
            self.field("port", &port.to_be_bytes());
            self.field(
                "tls",
                match tls {
                    TlsMode::Implicit => b"implicit",
                    TlsMode::Starttls => b"starttls",
                    TlsMode::None => b"none",
                },
            );
        }
        if let Some(ca) = ca_file {
            self.field("ca_file", ca.as_os_str().as_encoded_bytes());
        }
        // Only when set, so that a relay without them keeps the digest it had before they
        // existed (held mail stays held across the upgrade).
        for pin in tls_fingerprint {
            self.field("tls_fingerprint", pin.to_string().as_bytes());
        }
        if *tls_min_version != crate::net::TlsVersion::default() {
            self.field("tls_min_version", tls_min_version.to_string().as_bytes());
        }
        if let Some((cert, _)) = tls_client {
            self.field("tls_client_cert", cert.as_os_str().as_encoded_bytes());
        }
        self.list("to", to);
        if let Some(from) = from {
            self.field("from", from.as_bytes());
        }
        if let Some(helo) = helo {
            self.field("helo", helo.as_bytes());
        }
        if let Some((user, password)) = credentials {
            self.field("smtp_user", user.as_bytes());
            match password {
                PasswordSource::Inline(_) => self.field("password", b"inline"),
                PasswordSource::File(p) => {
                    self.field("password_file", p.as_os_str().as_encoded_bytes());
                }
                PasswordSource::Command(argv) => self.list("password_command", argv),
            }
        }
    }
}
