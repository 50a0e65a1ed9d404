//! The network under every protocol: the TCP connection (bounded by a timeout, with
//! `TCP_NODELAY`) and TLS over it, from the first byte or as the upgrade after POP3's STLS or
//! SMTP's STARTTLS. POP3 ([`crate::session`]), the SMTP relay ([`crate::deliver`]) and the OAuth2
//! token endpoint ([`crate::oauth2`]) all connect through [`Peer`], so one `ca_file` means one
//! thing everywhere:
//!
//! - **One trust rule.** A `ca_file` is the whole trust store: every certificate in it counts,
//!   and the system's bundle is not even read. Without one, OpenSSL's default locations
//!   (`SSL_CERT_FILE`, `SSL_CERT_DIR` override them).
//! - **One TLS stack, one context cache.** OpenSSL through `tokio-openssl`, with one client
//!   context per (CA file and its modification time, verification) for the whole process:
//!   building one over the system bundle costs more CPU than a handshake.
//! - **One cipher policy**: OpenSSL's defaults hardened as the `openssl` crate's connector does.
//! - **Sessions resumed per peer.** Each context keeps the last session ticket each peer (host
//!   and port) gave it, and the next connection to that peer offers it: the daemon's repeated
//!   polls skip sending and checking the certificate chain again (TLS 1.3 still takes its one
//!   round trip; 0-RTT data is never sent). A ticket is used once and only by the context (CA
//!   file, verification) that verified the peer under that name.
//!
//! The SMTP relay's STARTTLS used to go through lettre's own TLS (native-tls), which trusted
//! only the first certificate of a `ca_file`, had its own cipher policy, and built a new
//! context for every relay connection through `SslConnector::builder`, which parses the
//! system's CA bundle only for native-tls to throw that store away. The relay now speaks the
//! clear-text part itself (greeting, EHLO, STARTTLS, 220: a bounded reply reader of sixty
//! lines), upgrades here, and hands lettre the TLS stream, after which lettre sends EHLO again
//! (RFC 3207 §4.2). Driving lettre over a stream upgraded here was chosen over writing the
//! whole SMTP client: lettre keeps the envelope, DATA, dot-stuffing and AUTH. Measured on
//! loopback against the scripted relay (CPU time of the `popfetch fetch` process): a one-message
//! poll over STARTTLS 60 ms before, 16 ms after; 300 messages in one poll 190–260 ms before,
//! 140–230 ms after (the handshake is once a poll, the messages dominate). native-tls and
//! tokio-native-tls left the dependency tree.
//!
//! What is sent over the connection, and in what order, is the protocols' business, never this
//! module's: it knows no POP3, SMTP or HTTP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::ex_data::Index;
use openssl::hash::MessageDigest;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslSession,
    SslSessionCacheMode, SslVerifyMode,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509, X509NameRef, X509VerifyResult};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A TLS stream over `S` (TCP unless a protocol puts a layer between).
pub(crate) type TlsStream<S = TcpStream> = tokio_openssl::SslStream<S>;

/// Where to connect and how to check who answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer<'a> {
    /// A name (sent as SNI, checked against the certificate) or an address.
    pub host: &'a str,
    pub port: u16,
    /// The whole trust store when set; else OpenSSL's default locations.
    pub ca_file: Option<&'a Path>,
    /// Whether the certificate is checked at all (only POP3's `tls_verify = false` turns it off).
    pub verify: bool,
    /// `tls_fingerprint`: when set, the server is known by these instead of by a CA and its
    /// name: its certificate must match one and be within its validity.
    pub pins: &'a [Fingerprint],
    /// The oldest protocol version accepted.
    pub min_version: TlsVersion,
    /// A client certificate (PEM) and its key, for a server that asks for one.
    pub client: Option<(&'a Path, &'a Path)>,
    /// Bounds the TCP connect, and the TLS handshake apart.
    pub timeout: Duration,
}

