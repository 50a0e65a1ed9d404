//! The demo's POP3 server: `cargo run --release --example demo`, the README's first command,
//! fetches from it, so popfetch can be tried without a mail account. Nothing else uses it: the
//! binary does not, and the tests have Dovecot and their own scripted server.
//!
//! It owns [`DemoServer`], which serves one [`Mailbox`] on `127.0.0.1`, and
//! [`sample_messages`], the demo's mail. It speaks just enough correct POP3 (RFC 1939, CAPA from
//! RFC 2449) for the real client to take its real paths: CAPA (`USER`, `UIDL`, `PIPELINING`),
//! `USER`/`PASS`, `STAT`, `LIST`, `UIDL`, `RETR` (CRLF, dot-stuffed), `DELE`, `RSET`, `NOOP`
//! and `QUIT`. Answers to pipelined commands go out together. One session at a time holds the
//! maildrop (`[IN-USE]` for the others), and deletions take effect only when that session ends
//! with `QUIT` (the UPDATE state); a dropped connection keeps everything. Lines and idle time
//! are bounded, so a stray client cannot hold it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::{JoinHandle, JoinSet};

#[cfg(test)]
mod tests;

/// Longest command line accepted, line terminator included (RFC 1939 needs far less).
const MAX_COMMAND_LINE: u64 = 512;
/// A connection with no complete line for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long sending the last answer, and reading what the client still sends, may take when
/// the server closes.
const PARTING_TIMEOUT: Duration = Duration::from_secs(5);
/// Input read and dropped, at most, while closing.
const MAX_DRAIN: u64 = 1 << 20;

const CAPABILITIES: &[u8] = b"USER\r\nUIDL\r\nPIPELINING\r\nRESP-CODES\r\n.\r\n";

/// The one account the demo server serves.
#[derive(Clone, Debug, Default)]
pub struct Mailbox {
    /// User name, compared exactly.
    pub user: String,
    /// Password, compared exactly.
    pub password: String,
    /// Raw RFC 5322 messages, with LF or CRLF line endings; message `i` (0-based) is POP3
    /// message number `i + 1` in a fresh session.
    pub messages: Vec<Vec<u8>>,
}

/// A POP3 server on `127.0.0.1`, serving one [`Mailbox`] from its own tasks. Dropping it stops
/// accepting and closes the sessions still open.
#[derive(Debug)]
pub struct DemoServer {
    addr: SocketAddr,
    maildrop: Maildrop,
    accept: JoinHandle<()>,
}

/// The messages not yet deleted by a session's UPDATE state. A session holds the lock from its
/// login to its end: that is the maildrop lock of RFC 1939 §8.
type Maildrop = Arc<Mutex<Vec<Message>>>;

#[derive(Debug)]
struct Message {
    /// `demo-<n>`: unique within the server's life, which is the demo's.
    uid: String,
    /// The message as sent, before dot-stuffing; its length is the size LIST and STAT give
    /// (RFC 1939 §11).
    wire: Vec<u8>,
}

impl DemoServer {
    /// Binds 127.0.0.1:0 and spawns the accept loop on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    pub async fn start(mailbox: Mailbox) -> io::Result<DemoServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let messages = mailbox.messages.iter().enumerate();
        let maildrop = Arc::new(Mutex::new(
            messages
                .map(|(i, raw)| Message {
                    uid: format!("demo-{}", i + 1),
                    wire: to_wire(raw),
                })
                .collect(),
        ));
        let credentials = Arc::new((mailbox.user, mailbox.password));
        let accept = tokio::spawn(accept_loop(listener, credentials, Arc::clone(&maildrop)));
        Ok(DemoServer {
            addr,
            maildrop,
            accept,
        })
    }

    /// The address the server listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Unique-ids of the messages still in the mailbox (not deleted by a QUIT); waits while a
    /// session holds the maildrop.
    pub async fn remaining(&self) -> Vec<String> {
        let maildrop = self.maildrop.lock().await;
        maildrop.iter().map(|m| m.uid.clone()).collect()
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

/// The message with CRLF line endings, each line ended, a last one without LF included.
fn to_wire(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 16 + 2);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Appends a wire message dot-stuffed, and the terminating `.CRLF`.
fn push_multiline_body(out: &mut Vec<u8>, wire: &[u8]) {
    for line in wire.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
}

fn push_ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("+OK {text}\r\n").as_bytes());
}

