//! Delivery over LMTP (RFC 2033) to a mailbox server (Dovecot, Cyrus, Stalwart…) on a Unix
//! socket or over TCP, spoken with [`crate::smtp_codec`]. The message is spooled into an
//! unlinked temp file while it arrives, every line end made CRLF ([`super::spool`], the relay's
//! rule); then MAIL, every RCPT and DATA go out in one write (PIPELINING, which RFC 2033 §5
//! makes mandatory; a server that does not offer it is spoken to one command at a time), the
//! spool is streamed dot-stuffed ([`DotStuff`]), and the server gives one reply per accepted
//! recipient after the final "." (§4.2).
//!
//! Outcome: every recipient 2xx = delivered; else any 4xx = transient (the message stays on the
//! POP3 server and is tried again), else permanent (`on_permanent_failure` applies); the server
//! unreachable, silent past the account's `timeout` or gone mid-exchange = unavailable. A 2xx
//! means the server stored the message, so a crash after it may duplicate only that message,
//! as with the relay.
//!
//! One connection per poll: opened at the first message, RSET before each later one, QUIT at
//! [`Lmtp::close`]. A connection the server closed while idle is opened anew once, before any
//! recipient was accepted, so no message is sent twice by it. Over TCP, TLS is [`crate::net`]'s:
//! implicit, or STARTTLS spoken here (greeting, LHLO, STARTTLS, 220, nothing more buffered),
//! then LHLO again over TLS (RFC 3207 §4.2).

use std::fs::File;
use std::io::{Read, Seek};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::spool::{CHUNK, Spool};
use super::{DeliverError, ErrorKind};
use crate::config::{self, LmtpAt, TlsMode};
use crate::net::{NetError, Peer};
use crate::smtp_codec::{Class, Command, Decoder, DotStuff, Extensions, Reply};
/// Each reply after the final "." may take this many `timeout`s: the server stores the message
/// (and runs Sieve) for that recipient before answering.
const DATA_END_TIMEOUTS: u32 = 4;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open LMTP session between transactions.
struct Conn {
    io: Box<dyn Io>,
    dec: Decoder,
    ext: Extensions,
    /// A transaction ran on it: RSET before the next.
    used: bool,
    /// Where it goes, for messages.
    name: String,
    timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmtpConnection")
            .field("to", &self.name)
            .finish()
    }
}

#[derive(Debug)]
pub struct Lmtp {
    target: Arc<config::Lmtp>,
    timeout: Duration,
    conn: Arc<Mutex<Option<Conn>>>,
}

impl Lmtp {
    pub fn new(target: &config::Lmtp, timeout: Duration) -> Lmtp {
        Lmtp {
            target: Arc::new(target.clone()),
            timeout,
            conn: Arc::default(),
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
            skip: Vec::new(),
            reached: Vec::new(),
        };
        if let Some(h) = header {
            sink.write(h)?;
        }
        Ok(sink)
    }

    /// Ends the poll's session with QUIT.
    pub async fn close(&self) {
        if let Some(mut c) = self.conn.lock().await.take() {
            let _ = tokio::time::timeout(self.timeout, async {
                c.send(&[Command::Quit]).await?;
                c.reply().await
            })
            .await;
        }
    }
}

#[derive(Debug)]
pub struct Sink {
    spool: Spool,
    /// The RCPT addresses.
    to: Vec<String>,
    target: Arc<config::Lmtp>,
    timeout: Duration,
    conn: Arc<Mutex<Option<Conn>>>,
    /// Recipients that have it from an earlier try.
    skip: Vec<String>,
    /// Recipients that got a 2xx after the data in this try.
    reached: Vec<String>,
}

impl Sink {
    pub(super) fn skip_recipients(&mut self, reached: Vec<String>) {
        self.skip = reached;
    }