/// Asks the kernel to acknowledge what arrives on `tcp` at once, instead of holding the ACK
/// back (delayed ACK, 40 ms on Linux) for a reply to carry. A client that pipelines has sent
/// its commands and waits: no reply will come, and a server whose next small answer waits for
/// that ACK (Nagle's algorithm) stalls. The kernel leaves the mode again by itself, so callers
/// ask after every read. Best effort: a failure changes only the timing.
pub(crate) fn quick_ack(tcp: &impl std::os::fd::AsRawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `setsockopt` reads `size_of::<c_int>()` bytes from `one`, which lives across the
    // call, on a descriptor the caller keeps open.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out after {}s waiting for {what}", after.as_secs_f32())]
    Timeout { what: &'static str, after: Duration },
    #[error("TLS with {host} failed: {reason}{}", tls_hint(reason))]
    Tls { host: String, reason: String },
    #[error("cannot use ca_file {path}: {why}")]
    CaFile { path: String, why: String },
    #[error(
        "TLS with {host} failed: its certificate matches no tls_fingerprint; it presented {cert} \
         and {spki} (if the server's certificate changed on purpose, check it with `popfetch \
         check --connect` and add the new one)"
    )]
    Pin {
        host: String,
        cert: Fingerprint,
        spki: Fingerprint,
    },
    #[error("connection error: {0}")]
    Io(std::io::Error),
}

impl NetError {
    /// Whether the handshake failed because the peer answered with something that is not TLS
    /// at all (OpenSSL's record layer could not read it): a clear-text protocol's greeting or
    /// error line where a ServerHello was due.
    pub fn is_not_tls(&self) -> bool {
        const NOT_TLS: [&str; 5] = [
            "wrong version number",
            "packet length too long",
            "record layer failure",
            "unknown protocol",
            "http request",
        ];
        matches!(self, NetError::Tls { reason, .. } if NOT_TLS.iter().any(|r| reason.contains(r)))
    }

    /// Whether trying again later may succeed without a config change: a refused or timed-out
    /// connection or a broken link may; a failed certificate check or an unusable `ca_file`
    /// will not.
    pub fn is_transient(&self) -> bool {
        match self {
            NetError::Connect { .. } | NetError::Timeout { .. } | NetError::Io(_) => true,
            NetError::Tls { .. } | NetError::CaFile { .. } | NetError::Pin { .. } => false,
        }
    }
}

