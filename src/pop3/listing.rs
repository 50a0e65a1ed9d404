//! The lines of the STAT, UIDL and LIST answers (RFC 1939 §5, §7), parsed without I/O, and what
//! a listing may cost: its [`Budget`] of octets and lines, set from STAT's count, and the
//! [`NumSet`] of message numbers it named. Each parser takes one line as sent (without its
//! ending) and never panics, whatever the bytes.

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

/// Octets the CAPA answer may take. CAPA is read before STLS and before login, so anyone on
/// the path (or any server at all) can send it: it gets a small fixed budget. Real servers
/// answer with well under 1 KiB.
pub const CAPA_BUDGET: u64 = 64 * 1024;

/// Octets a UIDL or LIST listing may take per message STAT announced: a message number (10
/// digits), a space, a unique-id of at most 70 characters (RFC 1939 §7) or a size and whatever
/// a server adds after it, and CRLF, with room to spare.
pub const LISTING_OCTETS_PER_MESSAGE: u64 = 128;

/// Octets and lines a listing may take beyond what STAT announced: mail that arrived in
/// between is not listed in the same session (RFC 1939 §5), but a sloppy server gets slack.
pub const LISTING_SLACK_OCTETS: u64 = 64 * 1024;
pub const LISTING_SLACK_LINES: u64 = 1024;

/// The budget of a UIDL or LIST listing when STAT announced `count` messages: octets and
/// lines. A real mailbox of a million messages fits; a listing far beyond what STAT said is
/// cut off after a few lines, before it costs memory.
pub fn listing_budget(count: u64) -> (u64, u64) {
    (
        count
            .saturating_mul(LISTING_OCTETS_PER_MESSAGE)
            .saturating_add(LISTING_SLACK_OCTETS),
        count.saturating_add(LISTING_SLACK_LINES),
    )
}

/// What a listing may still take, in octets and lines; each line handed to [`Budget::take`]
/// counts as sent, its ending as a CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub octets: u64,
    pub lines: u64,
    used: u64,
    count: u64,
}

impl Budget {
    pub fn new((octets, lines): (u64, u64)) -> Budget {
        Budget {
            octets,
            lines,
            used: 0,
            count: 0,
        }
    }

    /// Counts `line`; `false` once the listing is past its octets or its lines.
    pub fn take(&mut self, line: &[u8]) -> bool {
        self.used = self.used.saturating_add(line.len() as u64 + 2);
        self.count += 1;
        self.used <= self.octets && self.count <= self.lines
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

/// Most messages a mailbox may hold: STAT announcing more is refused. It bounds the one
/// structure a listing needs whatever its length, the `NumSet` of its message numbers (8 MiB
/// at most); a real mailbox is far smaller (a million messages take 125 KiB).
pub const MAX_MESSAGES: u64 = 1 << 26;

/// The message numbers a listing named, one bit each. In a fresh session the numbers are 1 to
/// STAT's count (RFC 1939 §4); a sloppy server gets [`LISTING_SLACK_LINES`] more. The bits are
/// allocated zeroed at once, so only the pages the listing touches take memory.
pub struct NumSet {
    bits: Vec<u64>,
    max: u64,
}

impl NumSet {
    pub fn new(count: u64) -> NumSet {
        let max = count.saturating_add(LISTING_SLACK_LINES);
        // STAT's count is at most MAX_MESSAGES: a few MiB at most.
        let words = usize::try_from(max / 64 + 1).unwrap_or(0);
        NumSet {
            bits: vec![0; words],
            max,
        }
    }

    /// Notes `n`; why not, when it was noted before or lies beyond the count.
    pub fn insert(&mut self, n: MsgNum) -> Result<(), String> {
        let v = u64::from(n.get());
        if v > self.max {
            return Err(format!(
                "message {n} lies beyond STAT's count of {}",
                self.max - LISTING_SLACK_LINES
            ));
        }
        let (word, bit) = (usize::try_from(v / 64).unwrap_or(usize::MAX), v % 64);
        let Some(w) = self.bits.get_mut(word) else {
            return Err(format!("message {n} is out of range"));
        };
        if *w & (1 << bit) != 0 {
            return Err(format!("message {n} is listed twice"));
        }
        *w |= 1 << bit;
        Ok(())
    }

    /// Bytes the set takes.
    pub fn size(&self) -> usize {
        self.bits.len() * 8
    }
}
