//! Relay to an SMTP server through lettre's connection API. The message is spooled (CRLF line
//! endings) into an unlinked temp file while it arrives, so memory stays flat, then sent as DATA
//! in chunks, byte for byte (lettre adds the dot-stuffing). One connection serves every message
//! of a poll; it is opened at the first message and closed by [`Smtp::close`].
//!
//! Envelope: the sender from `Return-Path` (the null sender `<>` stays null; else `From`), or
//! the configured `from`; the recipients from `to`. A 2xx after DATA = delivered; a 4xx =
//! transient; a 5xx = permanent; a relay that cannot be reached = unavailable. The relay cannot
//! be asked later whether it took a message, so a crash between its 250 and the journal record
//! may duplicate that one message.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::sync::Arc;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::Mutex;

use super::{DeliverError, ErrorKind, envelope};
use crate::config::{self, TlsMode};

/// Spool read size when sending.
const CHUNK: usize = 64 * 1024;
/// Most header bytes read back from the spool to find the envelope sender.
const MAX_HEADER: usize = 256 * 1024;

/// The poll's one relay connection, shared by its sinks.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Option<AsyncSmtpConnection>>>);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SmtpConnection")
    }
}

#[derive(Debug)]
pub struct Smtp {
    target: Arc<config::Smtp>,
    timeout: std::time::Duration,
    conn: Shared,
}

impl Smtp {
    pub fn new(target: &config::Smtp, timeout: std::time::Duration) -> Smtp {
        Smtp {
            target: Arc::new(target.clone()),
            timeout,
            conn: Shared::default(),
        }
    }

    pub(super) fn begin(&self, header: Option<&[u8]>) -> Result<Sink, DeliverError> {
        let file =
            tempfile::tempfile().map_err(|e| DeliverError::io("cannot create a spool file", e))?;
        let mut sink = Sink {
            spool: Some(BufWriter::with_capacity(CHUNK, file)),
            bytes: 0,
            eight_bit: false,
            ends_with_newline: false,
            target: self.target.clone(),
            timeout: self.timeout,
            conn: self.conn.clone(),
        };
        if let Some(h) = header {
            sink.write(h)?;
        }
        Ok(sink)
    }

    /// Ends the poll's SMTP session politely.
    pub async fn close(&self) {
        if let Some(mut c) = self.conn.0.lock().await.take() {
            let _ = tokio::time::timeout(self.timeout, c.quit()).await;
        }
    }
}

#[derive(Debug)]
pub struct Sink {
    spool: Option<BufWriter<File>>,
    bytes: u64,
    eight_bit: bool,
    /// Whether the message ends with a line end (it does when it came over POP3).
    ends_with_newline: bool,
    target: Arc<config::Smtp>,
    timeout: std::time::Duration,
    conn: Shared,
}

impl Sink {
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        self.bytes += data.len() as u64;
        self.eight_bit |= !data.is_ascii();
        if let Some(&last) = data.last() {
            self.ends_with_newline = last == b'\n';
        }
        // SMTP wants CRLF: every LF of the local form becomes CRLF.
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            spool
                .write_all(&rest[..i])
                .and_then(|()| spool.write_all(b"\r\n"))
                .map_err(|e| DeliverError::io("cannot write the spool file", e))?;
            rest = &rest[i + 1..];
        }
        spool
            .write_all(rest)
            .map_err(|e| DeliverError::io("cannot write the spool file", e))
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Sends the spooled message; `Ok` once the relay answered 2xx after DATA.
    pub(super) async fn prepare(&mut self) -> Result<(), DeliverError> {
        let Some(spool) = self.spool.take() else {
            return Ok(());
        };
        let mut file = spool
            .into_inner()
            .map_err(|e| DeliverError::io("cannot write the spool file", e.into_error()))?;
        let sender = match &self.target.from {
            Some(f) => Some(f.clone()),
            None => read_sender(&mut file)?,
        };
        file.rewind()
            .map_err(|e| DeliverError::io("cannot read the spool file", e))?;
        let from = match sender.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse::<Address>().map_err(|e| DeliverError {
                kind: ErrorKind::Permanent,
                message: format!("envelope sender {a:?}: {e}"),
            })?),
        };

        let mut guard = self.conn.0.lock().await;
        if guard.as_ref().is_none_or(AsyncSmtpConnection::has_broken) {
            *guard = Some(connect(&self.target, self.timeout).await?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(unavailable("no connection".into()));
        };
        // lettre ends DATA with CRLF "." CRLF: the message's own last line end is that CRLF.
        let len = file
            .metadata()
            .map_err(|e| DeliverError::io("cannot read the spool file", e))?
            .len();
        let body_len = if self.ends_with_newline {
            len.saturating_sub(2)
        } else {
            len
        };
        let r = tokio::time::timeout(
            self.timeout * 4,
            send(
                conn,
                &self.target,
                from,
                self.eight_bit,
                file.take(body_len),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(DeliverError {
                kind: ErrorKind::Transient,
                message: "the relay did not answer in time".into(),
            })
        });
        if r.is_err() {
            // After a failed transaction the connection's state is unknown: start afresh.
            if let Some(mut c) = guard.take() {
                c.abort().await;
            }
        }
        r
    }
}

