//! Relay to an SMTP server through lettre's connection API. The message is spooled into an
//! unlinked temp file while it arrives, so memory stays flat, with every line ending (LF, CRLF,
//! and a bare CR) made CRLF: a bare CR before "." would otherwise reach DATA as `\r.\r\n`,
//! which some relays read as the end of the data (SMTP smuggling). It is then sent as DATA in
//! chunks (lettre adds the dot-stuffing, correct on CRLF-only input). One connection serves
//! every message of a poll; it is opened at the first message and closed by [`Smtp::close`].
//!
//! Every await on the relay is bounded by [`Paced`]: a read or write that makes no progress for
//! `timeout` fails, so a large message over a slow relay goes through as long as bytes move,
//! and a relay that stops reading is given up on whatever the size. After a failure that left
//! the connection in an unknown state it is dropped, not QUIT (a QUIT mid-DATA would be text).
//!
//! The relay is reached over TCP or on a Unix socket (`socket`, local: no TLS there).
//!
//! TLS is [`crate::net`]'s, as for POP3: implicit from the first byte, or STARTTLS, whose
//! clear-text part (greeting, EHLO, STARTTLS, 220) is spoken here by [`starttls`] before the
//! upgrade; lettre then gets the TLS stream and sends EHLO anew. [`Paced`] stays under TLS.
//!
//! Envelope: the sender from `Return-Path` (the null sender `<>` stays null; else `From`), or
//! the configured `from`; the recipients from `to`. A 2xx after DATA = delivered; a 4xx =
//! transient; a 5xx = permanent; a relay that cannot be reached = unavailable. The relay cannot
//! be asked later whether it took a message, so a crash between its 250 and the journal record
//! may duplicate that one message.

use std::fs::File;
use std::io::{Read, Seek};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Starttls};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::Mutex;

use super::spool::{CHUNK, Spool};
use super::{DeliverError, ErrorKind, envelope};
use crate::config::{self, TlsMode};
use crate::net::{NetError, Peer, TlsStream};
/// The relay's answer to the final "." may take this many `timeout`s: it may still be reading
/// what the socket buffers hold, then check the message (RFC 5321 §4.5.3.2.6 allows it 10
/// minutes). Every other read or write gets one `timeout` without progress.
const DATA_END_TIMEOUTS: u32 = 4;
/// Most header bytes read back from the spool to find the envelope sender.
const MAX_HEADER: usize = 256 * 1024;

/// The poll's one relay connection, shared by its sinks.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Option<Relay>>>);

/// A relay connection and the switch its stream reads to know that the next answer is the one
/// to the final "." (which may take longer, see [`DATA_END_TIMEOUTS`]).
struct Relay {
    conn: AsyncSmtpConnection,
    data_end: Arc<AtomicBool>,
}

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

    /// Starts a message for the configured recipients, or for `routed` ones put in place of
    /// `{recipient}`.
    pub(super) fn begin(
        &self,
        header: Option<&[u8]>,
        routed: Option<&[String]>,
    ) -> Result<Sink, DeliverError> {
        let mut sink = Sink {
            spool: Spool::new()?,
            to: super::recipients(&self.target.to, routed),
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
            let _ = tokio::time::timeout(self.timeout, c.conn.quit()).await;
        }
    }
}

#[derive(Debug)]
pub struct Sink {
    spool: Spool,
    /// The RCPT addresses.
    to: Vec<String>,
    target: Arc<config::Smtp>,
    timeout: std::time::Duration,
    conn: Shared,
}

impl Sink {
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        self.spool.write(data)
    }

    pub(super) fn bytes(&self) -> u64 {
        self.spool.bytes()
    }

    /// Sends the spooled message; `Ok` once the relay answered 2xx after DATA.
    pub(super) async fn prepare(&mut self) -> Result<(), DeliverError> {
        let Some(mut file) = self.spool.finish()? else {
            return Ok(());
        };
        let sender = match &self.target.from {
            Some(f) => Some(f.clone()),
            None => read_sender(&mut file)?,
        };
        if self.to.is_empty() {
            // Every recipient has it already; an earlier try ended before it was recorded.
            return Ok(());
        }
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
        if guard.as_ref().is_none_or(|r| r.conn.has_broken()) {
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
        let body_len = if self.spool.ends_with_line_end() {
            len.saturating_sub(2)
        } else {
            len
        };
        // No overall deadline: the connection's stream bounds each step by its progress.
        let r = send(
            conn,
            &self.to,
            from,
            self.spool.eight_bit(),
            file.take(body_len),
        )
        .await;
        if let Err(e) = &r
            && let Some(mut c) = guard.take()
        {
            // The relay answered: the connection is between commands; end it politely. Else its
            // state is unknown (maybe mid-DATA, where a QUIT is message text): just close it.
            if e.kind != ErrorKind::Unavailable {
                let _ = tokio::time::timeout(self.timeout, c.conn.abort()).await;
            }
        }
        r
    }
}

