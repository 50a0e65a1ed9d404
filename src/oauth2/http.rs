//! A small HTTP/1.1 client for the token endpoint: one `POST` of a form per connection, over TLS
//! only, with the certificate verified. Response framing by `Content-Length`, chunked transfer
//! coding or the end of the connection; headers and body capped, the whole exchange under one
//! deadline. [`ResponseParser`] is sans-IO so it can be tested in any split.
//!
//! No crate: the HTTP clients on crates.io bring a second TLS stack or a large dependency tree
//! (hyper, h2, tower) for what is one request every hour. This is about 300 lines over [`crate::net`],
//! which POP3 and the SMTP relay use too.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net::{NetError, Peer};
pub use crate::url::Url;

/// Most header bytes accepted (status line and headers together).
pub const MAX_HEADER: usize = 16 * 1024;
/// Most body bytes accepted. Token answers are a few kilobytes (Microsoft's JWTs about 3 KiB).
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Url(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("no complete answer from {host} within {}", humantime::format_duration(*after))]
    Timeout { host: String, after: Duration },
    #[error("reading the answer from {host}: {source}")]
    Io {
        host: String,
        source: std::io::Error,
    },
    #[error("bad HTTP answer: {0}")]
    Malformed(String),
}

impl From<crate::url::BadUrl> for HttpError {
    fn from(e: crate::url::BadUrl) -> HttpError {
        HttpError::Url(e.0)
    }
}

impl HttpError {
    /// Whether trying again later may help (the network, not the request, failed).
    pub fn is_transient(&self) -> bool {
        !matches!(self, HttpError::Url(_))
    }
}

impl Url {
    /// The `Host` header value (RFC 9110 §7.2).
    fn host_header(&self) -> String {
        if self.port == 443 {
            crate::text::host_literal(&self.host).into_owned()
        } else {
            crate::text::host_port(&self.host, self.port)
        }
    }
}

/// `application/x-www-form-urlencoded` (RFC 6749 appendix B, WHATWG URL §5.2).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes all but the unreserved characters; a space becomes `+`.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes one form or query component (`+` is a space); `None` when it is not UTF-8 or has a
/// broken escape.
pub fn decode_component(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The `key=value` pairs of a query string, decoded; broken pairs are skipped.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode_component(k)?, decode_component(v)?))
        })
        .collect()
}

/// An answer: its status code and its (de-chunked) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `POST`s `form` to `url` and returns the answer, whatever its status. Trusts the system's CAs
/// and those in `ca_file`; the whole exchange must end within `timeout`.
pub async fn post_form(
    url: &Url,
    form: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: popfetch/{}\r\nAccept: application/json\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{form}",
        url.target,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        form.len(),
    );
    match tokio::time::timeout(timeout, exchange(url, request.as_bytes(), ca_file, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout {
            host: url.host.clone(),
            after: timeout,
        }),
    }
}

async fn exchange(
    url: &Url,
    request: &[u8],
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let peer = Peer {
        host: &url.host,
        port: url.port,
        ca_file,
        verify: true,
        pins: &[],
        min_version: crate::net::TlsVersion::default(),
        client: None,
        timeout,
    };
    let net = |e: NetError| match e {
        NetError::Connect { addr, source } => HttpError::Connect { addr, source },
        NetError::Timeout { .. } => HttpError::Timeout {
            host: url.host.clone(),
            after: timeout,
        },
        e => HttpError::Tls(e.to_string()),
    };
    let tcp = peer.connect().await.map_err(net)?;
    let mut tls = peer.tls(tcp).await.map_err(net)?;
    let io = |source| HttpError::Io {
        host: url.host.clone(),
        source,
    };
    tls.write_all(request).await.map_err(io)?;
    tls.flush().await.map_err(io)?;
    let mut parser = ResponseParser::default();
    let mut buf = Vec::with_capacity(4096);
    loop {
        let n = tls.read_buf(&mut buf).await;
        let eof = match n {
            Ok(0) => true,
            Ok(_) => false,
            // Many servers close without TLS close_notify; the framing says whether the
            // answer was complete.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => true,
            Err(e) => return Err(io(e)),
        };
        if let Some(r) = parser.parse(&buf, eof)? {
            return Ok(r);
        }
        if eof {
            return Err(HttpError::Malformed(
                "the connection ended in the middle of the answer".into(),
            ));
        }
    }
}

