//! One line of the journal, both ways: [`Record::encode`] writes it, [`Record::parse`] reads it.
//! The file format lives here and nowhere else; [`super`] decides what the records mean.
//!
//! A line is a kind letter and fields separated by single spaces, without its newline. Every
//! field is free of spaces and newlines: a [`Uidl`] by its own rule (RFC 1939 §7), a backend key
//! and a fingerprint by the callers' (checked in debug builds), a Message-ID digest by being
//! alphanumeric. The one line without a space is a bare UIDL (format 4 on): delivered at the
//! time of the `T` line before it. A compaction writes the live deliveries that way, grouped by
//! time, one line of the UIDL's length plus one each, as small as a UIDL list can be (mpop's
//! UIDL file is that list, undated); appended deliveries stay `D` lines.

use crate::pop3::Uidl;

/// The first word of the header line, `popfetch-uidls <format>`.
pub const MAGIC: &str = "popfetch-uidls";

/// The header line of a journal of `format`, with its newline.
pub fn header(format: u32) -> String {
    format!("{MAGIC} {format}\n")
}

/// The format a header line (without its newline) names, or `None` when it is not one.
pub fn parse_header(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix(MAGIC)?
        .trim()
        .parse()
        .ok()
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `P <uidl> <key>`: delivery under way; `key` lets the backend tell whether it finished.
    Pending { uidl: Uidl, key: String },
    /// `D <uidl> <at>`: delivered at `at` (Unix seconds). Format 1 wrote `D <uidl>`, undated:
    /// `at` is `None` there and only there.
    Delivered { uidl: Uidl, at: Option<u64> },
    /// `F <uidl>`: forget everything about `uidl`.
    Forget(Uidl),
    /// `H <uidl>`: held after a permanent delivery failure.
    Held(Uidl),
    /// `C <fingerprint>`: the account config the held records were made under.
    Config(String),
    /// `O <uidl>`: over `max_size`, reported once.
    Oversize(Uidl),
    /// `M <at> <size> <digest>`: a message with this Message-ID digest and LIST size was
    /// delivered at `at`.
    MessageId { at: u64, size: u64, digest: String },
    /// `R <uidl> <recipient>`: one recipient of a message not yet delivered to all has it
    /// (an LMTP 2xx after the data); a retry leaves it out. Format 3 on.
    Reached { uidl: Uidl, rcpt: String },
    /// `T <at>`: the bare UIDLs after this line, up to the next `T`, were delivered at `at`.
    /// Format 4 on.
    Time(u64),
    /// `<uidl>`, the whole line: delivered at the time of the last `T` line. Format 4 on.
    Kept(Uidl),
}

impl Record {
    /// The record's line, without its newline.
    pub fn encode(&self) -> String {
        match self {
            Record::Pending { uidl, key } => {
                debug_assert!(is_word(key), "bad key {key:?}");
                format!("P {uidl} {key}")
            }
            Record::Delivered { uidl, at: Some(at) } => format!("D {uidl} {at}"),
            Record::Delivered { uidl, at: None } => format!("D {uidl}"),
            Record::Forget(uidl) => format!("F {uidl}"),
            Record::Held(uidl) => format!("H {uidl}"),
            Record::Config(fp) => {
                debug_assert!(is_word(fp), "bad fingerprint {fp:?}");
                format!("C {fp}")
            }
            Record::Oversize(uidl) => format!("O {uidl}"),
            Record::MessageId { at, size, digest } => {
                debug_assert!(is_digest(digest.as_bytes()), "bad digest {digest:?}");
                format!("M {at} {size} {digest}")
            }
            Record::Reached { uidl, rcpt } => {
                debug_assert!(is_word(rcpt), "bad recipient {rcpt:?}");
                format!("R {uidl} {rcpt}")
            }
            Record::Time(at) => format!("T {at}"),
            Record::Kept(uidl) => uidl.to_string(),
        }
    }