async fn send(
    relay: &mut Relay,
    recipients: &[String],
    from: Option<Address>,
    eight_bit: bool,
    mut file: std::io::Take<File>,
) -> Result<(), DeliverError> {
    let conn = &mut relay.conn;
    let mut params = Vec::new();
    if eight_bit && conn.server_info().supports_feature(Extension::EightBitMime) {
        params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    conn.command(Mail::new(from, params))
        .await
        .map_err(classify)?;
    for to in recipients {
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
    relay.data_end.store(true, Ordering::Relaxed);
    let response = conn.message_iter(chunks).await;
    relay.data_end.store(false, Ordering::Relaxed);
    let response = response.map_err(classify)?;
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

pub(super) fn read_sender(file: &mut File) -> Result<Option<String>, DeliverError> {
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
) -> Result<Relay, DeliverError> {
    let hello = match &target.helo {
        Some(h) => ClientId::Domain(h.clone()),
        None => ClientId::Domain(super::hostname()),
    };
    if let Some(path) = &target.socket {
        let addr = path.display().to_string();
        let s = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
            .await
            .map_err(|_| unavailable(format!("cannot connect to the relay {addr}: timed out")))?
            .map_err(|e| unavailable(format!("cannot connect to the relay {addr}: {e}")))?;
        let data_end = Arc::new(AtomicBool::new(false));
        let wire = Wire::plain(Paced::new(Socket::Unix(s), timeout, data_end.clone()));
        return hello_and_login(target, wire, &hello, &addr, timeout, data_end).await;
    }
    let addr = crate::text::host_port(&target.host, target.port);
    let peer = Peer {
        host: &target.host,
        port: target.port,
        ca_file: target.ca_file.as_deref(),
        verify: true,
        pins: &target.tls_fingerprint,
        min_version: target.tls_min_version,
        client: target
            .tls_client
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
        timeout,
    };
    let tcp = peer.connect().await.map_err(|e| match e {
        NetError::Connect { source, .. } => {
            unavailable(format!("cannot connect to the relay {addr}: {source}"))
        }
        NetError::Timeout { .. } => {
            unavailable(format!("cannot connect to the relay {addr}: timed out"))
        }
        e => unavailable(format!("relay {addr}: {e}")),
    })?;
    // Under TLS, so that the handshake and every later step are bounded by progress too.
    let data_end = Arc::new(AtomicBool::new(false));
    let mut paced = Paced::new(Socket::Tcp(tcp), timeout, data_end.clone());
    let wire = match target.tls {
        TlsMode::None => Wire::plain(paced),
        TlsMode::Implicit => Wire::tls(
            peer.tls(paced)
                .await
                .map_err(|e| unavailable(format!("relay {addr}: {e}")))?,
            false,
        ),
        TlsMode::Starttls => {
            tokio::time::timeout(timeout, starttls(&mut paced, &hello, &target.host))
                .await
                .map_err(|_| {
                    unavailable(format!("the relay {addr} did not answer STARTTLS in time"))
                })??;
            let tls = peer.tls(paced).await.map_err(|e| {
                unavailable(format!("STARTTLS with the relay {}: {e}", target.host))
            })?;
            Wire::tls(tls, true)
        }
    };
    hello_and_login(target, wire, &hello, &addr, timeout, data_end).await
}

/// lettre's greeting and EHLO over `wire`, then the relay login when configured.
async fn hello_and_login(
    target: &config::Smtp,
    wire: Wire,
    hello: &ClientId,
    addr: &str,
    timeout: std::time::Duration,
    data_end: Arc<AtomicBool>,
) -> Result<Relay, DeliverError> {
    let mut conn = tokio::time::timeout(
        timeout,
        AsyncSmtpConnection::connect_with_transport(Box::new(wire), hello),
    )
    .await
    .map_err(|_| unavailable(format!("the relay {addr} did not greet in time")))?
    .map_err(|e| unavailable(format!("cannot connect to the relay {addr}: {e}")))?;
    if let Some((user, source)) = &target.credentials {
        let password = crate::password::resolve(source, timeout)
            .await
            .map_err(|e| unavailable(format!("relay login: {e}")))?;
        let creds = Credentials::new(user.clone(), password.expose().clone());
        conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
            .await
            .map_err(|e| unavailable(format!("relay login as {user}: {e}")))?;
    }
    Ok(Relay { conn, data_end })
}

/// Most octets of one relay reply read before STARTTLS (an EHLO answer is a few hundred).
const MAX_REPLY: usize = 64 * 1024;

/// The clear-text part of RFC 3207 §4: the greeting, EHLO, STARTTLS and its 220. Anything the
/// relay sends after that 220 and before the handshake was injected by someone on the path
/// (the STARTTLS command-injection attack): refused, as for POP3's STLS.
async fn starttls(s: &mut Paced, hello: &ClientId, host: &str) -> Result<(), DeliverError> {
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::with_capacity(4096);
    let refused = |what: &str, (code, text): (u16, Vec<String>)| {
        unavailable(format!(
            "the relay {host} answered {what} with {code} {}",
            crate::text::reason(&text.join(" "))
        ))
    };
    let io = |e: std::io::Error| unavailable(format!("relay {host}: {e}"));
    let greeting = read_reply(s, &mut buf, host).await?;
    if greeting.0 != 220 {
        return Err(refused("the connection", greeting));
    }
    s.write_all(Ehlo::new(hello.clone()).to_string().as_bytes())
        .await
        .map_err(io)?;
    let ehlo = read_reply(s, &mut buf, host).await?;
    if ehlo.0 != 250 {
        return Err(refused("EHLO", ehlo));
    }
    let offered = ehlo.1.iter().skip(1).any(|l| {
        l.split_ascii_whitespace()
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))
    });
    if !offered {
        return Err(unavailable(format!(
            "the relay {host} does not offer STARTTLS; popfetch will not send mail to it in clear text"
        )));
    }
    s.write_all(Starttls.to_string().as_bytes())
        .await
        .map_err(io)?;
    let go = read_reply(s, &mut buf, host).await?;
    if go.0 != 220 {
        return Err(refused("STARTTLS", go));
    }
    if !buf.is_empty() {
        return Err(unavailable(format!(
            "the relay {host} sent data after its STARTTLS answer, before the TLS handshake"
        )));
    }
    Ok(())
}

/// One SMTP reply (RFC 5321 §4.2): its code and the text of each line. `buf` keeps what was
/// read past it.
async fn read_reply(
    s: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    host: &str,
) -> Result<(u16, Vec<String>), DeliverError> {
    use tokio::io::AsyncReadExt;
    let mut lines = Vec::new();
    let mut used = 0;
    loop {
        while let Some(i) = memchr::memchr(b'\n', buf) {
            used += i + 1;
            let raw: Vec<u8> = buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| {
                    unavailable(format!(
                        "the relay {host} sent a bad reply line {:?}",
                        crate::pop3::printable(line.as_bytes(), 100)
                    ))
                })?;
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, lines));
            }
        }
        if used + buf.len() > MAX_REPLY {
            return Err(unavailable(format!(
                "the relay {host} sent a reply longer than {MAX_REPLY} octets"
            )));
        }
        match s.read_buf(buf).await {
            Ok(0) => {
                return Err(unavailable(format!(
                    "the relay {host} closed the connection"
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(unavailable(format!("relay {host}: {e}"))),
        }
    }
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

/// The relay's stream with a bound on stalls: a read, write, flush or shutdown that stays
/// pending for `limit` without making progress fails with `TimedOut`. Progress, not size, is
/// what is timed: a message of any size goes through a relay that keeps reading. Progress is
/// an operation completing, or the socket's queue of bytes the relay has not acknowledged
/// shrinking: a full send buffer drains slowly before the socket reports room again (Linux
/// wakes a writer only once a third of it is free), and the relay is reading all along.
struct Paced {
    inner: Socket,
    /// The socket of `inner`, for its send queue.
    fd: std::os::fd::RawFd,
    limit: std::time::Duration,
    /// Armed when an operation first goes pending; disarmed by any completed operation.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// The unacknowledged bytes in the socket when `stalled` was last armed.
    unacked: Option<u32>,
    /// Set while DATA is sent: the one read then is the answer to the final ".", which may
    /// take [`DATA_END_TIMEOUTS`] `limit`s.
    data_end: Arc<AtomicBool>,
}

impl Paced {
    fn new(inner: Socket, limit: std::time::Duration, data_end: Arc<AtomicBool>) -> Paced {
        Paced {
            fd: inner.fd(),
            inner,
            limit,
            stalled: None,
            unacked: None,
            data_end,
        }
    }

    fn guard<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        limit: std::time::Duration,
        r: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future;
        use std::task::Poll;
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        if self.stalled.is_none() {
            self.stalled = Some(Box::pin(tokio::time::sleep(limit)));
            self.unacked = unacked(self.fd);
        }
        let fd = self.fd;
        let Some(sleep) = self.stalled.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = unacked(fd);
            if let (Some(now), Some(before)) = (now, self.unacked)
                && now < before
            {
                self.unacked = Some(now);
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::now() + limit.min(MAX_STALL));
                continue;
            }
            self.stalled = None;
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the relay made no progress for {}s", limit.as_secs_f32()),
            )));
        }
    }
}

