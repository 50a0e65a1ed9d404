//! A small in-process POP3 server on loopback: a demo and test peer, not production code.
//!
//! This module owns [`DemoServer`], which serves one [`Mailbox`] on `127.0.0.1` so that
//! the README's demo (`cargo run --example demo`) works without a mail account, and so
//! that integration tests can script behaviour a real server (Dovecot) will not produce.
//! It also owns [`sample_messages`], the demo's mailbox content.
//!
//! The server speaks correct POP3 so the real client exercises its real paths:
//!
//! * RFC 1939: `USER`/`PASS`, `APOP`, `STAT`, `LIST`, `UIDL`, `RETR`, `TOP`, `DELE`,
//!   `NOOP`, `RSET`, `QUIT`, with the AUTHORIZATION / TRANSACTION / UPDATE states,
//!   an exclusive maildrop lock per session and dot-stuffed, CRLF multi-line responses.
//! * RFC 2449: `CAPA`, `RESP-CODES` (`[AUTH]`, `[IN-USE]`) and `PIPELINING`.
//! * RFC 5034: `AUTH` with the `PLAIN`, `LOGIN` and `CRAM-MD5` mechanisms,
//!   `*` cancellation and `AUTH-RESP-CODE`.
//!
//! Message sizes are octet counts of the message with CRLF line endings, as it goes on
//! the wire before dot-stuffing; a message without a final newline gets one on the wire.
//! Deletions take effect only when a session ends with `QUIT` (the UPDATE state); a
//! dropped connection discards its deletion marks.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::text::hex;

#[cfg(test)]
mod tests;

/// Longest command line accepted, line terminator included.
const MAX_COMMAND_LINE: usize = 512;
/// Longest SASL client response line accepted (RFC 5034 lifts the command limit).
const MAX_SASL_LINE: usize = 4096;
/// A connection with no complete line for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Input read and dropped, at most, while closing the connection.
const MAX_DRAIN: usize = 1 << 20;
/// How long sending the last response, and draining input, may take when closing.
const PARTING_TIMEOUT: Duration = Duration::from_secs(5);

const CAPABILITIES: &[&str] = &[
    "TOP",
    "UIDL",
    "USER",
    "RESP-CODES",
    "PIPELINING",
    "AUTH-RESP-CODE",
    "SASL CRAM-MD5 PLAIN LOGIN",
    "IMPLEMENTATION popfetch-demo",
];
const MECHANISMS: &[&str] = &["CRAM-MD5", "PLAIN", "LOGIN"];

/// Source of session ids (maildrop lock owners).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The one account the demo server serves.
#[derive(Clone, Debug, Default)]
pub struct Mailbox {
    /// User name, compared exactly (case-sensitive).
    pub user: String,
    /// Password, compared exactly.
    pub password: String,
    /// Raw RFC 5322 messages, with LF or CRLF line endings; message `i` (0-based) is
    /// POP3 message number `i + 1` in a fresh session.
    pub messages: Vec<Vec<u8>>,
    /// Behave like an RFC 1939 server without the optional UIDL command.
    pub without_uidl: bool,
}

/// A POP3 server on `127.0.0.1`, serving one [`Mailbox`] from its own tasks.
///
/// Dropping it (or [`DemoServer::shutdown`]) stops accepting and closes the sessions
/// still open.
#[derive(Debug)]
pub struct DemoServer {
    addr: SocketAddr,
    shared: SharedRef,
    accept: JoinHandle<()>,
}

impl DemoServer {
    /// Binds 127.0.0.1:0, spawns the accept loop on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub async fn start(mailbox: Mailbox) -> io::Result<DemoServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let messages = mailbox
            .messages
            .iter()
            .enumerate()
            .map(|(i, raw)| Arc::new(StoredMessage::new(i + 1, raw)))
            .collect();
        let shared = Arc::new(Mutex::new(Shared {
            user: mailbox.user,
            password: mailbox.password,
            messages,
            lock_owner: None,
            completed_sessions: 0,
            without_uidl: mailbox.without_uidl,
        }));
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%addr, "demo POP3 server listening");
        Ok(DemoServer {
            addr,
            shared,
            accept,
        })
    }

    /// The address the server listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// UIDLs of the messages still in the mailbox (not yet deleted by a QUIT).
    #[must_use]
    pub fn remaining(&self) -> Vec<String> {
        lock(&self.shared)
            .messages
            .iter()
            .map(|m| m.uid.clone())
            .collect()
    }

    /// Number of sessions that ended with QUIT (UPDATE state reached).
    #[must_use]
    pub fn sessions(&self) -> usize {
        lock(&self.shared).completed_sessions
    }

    /// Stops accepting and closes open sessions; the same happens on drop.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        // The accept loop owns the session tasks (a `JoinSet`), so aborting it ends them.
        self.accept.abort();
    }
}