    /// Reads one line (without its newline) of a journal of `format`. The error says what is
    /// wrong with it, for [`super::StateError::Corrupt`].
    pub fn parse(line: &[u8], format: u32) -> Result<Record, String> {
        if let Some(uidl) = parse_kept(line, format) {
            let uidl = Uidl::parse(uidl).map_err(|e| e.to_string())?;
            return Ok(Record::Kept(uidl));
        }
        let mut f = line.split(|&b| b == b' ');
        let kind = f.next().unwrap_or_default();
        let arg = f.next().ok_or("record without an argument")?;
        match kind {
            // Words after the fingerprint have always been ignored.
            b"C" => {
                let fp = std::str::from_utf8(arg).map_err(|_| "bad fingerprint")?;
                return Ok(Record::Config(fp.to_string()));
            }
            b"M" => {
                let at = number(Some(arg))?;
                let size = number(f.next())?;
                let digest = f
                    .next()
                    .filter(|d| is_digest(d))
                    .ok_or("bad Message-ID digest")?;
                if f.next().is_some() {
                    return Err("unknown record".into());
                }
                let digest = String::from_utf8_lossy(digest).into_owned();
                return Ok(Record::MessageId { at, size, digest });
            }
            b"T" if format >= 4 => {
                if f.next().is_some() {
                    return Err("unknown record".into());
                }
                return Ok(Record::Time(number(Some(arg))?));
            }
            _ => {}
        }
        let uidl = Uidl::parse(arg).map_err(|e| e.to_string())?;
        Ok(match (kind, f.next(), f.next()) {
            (b"D", None, None) if format < 2 => Record::Delivered { uidl, at: None },
            (b"D", Some(at), None) if format >= 2 => Record::Delivered {
                uidl,
                at: Some(number(Some(at))?),
            },
            (b"O", None, None) => Record::Oversize(uidl),
            (b"P", Some(key), None) if !key.is_empty() => {
                let key = std::str::from_utf8(key).map_err(|_| "bad key")?;
                Record::Pending {
                    uidl,
                    key: key.to_string(),
                }
            }
            (b"R", Some(rcpt), None) if format >= 3 && !rcpt.is_empty() => {
                let rcpt = std::str::from_utf8(rcpt).map_err(|_| "bad recipient")?;
                Record::Reached {
                    uidl,
                    rcpt: rcpt.to_string(),
                }
            }
            (b"H", None, None) => Record::Held(uidl),
            (b"F", None, None) => Record::Forget(uidl),
            _ => return Err("unknown record".into()),
        })
    }
}

/// A `D <uidl> <time>` line of a journal of `format` 2 or later, read without allocating: the
/// UIDL's bytes (checked as [`Uidl::parse`] checks them) and the time. `None` for any other
/// line, which [`Record::parse`] then reads or refuses. Nearly every line of a big kept
/// mailbox's journal is one of these.
pub fn parse_delivered(line: &[u8], format: u32) -> Option<(&[u8], u64)> {
    let rest = line.strip_prefix(b"D ").filter(|_| format >= 2)?;
    let space = memchr::memchr(b' ', rest)?;
    let (uidl, at) = (&rest[..space], &rest[space + 1..]);
    Uidl::check(uidl).ok()?;
    if at.is_empty() || at.len() > 19 || !at.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let at = at.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some((uidl, at))
}

/// A bare UIDL line (format 4 on; delivered at the last `T` line's time), read without
/// allocating: the UIDL's bytes, checked as [`Uidl::parse`] checks them. `None` for any other
/// line. Nearly every line of a compacted journal is one of these.
pub fn parse_kept(line: &[u8], format: u32) -> Option<&[u8]> {
    (format >= 4 && Uidl::check(line).is_ok()).then_some(line)
}

fn number(field: Option<&[u8]>) -> Result<u64, String> {
    field
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| "bad number".into())
}

/// A field [`Record::parse`] reads back as it was: not empty, no space, no newline.
pub fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.contains([' ', '\n'])
}

fn is_digest(d: &[u8]) -> bool {
    !d.is_empty() && d.iter().all(u8::is_ascii_alphanumeric)
}
