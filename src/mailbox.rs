//! The mailbox an account polls (user, host, port): the key of its state and its lock, and the
//! identity the config checks so that no two accounts poll one mailbox.

/// The mailbox an account polls: the key of its state and its lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    host: String,
    port: u16,
    user: String,
}

/// Longest file stem made of the mailbox itself; a longer one is replaced by a digest.
const MAX_STEM: usize = 160;

impl Mailbox {
    /// Host names are compared without case; user names with it (RFC 1939 leaves them to the
    /// server).
    pub fn new(host: &str, port: u16, user: &str) -> Mailbox {
        Mailbox {
            host: host.to_ascii_lowercase(),
            port,
            user: user.to_string(),
        }
    }

    /// The name of its files in the state directory: `USER@HOST:PORT`, every byte outside
    /// `[A-Za-z0-9._-]` written as `%XX` (so it never equals an account name, which cannot hold
    /// `@`), or `mailbox-DIGEST` when that would be too long.
    pub fn file_stem(&self) -> String {
        fn enc(s: &str, out: &mut String) {
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        let mut stem = String::new();
        enc(&self.user, &mut stem);
        stem.push('@');
        enc(&self.host, &mut stem);
        stem.push_str(&format!(":{}", self.port));
        if stem.len() <= MAX_STEM {
            return stem;
        }
        let key = format!("{}\n{}\n{}", self.host, self.port, self.user);
        let digest = openssl::sha::sha256(key.as_bytes());
        format!("mailbox-{}", crate::text::hex(&digest[..16]))
    }
}

impl std::fmt::Display for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = crate::text::host_port(&self.host, self.port);
        write!(f, "{}@{at}", self.user)
    }
}
