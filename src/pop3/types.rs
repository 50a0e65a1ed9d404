//! Validated protocol values: message numbers, UIDLs, status lines, response codes, capabilities.

use std::fmt;
use std::num::NonZeroU32;

/// A message number in the maildrop (RFC 1939 §3: 1-based, stable within a session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgNum(NonZeroU32);

impl MsgNum {
    pub fn new(n: u32) -> Option<MsgNum> {
        NonZeroU32::new(n).map(MsgNum)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// Parses a decimal message number with checked arithmetic; rejects 0, signs and overflow.
    pub fn parse(s: &[u8]) -> Option<MsgNum> {
        parse_u32(s).and_then(MsgNum::new)
    }
}

impl fmt::Display for MsgNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses 1 to 10 ASCII digits into a `u32`, refusing anything else (no sign, no spaces).
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

/// Parses 1 to 20 ASCII digits into a `u64` with checked arithmetic.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Parses one or more ASCII digits into a `u64`, `u64::MAX` when the number is larger.
pub(crate) fn parse_u64_saturating(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(parse_u64(s).unwrap_or(u64::MAX))
}

/// A unique-id listing value (RFC 1939 §7: 1 to 70 characters in 0x21..=0x7E).
///
/// The character rule matters beyond the RFC: the state journal separates fields with spaces and
/// records with newlines, so a UIDL that passed this check can never break a record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uidl(Box<str>);

/// Longest UIDL RFC 1939 §7 allows.
pub const MAX_UIDL_LEN: usize = 70;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUidl {
    #[error("empty unique-id")]
    Empty,
    #[error("unique-id longer than {MAX_UIDL_LEN} characters ({0})")]
    TooLong(usize),
    #[error("unique-id contains the byte 0x{0:02x}, outside 0x21-0x7e")]
    BadByte(u8),
}

impl Uidl {
    pub fn parse(s: &[u8]) -> Result<Uidl, InvalidUidl> {
        Uidl::check(s)?;
        // Every byte is printable ASCII, so this cannot fail.
        let s = std::str::from_utf8(s).map_err(|_| InvalidUidl::BadByte(0x80))?;
        Ok(Uidl(s.into()))
    }

    /// Whether `s` is a unique-id [`Uidl::parse`] accepts, without making one: for readers
    /// that keep many of them in a buffer of their own.
    pub fn check(s: &[u8]) -> Result<(), InvalidUidl> {
        if s.is_empty() {
            return Err(InvalidUidl::Empty);
        }
        if s.len() > MAX_UIDL_LEN {
            return Err(InvalidUidl::TooLong(s.len()));
        }
        if let Some(&b) = s.iter().find(|b| !(0x21..=0x7e).contains(*b)) {
            return Err(InvalidUidl::BadByte(b));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uidl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Uidl {
    type Err = InvalidUidl;
    fn from_str(s: &str) -> Result<Uidl, InvalidUidl> {
        Uidl::parse(s.as_bytes())
    }
}

/// Extended response codes (RFC 2449 §8, RFC 3206). Unknown codes are not represented: the RFC says
/// a client must ignore codes it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCode {
    /// `[IN-USE]`: the maildrop is locked by another session; retry later.
    InUse,
    /// `[LOGIN-DELAY]`: logged in too soon after the last login; retry later.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server-side failure.
    SysTemp,
    /// `[SYS/PERM]`: a permanent server-side failure; retrying will not help.
    SysPerm,
    /// `[AUTH]`: the credentials were rejected (RFC 3206).
    Auth,
}

impl ResponseCode {
    fn parse(code: &[u8]) -> Option<ResponseCode> {
        // A code is hierarchical (`SYS/TEMP`); match the whole code case-insensitively.
        let eq = |s: &str| code.eq_ignore_ascii_case(s.as_bytes());
        if eq("IN-USE") {
            Some(ResponseCode::InUse)
        } else if eq("LOGIN-DELAY") {
            Some(ResponseCode::LoginDelay)
        } else if eq("SYS/TEMP") {
            Some(ResponseCode::SysTemp)
        } else if eq("SYS/PERM") {
            Some(ResponseCode::SysPerm)
        } else if eq("AUTH") {
            Some(ResponseCode::Auth)
        } else {
            None
        }
    }

    /// Whether retrying later can help.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ResponseCode::InUse | ResponseCode::LoginDelay | ResponseCode::SysTemp
        )
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseCode::InUse => "IN-USE",
            ResponseCode::LoginDelay => "LOGIN-DELAY",
            ResponseCode::SysTemp => "SYS/TEMP",
            ResponseCode::SysPerm => "SYS/PERM",
            ResponseCode::Auth => "AUTH",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    /// `+OK`
    Ok,
    /// `-ERR`
    Err,
    /// `+ ` (a SASL continuation, RFC 5034 §4)
    Continue,
}

/// One status line: the indicator, an optional known response code and the rest of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    pub code: Option<ResponseCode>,
    /// The text after the indicator (and after the response code, if any), bytes as sent.
    pub text: Vec<u8>,
}

impl Status {
    /// Parses a status line without its line ending. `None` when it starts with neither `+OK`,
    /// `-ERR` nor `+ `.
    pub fn parse(line: &[u8]) -> Option<Status> {
        let (kind, rest) = if let Some(rest) = strip_prefix_ci(line, b"+OK") {
            (StatusKind::Ok, rest)
        } else if let Some(rest) = strip_prefix_ci(line, b"-ERR") {
            (StatusKind::Err, rest)
        } else if line == b"+" {
            (StatusKind::Continue, &line[1..])
        } else if let Some(rest) = line.strip_prefix(b"+ ") {
            return Some(Status {
                kind: StatusKind::Continue,
                code: None,
                text: rest.to_vec(),
            });
        } else {
            return None;
        };
        // The indicator must end the line or be followed by a space ("+OKAY" is not "+OK").
        let rest = match rest.split_first() {
            None => rest,
            Some((b' ', tail)) => tail,
            Some(_) => return None,
        };
        let (code, text) = match rest.strip_prefix(b"[") {
            Some(tail) => match memchr::memchr(b']', tail) {
                Some(end) => {
                    let text = tail[end + 1..]
                        .strip_prefix(b" ")
                        .unwrap_or(&tail[end + 1..]);
                    (ResponseCode::parse(&tail[..end]), text)
                }
                None => (None, rest),
            },
            None => (None, rest),
        };
        Some(Status {
            kind,
            code,
            text: text.to_vec(),
        })
    }

