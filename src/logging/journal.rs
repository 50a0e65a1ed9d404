//! The journal sink: each [`Line`] as one datagram of journald's native protocol
//! (systemd.journal-fields(7), "Native Journal Protocol"), on the journal's socket. The message
//! is the composed line, so `journalctl -u popfetch` reads on its own; every field of the event
//! and its spans goes along as `POPFETCH_<NAME>`, so `journalctl POPFETCH_ACCOUNT=home` finds an
//! account's lines.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tracing::Level;

use super::line::Line;

/// The journal's socket; `POPFETCH_JOURNAL_SOCKET` names another (tests, or a container that
/// mounts the journal elsewhere).
pub fn socket_path() -> PathBuf {
    std::env::var_os("POPFETCH_JOURNAL_SOCKET").map_or_else(
        || PathBuf::from("/run/systemd/journal/socket"),
        PathBuf::from,
    )
}

/// An unbound datagram socket that sends to the journal.
#[derive(Debug)]
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    /// Opens the socket and checks that the journal listens: an empty datagram, which journald
    /// ignores, must go through.
    pub fn open() -> std::io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        // A journal that does not keep up must not stall a poll for long; a line is dropped.
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        let path = socket_path();
        socket.send_to(&[], &path)?;
        Ok(Journal { socket, path })
    }

    /// Sends `line`; a failure is dropped (there is nowhere left to say it).
    pub fn send(&self, line: &Line) {
        let _ = self.socket.send_to(&encode(line), &self.path);
    }
}

/// The datagram of `line`.
pub fn encode(line: &Line) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + line.text.len());
    put(&mut out, "MESSAGE", &line.text);
    put(&mut out, "PRIORITY", priority(line.level));
    put(&mut out, "SYSLOG_IDENTIFIER", "popfetch");
    if let Some(f) = line.file {
        put(&mut out, "CODE_FILE", f);
    }
    if let Some(l) = line.line {
        put(&mut out, "CODE_LINE", &l.to_string());
    }
    for (name, value) in &line.fields {
        put(&mut out, &field_name(name), value);
    }
    out
}

/// syslog's priority of a level (RFC 5424): error 3, warning 4, info 6, debug 7.
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

/// `POPFETCH_` and the field's name in the journal's alphabet: upper-case letters, digits and
/// `_`.
pub fn field_name(name: &str) -> String {
    let mut s = String::with_capacity(9 + name.len());
    s.push_str("POPFETCH_");
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// One field: `NAME=value\n`, or, when the value holds a newline, the name, a newline, the
/// value's length as 64-bit little-endian, the value and a newline.
fn put(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}