/// Five to eight varied sample messages for the demo.
///
/// Plain text, lines starting with `.`, a line that is just `.`, an 8-bit UTF-8 body,
/// an empty body, a message without a final newline and a multipart MIME one; each
/// has `From`, `To`, `Subject`, `Date` and `Message-ID` headers. Line endings are
/// deliberately mixed (LF and CRLF).
#[must_use]
pub fn sample_messages() -> Vec<Vec<u8>> {
    let plain = "From: Alice Example <alice@example.org>\n\
To: Demo User <demo@localhost>\n\
Subject: Welcome to popfetch\n\
Date: Mon, 02 Mar 2026 09:15:00 +0000\n\
Message-ID: <welcome.1@example.org>\n\
\n\
Hi!\n\
\n\
This message came from the popfetch demo server, a tiny POP3 server\n\
running inside the example on 127.0.0.1. popfetch fetched it over POP3\n\
and delivered it locally before deleting it from the server.\n\
\n\
-- \n\
Alice\n";
    let leading_dots = "From: Bob Example <bob@example.org>\r\n\
To: Demo User <demo@localhost>\r\n\
Subject: Lines that start with a dot\r\n\
Date: Mon, 02 Mar 2026 09:20:00 +0000\r\n\
Message-ID: <dots.2@example.org>\r\n\
\r\n\
POP3 ends a message with a line holding a single dot, so servers\r\n\
double any dot that starts a line and clients remove it again.\r\n\
.profile and .bashrc are hidden files on Unix.\r\n\
..this line starts with two dots.\r\n\
...and this one with three.\r\n";
    let lone_dot = "From: Carol Example <carol@example.org>\n\
To: Demo User <demo@localhost>\n\
Subject: A line that is just a dot\n\
Date: Mon, 02 Mar 2026 09:25:00 +0000\n\
Message-ID: <lone-dot.3@example.org>\n\
\n\
The next line is a single dot, which must not end the message early:\n\
.\n\
If you can read this, dot-stuffing worked.\n";
    let utf8 = "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\r\n\
To: Demo User <demo@localhost>\r\n\
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\n\
Date: Mon, 02 Mar 2026 10:00:00 +0100\r\n\
Message-ID: <utf8.4@example.de>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Grüße aus Köln! Ein naïver Café-Besuch kostet 3,50 €.\r\n\
日本語のテキストもあります。\r\n\
Ελληνικά, русский, and an envelope: 📬\r\n";
    let empty_body = "From: Dave Example <dave@example.org>\n\
To: Demo User <demo@localhost>\n\
Subject: This message has an empty body\n\
Date: Mon, 02 Mar 2026 09:35:00 +0000\n\
Message-ID: <empty.5@example.org>\n\
\n";
    let no_final_newline = "From: Erin Example <erin@example.org>\n\
To: Demo User <demo@localhost>\n\
Subject: No newline at the end\n\
Date: Mon, 02 Mar 2026 09:40:00 +0000\n\
Message-ID: <no-eol.6@example.org>\n\
\n\
This message has no final newline; the server adds one on the wire.";
    let multipart = "From: Frank Example <frank@example.org>\r\n\
To: Demo User <demo@localhost>\r\n\
Subject: Inventory attached\r\n\
Date: Mon, 02 Mar 2026 09:45:00 +0000\r\n\
Message-ID: <mime.7@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"=_popfetch_demo_boundary\"\r\n\
\r\n\
This is a multi-part message in MIME format.\r\n\
\r\n\
--=_popfetch_demo_boundary\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
The inventory is attached as CSV.\r\n\
\r\n\
--=_popfetch_demo_boundary\r\n\
Content-Type: text/csv; name=\"inventory.csv\"\r\n\
Content-Disposition: attachment; filename=\"inventory.csv\"\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
bmFtZSxjb3VudApsZW1vbnMsMwpsaW1lcywxMgo=\r\n\
--=_popfetch_demo_boundary--\r\n";
    [
        plain,
        leading_dots,
        lone_dot,
        utf8,
        empty_body,
        no_final_newline,
        multipart,
    ]
    .iter()
    .map(|m| m.as_bytes().to_vec())
    .collect()
}

