//! The byte stream under a session: plain TCP, or TLS over TCP (implicit, or after STLS).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslVerifyMode,
};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509, X509VerifyResult};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ConnectParams, SessionError};
use crate::config::TlsMode;

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// Between taking the plain stream for an STLS upgrade and the handshake's end.
    Upgrading,
}

impl Stream {
    pub(super) async fn connect(p: &ConnectParams<'_>) -> Result<Stream, SessionError> {
        let addr = format!("{}:{}", p.host, p.port);
        let tcp = match tokio::time::timeout(p.timeout, TcpStream::connect((p.host, p.port))).await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(source)) => return Err(SessionError::Connect { addr, source }),
            Err(_) => {
                return Err(SessionError::Timeout {
                    what: "the TCP connection",
                    after: p.timeout,
                });
            }
        };
        // Commands are small and each waits for an answer: Nagle's algorithm would hold them
        // back until the delayed ACK of the previous answer (about 40 ms an exchange).
        tcp.set_nodelay(true).map_err(SessionError::Io)?;
        if p.tls == TlsMode::Implicit {
            Ok(Stream::Tls(Box::new(handshake(p, tcp).await?)))
        } else {
            Ok(Stream::Plain(tcp))
        }
    }

    pub(super) async fn upgrade(&mut self, p: &ConnectParams<'_>) -> Result<(), SessionError> {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Upgrading) else {
            return Err(SessionError::protocol(
                "STLS on a connection that is not plain",
            ));
        };
        *self = Stream::Tls(Box::new(handshake(p, tcp).await?));
        Ok(())
    }

    pub(super) fn is_encrypted(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub(super) async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read_buf(buf).await,
            Stream::Tls(s) => s.read_buf(buf).await,
            Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    pub(super) async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Best-effort close (TLS close_notify); errors do not matter any more.
    pub(super) async fn shutdown(&mut self) {
        let limit = std::time::Duration::from_secs(2);
        let _ = match self {
            Stream::Plain(s) => tokio::time::timeout(limit, s.shutdown()).await,
            Stream::Tls(s) => tokio::time::timeout(limit, s.shutdown()).await,
            Stream::Upgrading => return,
        };
    }
}

/// A TLS stream over TCP.
pub(crate) type TlsStream = tokio_openssl::SslStream<TcpStream>;

/// The TLS handshake over `tcp`, verifying the server as `p` says; also used by the SMTP relay.
pub(crate) async fn handshake(
    p: &ConnectParams<'_>,
    tcp: TcpStream,
) -> Result<TlsStream, SessionError> {
    let tls_err = |reason: String| SessionError::Tls {
        host: p.host.to_string(),
        reason,
    };
    let ctx = context(p.ca_file, p.tls_verify)?;
    let mut ssl = Ssl::new(&ctx).map_err(|e| tls_err(e.to_string()))?;
    // The name (sent as SNI) or the address the certificate must carry.
    match p.host.parse::<IpAddr>() {
        Ok(ip) if p.tls_verify => ssl.param_mut().set_ip(ip),
        Ok(_) => Ok(()),
        Err(_) => ssl.set_hostname(p.host).and_then(|()| {
            if p.tls_verify {
                let param = ssl.param_mut();
                param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
                param.set_host(p.host)
            } else {
                Ok(())
            }
        }),
    }
    .map_err(|e| tls_err(e.to_string()))?;
    let mut stream = TlsStream::new(ssl, tcp).map_err(|e| tls_err(e.to_string()))?;
    match tokio::time::timeout(p.timeout, Pin::new(&mut stream).connect()).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => {
            // Why verification failed is kept apart from the error stack: add it.
            let v = stream.ssl().verify_result();
            Err(tls_err(if v == X509VerifyResult::OK {
                e.to_string()
            } else {
                format!("{e} ({})", v.error_string())
            }))
        }
        Err(_) => Err(SessionError::Timeout {
            what: "the TLS handshake",
            after: p.timeout,
        }),
    }
}

/// Contexts built so far, by CA file (with its modification time) and verification. Building
/// one with the system's trust store parses the whole CA bundle, which costs far more CPU than
/// a handshake: each kind is built once per process.
type ContextKey = (Option<(PathBuf, Option<SystemTime>)>, bool);
static CONTEXTS: Mutex<Vec<(ContextKey, SslContext)>> = Mutex::new(Vec::new());

/// The TLS client context: OpenSSL's defaults hardened as the `openssl` crate's connector does
/// (no SSLv2/3, no compression, no weak ciphers; the system's crypto policy sets the minimum
/// version). A `ca_file` is the whole trust store: only the CAs in it are trusted, and the
/// system's bundle is not even read. Without one, OpenSSL's default locations are used.
fn context(ca_file: Option<&Path>, verify: bool) -> Result<SslContext, SessionError> {
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
    if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(c.clone());
    }
    let setup = |e: openssl::error::ErrorStack| SessionError::Tls {
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
    let c = b.build();
    // A changed CA file replaces its old entry.
    cache.retain(|(k, _)| {
        k.0.as_ref().map(|x| &x.0) != key.0.as_ref().map(|x| &x.0) || k.1 != key.1
    });
    cache.push((key, c.clone()));
    Ok(c)
}

/// Every certificate in a PEM file (a bundle may hold several).
fn read_ca_file(path: &Path) -> Result<Vec<X509>, SessionError> {
    let err = |why: String| SessionError::CaFile {
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