/// Turns the bytes received so far into a [`Response`] once it is complete. Feed it the whole
/// buffer each time (it remembers nothing but where the headers ended).
#[derive(Debug, Default)]
pub struct ResponseParser {
    head: Option<Head>,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    status: u16,
    /// Where the body starts in the buffer.
    body_start: usize,
    framing: Framing,
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl ResponseParser {
    /// `Ok(None)`: need more bytes. `eof`: no more will come.
    pub fn parse(&mut self, buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
        let head = match self.head {
            Some(h) => h,
            None => match parse_head(buf)? {
                Some(h) => {
                    self.head = Some(h);
                    h
                }
                None => return Ok(None),
            },
        };
        let body = &buf[head.body_start..];
        let done = |body: Vec<u8>| {
            Ok(Some(Response {
                status: head.status,
                body,
            }))
        };
        match head.framing {
            Framing::Length(n) => {
                if body.len() >= n {
                    done(body[..n].to_vec())
                } else {
                    Ok(None)
                }
            }
            Framing::UntilClose => {
                if body.len() > MAX_BODY {
                    Err(too_large())
                } else if eof {
                    done(body.to_vec())
                } else {
                    Ok(None)
                }
            }
            Framing::Chunked => match dechunk(body)? {
                Some(b) => done(b),
                None => Ok(None),
            },
        }
    }
}

fn too_large() -> HttpError {
    HttpError::Malformed(format!("the body is larger than {} KiB", MAX_BODY / 1024))
}

/// The status line and headers, skipping interim (1xx) answers; `None` until complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, HttpError> {
    let mut start = 0;
    loop {
        let rest = &buf[start..];
        let Some(end) = memchr::memmem::find(rest, b"\r\n\r\n") else {
            if rest.len() > MAX_HEADER {
                return Err(HttpError::Malformed(format!(
                    "headers longer than {} KiB",
                    MAX_HEADER / 1024
                )));
            }
            return Ok(None);
        };
        if end > MAX_HEADER {
            return Err(HttpError::Malformed(format!(
                "headers longer than {} KiB",
                MAX_HEADER / 1024
            )));
        }
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| HttpError::Malformed("headers are not text".into()))?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        // RFC 9112 §4: HTTP-version SP 3DIGIT SP [reason-phrase].
        let mut parts = status_line.splitn(3, ' ');
        let status = parts
            .next()
            .filter(|v| matches!(*v, "HTTP/1.0" | "HTTP/1.1"))
            .and(parts.next())
            .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| {
                HttpError::Malformed(format!(
                    "not an HTTP/1.x status line: {:?}",
                    clip(status_line)
                ))
            })?;
        let body_start = start + end + 4;
        if (100..200).contains(&status) {
            start = body_start;
            continue;
        }
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line.split_once(':').ok_or_else(|| {
                HttpError::Malformed(format!("not a header line: {:?}", clip(line)))
            })?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                let n: usize = value.parse().map_err(|_| {
                    HttpError::Malformed(format!("bad Content-Length: {:?}", clip(value)))
                })?;
                if length.is_some_and(|l| l != n) {
                    return Err(HttpError::Malformed("two different Content-Lengths".into()));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // RFC 9112 §6.1: chunked must be the last coding; nothing else is asked for.
                if value.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(HttpError::Malformed(format!(
                        "unsupported Transfer-Encoding {:?}",
                        clip(value)
                    )));
                }
            }
        }
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length.
        let framing = match (chunked, length) {
            (true, _) => Framing::Chunked,
            (false, Some(n)) if n > MAX_BODY => return Err(too_large()),
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        };
        return Ok(Some(Head {
            status,
            body_start,
            framing,
        }));
    }
}

/// The body of a complete chunked message (RFC 9112 §7.1), or `None` until it is complete.
/// Chunk extensions and trailers are skipped.
fn dechunk(mut b: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = memchr::memmem::find(b, b"\r\n") else {
            if b.len() > 1024 {
                return Err(HttpError::Malformed("chunk size line too long".into()));
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&b[..eol])
            .map_err(|_| HttpError::Malformed("bad chunk size line".into()))?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        if hex.is_empty() || hex.len() > 8 {
            return Err(HttpError::Malformed(format!(
                "bad chunk size {:?}",
                clip(line)
            )));
        }
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| HttpError::Malformed(format!("bad chunk size {:?}", clip(line))))?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailer fields up to an empty line.
            loop {
                let Some(eol) = memchr::memmem::find(b, b"\r\n") else {
                    if b.len() > MAX_HEADER {
                        return Err(HttpError::Malformed("trailer too long".into()));
                    }
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some(out));
                }
                b = &b[eol + 2..];
            }
        }
        if out.len() + size > MAX_BODY {
            return Err(too_large());
        }
        if b.len() < size + 2 {
            return Ok(None);
        }
        if &b[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// At most 60 characters of untrusted text, control characters replaced, for error messages.
pub fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(60)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}
