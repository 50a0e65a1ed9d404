//! The one kind of URL popfetch sends a secret to, parsed once: the config checks the OAuth2
//! endpoints with it, `oauth2` connects with it.

/// Why a URL was refused: what is wrong, and the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub String);

/// An `https://host[:port]/path?query` URL, the only kind popfetch sends a secret to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, BadUrl> {
        let bad = |why: &str| BadUrl(format!("{why}: {s:?}"));
        let rest = s
            .strip_prefix("https://")
            .ok_or_else(|| bad("must be an https:// URL"))?;
        if rest.contains(|c: char| c.is_ascii_whitespace() || c.is_control() || !c.is_ascii()) {
            return Err(bad("must be plain ASCII without spaces"));
        }
        let (authority, target) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let target = target.split('#').next().unwrap_or("/");
        let target = if target.starts_with('/') {
            target.to_string()
        } else {
            format!("/{target}")
        };
        if authority.contains('@') {
            return Err(bad("must not hold a user name or password"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("has a bad port"))?,
        };
        Ok(Url {
            host: host.to_string(),
            port,
            target,
        })
    }
}