    pub(super) fn reached(&self) -> &[String] {
        &self.reached
    }

    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        self.spool.write(data)
    }

    pub(super) fn bytes(&self) -> u64 {
        self.spool.bytes()
    }

    /// Sends the spooled message; `Ok` once every recipient got a 2xx after the final ".".
    pub(super) async fn prepare(&mut self) -> Result<(), DeliverError> {
        let Some(mut file) = self.spool.finish()? else {
            return Ok(());
        };
        let sender = match &self.target.from {
            Some(f) => Some(f.clone()),
            None => super::smtp::read_sender(&mut file)?,
        };
        let sender = sender.unwrap_or_default();
        if !sender.is_empty() && !Command::safe_argument(&sender) {
            return Err(permanent(format!(
                "envelope sender {sender:?} cannot be sent"
            )));
        }
        let to: Vec<String> = self
            .to
            .iter()
            .filter(|t| !self.skip.contains(t))
            .cloned()
            .collect();
        if to.is_empty() {
            // Every recipient has it already; an earlier try ended before it was recorded.
            return Ok(());
        }
        let utf8 = !sender.is_ascii() || to.iter().any(|t| !t.is_ascii());

        let mut guard = self.conn.lock().await;
        let mut retried = false;
        loop {
            let reused = guard.is_some();
            if guard.is_none() {
                *guard = Some(connect(&self.target, self.timeout).await?);
            }
            let Some(conn) = guard.as_mut() else {
                return Err(unavailable("no connection".into()));
            };
            file.rewind()
                .map_err(|e| DeliverError::io("cannot read the spool file", e))?;
            let tx = Transaction {
                sender: &sender,
                to: &to,
                eight_bit: self.spool.eight_bit(),
                utf8,
            };
            match conn.transaction(&tx, &mut file, &mut self.reached).await {
                Ok(r) => return r,
                // Dropped while idle, before any recipient was accepted: once more, anew.
                Err(Broken::BeforeData(_)) if reused && !retried => {
                    retried = true;
                    *guard = None;
                }
                Err(Broken::BeforeData(e) | Broken::Later(e)) => {
                    *guard = None;
                    return Err(e);
                }
            }
        }
    }
}

struct Transaction<'a> {
    sender: &'a str,
    to: &'a [String],
    eight_bit: bool,
    utf8: bool,
}

/// The connection failed (it is dropped); before DATA's 354 or after.
enum Broken {
    BeforeData(DeliverError),
    Later(DeliverError),
}

