//! What can go wrong in a session, and whether trying again later can help.

use std::time::Duration;

use crate::net::NetError;
use crate::pop3::{DecodeError, ResponseCode, Status, printable};
use crate::text::reason;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Connecting, TLS, a read or a write failed or timed out: `net`'s errors, in its words.
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("the server closed the connection")]
    Closed,
    /// `tls = "implicit"` on a port that answered the handshake in clear text.
    #[error(
        "TLS with {host} failed: port {port} answered in clear text, not TLS; this port speaks \
         plain POP3: use tls = \"starttls\" or the POP3S port (995)"
    )]
    PlainPort { host: String, port: u16 },
    /// A clear-text mode on a port that waits for a TLS ClientHello.
    #[error(
        "no greeting from {addr} after {}s, and the port answers a TLS handshake: this port \
         expects implicit TLS: use tls = \"implicit\" (or port 110 with tls = \"starttls\")",
        after.as_secs()
    )]
    ExpectsTls { addr: String, after: Duration },
    #[error("protocol error: {0}")]
    Decode(DecodeError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the server answered {command} with -ERR{}{}", code.map(|c| format!(" [{c}]")).unwrap_or_default(), said(text))]
    Refused {
        command: &'static str,
        code: Option<ResponseCode>,
        text: String,
    },
    #[error(
        "the server does not offer STLS; with tls = \"starttls\" popfetch will not go on in clear \
         text (someone on the path may have stripped it)"
    )]
    NoStls,
    #[error("login: {0}")]
    Auth(String),
    #[error("stopped before the transfer began: shutdown was asked for")]
    Cancelled,
    #[error(
        "transfer from the server stalled: {bytes} bytes in the last {}s (less than {} bytes/s)",
        after.as_secs(),
        super::MIN_RATE
    )]
    Stalled { bytes: u64, after: Duration },
    #[error(
        "the {what} listing is longer than its budget of {octets} octets or {lines} lines \
         (STAT announced {} messages); nothing is fetched or deleted",
        count.map_or_else(|| "no".to_string(), |c| c.to_string())
    )]
    OverBudget {
        what: &'static str,
        octets: u64,
        lines: u64,
        count: Option<u64>,
    },
}

/// The server's text after `-ERR`, or a note that there was none.
fn said(text: &str) -> String {
    match reason(text) {
        r if r == text.trim() => format!(": {r}"),
        r => format!(" {r}"),
    }
}

impl SessionError {
    pub(crate) fn refused(command: &'static str, st: &Status) -> SessionError {
        SessionError::Refused {
            command,
            code: st.code,
            text: st.text_lossy(),
        }
    }

    pub(crate) fn protocol(what: &str) -> SessionError {
        SessionError::Protocol(what.to_string())
    }

    pub(crate) fn bad_listing(command: &str, line: &[u8], why: &str) -> SessionError {
        SessionError::Protocol(format!(
            "bad {command} line {:?}: {why}",
            printable(line, 100)
        ))
    }

    /// The server's response code, if it sent one.
    pub fn code(&self) -> Option<ResponseCode> {
        match self {
            SessionError::Refused { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether the same poll may succeed later without a config change.
    pub fn is_transient(&self) -> bool {
        match self {
            SessionError::Net(e) => e.is_transient(),
            SessionError::Closed | SessionError::Cancelled | SessionError::Stalled { .. } => true,
            SessionError::Refused { code: Some(c), .. } => c.is_transient(),
            // A refusal without a code may be anything; a login refusal is not transient.
            SessionError::Refused {
                command,
                code: None,
                ..
            } => !matches!(*command, "USER" | "PASS" | "APOP" | "AUTH"),
            SessionError::Decode(_)
            | SessionError::PlainPort { .. }
            | SessionError::ExpectsTls { .. }
            | SessionError::Protocol(_)
            | SessionError::NoStls
            | SessionError::OverBudget { .. }
            | SessionError::Auth(_) => false,
        }
    }
}