// ---------------------------------------------------------------------------------------
// Shared mailbox state

type SharedRef = Arc<Mutex<Shared>>;

#[derive(Debug)]
struct Shared {
    user: String,
    password: String,
    /// Messages not yet deleted by a session's UPDATE state.
    messages: Vec<Arc<StoredMessage>>,
    /// Session id holding the maildrop lock.
    lock_owner: Option<u64>,
    /// Sessions that reached the UPDATE state.
    completed_sessions: usize,
    without_uidl: bool,
}

/// Locks the shared state; a poisoned mutex is still usable (no invariant spans a panic).
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct StoredMessage {
    /// Unique-id: `demo-<i>-<8 hex digits>`, all in 0x21..=0x7E.
    uid: String,
    /// The message with CRLF line endings, ending with CRLF unless empty.
    wire: Vec<u8>,
}

impl StoredMessage {
    fn new(number: usize, raw: &[u8]) -> StoredMessage {
        let digest = Md5::digest(raw);
        StoredMessage {
            uid: format!("demo-{number}-{}", hex(&digest[..4])),
            wire: to_wire(raw),
        }
    }

    fn size(&self) -> usize {
        self.wire.len()
    }
}

/// Converts bare LF to CRLF and makes a non-empty message end with CRLF.
fn to_wire(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 16 + 2);
    let mut prev = None;
    for &b in raw {
        if b == b'\n' && prev != Some(b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        prev = Some(b);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        if !out.ends_with(b"\r") {
            out.push(b'\r');
        }
        out.push(b'\n');
    }
    out
}

/// The headers, the blank line and the first `lines` body lines of a wire message.
fn top_part(wire: &[u8], lines: usize) -> &[u8] {
    let mut end = 0;
    let mut in_headers = true;
    let mut body_lines = 0;
    for line in wire.split_inclusive(|&b| b == b'\n') {
        if in_headers {
            in_headers = line != b"\r\n";
        } else if body_lines == lines {
            break;
        } else {
            body_lines += 1;
        }
        end += line.len();
    }
    &wire[..end]
}

/// Appends a dot-stuffed multi-line body and the terminating `.CRLF`.
fn push_multiline_body(out: &mut Vec<u8>, body: &[u8]) {
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        // Unreachable for normalised messages; keeps the terminator on its own line.
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// APOP digest: lowercase hex MD5 of the greeting timestamp followed by the password.
fn apop_digest(timestamp: &str, password: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(password.as_bytes());
    hex(&md5.finalize())
}

/// CRAM-MD5 digest: lowercase hex HMAC-MD5 of the challenge keyed with the password.
fn cram_md5_digest(password: &str, challenge: &str) -> String {
    match Hmac::<Md5>::new_from_slice(password.as_bytes()) {
        Ok(mut mac) => {
            mac.update(challenge.as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; never a valid lowercase-hex digest otherwise.
        Err(_) => String::from("!"),
    }
}

/// Equality that does not stop at the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Nanoseconds since the Unix epoch, strictly increasing across calls so that greeting
/// timestamps and CRAM-MD5 challenges never repeat within the process.
fn unique_nanos() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last.saturating_add(1)))
        })
        .unwrap_or_else(|last| last);
    now.max(previous.saturating_add(1))
}

// ---------------------------------------------------------------------------------------
// Accepting and serving connections

async fn accept_loop(listener: TcpListener, shared: SharedRef) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "demo POP3 connection");
                    sessions.spawn(serve(stream, Arc::clone(&shared)));
                }
                Err(error) => {
                    tracing::warn!(%error, "demo POP3 server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

async fn serve(stream: TcpStream, shared: SharedRef) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "demo POP3 server: TCP_NODELAY failed");
    }
    let (rd, wr) = stream.into_split();
    let mut session = Session {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        shared,
        rd: BufReader::new(rd),
        wr,
        out: Vec::new(),
        timestamp: format!("<{}.{}@localhost>", std::process::id(), unique_nanos()),
        state: State::Authorization { user: None },
    };
    let end = session.run().await;
    session.finish(end).await;
}

