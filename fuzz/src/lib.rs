//! Helpers shared by the fuzz targets: the input "script" line, chunked feeding, and the encoders
//! the targets use to build wire bytes (a status-line encoder and a server-side dot-stuffer).
//!
//! Every target reads its input as one script line, a `\n`, then the payload. The script is plain
//! text so the seed corpora stay readable (`SLB 1,7,64` then a real POP3 answer), and every byte
//! sequence is still a valid input, so libFuzzer may mutate the script as freely as the payload.

use popfetch::pop3::{Expect, Status, StatusKind};

/// Most answers one input may announce; more adds nothing but run time.
pub const MAX_EXPECTS: usize = 64;
/// Largest chunk a script may ask for; larger numbers are clamped.
pub const MAX_CHUNK: usize = 1 << 16;

/// Splits an input into its script line and its payload. Without a `\n`, all of it is script.
pub fn split_script(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// The expected answer shapes, one per byte: `S`, `L`, `B` (any case) for Single, Lines, Body;
/// any other byte picks a shape by its value, so no mutation is wasted.
pub fn shapes(word: &[u8]) -> Vec<Expect> {
    word.iter()
        .take(MAX_EXPECTS)
        .map(|&b| match b.to_ascii_uppercase() {
            b'S' => Expect::Single,
            b'L' => Expect::Lines,
            b'B' => Expect::Body,
            _ => [Expect::Single, Expect::Lines, Expect::Body][usize::from(b % 3)],
        })
        .collect()
}

/// Chunk sizes: the decimal numbers in `text`, separated by anything else; 0 counts as 1, sizes
/// are capped at [`MAX_CHUNK`]. No number means one chunk holding everything.
pub fn chunk_sizes(text: &[u8]) -> Vec<usize> {
    text.split(|b| !b.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.iter()
                .fold(0usize, |n, &d| {
                    n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
                })
                .clamp(1, MAX_CHUNK)
        })
        .collect()
}

/// Splits `payload` into consecutive pieces whose sizes cycle through `sizes`.
pub fn chunks<'a>(payload: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![payload];
    }
    let mut out = Vec::new();
    let mut rest = payload;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
        i += 1;
    }
    out
}

/// Encodes a status as a server would send it, without the line ending, such that
/// `Status::parse` gives the same status back.
///
/// One case needs care: a status without a known code whose text itself begins with a bracketed
/// word (the server sent `-ERR [UNKNOWN] [AUTH] x`: the unknown code is dropped, the text is
/// `[AUTH] x`). Written plainly that text would be read as a code, so an empty code `[]`, which
/// is read as "no code", goes first. It adds no byte over what the server sent.
pub fn encode_status(s: &Status) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.text.len() + 16);
    match s.kind {
        StatusKind::Continue => {
            // RFC 5034 §4: "+ " and the challenge; the decoder never reads a code here.
            out.extend_from_slice(b"+ ");
            out.extend_from_slice(&s.text);
            return out;
        }
        StatusKind::Ok => out.extend_from_slice(b"+OK"),
        StatusKind::Err => out.extend_from_slice(b"-ERR"),
    }
    match s.code {
        Some(code) => {
            out.extend_from_slice(b" [");
            out.extend_from_slice(code.to_string().as_bytes());
            out.push(b']');
            if !s.text.is_empty() {
                out.push(b' ');
                out.extend_from_slice(&s.text);
            }
        }
        None if s.text.is_empty() => {}
        None => {
            out.push(b' ');
            if s.text.starts_with(b"[") && s.text.contains(&b']') {
                out.extend_from_slice(b"[]");
            }
            out.extend_from_slice(&s.text);
        }
    }
    out
}

/// Dot-stuffs `body` (lines ending in `\n`, no `\r`) as a server puts a message on the wire
/// (RFC 1939 §3): CRLF line ends, a leading '.' doubled, the ".\r\n" terminator.
pub fn stuff(body: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(body.len() + body.len() / 8 + 8);
    for line in body.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if content.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(content);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

/// A body as the decoder must give it back: no `\r`, and a final `\n` unless empty.
pub fn normalise_body(raw: &[u8]) -> Vec<u8> {
    let mut body: Vec<u8> = raw.iter().copied().filter(|&b| b != b'\r').collect();
    if body.last().is_some_and(|&b| b != b'\n') {
        body.push(b'\n');
    }
    body
}
