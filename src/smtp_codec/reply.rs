//! Replies (RFC 5321 §4.2): `CODE SP text` on the last line, `CODE - text` on each one before.

use crate::pop3::printable;

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 allows 512; servers put
/// long texts in replies now and then, so four times that.
pub const MAX_LINE: usize = 2048;
/// Most lines in one reply (an EHLO answer has a dozen or two).
pub const MAX_LINES: usize = 128;

/// What a reply's first digit says (RFC 5321 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: done.
    Positive,
    /// 3xx: go on (354 after DATA).
    Intermediate,
    /// 4xx: not now; the same may succeed later.
    Transient,
    /// 5xx: no, and asking again will not help.
    Permanent,
}

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enhanced(pub u8, pub u16, pub u16);

impl std::fmt::Display for Enhanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Enhanced {
    /// `2.1.5 rest` → the code and `rest`, when the class agrees with the reply's (RFC 3463 §2:
    /// the first digit of both is the same); else nothing, and the text stays whole.
    fn split(text: &str, reply_class: u16) -> Option<(Enhanced, &str)> {
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        let mut parts = word.split('.');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || a.len() != 1
            || !(1..=3).contains(&b.len())
            || !(1..=3).contains(&c.len())
        {
            return None;
        }
        let num = |s: &str| -> Option<u16> {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        let (a, b, c) = (num(a)?, num(b)?, num(c)?);
        if !matches!(a, 2 | 4 | 5) || a != reply_class {
            return None;
        }
        Some((Enhanced(a as u8, b, c), rest))
    }
}

/// One whole reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// From the first line, when the server sends them (ENHANCEDSTATUSCODES).
    pub enhanced: Option<Enhanced>,
    /// The text of each line, the enhanced code taken off the first.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn class(&self) -> Class {
        match self.code / 100 {
            2 => Class::Positive,
            3 => Class::Intermediate,
            4 => Class::Transient,
            _ => Class::Permanent,
        }
    }

    /// `550 5.1.1 no such user`: the reply as an error message says it, on one line.
    pub fn summary(&self) -> String {
        let joined = self.lines.join(" ");
        let text = crate::text::reason(&joined);
        match self.enhanced {
            Some(e) => format!("{} {e} {text}", self.code),
            None => format!("{} {text}", self.code),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("a reply line longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("a reply of more than {MAX_LINES} lines")]
    TooManyLines,
    #[error("a bad reply line {0:?}")]
    BadLine(String),
    #[error("a reply line with code {got} in a reply of code {first}")]
    CodeChanged { first: u16, got: u16 },
}

/// Bytes in, [`Reply`]s out. "Need more bytes" is `Ok(None)`; an error leaves the stream
/// unusable (the connection is dropped, never resynchronised).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the search for the next line end resumes.
    scanned: usize,
    code: Option<u16>,
    enhanced: Option<Enhanced>,
    lines: Vec<String>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received and not yet part of a reply (after STARTTLS's 220 there must be none).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let Some(i) =
                memchr::memchr(b'\n', &self.buf[self.scanned..]).map(|i| i + self.scanned)
            else {
                if self.buf.len() > MAX_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                self.scanned = self.buf.len();
                return Ok(None);
            };
            if i + 1 > MAX_LINE {
                return Err(ReplyError::LineTooLong);
            }
            let raw: Vec<u8> = self.buf.drain(..=i).collect();
            self.scanned = 0;
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let bad = || ReplyError::BadLine(printable(line, 100));
            let code = line
                .get(..3)
                .filter(|c| c.iter().all(u8::is_ascii_digit))
                .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(bad)?;
            let last = match line.get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => return Err(bad()),
            };
            let text = String::from_utf8_lossy(line.get(4..).unwrap_or(b""));
            match self.code {
                None => {
                    self.code = Some(code);
                    match Enhanced::split(&text, code / 100) {
                        Some((e, rest)) => {
                            self.enhanced = Some(e);
                            self.lines.push(rest.to_string());
                        }
                        None => self.lines.push(text.into_owned()),
                    }
                }
                Some(first) if first != code => {
                    return Err(ReplyError::CodeChanged { first, got: code });
                }
                Some(_) => {
                    if self.lines.len() >= MAX_LINES {
                        return Err(ReplyError::TooManyLines);
                    }
                    self.lines.push(text.into_owned());
                }
            }
            if last {
                self.code = None;
                return Ok(Some(Reply {
                    code,
                    enhanced: self.enhanced.take(),
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
    }
}

/// What a server said it supports in its LHLO or EHLO answer (RFC 5321 §4.1.1.1: one keyword
/// per line after the first, parameters after it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub enhanced_status_codes: bool,
    pub starttls: bool,
    /// SIZE's limit, when it gave one other than 0 (no limit).
    pub size: Option<u64>,
}

impl Extensions {
    pub fn from_reply(r: &Reply) -> Extensions {
        let mut x = Extensions::default();
        for line in r.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(key) = words.next() else { continue };
            match key.to_ascii_uppercase().as_str() {
                "PIPELINING" => x.pipelining = true,
                "8BITMIME" => x.eight_bit_mime = true,
                "SMTPUTF8" => x.smtputf8 = true,
                "ENHANCEDSTATUSCODES" => x.enhanced_status_codes = true,
                "STARTTLS" => x.starttls = true,
                "SIZE" => x.size = words.next().and_then(|n| n.parse().ok()).filter(|&n| n > 0),
                _ => {}
            }
        }
        x
    }
}
