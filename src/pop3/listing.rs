//! The lines of the STAT, UIDL and LIST answers (RFC 1939 §5, §7), parsed without I/O. Each
//! function takes one line as sent (without its ending) and never panics, whatever the bytes.

use std::fmt;

use super::{InvalidUidl, MsgNum, Uidl, parse_u64};

/// Why a listing line is not what RFC 1939 describes. Its text goes into the protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadLine {
    /// The line does not begin with a message number and a space.
    NoNumber,
    /// The unique-id of a UIDL line is malformed.
    Uidl(InvalidUidl),
    /// The size of a LIST line is missing or not a number.
    NoSize,
    /// The STAT answer does not begin with a message count.
    NoCount,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadLine::NoNumber => f.write_str("no message number"),
            BadLine::Uidl(e) => write!(f, "{e}"),
            BadLine::NoSize => f.write_str("no size"),
            BadLine::NoCount => f.write_str("no message count"),
        }
    }
}

/// Splits "N rest" into a message number and the rest, trimmed.
fn split_num(line: &[u8]) -> Result<(MsgNum, &[u8]), BadLine> {
    let sp = memchr::memchr(b' ', line).ok_or(BadLine::NoNumber)?;
    let n = MsgNum::parse(&line[..sp]).ok_or(BadLine::NoNumber)?;
    Ok((n, line[sp + 1..].trim_ascii()))
}

/// A line of the unique-id listing: `msg uid`.
pub fn uidl_line(line: &[u8]) -> Result<(MsgNum, Uidl), BadLine> {
    let (n, rest) = split_num(line)?;
    let uidl = Uidl::parse(rest).map_err(BadLine::Uidl)?;
    Ok((n, uidl))
}

/// A line of the scan listing: `msg size`, and whatever a server adds after a space.
pub fn list_line(line: &[u8]) -> Result<(MsgNum, u64), BadLine> {
    let (n, rest) = split_num(line)?;
    let size_field = rest.split(|&b| b == b' ').next().unwrap_or_default();
    let size = parse_u64(size_field).ok_or(BadLine::NoSize)?;
    Ok((n, size))
}

/// The message count of a STAT answer's text, `nn mm` (only the count matters here).
pub fn stat_count(text: &[u8]) -> Result<u64, BadLine> {
    text.split(|&b| b == b' ')
        .next()
        .and_then(parse_u64)
        .ok_or(BadLine::NoCount)
}