impl Peer<'_> {
    /// The TCP connection, with Nagle's algorithm off: commands are small and each waits for an
    /// answer, so Nagle would hold each back until the delayed ACK of the last answer (about 40
    /// ms an exchange).
    ///
    /// The name is looked up at each connection through the system resolver, whose cache
    /// (systemd-resolved, nscd) keeps an answer as long as its TTL allows: `getaddrinfo` does not
    /// tell the TTL, so a cache of popfetch's own could only guess, and would keep a moved
    /// server's old address. The lookup's time is logged at debug level, with the poll. The
    /// addresses are tried in the resolver's order, all within the one `timeout`.
    pub(crate) async fn connect(&self) -> Result<TcpStream, NetError> {
        let addr = || crate::text::host_port(self.host, self.port);
        let work = async {
            let looked_up = std::time::Instant::now();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((self.host, self.port))
                .await
                .map_err(|source| NetError::Connect {
                    addr: addr(),
                    source,
                })?
                .collect();
            if self.host.parse::<std::net::IpAddr>().is_err() {
                tracing::debug!(
                    host = self.host,
                    addresses = addrs.len(),
                    "resolved {} in {} ms",
                    self.host,
                    looked_up.elapsed().as_millis()
                );
            }
            let mut last = None;
            for a in addrs {
                match TcpStream::connect(a).await {
                    Ok(tcp) => return Ok(tcp),
                    Err(e) => last = Some(e),
                }
            }
            Err(NetError::Connect {
                addr: addr(),
                source: last.unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the name resolves to no address",
                    )
                }),
            })
        };
        let tcp = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(NetError::Timeout {
                    what: "the TCP connection",
                    after: self.timeout,
                });
            }
        };
        tcp.set_nodelay(true).map_err(NetError::Io)?;
        Ok(tcp)
    }

    /// The TLS handshake over `stream` (fresh, or after STLS/STARTTLS), checking the server's
    /// certificate as this peer says.
    pub(crate) async fn tls<S>(&self, stream: S) -> Result<TlsStream<S>, NetError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls_err = |reason: String| NetError::Tls {
            host: self.host.to_string(),
            reason,
        };
        let pinned = !self.pins.is_empty();
        let (ctx, tickets) = context(self.ca_file, self.verify, self.min_version)?;
        let mut ssl = Ssl::new(&ctx).map_err(|e| tls_err(e.to_string()))?;
        if let Some((cert, key)) = self.client {
            client_identity(&mut ssl, cert, key).map_err(tls_err)?;
        }
        if pinned {
            // The pin stands for the chain and the name; the certificate's dates still count.
            ssl.set_verify_callback(SslVerifyMode::PEER, |ok, ctx| {
                ok || ctx.error_depth() > 0
                    || !matches!(
                        ctx.error().as_raw(),
                        X509_V_ERR_CERT_NOT_YET_VALID | X509_V_ERR_CERT_HAS_EXPIRED
                    )
            });
        }
        // A session is resumed only by a connection made on the same terms: a session whose
        // server was taken on a pin (no CA asked) or that showed a client certificate is never
        // resumed by one that asks a CA, or shows another (or no) certificate.
        let peer = format!(
            "{}{}{}",
            crate::text::host_port(self.host, self.port),
            if pinned { " pinned" } else { "" },
            self.client
                .map(|(c, _)| format!(" client={}", c.display()))
                .unwrap_or_default()
        );
        let ticket = tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&peer);
        if let Some(t) = ticket {
            // SAFETY: the session came from this context's new-session callback (each context
            // has its own `Tickets`), as `SSL_set_session` requires.
            unsafe { ssl.set_session(&t) }.map_err(|e| tls_err(e.to_string()))?;
        }
        ssl.set_ex_data(peer_index(), peer);
        // The name (sent as SNI) or the address the certificate must carry.
        match self.host.parse::<IpAddr>() {
            Ok(ip) if self.verify && !pinned => ssl.param_mut().set_ip(ip),
            Ok(_) => Ok(()),
            Err(_) => ssl.set_hostname(self.host).and_then(|()| {
                if self.verify && !pinned {
                    let param = ssl.param_mut();
                    param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
                    param.set_host(self.host)
                } else {
                    Ok(())
                }
            }),
        }
        .map_err(|e| tls_err(e.to_string()))?;
        let mut tls = TlsStream::new(ssl, stream).map_err(|e| tls_err(e.to_string()))?;
        match tokio::time::timeout(self.timeout, Pin::new(&mut tls).connect()).await {
            Ok(Ok(())) => {
                tracing::debug!(
                    host = self.host,
                    "TLS session {}",
                    if tls.ssl().session_reused() {
                        "resumed"
                    } else {
                        "new"
                    }
                );
                if pinned {
                    // A resumed session keeps the certificate it was made with: checked too.
                    self.check_pins(tls)
                } else {
                    Ok(tls)
                }
            }
            Ok(Err(e)) => {
                // Why verification failed is kept apart from the error stack: add it.
                let v = tls.ssl().verify_result();
                Err(tls_err(if v == X509VerifyResult::OK {
                    e.to_string()
                } else {
                    format!("{e} ({})", v.error_string())
                }))
            }
            Err(_) => Err(NetError::Timeout {
                what: "the TLS handshake",
                after: self.timeout,
            }),
        }
    }

    /// `tls` when its certificate matches one of the pins; else the error that shows what the
    /// server presented, before anything is sent over it.
    fn check_pins<S>(&self, tls: TlsStream<S>) -> Result<TlsStream<S>, NetError> {
        let presented = tls
            .ssl()
            .peer_certificate()
            .and_then(|c| Fingerprint::both(&c));
        let Some((cert, spki)) = presented else {
            return Err(NetError::Tls {
                host: self.host.to_string(),
                reason: "the server presented no certificate to check tls_fingerprint against"
                    .into(),
            });
        };
        if self.pins.iter().any(|p| *p == cert || *p == spki) {
            Ok(tls)
        } else {
            Err(NetError::Pin {
                host: self.host.to_string(),
                cert,
                spki,
            })
        }
    }

    /// Whether the port answers a TLS handshake, asked over a connection of its own within
    /// `limit`: tells a port that waits for a ClientHello (implicit TLS) from one whose
    /// clear-text greeting is merely slow. The certificate is not checked, since nothing is
    /// sent over it; a handshake that completes or ends in a TLS alert counts as TLS, anything
    /// else (clear text, a closed connection, silence) does not.
    pub(crate) async fn speaks_tls(&self, limit: Duration) -> bool {
        let peer = Peer {
            ca_file: None,
            verify: false,
            pins: &[],
            min_version: TlsVersion::V1_2,
            client: None,
            timeout: limit,
            ..*self
        };
        let handshake = async {
            let tcp = peer.connect().await?;
            peer.tls(tcp).await
        };
        match tokio::time::timeout(limit, handshake).await {
            Ok(Ok(mut tls)) => {
                let _ =
                    tokio::time::timeout(limit, tokio::io::AsyncWriteExt::shutdown(&mut tls)).await;
                true
            }
            Ok(Err(NetError::Tls { reason, .. })) => reason.contains("alert"),
            _ => false,
        }
    }
}