impl Conn {
    async fn send(&mut self, cmds: &[Command<'_>]) -> Result<(), DeliverError> {
        let mut out = Vec::new();
        for c in cmds {
            c.encode(&mut out);
        }
        self.write(&out).await
    }

    async fn write(&mut self, out: &[u8]) -> Result<(), DeliverError> {
        let name = &self.name;
        match tokio::time::timeout(self.timeout, async {
            self.io.write_all(out).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable(format!("LMTP server {name}: {e}"))),
            Err(_) => Err(unavailable(format!(
                "the LMTP server {name} stopped reading for {}s",
                self.timeout.as_secs_f32()
            ))),
        }
    }

    async fn reply(&mut self) -> Result<Reply, DeliverError> {
        self.reply_within(self.timeout).await
    }

    /// The next whole reply, waiting at most `limit` for each read.
    async fn reply_within(&mut self, limit: Duration) -> Result<Reply, DeliverError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.dec.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(unavailable(format!("LMTP server {}: {e}", self.name))),
            }
            let n = match tokio::time::timeout(limit, self.io.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    return Err(unavailable(format!(
                        "the LMTP server {} closed the connection",
                        self.name
                    )));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(unavailable(format!("LMTP server {}: {e}", self.name))),
                Err(_) => {
                    return Err(unavailable(format!(
                        "the LMTP server {} did not answer within {}s",
                        self.name,
                        limit.as_secs_f32()
                    )));
                }
            };
            self.dec.feed(&buf[..n]);
        }
    }

    /// One message: `Ok` holds the outcome the server gave; `Err` a broken connection. The
    /// recipients given a 2xx after the data go into `reached` as the replies come, so that a
    /// connection broken among them still tells who has the message.
    async fn transaction(
        &mut self,
        tx: &Transaction<'_>,
        file: &mut File,
        reached: &mut Vec<String>,
    ) -> Result<Result<(), DeliverError>, Broken> {
        use Broken::{BeforeData, Later};
        if self.dec.buffered() > 0 {
            // Replies nobody asked for: they would be read as this transaction's. The session is
            // out of step; a fresh one is opened (before anything of this message was sent).
            return Err(BeforeData(unavailable(format!(
                "the LMTP server {} sent replies between transactions",
                self.name
            ))));
        }
        if tx.utf8 && !self.ext.smtputf8 {
            return Ok(Err(permanent(format!(
                "the envelope has non-ASCII addresses and the LMTP server {} does not offer SMTPUTF8",
                self.name
            ))));
        }
        let mut cmds = Vec::with_capacity(tx.to.len() + 3);
        let rset = self.used;
        if rset {
            cmds.push(Command::Rset);
        }
        cmds.push(Command::Mail {
            from: (!tx.sender.is_empty()).then_some(tx.sender),
            body_8bit: tx.eight_bit && self.ext.eight_bit_mime,
            smtputf8: tx.utf8,
        });
        cmds.extend(tx.to.iter().map(|t| Command::Rcpt(t)));
        cmds.push(Command::Data);
        self.used = true;
        // Every command's reply, in order.
        let mut replies = Vec::with_capacity(cmds.len());
        if self.ext.pipelining {
            self.send(&cmds).await.map_err(BeforeData)?;
            for _ in &cmds {
                replies.push(self.reply().await.map_err(BeforeData)?);
            }
        } else {
            for c in &cmds {
                self.send(std::slice::from_ref(c))
                    .await
                    .map_err(BeforeData)?;
                let r = self.reply().await.map_err(BeforeData)?;
                let stop = r.class() != Class::Positive && !matches!(c, Command::Rcpt(_));
                replies.push(r);
                if stop {
                    break;
                }
            }
        }
        let mut replies = replies.into_iter();
        if rset {
            let r = replies
                .next()
                .ok_or_else(|| BeforeData(unavailable("no reply".into())))?;
            if r.class() != Class::Positive {
                return Err(BeforeData(unavailable(format!(
                    "the LMTP server {} answered RSET with {}",
                    self.name,
                    r.summary()
                ))));
            }
        }
        let mail = replies
            .next()
            .ok_or_else(|| BeforeData(unavailable("no reply".into())))?;
        let rcpts: Vec<Reply> = replies.by_ref().take(tx.to.len()).collect();
        let data = replies.next();
        let mut failed: Vec<(String, Reply)> = Vec::new();
        if mail.class() != Class::Positive {
            failed.push(("MAIL".into(), mail));
        }
        let mut accepted = Vec::new();
        for (to, r) in tx.to.iter().zip(rcpts) {
            if r.class() == Class::Positive {
                accepted.push(to.as_str());
            } else {
                failed.push((format!("<{to}>"), r));
            }
        }
        match data {
            Some(r) if r.code == 354 => {
                if !failed.is_empty() && accepted.is_empty() {
                    // A server that asks for data with nobody to deliver to: its state is not
                    // one to go on from.
                    return Err(BeforeData(unavailable(format!(
                        "the LMTP server {} accepted DATA without recipients",
                        self.name
                    ))));
                }
            }
            Some(r) => {
                // Refused after MAIL or every RCPT was: that refusal says why, not DATA's.
                if failed.is_empty() || !accepted.is_empty() {
                    failed.push(("DATA".into(), r));
                }
                return Ok(Err(outcome(&self.name, &failed)));
            }
            None => return Ok(Err(outcome(&self.name, &failed))),
        }
        self.stream(file).await.map_err(Later)?;
        let limit = self.timeout.saturating_mul(DATA_END_TIMEOUTS);
        for to in accepted {
            let r = self.reply_within(limit).await.map_err(Later)?;
            if r.class() == Class::Positive {
                reached.push(to.to_string());
            } else {
                failed.push((format!("<{to}>"), r));
            }
        }
        if failed.is_empty() {
            return Ok(Ok(()));
        }
        let mut e = outcome(&self.name, &failed);
        if !reached.is_empty() {
            e.message.push_str(&format!(
                "; delivered to {} (not sent to them again)",
                reached.join(", ")
            ));
        }
        Ok(Err(e))
    }

    /// The spool, dot-stuffed, then the final ".".
    async fn stream(&mut self, file: &mut File) -> Result<(), DeliverError> {
        let mut stuff = DotStuff::new();
        let mut buf = vec![0u8; CHUNK];
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| DeliverError::io("cannot read the spool file", e))?;
            out.clear();
            if n == 0 {
                stuff.finish(&mut out);
                return self.write(&out).await;
            }
            stuff.write(&buf[..n], &mut out);
            self.write(&out).await?;
        }
    }
}