/// Why a session ends.
#[derive(Debug)]
enum End {
    /// QUIT was answered.
    Quit,
    /// The client closed the connection (possibly mid-line).
    Eof,
    /// A line exceeded the length limit.
    TooLong,
    /// No complete line within [`IDLE_TIMEOUT`].
    Idle,
    /// The socket failed, or a write did not complete in time.
    Io(io::Error),
}

enum SaslResponse {
    Data(Vec<u8>),
    /// The client cancelled, or sent something that is not base64; already answered.
    Refused,
}

struct Session {
    id: u64,
    shared: SharedRef,
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    /// Responses not yet written to the socket.
    out: Vec<u8>,
    /// APOP timestamp from the greeting, angle brackets included.
    timestamp: String,
    state: State,
}

enum State {
    Authorization { user: Option<String> },
    Transaction(Transaction),
}

/// A session's view of the maildrop, valid while it holds the lock.
struct Transaction {
    without_uidl: bool,
    messages: Vec<Arc<StoredMessage>>,
    deleted: Vec<bool>,
    _lock: MaildropLock,
}

/// Releases the maildrop lock however the session ends (including task abort).
struct MaildropLock {
    shared: SharedRef,
    owner: u64,
}

impl Drop for MaildropLock {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if shared.lock_owner == Some(self.owner) {
            shared.lock_owner = None;
        }
    }
}

impl Session {
    async fn run(&mut self) -> End {
        let greeting = format!("popfetch demo server ready {}", self.timestamp);
        self.ok(&greeting);
        loop {
            let line = match self.read_line(MAX_COMMAND_LINE).await {
                Ok(line) => line,
                Err(end) => return end,
            };
            match self.command(&line).await {
                Ok(true) => {}
                Ok(false) => return End::Quit,
                Err(end) => return end,
            }
        }
    }

    /// Sends what is pending, with a parting `-ERR` when the server is the one closing.
    async fn finish(&mut self, end: End) {
        match &end {
            End::TooLong => self.err("line too long"),
            End::Idle => self.err("idle for too long, closing connection"),
            End::Quit | End::Eof => {}
            End::Io(error) => {
                tracing::debug!(%error, "demo POP3 session: connection failed");
                return;
            }
        }
        if !matches!(end, End::Eof) {
            let _ = self.flush(PARTING_TIMEOUT).await;
            let _ = self.wr.shutdown().await;
            // Closing with unread input makes the kernel send RST, which can destroy the
            // last response before the client reads it; read (and drop) input until the
            // client closes too, for a bounded time and amount.
            let _ = tokio::time::timeout(PARTING_TIMEOUT, self.drain()).await;
        }
        tracing::debug!(?end, "demo POP3 session ended");
    }

    /// Discards input until EOF, an error, or [`MAX_DRAIN`] octets.
    async fn drain(&mut self) {
        let mut drained = 0;
        while drained < MAX_DRAIN {
            match self.rd.fill_buf().await {
                Ok([]) | Err(_) => return,
                Ok(buf) => {
                    let n = buf.len();
                    drained += n;
                    self.rd.consume(n);
                }
            }
        }
    }

    fn ok(&mut self, text: &str) {
        push_ok(&mut self.out, text);
    }

    fn err(&mut self, text: &str) {
        push_err(&mut self.out, text);
    }

