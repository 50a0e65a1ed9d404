//! The byte stream under a session: plain TCP, or TLS over TCP (implicit, or after STLS), both
//! opened by [`crate::net`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ConnectParams, SessionError};
use crate::config::TlsMode;
use crate::net::{CertInfo, NetError, Peer, TlsStream};

/// How long a clear-text connection may stay silent before popfetch asks, over a second
/// connection, whether the port is waiting for a TLS ClientHello. A POP3 server greets at
/// once; one that looks up the client's name first may take a few seconds, and costs then
/// only that second connection: the wait ends early only when the port answers TLS.
pub(super) const GREETING_PATIENCE: Duration = Duration::from_secs(3);

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
            match peer.tls(tcp).await {
                Ok(tls) => Ok(Stream::Tls(Box::new(tls))),
                Err(e) if e.is_not_tls() => {
                    tracing::debug!(error = %e, "the implicit-TLS handshake met clear text");
                    Err(SessionError::PlainPort {
                        host: p.host.to_string(),
                        port: p.port,
                    })
                }
                Err(e) => Err(e.into()),
            }
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

    /// Waits, at most `p.timeout`, until a clear-text connection has something to read (the
    /// greeting). After [`GREETING_PATIENCE`] of silence a second connection asks whether the
    /// port speaks TLS; if it does, the wait ends at once with [`SessionError::ExpectsTls`]
    /// rather than after the whole timeout. A TLS stream, or a timeout under twice the
    /// patience, returns at once: the greeting's read has the timeout.
    pub(super) async fn await_greeting(&self, p: &ConnectParams<'_>) -> Result<(), SessionError> {
        let Stream::Plain(tcp) = self else {
            return Ok(());
        };
        // With a timeout this short, asking would hardly end the wait sooner.
        let patience = GREETING_PATIENCE;
        if p.timeout < 2 * patience || tokio::time::timeout(patience, tcp.readable()).await.is_ok()
        {
            return Ok(());
        }
        let left = p.timeout.saturating_sub(patience);
        let rest = tokio::time::timeout(left, tcp.readable());
        tokio::pin!(rest);
        let peer = peer(p);
        tokio::select! {
            r = &mut rest => return greeted(r.is_ok(), p),
            tls = peer.speaks_tls(left) => if tls {
                return Err(SessionError::ExpectsTls {
                    addr: crate::text::host_port(p.host, p.port),
                    after: patience,
                });
            },
        }
        greeted(rest.await.is_ok(), p)
    }

    /// The server's certificate, when the stream is TLS.
    pub(super) fn certificate(&self) -> Option<CertInfo> {
        match self {
            Stream::Tls(s) => crate::net::cert_info(s),
            _ => None,
        }
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

    /// Acknowledges at once what the next reads receive (see [`crate::net::quick_ack`]).
    /// Asked for after each read: the commands for what is awaited are all sent, so no reply
    /// will come to carry the ACK, and a server whose next small answer waits for that ACK
    /// (Nagle's algorithm: Dovecot answers a pipelined USER from its login process and PASS
    /// from the mail process, two writes) would otherwise stall each login by 40 ms.
    pub(super) fn quick_ack(&self) {
        match self {
            Stream::Plain(s) => crate::net::quick_ack(s),
            Stream::Tls(s) => crate::net::quick_ack(s.get_ref()),
            Stream::Upgrading => {}
        }
    }

    /// Whether a read would find something now: bytes OpenSSL holds (decrypted, or records
    /// read ahead), or a socket the kernel reports readable. A hint for when to do other work
    /// rather than wait; a wrong answer costs only timing.
    pub(super) fn ready_now(&self) -> bool {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => {
                // SAFETY: `SSL_has_pending` reads the state of the live SSL object `s` owns.
                let ssl = foreign_types::ForeignTypeRef::as_ptr(s.ssl());
                if unsafe { SSL_has_pending(ssl.cast_const().cast()) } != 0 {
                    return true;
                }
                s.get_ref()
            }
            Stream::Upgrading => return false,
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        tcp.poll_read_ready(&mut cx).is_ready()
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

/// The end of [`Stream::await_greeting`]: nothing within the timeout is the greeting's timeout.
fn greeted(readable: bool, p: &ConnectParams<'_>) -> Result<(), SessionError> {
    if readable {
        Ok(())
    } else {
        Err(NetError::Timeout {
            what: "the server's greeting",
            after: p.timeout,
        }
        .into())
    }
}

/// The network side of what to connect to.
fn peer<'a>(p: &ConnectParams<'a>) -> Peer<'a> {
    Peer {
        host: p.host,
        port: p.port,
        ca_file: p.ca_file,
        verify: p.tls_verify,
        pins: p.pins,
        min_version: p.min_version,
        client: p.client,
        timeout: p.timeout,
    }
}

unsafe extern "C" {
    /// OpenSSL 1.1.0 and later: whether the SSL object holds bytes not yet handed out, decrypted
    /// or not (the openssl crate offers only `SSL_pending`, the decrypted ones).
    fn SSL_has_pending(ssl: *const std::ffi::c_void) -> std::os::raw::c_int;
}