/// Any 4xx → transient; else permanent. The message names each refusal.
fn outcome(server: &str, failed: &[(String, Reply)]) -> DeliverError {
    let transient = failed.iter().any(|(_, r)| r.class() == Class::Transient);
    let what: Vec<String> = failed
        .iter()
        .map(|(who, r)| format!("{who}: {}", r.summary()))
        .collect();
    DeliverError {
        kind: if transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        },
        message: format!("the LMTP server {server} refused: {}", what.join("; ")),
    }
}

async fn connect(target: &config::Lmtp, timeout: Duration) -> Result<Conn, DeliverError> {
    let hello = target.lhlo.clone().unwrap_or_else(super::hostname);
    let (io, name, tls): (Box<dyn Io>, String, Option<(Peer<'_>, bool)>) = match &target.at {
        LmtpAt::Socket(path) => {
            let name = path.display().to_string();
            let s = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
                .await
                .map_err(|_| {
                    unavailable(format!(
                        "cannot connect to the LMTP socket {name}: timed out"
                    ))
                })?
                .map_err(|e| {
                    unavailable(format!("cannot connect to the LMTP socket {name}: {e}"))
                })?;
            (Box::new(s), name, None)
        }
        LmtpAt::Tcp {
            host,
            port,
            tls,
            ca_file,
        } => {
            let name = crate::text::host_port(host, *port);
            let peer = Peer {
                host,
                port: *port,
                ca_file: ca_file.as_deref(),
                verify: true,
                pins: &[],
                min_version: crate::net::TlsVersion::default(),
                client: None,
                timeout,
            };
            let tcp = peer.connect().await.map_err(|e| match e {
                NetError::Connect { source, .. } => unavailable(format!(
                    "cannot connect to the LMTP server {name}: {source}"
                )),
                e => unavailable(format!("LMTP server {name}: {e}")),
            })?;
            match tls {
                TlsMode::None => (Box::new(tcp), name, None),
                TlsMode::Implicit => {
                    let s = peer
                        .tls(tcp)
                        .await
                        .map_err(|e| unavailable(format!("LMTP server {name}: {e}")))?;
                    (Box::new(s), name, None)
                }
                TlsMode::Starttls => (Box::new(tcp), name, Some((peer, true))),
            }
        }
    };
    let mut conn = Conn {
        io,
        dec: Decoder::new(),
        ext: Extensions::default(),
        used: false,
        name,
        timeout,
    };
    let greeting = conn.reply().await?;
    if greeting.code != 220 {
        return Err(unavailable(format!(
            "the LMTP server {} greeted with {}",
            conn.name,
            greeting.summary()
        )));
    }
    conn.lhlo(&hello).await?;
    if let Some((peer, _)) = tls {
        if !conn.ext.starttls {
            return Err(unavailable(format!(
                "the LMTP server {} does not offer STARTTLS; popfetch will not send mail to it in clear text",
                conn.name
            )));
        }
        conn.send(&[Command::Starttls]).await?;
        let go = conn.reply().await?;
        if go.code != 220 {
            return Err(unavailable(format!(
                "the LMTP server {} answered STARTTLS with {}",
                conn.name,
                go.summary()
            )));
        }
        // Bytes after the 220 and before the handshake were injected on the path.
        if conn.dec.buffered() > 0 {
            return Err(unavailable(format!(
                "the LMTP server {} sent data after its STARTTLS answer, before the TLS handshake",
                conn.name
            )));
        }
        let Conn { io, name, .. } = conn;
        let tls = peer
            .tls(io)
            .await
            .map_err(|e| unavailable(format!("STARTTLS with the LMTP server {name}: {e}")))?;
        conn = Conn {
            io: Box::new(tls),
            dec: Decoder::new(),
            ext: Extensions::default(),
            used: false,
            name,
            timeout,
        };
        conn.lhlo(&hello).await?;
    }
    Ok(conn)
}

impl Conn {
    async fn lhlo(&mut self, hello: &str) -> Result<(), DeliverError> {
        self.send(&[Command::Lhlo(hello)]).await?;
        let r = self.reply().await?;
        if r.class() != Class::Positive {
            return Err(unavailable(format!(
                "the LMTP server {} answered LHLO with {}",
                self.name,
                r.summary()
            )));
        }
        self.ext = Extensions::from_reply(&r);
        Ok(())
    }
}

fn unavailable(message: String) -> DeliverError {
    DeliverError {
        kind: ErrorKind::Unavailable,
        message,
    }
}

fn permanent(message: String) -> DeliverError {
    DeliverError {
        kind: ErrorKind::Permanent,
        message,
    }
}