/// What a TLS connection's server certificate says, as text: the server preview prints it,
/// and no OpenSSL type leaves this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The protocol version and cipher suite agreed, as OpenSSL names them (`TLSv1.3`).
    pub protocol: String,
    pub cipher: String,
    /// Subject and issuer, their attributes in the certificate's order (`CN=mail.example.org`).
    pub subject: String,
    pub issuer: String,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    /// SHA-256 of the whole certificate (DER), as `AB:CD:…`.
    pub sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo (DER), which survives a renewal with the same key.
    pub spki_sha256: String,
}

/// `tls_min_version`: the oldest TLS version a connection may use. TLS 1.0 and 1.1 are not on
/// offer (RFC 8996 deprecated them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl TlsVersion {
    fn openssl(self) -> openssl::ssl::SslVersion {
        match self {
            TlsVersion::V1_2 => openssl::ssl::SslVersion::TLS1_2,
            TlsVersion::V1_3 => openssl::ssl::SslVersion::TLS1_3,
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        })
    }
}

/// Puts the client certificate (with any chain after it in the file) and its key on `ssl`;
/// why not, in words.
fn client_identity(ssl: &mut Ssl, cert: &Path, key: &Path) -> Result<(), String> {
    let read = |p: &Path, what: &str| {
        std::fs::read(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
    };
    let pem = read(cert, "tls_client_cert")?;
    let mut chain = X509::stack_from_pem(&pem)
        .map_err(|e| format!("tls_client_cert {}: {e}", cert.display()))?
        .into_iter();
    let leaf = chain
        .next()
        .ok_or_else(|| format!("tls_client_cert {} holds no certificate", cert.display()))?;
    ssl.set_certificate(&leaf).map_err(|e| e.to_string())?;
    for c in chain {
        ssl.add_chain_cert(c).map_err(|e| e.to_string())?;
    }
    let key_pem = crate::secret::Secret::new(read(key, "tls_client_key")?);
    let pkey = openssl::pkey::PKey::private_key_from_pem(key_pem.expose())
        .map_err(|e| format!("tls_client_key {}: {e}", key.display()))?;
    if !leaf.public_key().is_ok_and(|p| p.public_eq(&pkey)) {
        return Err(format!(
            "tls_client_key {} is not the key of tls_client_cert {}",
            key.display(),
            cert.display()
        ));
    }
    ssl.set_private_key(&pkey).map_err(|e| e.to_string())
}

/// OpenSSL's verification errors for a certificate outside its dates (`x509_vfy.h`).
const X509_V_ERR_CERT_NOT_YET_VALID: i32 = 9;
const X509_V_ERR_CERT_HAS_EXPIRED: i32 = 10;

/// A server known by the SHA-256 of its certificate (`sha256:…`) or of its public key
/// (`spki-sha256:…`, which survives a renewal that keeps the key): `tls_fingerprint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Of the public key (SubjectPublicKeyInfo), not of the whole certificate.
    pub spki: bool,
    pub sha256: [u8; 32],
}