    pub fn is_ok(&self) -> bool {
        self.kind == StatusKind::Ok
    }

    /// The text for messages and logs: lossy UTF-8, control characters replaced, bounded.
    pub fn text_lossy(&self) -> String {
        printable(&self.text, 200)
    }
}

/// Server text made safe for a log line: lossy UTF-8, controls as `?`, at most `max` characters.
pub fn printable(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&line[prefix.len()..])
    } else {
        None
    }
}

/// What a server said in its CAPA answer (RFC 2449 §6). Unknown capabilities are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub top: bool,
    pub uidl: bool,
    pub user: bool,
    pub stls: bool,
    pub pipelining: bool,
    pub resp_codes: bool,
    pub auth_resp_code: bool,
    /// SASL mechanisms, upper-cased.
    pub sasl: Vec<String>,
    /// `LOGIN-DELAY n`: the minimum seconds between logins.
    pub login_delay: Option<u64>,
    /// `EXPIRE n` in days; `Some(None)` is `EXPIRE NEVER`.
    pub expire: Option<Option<u64>>,
    pub implementation: Option<String>,
    /// The lines as the server sent them, made printable, for `popfetch check --connect`: at
    /// most [`MAX_ADVERTISED`] of them, each cut to 200 characters.
    pub advertised: Vec<String>,
}

/// Most CAPA lines kept as sent (a real server sends about a dozen).
pub const MAX_ADVERTISED: usize = 64;

impl Capabilities {
    /// Builds the set from the lines of a CAPA answer (already dot-unstuffed).
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in lines {
            let mut words = line
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|w| !w.is_empty());
            let Some(name) = words.next() else { continue };
            if caps.advertised.len() < MAX_ADVERTISED {
                caps.advertised.push(printable(line.trim_ascii(), 200));
            }
            let name = name.to_ascii_uppercase();
            match name.as_slice() {
                b"TOP" => caps.top = true,
                b"UIDL" => caps.uidl = true,
                b"USER" => caps.user = true,
                b"STLS" => caps.stls = true,
                b"PIPELINING" => caps.pipelining = true,
                b"RESP-CODES" => caps.resp_codes = true,
                b"AUTH-RESP-CODE" => caps.auth_resp_code = true,
                b"SASL" => caps.sasl.extend(
                    words.map(|w| String::from_utf8_lossy(&w.to_ascii_uppercase()).into_owned()),
                ),
                // A number too large for u64 still means "a long time": saturated, so the
                // scheduler caps it instead of ignoring it.
                b"LOGIN-DELAY" => caps.login_delay = words.next().and_then(parse_u64_saturating),
                b"EXPIRE" => {
                    caps.expire = words.next().and_then(|w| {
                        if w.eq_ignore_ascii_case(b"NEVER") {
                            Some(None)
                        } else {
                            parse_u64(w).map(Some)
                        }
                    })
                }
                b"IMPLEMENTATION" => {
                    let rest = line.get(name.len()..).unwrap_or_default();
                    caps.implementation = Some(printable(rest.trim_ascii(), 100));
                }
                _ => {}
            }
        }
        caps
    }

    pub fn has_sasl(&self, mech: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mech))
    }
}
