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

use openssl::ex_data::Index;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslSession,
    SslSessionCacheMode, SslVerifyMode,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509, X509VerifyResult};
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
    /// Bounds the TCP connect, and the TLS handshake apart.
    pub timeout: Duration,
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
    #[error("connection error: {0}")]
    Io(std::io::Error),
}

impl NetError {
    /// Whether trying again later may succeed without a config change: a refused or timed-out
    /// connection or a broken link may; a failed certificate check or an unusable `ca_file`
    /// will not.
    pub fn is_transient(&self) -> bool {
        match self {
            NetError::Connect { .. } | NetError::Timeout { .. } | NetError::Io(_) => true,
            NetError::Tls { .. } | NetError::CaFile { .. } => false,
        }
    }
}

impl Peer<'_> {
    /// The TCP connection, with Nagle's algorithm off: commands are small and each waits for an
    /// answer, so Nagle would hold each back until the delayed ACK of the last answer (about 40
    /// ms an exchange).
    pub(crate) async fn connect(&self) -> Result<TcpStream, NetError> {
        let tcp =
            match tokio::time::timeout(self.timeout, TcpStream::connect((self.host, self.port)))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(source)) => {
                    return Err(NetError::Connect {
                        addr: crate::text::host_port(self.host, self.port),
                        source,
                    });
                }
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
        let (ctx, tickets) = context(self.ca_file, self.verify)?;
        let mut ssl = Ssl::new(&ctx).map_err(|e| tls_err(e.to_string()))?;
        let peer = crate::text::host_port(self.host, self.port);
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
            Ok(ip) if self.verify => ssl.param_mut().set_ip(ip),
            Ok(_) => Ok(()),
            Err(_) => ssl.set_hostname(self.host).and_then(|()| {
                if self.verify {
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
                Ok(tls)
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
}

/// Contexts built so far, by CA file (with its modification time) and verification: each kind
/// is built once per process.
type ContextKey = (Option<(PathBuf, Option<SystemTime>)>, bool);
static CONTEXTS: Mutex<Vec<(ContextKey, SslContext, Tickets)>> = Mutex::new(Vec::new());

/// The last session ticket of each peer (`host:port`), of one context.
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
fn context(ca_file: Option<&Path>, verify: bool) -> Result<(SslContext, Tickets), NetError> {
    let key: ContextKey = (
        ca_file.map(|p| {
            (
                p.to_path_buf(),
                std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            )
        }),
        verify,
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
    b.set_mode(
        SslMode::AUTO_RETRY
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::RELEASE_BUFFERS,
    );
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
        k.0.as_ref().map(|x| &x.0) != key.0.as_ref().map(|x| &x.0) || k.1 != key.1
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