/// Longest a stall timer is ever set for (keeps `Instant` arithmetic far from overflow).
const MAX_STALL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Bytes sent on the socket `fd` that the peer has not acknowledged (TCP) or not read yet (a
/// Unix stream socket) (Linux `SIOCOUTQ`); `None` where that cannot be asked.
fn unacked(fd: std::os::fd::RawFd) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        let mut n: libc::c_int = 0;
        // SAFETY: `fd` is the open socket `Paced` owns through its stream; TIOCOUTQ writes one
        // c_int.
        let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &raw mut n) };
        if r == 0 {
            return u32::try_from(n).ok();
        }
    }
    let _ = fd;
    None
}

/// The relay's connection: TCP, or a Unix socket on this machine.
#[derive(Debug)]
enum Socket {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Socket {
    fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// lettre asks for an IP address; a Unix socket has none.
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match self {
            Socket::Tcp(s) => s.peer_addr(),
            Socket::Unix(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a Unix socket has no IP address",
            )),
        }
    }
}

impl tokio::io::AsyncRead for Socket {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => {
                let filled = buf.filled().len();
                let r = std::pin::Pin::new(&mut *s).poll_read(cx, buf);
                if buf.filled().len() > filled {
                    // The commands for the replies awaited are sent (pipelined): acknowledge
                    // at once, see `net::quick_ack`.
                    crate::net::quick_ack(s);
                }
                r
            }
            Socket::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Socket {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl std::fmt::Debug for Paced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paced").field("limit", &self.limit).finish()
    }
}