async fn send(
    conn: &mut AsyncSmtpConnection,
    target: &config::Smtp,
    from: Option<Address>,
    eight_bit: bool,
    mut file: std::io::Take<File>,
) -> Result<(), DeliverError> {
    let mut params = Vec::new();
    if eight_bit && conn.server_info().supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(from, params))
        .await
        .map_err(classify)?;
    for to in &target.to {
        let to: Address = to.parse().map_err(|e| DeliverError {
            kind: ErrorKind::Permanent,
            message: format!("recipient {to:?}: {e}"),
        })?;
        conn.command(Rcpt::new(to, vec![]))
            .await
            .map_err(classify)?;
    }
    conn.command(Data).await.map_err(classify)?;
    let mut read_error = None;
    let chunks = std::iter::from_fn(|| {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
            Err(e) => {
                read_error = Some(e);
                None
            }
        }
    });
    let response = conn.message_iter(chunks).await.map_err(classify)?;
    if let Some(e) = read_error {
        // The relay may hold a truncated copy now; the message stays on the POP3 server.
        return Err(DeliverError::io("cannot read the spool file", e));
    }
    if response.is_positive() {
        Ok(())
    } else {
        Err(DeliverError {
            kind: ErrorKind::Permanent,
            message: format!("the relay answered DATA with {}", response.code()),
        })
    }
}

fn read_sender(file: &mut File) -> Result<Option<String>, DeliverError> {
    file.rewind()
        .map_err(|e| DeliverError::io("cannot read the spool file", e))?;
    let mut head = Vec::new();
    (&mut *file)
        .take(MAX_HEADER as u64)
        .read_to_end(&mut head)
        .map_err(|e| DeliverError::io("cannot read the spool file", e))?;
    let lf: Vec<u8> = head.into_iter().filter(|&b| b != b'\r').collect();
    Ok(envelope::sender(&lf))
}

async fn connect(
    target: &config::Smtp,
    timeout: std::time::Duration,
) -> Result<AsyncSmtpConnection, DeliverError> {
    let hello = match &target.helo {
        Some(h) => ClientId::Domain(h.clone()),
        None => ClientId::Domain(super::hostname()),
    };
    let tls = || -> Result<TlsParameters, DeliverError> {
        let mut b = TlsParameters::builder(target.host.clone());
        if let Some(path) = &target.ca_file {
            let pem = std::fs::read(path).map_err(|e| DeliverError {
                kind: ErrorKind::Unavailable,
                message: format!("cannot read ca_file {}: {e}", path.display()),
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| DeliverError {
                kind: ErrorKind::Unavailable,
                message: format!("ca_file {}: {e}", path.display()),
            })?;
            // As for POP3: the ca_file is the whole trust store.
            b = b
                .certificate_store(lettre::transport::smtp::client::CertificateStore::None)
                .add_root_certificate(cert);
        }
        b.build_native()
            .map_err(|e| unavailable(format!("TLS setup: {e}")))
    };
    // Our own socket, so that TCP_NODELAY is set: lettre's would leave Nagle's algorithm on,
    // and every command would wait for the delayed ACK of the last answer (~40 ms a message).
    let addr = format!("{}:{}", target.host, target.port);
    let tcp = match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(unavailable(format!(
                "cannot connect to the relay {addr}: {e}"
            )));
        }
        Err(_) => {
            return Err(unavailable(format!(
                "cannot connect to the relay {addr}: timed out"
            )));
        }
    };
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn AsyncTokioStream> = if target.tls == TlsMode::Implicit {
        let params = crate::session::ConnectParams {
            host: &target.host,
            port: target.port,
            tls: TlsMode::Implicit,
            ca_file: target.ca_file.as_deref(),
            tls_verify: true,
            timeout,
        };
        let tls = crate::session::handshake(&params, tcp)
            .await
            .map_err(|e| unavailable(format!("relay {addr}: {e}")))?;
        Box::new(ImplicitTls(tls))
    } else {
        Box::new(tcp)
    };
    let mut conn = tokio::time::timeout(
        timeout,
        AsyncSmtpConnection::connect_with_transport(stream, &hello),
    )
    .await
    .map_err(|_| unavailable(format!("the relay {addr} did not greet in time")))?
    .map_err(|e| unavailable(format!("cannot connect to the relay {addr}: {e}")))?;
    if target.tls == TlsMode::Starttls {
        if !conn.can_starttls() {
            return Err(unavailable(format!(
                "the relay {} does not offer STARTTLS; popfetch will not send mail to it in clear text",
                target.host
            )));
        }
        conn.starttls(tls()?, &hello)
            .await
            .map_err(|e| unavailable(format!("STARTTLS with the relay {}: {e}", target.host)))?;
    }
    if let Some((user, source)) = &target.credentials {
        let password = crate::password::resolve(source, timeout)
            .await
            .map_err(|e| unavailable(format!("relay login: {e}")))?;
        let creds = Credentials::new(user.clone(), password.expose().clone());
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await
            .map_err(|e| unavailable(format!("relay login as {user}: {e}")))?;
    }
    Ok(conn)
}

fn unavailable(message: String) -> DeliverError {
    DeliverError {
        kind: ErrorKind::Unavailable,
        message,
    }
}

/// 4xx → transient, 5xx → permanent, anything else (the connection broke) → unavailable.
fn classify(e: lettre::transport::smtp::Error) -> DeliverError {
    let kind = if e.is_transient() {
        ErrorKind::Transient
    } else if e.is_permanent() {
        ErrorKind::Permanent
    } else {
        ErrorKind::Unavailable
    };
    DeliverError {
        kind,
        message: format!("the relay refused the message: {e}"),
    }
}

/// A TLS stream from the relay's first byte (port 465), in the shape lettre takes.
#[derive(Debug)]
struct ImplicitTls(crate::session::TlsStream);

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