    async fn flush(&mut self, limit: Duration) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        match tokio::time::timeout(limit, self.wr.write_all(&self.out)).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(error)) => Err(End::Io(error)),
            Err(_) => Err(End::Io(io::ErrorKind::TimedOut.into())),
        }
    }

    /// Reads one line (terminator stripped), flushing responses first unless a complete
    /// pipelined line is already buffered.
    async fn read_line(&mut self, max: usize) -> Result<Vec<u8>, End> {
        if memchr::memchr(b'\n', self.rd.buffer()).is_none() {
            self.flush(IDLE_TIMEOUT).await?;
        }
        tokio::time::timeout(IDLE_TIMEOUT, read_bounded(&mut self.rd, max))
            .await
            .unwrap_or(Err(End::Idle))
    }

    /// Handles one command line; `Ok(false)` once QUIT has been answered.
    async fn command(&mut self, line: &[u8]) -> Result<bool, End> {
        let text = String::from_utf8_lossy(line);
        let (keyword, rest) = text.split_once(' ').unwrap_or((&text, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
        tracing::trace!(command = %keyword, "demo POP3 command");
        match keyword.as_str() {
            "" => self.err("empty command"),
            "CAPA" if args.is_empty() => self.capa(),
            "QUIT" if args.is_empty() => {
                self.quit();
                return Ok(false);
            }
            "CAPA" | "QUIT" => self.err("syntax error: no arguments expected"),
            _ => match &mut self.state {
                State::Authorization { .. } => self.authorization(&keyword, rest, &args).await?,
                State::Transaction(txn) => txn.command(&keyword, &args, &mut self.out),
            },
        }
        Ok(true)
    }

    fn capa(&mut self) {
        self.ok("Capability list follows");
        let without_uidl = lock(&self.shared).without_uidl;
        for capability in CAPABILITIES {
            if without_uidl && *capability == "UIDL" {
                continue;
            }
            self.out.extend_from_slice(capability.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b".\r\n");
    }

    fn quit(&mut self) {
        let State::Transaction(txn) = &self.state else {
            self.ok("popfetch demo server signing off");
            return;
        };
        // UPDATE state: remove the deleted messages, count the session, release the lock,
        // all before the +OK so that a client seeing it can rely on the outcome.
        let left = {
            let mut shared = lock(&self.shared);
            let deleted: Vec<&Arc<StoredMessage>> = txn
                .messages
                .iter()
                .zip(&txn.deleted)
                .filter_map(|(m, &d)| d.then_some(m))
                .collect();
            shared
                .messages
                .retain(|m| !deleted.iter().any(|d| Arc::ptr_eq(d, m)));
            shared.completed_sessions += 1;
            if shared.lock_owner == Some(self.id) {
                shared.lock_owner = None;
            }
            shared.messages.len()
        };
        self.state = State::Authorization { user: None };
        self.ok(&format!(
            "popfetch demo server signing off ({left} messages left)"
        ));
    }

    async fn authorization(&mut self, keyword: &str, rest: &str, args: &[&str]) -> Result<(), End> {
        match keyword {
            "USER" => match args {
                [name] => {
                    self.state = State::Authorization {
                        user: Some((*name).to_owned()),
                    };
                    self.ok("send PASS");
                }
                _ => self.err("syntax error: USER name"),
            },
            "PASS" => {
                let user = match &mut self.state {
                    State::Authorization { user } => user.take(),
                    State::Transaction(_) => None,
                };
                match user {
                    None => self.err("send USER first"),
                    // RFC 1939: the password is the rest of the line and may contain spaces.
                    Some(_) if rest.is_empty() => self.err("syntax error: PASS password"),
                    Some(user) => {
                        self.login(&user, |password| same(rest.as_bytes(), password.as_bytes()))
                    }
                }
            }
            "APOP" => match args {
                [user, digest] => {
                    let digest = digest.to_ascii_lowercase();
                    let timestamp = self.timestamp.clone();
                    self.login(user, |password| {
                        same(
                            digest.as_bytes(),
                            apop_digest(&timestamp, password).as_bytes(),
                        )
                    });
                }
                _ => self.err("syntax error: APOP name digest"),
            },
            "AUTH" => match args {
                [] => {
                    self.ok("SASL mechanisms follow");
                    for mechanism in MECHANISMS {
                        self.out.extend_from_slice(mechanism.as_bytes());
                        self.out.extend_from_slice(b"\r\n");
                    }
                    self.out.extend_from_slice(b".\r\n");
                }
                [mechanism] => self.auth(&mechanism.to_ascii_uppercase(), None).await?,
                [mechanism, initial] => {
                    self.auth(&mechanism.to_ascii_uppercase(), Some(initial))
                        .await?;
                }
                _ => self.err("syntax error: AUTH mechanism [initial-response]"),
            },
            "STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "NOOP" | "RSET" => {
                self.err("not authenticated yet");
            }
            _ => self.err("unknown command"),
        }
        Ok(())
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Result<(), End> {
        match mechanism {
            "PLAIN" => {
                let SaslResponse::Data(data) = self.sasl_response(initial, b"").await? else {
                    return Ok(());
                };
                let mut parts = data.split(|&b| b == 0);
                let (Some(authzid), Some(authcid), Some(password), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    self.err("malformed PLAIN response");
                    return Ok(());
                };
                if !authzid.is_empty() && authzid != authcid {
                    self.err("[AUTH] invalid credentials");
                    return Ok(());
                }
                let user = String::from_utf8_lossy(authcid).into_owned();
                self.login(&user, |expected| same(password, expected.as_bytes()));
            }
            "LOGIN" => {
                let SaslResponse::Data(user) = self.sasl_response(initial, b"Username:").await?
                else {
                    return Ok(());
                };
                let SaslResponse::Data(password) = self.sasl_response(None, b"Password:").await?
                else {
                    return Ok(());
                };
                let user = String::from_utf8_lossy(&user).into_owned();
                self.login(&user, |expected| same(&password, expected.as_bytes()));
            }
            "CRAM-MD5" => {
                if initial.is_some() {
                    self.err("CRAM-MD5 does not allow an initial response");
                    return Ok(());
                }
                let challenge = format!("<{}.{}@localhost>", std::process::id(), unique_nanos());
                let SaslResponse::Data(data) =
                    self.sasl_response(None, challenge.as_bytes()).await?
                else {
                    return Ok(());
                };
                let text = String::from_utf8_lossy(&data);
                let Some((user, digest)) = text.rsplit_once(' ') else {
                    self.err("malformed CRAM-MD5 response");
                    return Ok(());
                };
                let digest = digest.to_ascii_lowercase();
                self.login(user, |password| {
                    same(
                        digest.as_bytes(),
                        cram_md5_digest(password, &challenge).as_bytes(),
                    )
                });
            }
            _ => self.err("unsupported SASL mechanism"),
        }
        Ok(())
    }

    /// The client's decoded response: the initial response if given, else the answer
    /// to a `+ <base64 challenge>` continuation. Cancellation and bad base64 are
    /// answered here and come back as [`SaslResponse::Refused`].
    async fn sasl_response(
        &mut self,
        initial: Option<&str>,
        challenge: &[u8],
    ) -> Result<SaslResponse, End> {
        let line = match initial {
            // RFC 5034: "=" is an empty initial response.
            Some("=") => Vec::new(),
            Some(initial) => initial.as_bytes().to_vec(),
            None => {
                self.out.extend_from_slice(b"+ ");
                self.out
                    .extend_from_slice(BASE64.encode(challenge).as_bytes());
                self.out.extend_from_slice(b"\r\n");
                let line = self.read_line(MAX_SASL_LINE).await?;
                if line == b"*" {
                    self.err("AUTH cancelled");
                    return Ok(SaslResponse::Refused);
                }
                line
            }
        };
        match BASE64.decode(&line) {
            Ok(data) => Ok(SaslResponse::Data(data)),
            Err(_) => {
                self.err("invalid base64 in SASL response");
                Ok(SaslResponse::Refused)
            }
        }
    }

    /// Checks credentials and takes the maildrop lock, entering TRANSACTION.
    fn login(&mut self, user: &str, verify: impl FnOnce(&str) -> bool) {
        let mut shared = lock(&self.shared);
        if user != shared.user || !verify(&shared.password) {
            drop(shared);
            self.state = State::Authorization { user: None };
            self.err("[AUTH] invalid credentials");
            return;
        }
        if shared.lock_owner.is_some() {
            drop(shared);
            self.state = State::Authorization { user: None };
            self.err("[IN-USE] maildrop already locked by another session");
            return;
        }
        shared.lock_owner = Some(self.id);
        let messages = shared.messages.clone();
        drop(shared);
        let octets: usize = messages.iter().map(|m| m.size()).sum();
        let count = messages.len();
        let without_uidl = lock(&self.shared).without_uidl;
        self.state = State::Transaction(Transaction {
            without_uidl,
            deleted: vec![false; count],
            messages,
            _lock: MaildropLock {
                shared: Arc::clone(&self.shared),
                owner: self.id,
            },
        });
        self.ok(&format!(
            "{user}'s maildrop has {count} messages ({octets} octets)"
        ));
    }
}

fn push_err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"-ERR ");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"+OK");
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads up to and including `\n`, failing once more than `max` octets would be needed.
async fn read_bounded(rd: &mut BufReader<OwnedReadHalf>, max: usize) -> Result<Vec<u8>, End> {
    let mut line = Vec::new();
    loop {
        let buf = rd.fill_buf().await.map_err(End::Io)?;
        if buf.is_empty() {
            return Err(End::Eof);
        }
        let (take, complete) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(End::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        rd.consume(take);
        if complete {
            break;
        }
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

impl Transaction {
    fn command(&mut self, keyword: &str, args: &[&str], out: &mut Vec<u8>) {
        if self.without_uidl && keyword == "UIDL" {
            push_err(out, "unknown command");
            return;
        }
        match (keyword, args) {
            ("STAT", []) => {
                let (count, octets) = self.totals();
                push_ok(out, &format!("{count} {octets}"));
            }
            ("LIST", []) => {
                let (count, octets) = self.totals();
                push_ok(out, &format!("{count} messages ({octets} octets)"));
                for (number, message) in self.live() {
                    out.extend_from_slice(format!("{number} {}\r\n", message.size()).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
            }
            ("UIDL", []) => {
                push_ok(out, "unique-id listing follows");
                for (number, message) in self.live() {
                    out.extend_from_slice(format!("{number} {}\r\n", message.uid).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
            }
            ("LIST", [n]) => match self.message(n) {
                Ok((number, message)) => push_ok(out, &format!("{number} {}", message.size())),
                Err(e) => push_err(out, &e),
            },
            ("UIDL", [n]) => match self.message(n) {
                Ok((number, message)) => push_ok(out, &format!("{number} {}", message.uid)),
                Err(e) => push_err(out, &e),
            },
            ("RETR", [n]) => match self.message(n) {
                Ok((_, message)) => {
                    push_ok(out, &format!("{} octets", message.size()));
                    push_multiline_body(out, &message.wire);
                }
                Err(e) => push_err(out, &e),
            },
            ("TOP", [n, lines]) => match (self.message(n), parse_number(lines)) {
                (Ok((_, message)), Some(lines)) => {
                    push_ok(out, "top of message follows");
                    push_multiline_body(out, top_part(&message.wire, lines));
                }
                (Err(e), _) => push_err(out, &e),
                (_, None) => push_err(out, "invalid line count"),
            },
            ("DELE", [n]) => match self.message(n) {
                Ok((number, _)) => {
                    self.deleted[number - 1] = true;
                    push_ok(out, &format!("message {number} deleted"));
                }
                Err(e) => push_err(out, &e),
            },
            ("NOOP", []) => push_ok(out, ""),
            ("RSET", []) => {
                self.deleted.fill(false);
                let (count, octets) = self.totals();
                push_ok(
                    out,
                    &format!("maildrop has {count} messages ({octets} octets)"),
                );
            }
            ("STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "NOOP" | "RSET", _) => {
                push_err(out, "syntax error: wrong number of arguments");
            }
            ("USER" | "PASS" | "APOP" | "AUTH", _) => push_err(out, "already authenticated"),
            _ => push_err(out, "unknown command"),
        }
    }

    /// Message numbers (1-based) and messages not marked as deleted.
    fn live(&self) -> impl Iterator<Item = (usize, &StoredMessage)> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .enumerate()
            .filter(|(_, (_, deleted))| !**deleted)
            .map(|(i, (m, _))| (i + 1, &**m))
    }

    fn totals(&self) -> (usize, usize) {
        self.live().fold((0, 0), |(count, octets), (_, m)| {
            (count + 1, octets + m.size())
        })
    }

    fn message(&self, arg: &str) -> Result<(usize, &StoredMessage), String> {
        let number = parse_number(arg).ok_or_else(|| String::from("invalid message number"))?;
        match number.checked_sub(1).and_then(|i| self.messages.get(i)) {
            None => Err(format!(
                "no such message, only {} in maildrop",
                self.messages.len()
            )),
            Some(_) if self.deleted[number - 1] => Err(format!("message {number} already deleted")),
            Some(message) => Ok((number, message)),
        }
    }
}

/// A non-negative decimal number; too-large values saturate (they are never valid indexes
/// and mean "all lines" for TOP).
fn parse_number(arg: &str) -> Option<usize> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.parse().unwrap_or(usize::MAX))
}