impl tokio::io::AsyncRead for Paced {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let limit = if self.data_end.load(Ordering::Relaxed) {
            self.limit.saturating_mul(DATA_END_TIMEOUTS)
        } else {
            self.limit
        };
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.guard(cx, limit, r)
    }
}

impl tokio::io::AsyncWrite for Paced {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        let limit = self.limit;
        self.guard(cx, limit, r)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        let limit = self.limit;
        self.guard(cx, limit, r)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        let limit = self.limit;
        self.guard(cx, limit, r)
    }
}

/// The relay's stream as lettre takes it: [`Paced`] TCP, under TLS or not. lettre reads a
/// greeting before its first EHLO, and after STARTTLS the relay sends none: `greeting` then
/// holds a stand-in that lettre reads first, so that it sends EHLO over TLS and learns the
/// relay's extensions anew (RFC 3207 §4.2: what was said in clear text is forgotten).
#[derive(Debug)]
struct Wire {
    greeting: &'static [u8],
    inner: WireInner,
}

#[derive(Debug)]
enum WireInner {
    Plain(Paced),
    Tls(Box<TlsStream<Paced>>),
}

impl Wire {
    fn plain(p: Paced) -> Wire {
        Wire {
            greeting: b"",
            inner: WireInner::Plain(p),
        }
    }

    /// `after_starttls`: the relay greeted in clear text already.
    fn tls(t: TlsStream<Paced>, after_starttls: bool) -> Wire {
        Wire {
            greeting: if after_starttls {
                b"220 TLS started\r\n"
            } else {
                b""
            },
            inner: WireInner::Tls(Box::new(t)),
        }
    }
}

impl AsyncTokioStream for Wire {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        match &self.inner {
            WireInner::Plain(p) => p.inner.peer_addr(),
            WireInner::Tls(t) => t.get_ref().inner.peer_addr(),
        }
    }
}

impl tokio::io::AsyncRead for Wire {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.greeting.is_empty() {
            let n = self.greeting.len().min(buf.remaining());
            buf.put_slice(&self.greeting[..n]);
            self.greeting = &self.greeting[n..];
            return std::task::Poll::Ready(Ok(()));
        }
        match &mut self.inner {
            WireInner::Plain(p) => std::pin::Pin::new(p).poll_read(cx, buf),
            WireInner::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Wire {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match &mut self.inner {
            WireInner::Plain(p) => std::pin::Pin::new(p).poll_write(cx, buf),
            WireInner::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.inner {
            WireInner::Plain(p) => std::pin::Pin::new(p).poll_flush(cx),
            WireInner::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match &mut self.inner {
            WireInner::Plain(p) => std::pin::Pin::new(p).poll_shutdown(cx),
            WireInner::Tls(t) => std::pin::Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
