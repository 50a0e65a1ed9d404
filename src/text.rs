//! Plain-text formatting shared by the command line, the poll and its progress lines, and the
//! hex that digests are written in (APOP, CRAM-MD5, journal and cache keys), and `host:port`.

/// An error and its sources, `: `-separated, each said once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// A host as it stands before `:port`: an IPv6 address in brackets (RFC 3986 §3.2.2), so that
/// `::1` on port 995 reads `[::1]:995`, not `::1:995`.
pub fn host_literal(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// `host:port` for errors, logs and headers, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    format!("{}:{port}", host_literal(host))
}

/// What a peer gave as the reason of a refusal, or `(no reason given)`: a bare `-ERR` or a
/// reply code alone must not read as a sentence cut short.
pub fn reason(text: &str) -> &str {
    match text.trim() {
        "" => "(no reason given)",
        t => t,
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests;