impl Fingerprint {
    /// The certificate's and its public key's fingerprints.
    fn both(cert: &X509) -> Option<(Fingerprint, Fingerprint)> {
        let whole = cert.digest(MessageDigest::sha256()).ok()?;
        let key = cert.public_key().and_then(|k| k.public_key_to_der()).ok()?;
        let key = openssl::hash::hash(MessageDigest::sha256(), &key).ok()?;
        Some((
            Fingerprint {
                spki: false,
                sha256: whole.as_ref().try_into().ok()?,
            },
            Fingerprint {
                spki: true,
                sha256: key.as_ref().try_into().ok()?,
            },
        ))
    }
}

/// Why a `tls_fingerprint` was not taken, in words for the config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadFingerprint {
    #[error(
        "start it with `sha256:` (the certificate's SHA-256) or `spki-sha256:` (its public \
         key's), e.g. \"sha256:AB:CD:…\" as `popfetch check --connect` prints it"
    )]
    Kind,
    #[error("a SHA-256 fingerprint is 64 hexadecimal digits (32 bytes, colons allowed)")]
    Digest,
}

impl std::str::FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// `sha256:` or `spki-sha256:` and 64 hex digits, colons (or spaces) between them or not,
    /// in any case: the forms users paste from `openssl` and from browsers.
    fn from_str(s: &str) -> Result<Fingerprint, BadFingerprint> {
        let s = s.trim();
        let (kind, rest) = s.split_once(':').ok_or(BadFingerprint::Kind)?;
        let spki = match kind.to_ascii_lowercase().as_str() {
            "sha256" => false,
            "spki-sha256" => true,
            _ => return Err(BadFingerprint::Kind),
        };
        let digits: Vec<u8> = rest.bytes().filter(|b| !matches!(b, b':' | b' ')).collect();
        if digits.len() != 64 {
            return Err(BadFingerprint::Digest);
        }
        let mut sha256 = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| BadFingerprint::Digest)?;
            sha256[i] = u8::from_str_radix(text, 16).map_err(|_| BadFingerprint::Digest)?;
        }
        Ok(Fingerprint { spki, sha256 })
    }
}

impl std::fmt::Display for Fingerprint {
    /// In the config's syntax: `sha256:AB:CD:…` or `spki-sha256:AB:CD:…`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.spki { "spki-sha256" } else { "sha256" };
        write!(f, "{kind}:{}", colon_hex(&self.sha256))
    }
}

/// The server certificate of an established TLS stream (`None` before the handshake, or when
/// the server sent none).
pub(crate) fn cert_info<S>(tls: &TlsStream<S>) -> Option<CertInfo> {
    let ssl = tls.ssl();
    let cert = ssl.peer_certificate()?;
    let sha256 = cert.digest(MessageDigest::sha256()).ok()?;
    let spki = cert.public_key().and_then(|k| k.public_key_to_der()).ok()?;
    let spki_sha256 = openssl::hash::hash(MessageDigest::sha256(), &spki).ok()?;
    Some(CertInfo {
        protocol: ssl.version_str().to_string(),
        cipher: ssl
            .current_cipher()
            .map_or_else(String::new, |c| c.name().to_string()),
        subject: name_text(cert.subject_name()),
        issuer: name_text(cert.issuer_name()),
        not_before: unix_time(cert.not_before()),
        not_after: unix_time(cert.not_after()),
        sha256: colon_hex(&sha256),
        spki_sha256: colon_hex(&spki_sha256),
    })
}

