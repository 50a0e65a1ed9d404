//! Client commands and their wire encoding (RFC 1939 §§4-7, RFC 2449, RFC 2595, RFC 5034).

use std::fmt;

use super::decode::Expect;
use super::types::MsgNum;
use crate::secret::Secret;

/// One client command. Arguments that carry credentials are [`Secret`]s, so `Debug` of a command
/// never shows them.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Stls,
    User(String),
    Pass(Secret<String>),
    /// `APOP name digest` (RFC 1939 §7); the digest is as good as a password for a replay.
    Apop {
        user: String,
        digest: Secret<String>,
    },
    /// `AUTH mechanism [initial-response]` (RFC 5034 §4).
    Auth {
        mechanism: &'static str,
        initial: Option<Secret<String>>,
    },
    /// A line answering a SASL continuation: base64 data, or `*` to cancel.
    SaslResponse(Secret<String>),
    Stat,
    List(Option<MsgNum>),
    Uidl(Option<MsgNum>),
    Retr(MsgNum),
    Top(MsgNum, u32),
    Dele(MsgNum),
    Noop,
    Rset,
    Quit,
}

impl Command {
    /// The shape of the answer the command gets (RFC 1939, RFC 2449 §5). A
    /// [`Command::SaslResponse`] continues the answer to its AUTH: one status line, read as the
    /// next part of that exchange.
    pub fn expect(&self) -> Expect {
        match self {
            Command::Retr(_) | Command::Top(..) => Expect::Body,
            Command::Capa | Command::List(None) | Command::Uidl(None) => Expect::Lines,
            Command::Stls
            | Command::User(_)
            | Command::Pass(_)
            | Command::Apop { .. }
            | Command::Auth { .. }
            | Command::SaslResponse(_)
            | Command::Stat
            | Command::List(Some(_))
            | Command::Uidl(Some(_))
            | Command::Dele(_)
            | Command::Noop
            | Command::Rset
            | Command::Quit => Expect::Single,
        }
    }

    /// Appends the command line, with its CRLF, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = match self {
            Command::Capa => write!(out, "CAPA"),
            Command::Stls => write!(out, "STLS"),
            Command::User(u) => write!(out, "USER {u}"),
            Command::Pass(p) => write!(out, "PASS {}", p.expose()),
            Command::Apop { user, digest } => write!(out, "APOP {user} {}", digest.expose()),
            Command::Auth {
                mechanism,
                initial: None,
            } => write!(out, "AUTH {mechanism}"),
            Command::Auth {
                mechanism,
                initial: Some(ir),
            } => {
                // RFC 5034 §4: an empty initial response is sent as "=".
                let ir = ir.expose();
                let ir = if ir.is_empty() { "=" } else { ir.as_str() };
                write!(out, "AUTH {mechanism} {ir}")
            }
            Command::SaslResponse(r) => write!(out, "{}", r.expose()),
            Command::Stat => write!(out, "STAT"),
            Command::List(None) => write!(out, "LIST"),
            Command::List(Some(n)) => write!(out, "LIST {n}"),
            Command::Uidl(None) => write!(out, "UIDL"),
            Command::Uidl(Some(n)) => write!(out, "UIDL {n}"),
            Command::Retr(n) => write!(out, "RETR {n}"),
            Command::Top(n, lines) => write!(out, "TOP {n} {lines}"),
            Command::Dele(n) => write!(out, "DELE {n}"),
            Command::Noop => write!(out, "NOOP"),
            Command::Rset => write!(out, "RSET"),
            Command::Quit => write!(out, "QUIT"),
        };
        out.extend_from_slice(b"\r\n");
    }

    /// The encoded length in octets, CRLF included.
    pub fn encoded_len(&self) -> usize {
        let mut v = Vec::new();
        self.encode(&mut v);
        v.len()
    }

    /// The command's keyword, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Capa => "CAPA",
            Command::Stls => "STLS",
            Command::User(_) => "USER",
            Command::Pass(_) => "PASS",
            Command::Apop { .. } => "APOP",
            Command::Auth { .. } => "AUTH",
            Command::SaslResponse(_) => "AUTH (response)",
            Command::Stat => "STAT",
            Command::List(_) => "LIST",
            Command::Uidl(_) => "UIDL",
            Command::Retr(_) => "RETR",
            Command::Top(..) => "TOP",
            Command::Dele(_) => "DELE",
            Command::Noop => "NOOP",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::User(u) => write!(f, "USER {u}"),
            Command::Apop { user, .. } => write!(f, "APOP {user} <redacted>"),
            Command::Auth { mechanism, initial } => write!(
                f,
                "AUTH {mechanism}{}",
                if initial.is_some() { " <redacted>" } else { "" }
            ),
            Command::Pass(_) | Command::SaslResponse(_) => write!(f, "{} <redacted>", self.name()),
            Command::List(Some(n)) | Command::Uidl(Some(n)) => write!(f, "{} {n}", self.name()),
            Command::Retr(n) | Command::Dele(n) => write!(f, "{} {n}", self.name()),
            Command::Top(n, l) => write!(f, "TOP {n} {l}"),
            _ => f.write_str(self.name()),
        }
    }
}
