//! The byte stream under a session: plain TCP, or TLS over TCP (implicit, or after STLS), both
//! opened by [`crate::net`].

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ConnectParams, SessionError};
use crate::config::TlsMode;
use crate::net::{Peer, TlsStream};

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// Between taking the plain stream for an STLS upgrade and the handshake's end.
    Upgrading,
}

impl Stream {
    pub(super) async fn connect(p: &ConnectParams<'_>) -> Result<Stream, SessionError> {
        let peer = peer(p);
        let tcp = peer.connect().await?;
        if p.tls == TlsMode::Implicit {
            Ok(Stream::Tls(Box::new(peer.tls(tcp).await?)))
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
        *self = Stream::Tls(Box::new(peer(p).tls(tcp).await?));
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

/// The network side of what to connect to.
fn peer<'a>(p: &ConnectParams<'a>) -> Peer<'a> {
    Peer {
        host: p.host,
        port: p.port,
        ca_file: p.ca_file,
        verify: p.tls_verify,
        timeout: p.timeout,
    }
}