/// `CN=x, O=y`, in the certificate's order; a value that is not text shows as `?`.
fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".to_string());
            // The server chose these bytes: no control character reaches a terminal.
            let value: String = value
                .chars()
                .take(200)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn unix_time(t: &Asn1TimeRef) -> Option<SystemTime> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    let secs = i64::from(d.days) * 86_400 + i64::from(d.secs);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Upper-case hex, a colon between bytes: how fingerprints are usually written.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Contexts built so far, by CA file (with its modification time) and verification: each kind
/// is built once per process.
type ContextKey = (Option<(PathBuf, Option<SystemTime>)>, bool, TlsVersion);
static CONTEXTS: Mutex<Vec<(ContextKey, SslContext, Tickets)>> = Mutex::new(Vec::new());

/// The last session ticket of each peer (`host:port` and the terms of the connection), of one
/// context.
type Tickets = Arc<Mutex<HashMap<String, SslSession>>>;

/// Peers whose tickets a context keeps; past this, the oldest are not told apart: all go.
const MAX_TICKETS: usize = 256;

/// Where a connection carries its peer's name, for the new-session callback.
fn peer_index() -> Index<Ssl, String> {
    static INDEX: OnceLock<Index<Ssl, String>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("an OpenSSL ex_data index"))
}

/// The TLS client context: OpenSSL's defaults hardened as the `openssl` crate's connector does
/// (no SSLv2/3, no compression, no weak ciphers; the system's crypto policy sets the minimum
/// version), trusting as the module doc says.
fn context(
    ca_file: Option<&Path>,
    verify: bool,
    min_version: TlsVersion,
) -> Result<(SslContext, Tickets), NetError> {
    let key: ContextKey = (
        ca_file.map(|p| {
            (
                p.to_path_buf(),
                std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            )
        }),
        verify,
        min_version,
    );
    let mut cache = CONTEXTS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, c, t)) = cache.iter().find(|(k, _, _)| *k == key) {
        return Ok((c.clone(), Arc::clone(t)));
    }
    let setup = |e: openssl::error::ErrorStack| NetError::Tls {
        host: String::new(),
        reason: format!("TLS setup: {e}"),
    };
    let mut b = SslContextBuilder::new(SslMethod::tls_client()).map_err(setup)?;
    let opts = (SslOptions::ALL
        | SslOptions::NO_COMPRESSION
        | SslOptions::NO_SSLV2
        | SslOptions::NO_SSLV3)
        & !SslOptions::DONT_INSERT_EMPTY_FRAGMENTS;
    b.set_options(opts);
    b.set_min_proto_version(Some(min_version.openssl()))
        .map_err(setup)?;
    b.set_mode(
        SslMode::AUTO_RETRY | SslMode::ACCEPT_MOVING_WRITE_BUFFER | SslMode::ENABLE_PARTIAL_WRITE,
    );
    b.set_read_ahead(true);
    b.set_cipher_list("DEFAULT:!aNULL:!eNULL:!MD5:!3DES:!DES:!RC4:!IDEA:!SEED:!aDSS:!SRP:!PSK")
        .map_err(setup)?;
    match ca_file {
        Some(path) => {
            let mut store = X509StoreBuilder::new().map_err(setup)?;
            for cert in read_ca_file(path)? {
                store.add_cert(cert).map_err(setup)?;
            }
            b.set_cert_store(store.build());
        }
        None => b.set_default_verify_paths().map_err(setup)?,
    }
    b.set_verify(if verify {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    // Tickets are kept here, not in OpenSSL's internal client cache (which is not looked up
    // for clients), keyed by the peer the connection was made to.
    let tickets: Tickets = Arc::default();
    let store = Arc::clone(&tickets);
    b.set_session_cache_mode(SslSessionCacheMode::CLIENT | SslSessionCacheMode::NO_INTERNAL);
    b.set_new_session_callback(move |ssl, session| {
        if let Some(peer) = ssl.ex_data(peer_index()) {
            let mut t = store.lock().unwrap_or_else(PoisonError::into_inner);
            if t.len() >= MAX_TICKETS && !t.contains_key(peer) {
                t.clear();
            }
            t.insert(peer.clone(), session);
        }
    });
    let c = b.build();
    // A changed CA file replaces its old entry (and its tickets).
    cache.retain(|(k, _, _)| {
        k.0.as_ref().map(|x| &x.0) != key.0.as_ref().map(|x| &x.0) || k.1 != key.1 || k.2 != key.2
    });
    cache.push((key, c.clone(), Arc::clone(&tickets)));
    Ok((c, tickets))
}

/// Every certificate in a PEM file (a bundle may hold several).
fn read_ca_file(path: &Path) -> Result<Vec<X509>, NetError> {
    let err = |why: String| NetError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("it holds no PEM certificate".to_string()));
    }
    Ok(certs)
}