fn push_err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("-ERR {text}\r\n").as_bytes());
}

async fn accept_loop(
    listener: TcpListener,
    credentials: Arc<(String, String)>,
    maildrop: Maildrop,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let session = Session::new(stream, &credentials, &maildrop);
                    sessions.spawn(session.serve());
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

/// Why a session ends.
enum End {
    /// QUIT was answered.
    Quit,
    /// The client closed the connection, or the socket failed.
    Gone,
    /// A line exceeded [`MAX_COMMAND_LINE`].
    TooLong,
    /// No complete line within [`IDLE_TIMEOUT`].
    Idle,
}

struct Session {
    credentials: Arc<(String, String)>,
    maildrop: Maildrop,
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    /// Answers not yet written.
    out: Vec<u8>,
    /// The name USER gave, waiting for PASS.
    user: Option<String>,
    /// Logged in: the maildrop, held, and this session's deletion marks.
    transaction: Option<(OwnedMutexGuard<Vec<Message>>, Vec<bool>)>,
}

impl Session {
    fn new(stream: TcpStream, credentials: &Arc<(String, String)>, maildrop: &Maildrop) -> Self {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        Session {
            credentials: Arc::clone(credentials),
            maildrop: Arc::clone(maildrop),
            rd: BufReader::new(rd),
            wr,
            out: b"+OK popfetch demo server ready\r\n".to_vec(),
            user: None,
            transaction: None,
        }
    }

    async fn serve(mut self) {
        let end = loop {
            match self.read_line().await {
                Ok(line) if self.command(&line) => {}
                Ok(_) => break End::Quit,
                Err(end) => break end,
            }
        };
        match end {
            End::TooLong => push_err(&mut self.out, "line too long"),
            End::Idle => push_err(&mut self.out, "idle for too long, closing connection"),
            End::Quit => {}
            End::Gone => return,
        }
        // Closing with unread input makes the kernel send RST, which can destroy the last
        // answer before the client reads it: input is read and dropped until the client
        // closes too, for a bounded time and amount.
        let _ = tokio::time::timeout(PARTING_TIMEOUT, async {
            let _ = self.flush().await;
            let _ = self.wr.shutdown().await;
            let mut rest = (&mut self.rd).take(MAX_DRAIN);
            let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
        })
        .await;
    }

    /// Reads one command line (terminator stripped), writing the pending answers first unless
    /// a whole pipelined line is already buffered.
    async fn read_line(&mut self) -> Result<Vec<u8>, End> {
        if memchr::memchr(b'\n', self.rd.buffer()).is_none() {
            self.flush().await?;
        }
        let mut line = Vec::new();
        let mut limited = (&mut self.rd).take(MAX_COMMAND_LINE);
        match tokio::time::timeout(IDLE_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
            Err(_) => return Err(End::Idle),
            Ok(Err(_) | Ok(0)) => return Err(End::Gone),
            Ok(Ok(_)) if line.pop() != Some(b'\n') => return Err(End::TooLong),
            Ok(Ok(_)) => {}
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    async fn flush(&mut self) -> Result<(), End> {
        match tokio::time::timeout(IDLE_TIMEOUT, self.wr.write_all(&self.out)).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            _ => Err(End::Gone),
        }
    }

    /// Answers one command line; `false` once QUIT has been answered.
    fn command(&mut self, line: &[u8]) -> bool {
        let text = String::from_utf8_lossy(line);
        let (keyword, rest) = text.split_once(' ').unwrap_or((&text, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
        let out = &mut self.out;
        match (keyword.as_str(), args.as_slice(), &mut self.transaction) {
            ("CAPA", [], _) => {
                push_ok(out, "capability list follows");
                out.extend_from_slice(CAPABILITIES);
            }
            ("QUIT", [], transaction) => {
                // The UPDATE state: the deletions are applied and the maildrop released before
                // the +OK, so a client that sees it can rely on both.
                if let Some((mut maildrop, deleted)) = transaction.take() {
                    let mut marks = deleted.iter();
                    maildrop.retain(|_| marks.next() != Some(&true));
                }
                push_ok(out, "bye");
                return false;
            }
            (_, _, Some((maildrop, deleted))) => {
                transaction(&keyword, &args, maildrop, deleted, out)
            }
            ("USER", [name], None) => {
                self.user = Some((*name).to_owned());
                push_ok(out, "send PASS");
            }
            // RFC 1939: the password is the rest of the line and may hold spaces.
            ("PASS", [_, ..], None) => {
                let (user, password) = &*self.credentials;
                if self.user.take().as_ref() != Some(user) || rest != password {
                    push_err(out, "[AUTH] invalid user name or password");
                } else if let Ok(maildrop) = Arc::clone(&self.maildrop).try_lock_owned() {
                    let count = maildrop.len();
                    push_ok(out, &format!("maildrop has {count} messages"));
                    self.transaction = Some((maildrop, vec![false; count]));
                } else {
                    push_err(out, "[IN-USE] maildrop held by another session");
                }
            }
            ("STAT" | "LIST" | "UIDL" | "RETR" | "DELE" | "RSET" | "NOOP", _, None) => {
                push_err(out, "not logged in");
            }
            _ => push_err(out, "unknown command or wrong arguments"),
        }
        true
    }
}

/// One command in the TRANSACTION state.
fn transaction(
    keyword: &str,
    args: &[&str],
    maildrop: &[Message],
    deleted: &mut [bool],
    out: &mut Vec<u8>,
) {
    let live = || {
        maildrop
            .iter()
            .zip(deleted.iter())
            .enumerate()
            .filter(|(_, (_, d))| !**d)
            .map(|(i, (m, _))| (i + 1, m))
    };
    let message = |arg: &str| {
        let number: usize = arg
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| arg.parse().ok())??;
        live().find(|&(n, _)| n == number)
    };
    match (keyword, args) {
        ("STAT", []) => {
            let (count, octets) = live().fold((0, 0), |(c, o), (_, m)| (c + 1, o + m.wire.len()));
            push_ok(out, &format!("{count} {octets}"));
        }
        ("LIST" | "UIDL", []) => {
            push_ok(out, "listing follows");
            for (number, message) in live() {
                let line = match keyword {
                    "LIST" => format!("{number} {}\r\n", message.wire.len()),
                    _ => format!("{number} {}\r\n", message.uid),
                };
                out.extend_from_slice(line.as_bytes());
            }
            out.extend_from_slice(b".\r\n");
        }
        ("LIST" | "UIDL" | "RETR" | "DELE", [arg]) => match (keyword, message(arg)) {
            (_, None) => push_err(out, "no such message"),
            ("LIST", Some((n, m))) => push_ok(out, &format!("{n} {}", m.wire.len())),
            ("UIDL", Some((n, m))) => push_ok(out, &format!("{n} {}", m.uid)),
            ("RETR", Some((_, m))) => {
                push_ok(out, &format!("{} octets", m.wire.len()));
                push_multiline_body(out, &m.wire);
            }
            (_, Some((n, _))) => {
                deleted[n - 1] = true;
                push_ok(out, &format!("message {n} deleted"));
            }
        },
        ("NOOP", []) => push_ok(out, "nothing done"),
        ("RSET", []) => {
            deleted.fill(false);
            push_ok(out, "deletions undone");
        }
        _ => push_err(out, "unknown command or wrong arguments"),
    }
}
