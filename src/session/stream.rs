//! The byte stream under a session: plain TCP, or TLS over TCP (implicit, or after STLS).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ConnectParams, SessionError};
use crate::config::TlsMode;

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_native_tls::TlsStream<TcpStream>>),
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

/// The TLS handshake over `tcp`, verifying the server as `p` says; also used by the SMTP relay.
pub(crate) async fn handshake(
    p: &ConnectParams<'_>,
    tcp: TcpStream,
) -> Result<tokio_native_tls::TlsStream<TcpStream>, SessionError> {
    let connector = tokio_native_tls::TlsConnector::from(connector(p.ca_file, p.tls_verify)?);
    match tokio::time::timeout(p.timeout, connector.connect(p.host, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(SessionError::Tls {
            host: p.host.to_string(),
            source,
        }),
        Err(_) => Err(SessionError::Timeout {
            what: "the TLS handshake",
            after: p.timeout,
        }),
    }
}

/// Connectors built so far, by CA file (with its modification time) and verification. Building
/// one loads the system's trust store, which costs far more CPU than a handshake: a daemon
/// polling many accounts builds each kind once.
type ConnectorKey = (Option<(PathBuf, Option<SystemTime>)>, bool);
static CONNECTORS: Mutex<Vec<(ConnectorKey, native_tls::TlsConnector)>> = Mutex::new(Vec::new());

fn connector(
    ca_file: Option<&Path>,
    verify: bool,
) -> Result<native_tls::TlsConnector, SessionError> {
    let key: ConnectorKey = (
        ca_file.map(|p| {
            (
                p.to_path_buf(),
                std::fs::metadata(p).and_then(|m| m.modified()).ok(),
            )
        }),
        verify,
    );
    let mut cache = CONNECTORS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(c.clone());
    }
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            builder.add_root_certificate(cert);
        }
    }
    if !verify {
        builder
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
    }
    let c = builder.build().map_err(|source| SessionError::Tls {
        host: String::new(),
        source,
    })?;
    // A changed CA file replaces its old entry.
    cache.retain(|(k, _)| {
        k.0.as_ref().map(|x| &x.0) != key.0.as_ref().map(|x| &x.0) || k.1 != key.1
    });
    cache.push((key, c.clone()));
    Ok(c)
}

/// Every certificate in a PEM file (a bundle may hold several).
fn read_ca_file(path: &std::path::Path) -> Result<Vec<native_tls::Certificate>, SessionError> {
    let err = |why: String| SessionError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&pem);
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + len + END.len()];
        let cert =
            native_tls::Certificate::from_pem(block.as_bytes()).map_err(|e| err(e.to_string()))?;
        certs.push(cert);
        rest = &rest[start + len + END.len()..];
    }
    if certs.is_empty() {
        return Err(err("it holds no PEM certificate".to_string()));
    }
    Ok(certs)
}