/// What to do about a failed certificate check, from OpenSSL's reason.
pub(crate) fn tls_hint(reason: &str) -> &'static str {
    if reason.contains("hostname mismatch") || reason.contains("IP address mismatch") {
        " (the certificate does not name this host: set `host` to a name the certificate was \
         issued for)"
    } else if reason.contains("expired") {
        " (the server's certificate has expired: its administrator must renew it)"
    } else if reason.contains("not yet valid") {
        " (the server's certificate is not valid yet: check this machine's clock)"
    } else if reason.contains("self-signed")
        || reason.contains("self signed")
        || reason.contains("unable to get local issuer")
    {
        " (no trusted CA signed the server's certificate: set `ca_file` to the PEM file of the \
         CA that did)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_are_read_in_the_forms_users_paste() {
        let want = super::Fingerprint {
            spki: false,
            sha256: [0xAB; 32],
        };
        let colons = format!("sha256:{}", vec!["AB"; 32].join(":"));
        assert_eq!(colons.parse(), Ok(want));
        assert_eq!(format!("SHA256:{}", "ab".repeat(32)).parse(), Ok(want));
        assert_eq!(want.to_string(), colons);
        let spki: super::Fingerprint = format!("spki-sha256:{}", "01".repeat(32)).parse().unwrap();
        assert!(spki.spki && spki.to_string().starts_with("spki-sha256:01:01"));
        assert_eq!(
            "md5:00".parse::<super::Fingerprint>(),
            Err(super::BadFingerprint::Kind)
        );
        assert_eq!(
            "sha256:00:11".parse::<super::Fingerprint>(),
            Err(super::BadFingerprint::Digest)
        );
        assert_eq!(
            format!("sha256:{}", "zz".repeat(32)).parse::<super::Fingerprint>(),
            Err(super::BadFingerprint::Digest)
        );
    }

    use super::*;

    fn tls(reason: &str) -> NetError {
        NetError::Tls {
            host: "h".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn clear_text_is_told_from_other_handshake_failures() {
        // OpenSSL 3.0's words for a clear-text answer, and those of other versions.
        for reason in [
            "error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../ssl/record/ssl3_record.c:350:",
            "error:0A0000C6:SSL routines::packet length too long",
            "error:0A000139:SSL routines::record layer failure",
            "error:140770FC:SSL routines:SSL23_GET_SERVER_HELLO:unknown protocol",
        ] {
            assert!(tls(reason).is_not_tls(), "{reason}");
        }
        for reason in [
            "error:0A000086:SSL routines::certificate verify failed (hostname mismatch)",
            "error:0A000410:SSL routines::sslv3 alert handshake failure",
            "unexpected EOF",
        ] {
            assert!(!tls(reason).is_not_tls(), "{reason}");
        }
        assert!(
            !NetError::Timeout {
                what: "x",
                after: Duration::from_secs(1)
            }
            .is_not_tls()
        );
    }

    #[test]
    fn fingerprints_are_upper_case_hex_with_colons() {
        assert_eq!(colon_hex(&[0x00, 0xab, 0x0f]), "00:AB:0F");
        assert_eq!(colon_hex(&[]), "");
    }
}
