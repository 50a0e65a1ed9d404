//! The tests' one scripted POP3 server, for the faults and the servers Dovecot will not produce
//! (a link cut inside a message, lying sizes, no UIDL, no STLS, silence); everything else is
//! tested against Dovecot. By default it serves its mailbox correctly (RFC 1939 with RFC 2449
//! CAPA: UIDL, USER, PIPELINING, RESP-CODES; pipelined commands are answered in order; DELE only
//! marks, QUIT applies). A [`Script`] (per connection) and a
//! [`Fault`] (per message, on RETR) make it misbehave. It records what the client did: every
//! command of every connection, each message a DELE named, each QUIT and its answer.
//!
//! Plain TCP on 127.0.0.1:0, one thread per connection. Everything is bounded: reads poll a stop
//! flag every 100 ms and give up after [`IDLE`] of silence, a fault holds a connection at most
//! [`HOLD`], an endless answer stops at [`ENDLESS_CAP`] bytes, and dropping the [`Server`] stops
//! and joins every thread.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "pw";

/// A connection silent this long is closed.
const IDLE: Duration = Duration::from_secs(15);
/// The longest a fault holds a connection open (a stall, a never-ending answer).
const HOLD: Duration = Duration::from_secs(15);
/// A never-ending answer stops after this many octets even when the client keeps reading.
const ENDLESS_CAP: u64 = 256 << 20;
/// A command line longer than this ends the connection (room for a SASL response carrying a
/// large OAuth2 token).
const MAX_COMMAND: usize = 64 * 1024;
/// Each read waits at most this long before the stop flag and the idle deadline are checked.
const TICK: Duration = Duration::from_millis(100);

/// A message in the mailbox, stored with LF line endings and served with CRLF, dot-stuffed.
#[derive(Clone, Debug)]
pub struct Msg {
    pub data: Vec<u8>,
    /// Sent as is in the UIDL listing: may hold any byte.
    pub uidl: Vec<u8>,
    /// Overrides the size the LIST answer gives (default: the true size in CRLF form).
    pub listed: Option<u64>,
    /// What RETR of this message does.
    pub fault: Fault,
}

impl Msg {
    pub fn new(data: Vec<u8>, uidl: &str) -> Msg {
        Msg {
            data,
            uidl: uidl.as_bytes().to_vec(),
            listed: None,
            fault: Fault::None,
        }
    }

    pub fn uidl_bytes(mut self, uidl: &[u8]) -> Msg {
        self.uidl = uidl.to_vec();
        self
    }

    pub fn listed(mut self, size: u64) -> Msg {
        self.listed = Some(size);
        self
    }

    pub fn fault(mut self, fault: Fault) -> Msg {
        self.fault = fault;
        self
    }

    /// The message as transmitted (CRLF line endings, before dot-stuffing): RFC 1939 §11's size.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + self.data.len() / 16);
        for line in lines(&self.data) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    pub fn size(&self) -> u64 {
        self.wire().len() as u64
    }

    /// The whole correct answer to RETR: status line, dot-stuffed CRLF body, terminating line.
    pub fn retr_answer(&self) -> Vec<u8> {
        let mut out = self.status_line();
        for line in lines(&self.data) {
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// The status line of a successful RETR, CRLF included.
    pub fn status_line(&self) -> Vec<u8> {
        format!("+OK {} octets\r\n", self.size()).into_bytes()
    }
}

/// The lines of `data` without their LF; a last line without LF counts as a line.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let empty = data.is_empty();
    body.split(|&b| b == b'\n').filter(move |_| !empty)
}

/// What RETR of one message does instead of answering correctly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Sends the first N octets of the correct answer (status line included), then closes.
    CutAt(usize),
    /// Sends the status line, then nothing more until the client goes away.
    StallAfterStatus,
    /// Sends the status line, then lines without end.
    Endless,
    /// Answers `-ERR` (the message stays; the session goes on).
    Refuse,
    /// Sends these bytes as the whole answer, then nothing more until the client goes away.
    Answer(Vec<u8>),
    /// Sends these bytes as the whole answer, and goes on serving the session.
    Raw(Vec<u8>),
    /// Sends the status line, then the rest of the correct answer one octet per interval, until
    /// the client goes away or [`TRICKLE_HOLD`] has passed; then closes.
    Trickle(Duration),
}

/// The longest a trickling answer goes on.
const TRICKLE_HOLD: Duration = Duration::from_secs(60);

/// The greeting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Greeting {
    #[default]
    Normal,
    /// Nothing at all, until the client goes away.
    Silent,
    /// These bytes, then nothing more until the client goes away.
    Raw(Vec<u8>),
    /// A normal greeting carrying an APOP timestamp (RFC 1939 §7); APOP itself is refused.
    Apop,
}

/// The answer to a multi-line listing command (UIDL or LIST without an argument).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Listing {
    /// Made from the mailbox.
    #[default]
    Normal,
    /// `-ERR`: the command is not supported (and not advertised in CAPA).
    Refused,
    /// `+OK`, these bytes as the listing's lines (CRLF included), then the terminating `.`.
    Lines(Vec<u8>),
    /// These bytes as the whole answer, then nothing more until the client goes away.
    Raw(Vec<u8>),
    /// `+OK`, then well-formed lines without end (`N uidl-N` or `N 1000`), never the `.`.
    Endless,
    /// `+OK`, then `lines` lines of `width` octets each (CRLF included): `N uidl-N` or `N 1000`
    /// padded with `x` to the width (a LIST line may carry text after the size), then the `.`.
    /// Streamed as it is made, within [`ENDLESS_CAP`] octets and [`HOLD`].
    Huge { lines: u64, width: usize },
    /// `+OK`, then `lines` lines `N <uidl>` with unique-ids of `uidl_len` characters
    /// ([`huge_uidl`]), or `N 1000` for LIST, then the `.`; streamed as it is made, within
    /// [`HUGE_HOLD`].
    HugeUidls { lines: u64, uidl_len: usize },
}

/// How every new connection misbehaves (beyond the messages' own faults).
#[derive(Clone, Debug, Default)]
pub struct Script {
    pub greeting: Greeting,
    /// Advertise STLS in CAPA, then answer STLS with `-ERR`.
    pub stls_refused: bool,
    pub uidl: Listing,
    pub list: Listing,
    /// Answer every DELE with `-ERR` (the message stays).
    pub dele_err: bool,
    /// Answer the DELE of the message with this UIDL with `-ERR` (it stays), the others `+OK`.
    pub dele_err_uidl: Option<String>,
    /// Answer QUIT with `-ERR` and close without applying the deletions.
    pub quit_err: bool,
    /// Offer `SASL XOAUTH2 OAUTHBEARER` and accept this bearer token for [`USER`]; anything
    /// else gets the RFC 7628 error challenge, then `-ERR [AUTH]`.
    pub oauth_token: Option<String>,
    /// Offer `SASL PLAIN LOGIN CRAM-MD5` and answer every line of an AUTH exchange with `+ `,
    /// without end (until the client goes away).
    pub sasl_endless: bool,
    /// The whole STAT answer line (CRLF added), instead of the mailbox's true one.
    pub stat: Option<String>,
    /// `Listing::Huge` makes the CAPA answer that big (lines `X-CAP-N xxx...`); anything else
    /// leaves it as it is.
    pub capa: Listing,
    /// Close the connection once this many octets of RETR answers were sent in one session,
    /// even in the middle of a message: a link that always drops at the same point of the mail
    /// stream. Pipelined answers before the cut arrive whole.
    pub cut_retr_octets: Option<usize>,
    /// Advertise `LOGIN-DELAY n` in CAPA (RFC 2449 §6.5), as Courier does.
    pub login_delay: Option<u64>,
    /// Advertise this `LOGIN-DELAY` in a CAPA after login instead (a per-user value).
    pub login_delay_after_login: Option<u64>,
    /// Advertise `EXPIRE n` in CAPA (RFC 2449 §6.7): `Some(0)` is a server that deletes what
    /// was retrieved.
    pub expire: Option<u64>,
    /// The whole answer line to every PASS (CRLF added), instead of logging in.
    pub pass_answer: Option<String>,
    /// Waits this long after each read of commands before answering them: a distant server,
    /// where the commands of one flight are answered together one round trip later.
    pub flight_delay: Option<Duration>,
}

/// What the clients did.
#[derive(Clone, Debug, Default)]
pub struct Log {
    /// The command lines of each connection, in order (PASS arguments redacted).
    pub sessions: Vec<Vec<String>>,
    /// The data of each message a DELE named, whatever the answer was.
    pub deles: Vec<Vec<u8>>,
    /// QUIT commands received in the TRANSACTION state.
    pub quits: usize,
    /// QUIT commands answered `+OK` in the TRANSACTION state: deletions applied.
    pub quits_ok: usize,
    /// Octets sent of never-ending answers.
    pub streamed: u64,
    /// Lines the client sent inside endless SASL exchanges ([`Script::sasl_endless`]).
    pub sasl_lines: u64,
    /// Connections in the order things happened to them: `open N` when accepted, `end N` when
    /// it sent QUIT (before the answer) or went away, whichever came first. `N` indexes
    /// `sessions`. A client that waits for the QUIT answer before letting another connect shows
    /// every `end N` before the next `open`.
    pub events: Vec<String>,
    /// When each connection was accepted, in order (one per entry of `sessions`).
    pub connected: Vec<Instant>,
}

impl Log {
    /// Every command of every connection whose verb is `verb`.
    pub fn commands(&self, verb: &str) -> Vec<&str> {
        self.sessions
            .iter()
            .flatten()
            .filter(|c| {
                c.split(' ')
                    .next()
                    .is_some_and(|v| v.eq_ignore_ascii_case(verb))
            })
            .map(String::as_str)
            .collect()
    }
}

struct Stored {
    id: u64,
    msg: Msg,
}

struct Shared {
    stop: AtomicBool,
    script: Mutex<Script>,
    mailbox: Mutex<Vec<Stored>>,
    next_id: Mutex<u64>,
    log: Mutex<Log>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking connection thread must not hide what the others recorded.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running scripted server; dropping it stops every thread.
pub struct Server {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// A well-behaved server with `messages`.
    pub fn healthy(messages: Vec<Msg>) -> Server {
        Server::start(messages, Script::default())
    }

    pub fn start(messages: Vec<Msg>, script: Script) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            script: Mutex::new(script),
            mailbox: Mutex::new(Vec::new()),
            next_id: Mutex::new(0),
            log: Mutex::new(Log::default()),
            conns: Mutex::new(Vec::new()),
        });
        let mut server = Server {
            port,
            shared: shared.clone(),
            acceptor: None,
        };
        server.set_messages(messages);
        server.acceptor = Some(std::thread::spawn(move || accept_loop(listener, shared)));
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Applies to connections accepted from now on.
    pub fn set_script(&self, script: Script) {
        *lock(&self.shared.script) = script;
    }

    /// Replaces the mailbox (as another client or the delivery agent might between sessions).
    pub fn set_messages(&self, messages: Vec<Msg>) {
        let stored = messages.into_iter().map(|msg| self.store(msg)).collect();
        *lock(&self.shared.mailbox) = stored;
    }

    /// Appends a message (new mail arriving).
    pub fn push(&self, msg: Msg) {
        let s = self.store(msg);
        lock(&self.shared.mailbox).push(s);
    }

    /// Edits the messages in place (their identity stays: a session's deletions still apply).
    pub fn edit(&self, f: impl FnOnce(&mut Vec<Msg>)) {
        let mut mb = lock(&self.shared.mailbox);
        let ids: Vec<u64> = mb.iter().map(|s| s.id).collect();
        let mut msgs: Vec<Msg> = mb.drain(..).map(|s| s.msg).collect();
        f(&mut msgs);
        assert_eq!(msgs.len(), ids.len(), "edit keeps the number of messages");
        *mb = ids
            .into_iter()
            .zip(msgs)
            .map(|(id, msg)| Stored { id, msg })
            .collect();
    }

    /// Behaves well from now on: default script, no message faults, true LIST sizes.
    pub fn heal(&self) {
        self.set_script(Script::default());
        self.edit(|msgs| {
            for m in msgs {
                m.fault = Fault::None;
                m.listed = None;
            }
        });
    }

    fn store(&self, msg: Msg) -> Stored {
        let mut next = lock(&self.shared.next_id);
        *next += 1;
        Stored { id: *next, msg }
    }

    /// The data of the messages on the server, in order.
    pub fn remaining(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.mailbox)
            .iter()
            .map(|s| s.msg.data.clone())
            .collect()
    }

    pub fn log(&self) -> Log {
        lock(&self.shared.log).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let conns: Vec<JoinHandle<()>> = lock(&self.shared.conns).drain(..).collect();
        for c in conns {
            let _ = c.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let sh = shared.clone();
                let h = std::thread::spawn(move || {
                    if let Ok(mut c) = Conn::new(stream, sh) {
                        c.serve();
                        c.ended();
                    }
                });
                lock(&shared.conns).push(h);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    script: Script,
    buf: Vec<u8>,
    /// Index of this connection in `Log::sessions`.
    session: usize,
    /// Octets of RETR answers sent in this session (for [`Script::cut_retr_octets`]).
    retr_sent: usize,
}

/// A message as a session sees it: numbered from the mailbox at login.
struct Seen {
    id: u64,
    msg: Msg,
    deleted: bool,
}

impl Conn {
    fn new(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<Conn> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        let script = lock(&shared.script).clone();
        let session = {
            let mut log = lock(&shared.log);
            log.sessions.push(Vec::new());
            log.connected.push(Instant::now());
            let n = log.sessions.len() - 1;
            log.events.push(format!("open {n}"));
            n
        };
        Ok(Conn {
            stream,
            shared,
            script,
            buf: Vec::new(),
            session,
            retr_sent: 0,
        })
    }

    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// Writes everything or reports failure (the client went away, or stopped reading).
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Sends a RETR answer, or as much of it as [`Script::cut_retr_octets`] leaves room for and
    /// then closes (reporting failure).
    fn send_retr(&mut self, answer: &[u8]) -> bool {
        let room = match self.script.cut_retr_octets {
            Some(limit) => limit.saturating_sub(self.retr_sent),
            None => usize::MAX,
        };
        if answer.len() <= room {
            self.retr_sent += answer.len();
            return self.send(answer);
        }
        self.send(&answer[..room]);
        self.retr_sent += room;
        self.close();
        false
    }

    fn send_str(&mut self, s: &str) -> bool {
        self.send(s.as_bytes())
    }

    /// Reads one command line (without CRLF); `None` at EOF, on an error, after [`IDLE`] of
    /// silence, for a line over [`MAX_COMMAND`], or when the server stops.
    fn read_line(&mut self) -> Option<Vec<u8>> {
        let mut last = Instant::now();
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(line);
            }
            if self.buf.len() > MAX_COMMAND || self.stopped() || last.elapsed() > IDLE {
                return None;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(d) = self.script.flight_delay {
                        std::thread::sleep(d);
                    }
                    last = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Says nothing more; discards input until the client goes away, the server stops, or
    /// [`HOLD`] has passed.
    fn hold(&mut self) {
        let until = Instant::now() + HOLD;
        let mut chunk = [0u8; 4096];
        while Instant::now() < until && !self.stopped() {
            match self.stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Closes our side cleanly (FIN, not RST: unread pipelined commands are drained first), and
    /// waits for the client to close its side.
    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.hold();
    }

    fn record(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).into_owned();
        let text = match text.split_once(' ') {
            Some((v, _)) if v.eq_ignore_ascii_case("PASS") => format!("{v} <redacted>"),
            Some((v, rest)) if v.eq_ignore_ascii_case("AUTH") => match rest.split_once(' ') {
                Some((mech, ir)) => format!("{v} {mech} <initial response, {} octets>", ir.len()),
                None => text,
            },
            _ => text,
        };
        let quit = text.eq_ignore_ascii_case("QUIT");
        let mut log = lock(&self.shared.log);
        log.sessions[self.session].push(text);
        if quit {
            drop(log);
            self.ended();
        }
    }

    /// Records `end N` once.
    fn ended(&self) {
        let mut log = lock(&self.shared.log);
        let end = format!("end {}", self.session);
        if !log.events.contains(&end) {
            log.events.push(end);
        }
    }

    fn serve(&mut self) {
        match self.script.greeting.clone() {
            Greeting::Silent => return self.hold(),
            Greeting::Raw(bytes) => {
                self.send(&bytes);
                return self.hold();
            }
            Greeting::Normal => {
                if !self.send_str("+OK hostile POP3 server ready\r\n") {
                    return;
                }
            }
            Greeting::Apop => {
                if !self.send_str("+OK hostile POP3 server ready <1896.697170952@hostile.test>\r\n")
                {
                    return;
                }
            }
        }
        let mut user_ok = false;
        let mut mailbox: Option<Vec<Seen>> = None;
        while let Some(line) = self.read_line() {
            self.record(&line);
            let text = String::from_utf8_lossy(&line).into_owned();
            let (verb, arg) = match text.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.to_string()),
                None => (text.to_ascii_uppercase(), String::new()),
            };
            let go_on = match (verb.as_str(), mailbox.as_mut()) {
                ("CAPA", m) => {
                    let after_login = m.is_some();
                    self.capa(after_login)
                }
                ("QUIT", None) => {
                    self.send_str("+OK bye\r\n");
                    false
                }
                ("QUIT", Some(seen)) => {
                    let deleted: Vec<u64> =
                        seen.iter().filter(|s| s.deleted).map(|s| s.id).collect();
                    self.quit(&deleted);
                    false
                }
                ("STLS", None) if self.script.stls_refused => {
                    self.send_str("-ERR [SYS/TEMP] TLS is not available right now\r\n")
                }
                ("USER", None) => {
                    // `alice+TAG` logs in too: several accounts (mailboxes) on one server.
                    user_ok =
                        arg == USER || arg.strip_prefix(USER).is_some_and(|t| t.starts_with('+'));
                    if user_ok {
                        self.send_str("+OK send PASS\r\n")
                    } else {
                        self.send_str("-ERR [AUTH] no such user\r\n")
                    }
                }
                ("PASS", None) if self.script.pass_answer.is_some() => {
                    let line = format!(
                        "{}\r\n",
                        self.script.pass_answer.clone().unwrap_or_default()
                    );
                    self.send_str(&line)
                }
                ("PASS", None) if user_ok && arg == PASSWORD => {
                    let seen = lock(&self.shared.mailbox)
                        .iter()
                        .map(|s| Seen {
                            id: s.id,
                            msg: s.msg.clone(),
                            deleted: false,
                        })
                        .collect();
                    mailbox = Some(seen);
                    self.send_str("+OK logged in\r\n")
                }
                ("PASS", None) => {
                    user_ok = false;
                    self.send_str("-ERR [AUTH] invalid login\r\n")
                }
                ("AUTH", None) if self.script.oauth_token.is_some() => match self.bearer(&arg) {
                    Some(true) => {
                        let seen = lock(&self.shared.mailbox)
                            .iter()
                            .map(|s| Seen {
                                id: s.id,
                                msg: s.msg.clone(),
                                deleted: false,
                            })
                            .collect();
                        mailbox = Some(seen);
                        self.send_str("+OK logged in\r\n")
                    }
                    Some(false) => true,
                    None => false,
                },
                ("AUTH", None) if self.script.sasl_endless => {
                    self.endless_sasl();
                    false
                }
                (_, None) => self.send_str("-ERR not now\r\n"),
                (_, Some(seen)) => {
                    // Borrow juggling: take the mailbox out for the command, put it back after.
                    let mut seen = std::mem::take(seen);
                    let r = self.transaction(&verb, &arg, &mut seen);
                    mailbox = Some(seen);
                    r
                }
            };
            if !go_on {
                return;
            }
        }
    }

    /// One XOAUTH2 or OAUTHBEARER exchange, initial response inline or after an empty `+`.
    /// `Some(true)`: logged in; `Some(false)`: refused (answer sent); `None`: connection over.
    /// SASL response lines are logged by size only.
    fn bearer(&mut self, arg: &str) -> Option<bool> {
        let (mech, inline) = match arg.split_once(' ') {
            Some((m, ir)) => (m.to_ascii_uppercase(), Some(ir.to_string())),
            None => (arg.to_ascii_uppercase(), None),
        };
        if mech != "XOAUTH2" && mech != "OAUTHBEARER" {
            return self.send_str("-ERR unknown mechanism\r\n").then_some(false);
        }
        let response = match inline {
            Some(ir) => ir,
            None => {
                if !self.send_str("+ \r\n") {
                    return None;
                }
                let line = self.read_line()?;
                lock(&self.shared.log).sessions[self.session]
                    .push(format!("<response, {} octets>", line.len()));
                String::from_utf8_lossy(&line).into_owned()
            }
        };
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(response.trim())
            .unwrap_or_default();
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        let token = self.script.oauth_token.clone().unwrap_or_default();
        let ok = if mech == "XOAUTH2" {
            decoded == format!("user={USER}\x01auth=Bearer {token}\x01\x01")
        } else {
            decoded.starts_with(&format!("n,a={USER},\x01"))
                && decoded.contains("\x01host=127.0.0.1\x01")
                && decoded.ends_with(&format!("\x01auth=Bearer {token}\x01\x01"))
        };
        if ok {
            return Some(true);
        }
        let challenge = base64::engine::general_purpose::STANDARD.encode(
            r#"{"status":"401","schemes":"bearer","scope":"https://mail.example.test/pop"}"#,
        );
        if !self.send_str(&format!("+ {challenge}\r\n")) {
            return None;
        }
        let answer = self.read_line()?;
        let expected: &[u8] = if mech == "XOAUTH2" { b"" } else { b"AQ==" };
        lock(&self.shared.log).sessions[self.session].push(format!(
            "<abort {}>",
            if answer == expected {
                "as required"
            } else {
                "WRONG"
            }
        ));
        self.send_str("-ERR [AUTH] invalid token\r\n")
            .then_some(false)
    }

    /// Answers every line with a SASL continuation, until the client goes away.
    fn endless_sasl(&mut self) {
        while self.send_str("+ \r\n") {
            if self.read_line().is_none() {
                return;
            }
            lock(&self.shared.log).sasl_lines += 1;
        }
    }

    fn capa(&mut self, after_login: bool) -> bool {
        if let Listing::Huge { lines, width } = self.script.capa {
            let until = Instant::now() + HOLD;
            let mut chunk = b"+OK capabilities follow\r\n".to_vec();
            let mut sent = 0u64;
            for n in 1..=lines {
                let mut line = format!("X-CAP-{n} ").into_bytes();
                line.resize(width.saturating_sub(2).max(line.len()), b'x');
                line.extend_from_slice(b"\r\n");
                chunk.extend_from_slice(&line);
                if chunk.len() >= 64 * 1024 {
                    if sent >= ENDLESS_CAP
                        || Instant::now() >= until
                        || self.stopped()
                        || !self.send(&chunk)
                    {
                        return false;
                    }
                    sent += chunk.len() as u64;
                    lock(&self.shared.log).streamed = sent;
                    chunk.clear();
                }
            }
            chunk.extend_from_slice(b"USER\r\n.\r\n");
            return self.send(&chunk);
        }
        let mut caps = String::from("+OK capabilities follow\r\n");
        if self.script.sasl_endless {
            caps.push_str("SASL PLAIN LOGIN CRAM-MD5\r\n");
        }
        if self.script.oauth_token.is_some() {
            caps.push_str("SASL XOAUTH2 OAUTHBEARER\r\n");
        }
        for c in ["USER", "PIPELINING", "RESP-CODES"] {
            caps.push_str(c);
            caps.push_str("\r\n");
        }
        if self.script.uidl != Listing::Refused {
            caps.push_str("UIDL\r\n");
        }
        if self.script.stls_refused {
            caps.push_str("STLS\r\n");
        }
        let login_delay = match self.script.login_delay_after_login {
            Some(d) if after_login => Some(d),
            _ => self.script.login_delay,
        };
        if let Some(d) = login_delay {
            caps.push_str(&format!("LOGIN-DELAY {d}\r\n"));
        }
        if let Some(d) = self.script.expire {
            caps.push_str(&format!("EXPIRE {d}\r\n"));
        }
        caps.push_str(".\r\n");
        self.send_str(&caps)
    }

    fn quit(&mut self, deleted: &[u64]) {
        lock(&self.shared.log).quits += 1;
        if self.script.quit_err {
            self.send_str("-ERR some deleted messages not removed\r\n");
            return self.close();
        }
        lock(&self.shared.mailbox).retain(|s| !deleted.contains(&s.id));
        lock(&self.shared.log).quits_ok += 1;
        self.send_str("+OK bye\r\n");
        self.close();
    }

    /// One command in the TRANSACTION state; `false` ends the connection.
    fn transaction(&mut self, verb: &str, arg: &str, seen: &mut [Seen]) -> bool {
        let num = |arg: &str| -> Option<usize> {
            let n: usize = arg.trim().parse().ok()?;
            (n >= 1 && n <= seen.len() && !seen[n - 1].deleted).then_some(n - 1)
        };
        let live = || seen.iter().enumerate().filter(|(_, s)| !s.deleted);
        match verb {
            "NOOP" => self.send_str("+OK\r\n"),
            "STAT" if self.script.stat.is_some() => {
                let line = format!("{}\r\n", self.script.stat.clone().unwrap_or_default());
                self.send_str(&line)
            }
            "STAT" => {
                let (n, size) = live().fold((0, 0), |(n, o), (_, s)| (n + 1, o + s.msg.size()));
                self.send_str(&format!("+OK {n} {size}\r\n"))
            }
            "RSET" => {
                seen.iter_mut().for_each(|s| s.deleted = false);
                self.send_str("+OK\r\n")
            }
            "LIST" | "UIDL" => {
                let listing = if verb == "LIST" {
                    self.script.list.clone()
                } else {
                    self.script.uidl.clone()
                };
                let entry = |i: usize, s: &Seen| -> Vec<u8> {
                    let mut v = format!("{} ", i + 1).into_bytes();
                    if verb == "LIST" {
                        v.extend_from_slice(
                            s.msg.listed.unwrap_or(s.msg.size()).to_string().as_bytes(),
                        );
                    } else {
                        v.extend_from_slice(&s.msg.uidl);
                    }
                    v
                };
                match listing {
                    Listing::Refused => self.send_str("-ERR command not supported\r\n"),
                    Listing::Raw(bytes) => {
                        self.send(&bytes);
                        self.hold();
                        false
                    }
                    Listing::Endless => {
                        let until = Instant::now() + HOLD;
                        let mut sent = 0u64;
                        let mut n = 0u64;
                        let mut chunk = b"+OK listing follows\r\n".to_vec();
                        while sent < ENDLESS_CAP && Instant::now() < until && !self.stopped() {
                            while chunk.len() < 64 * 1024 {
                                n += 1;
                                let line = if verb == "LIST" {
                                    format!("{} 1000\r\n", n % 1_000_000 + 1)
                                } else {
                                    format!("{n} uidl-{n}\r\n")
                                };
                                chunk.extend_from_slice(line.as_bytes());
                            }
                            if !self.send(&chunk) {
                                break;
                            }
                            sent += chunk.len() as u64;
                            chunk.clear();
                            lock(&self.shared.log).streamed = sent;
                        }
                        false
                    }
                    Listing::HugeUidls { lines, uidl_len } => {
                        self.huge_uidls(verb, lines, uidl_len)
                    }
                    Listing::Huge { lines, width } => {
                        let until = Instant::now() + HOLD;
                        let mut sent = 0u64;
                        let mut chunk = b"+OK listing follows\r\n".to_vec();
                        for n in 1..=lines {
                            let mut line = if verb == "LIST" {
                                format!("{n} 1000 ")
                            } else {
                                format!("{n} uidl-{n}")
                            }
                            .into_bytes();
                            line.resize(width.saturating_sub(2).max(line.len()), b'x');
                            line.extend_from_slice(b"\r\n");
                            chunk.extend_from_slice(&line);
                            if chunk.len() >= 64 * 1024 {
                                if sent >= ENDLESS_CAP
                                    || Instant::now() >= until
                                    || self.stopped()
                                    || !self.send(&chunk)
                                {
                                    return false;
                                }
                                sent += chunk.len() as u64;
                                lock(&self.shared.log).streamed = sent;
                                chunk.clear();
                            }
                        }
                        chunk.extend_from_slice(b".\r\n");
                        self.send(&chunk)
                    }
                    _ if !arg.is_empty() => match num(arg) {
                        Some(i) => {
                            let mut v = b"+OK ".to_vec();
                            v.extend_from_slice(&entry(i, &seen[i]));
                            v.extend_from_slice(b"\r\n");
                            self.send(&v)
                        }
                        None => self.send_str("-ERR no such message\r\n"),
                    },
                    Listing::Lines(lines) => {
                        let mut v = b"+OK\r\n".to_vec();
                        v.extend_from_slice(&lines);
                        v.extend_from_slice(b".\r\n");
                        self.send(&v)
                    }
                    Listing::Normal => {
                        let mut v = b"+OK listing follows\r\n".to_vec();
                        for (i, s) in live() {
                            v.extend_from_slice(&entry(i, s));
                            v.extend_from_slice(b"\r\n");
                        }
                        v.extend_from_slice(b".\r\n");
                        self.send(&v)
                    }
                }
            }
            "RETR" => match num(arg) {
                Some(i) => {
                    let msg = seen[i].msg.clone();
                    self.retr(&msg)
                }
                None => self.send_str("-ERR no such message\r\n"),
            },
            "DELE" => match num(arg) {
                Some(i) => {
                    lock(&self.shared.log).deles.push(seen[i].msg.data.clone());
                    let refused = self
                        .script
                        .dele_err_uidl
                        .as_ref()
                        .is_some_and(|u| u.as_bytes() == seen[i].msg.uidl.as_slice());
                    if self.script.dele_err || refused {
                        self.send_str("-ERR cannot delete that message\r\n")
                    } else {
                        seen[i].deleted = true;
                        self.send_str("+OK marked\r\n")
                    }
                }
                None => self.send_str("-ERR no such message\r\n"),
            },
            _ => self.send_str("-ERR unknown command\r\n"),
        }
    }

    fn retr(&mut self, msg: &Msg) -> bool {
        match &msg.fault {
            Fault::None => self.send_retr(&msg.retr_answer()),
            Fault::CutAt(n) => {
                let answer = msg.retr_answer();
                self.send(&answer[..(*n).min(answer.len())]);
                self.close();
                false
            }
            Fault::Refuse => self.send_str("-ERR message is locked by another session\r\n"),
            Fault::StallAfterStatus => {
                self.send(&msg.status_line());
                self.hold();
                false
            }
            Fault::Answer(bytes) => {
                let bytes = bytes.clone();
                self.send(&bytes);
                self.hold();
                false
            }
            Fault::Raw(bytes) => {
                let bytes = bytes.clone();
                self.send(&bytes)
            }
            Fault::Trickle(every) => {
                let answer = msg.retr_answer();
                let status = msg.status_line().len();
                if !self.send(&answer[..status]) {
                    return false;
                }
                let until = Instant::now() + TRICKLE_HOLD;
                for &b in &answer[status..] {
                    std::thread::sleep(*every);
                    if Instant::now() >= until || self.stopped() || !self.send(&[b]) {
                        break;
                    }
                    let mut log = lock(&self.shared.log);
                    log.streamed += 1;
                }
                self.close();
                false
            }
            Fault::Endless => {
                if !self.send(&msg.status_line()) {
                    return false;
                }
                let line =
                    b"This line is one of many; the message never ends, whatever LIST said.\r\n";
                let chunk: Vec<u8> = line
                    .iter()
                    .copied()
                    .cycle()
                    .take(line.len() * 900)
                    .collect();
                let until = Instant::now() + HOLD;
                let mut sent = 0u64;
                while sent < ENDLESS_CAP && Instant::now() < until && !self.stopped() {
                    if !self.send(&chunk) {
                        break;
                    }
                    sent += chunk.len() as u64;
                    lock(&self.shared.log).streamed = sent;
                }
                false
            }
        }
    }
}

/// How long a [`Listing::HugeUidls`] may take to stream: a debug build reads a million lines in
/// well under it.
const HUGE_HOLD: Duration = Duration::from_secs(120);

/// The unique-id of message `n` in a [`Listing::HugeUidls`]: `uidl-N-` padded with `x` to
/// `len` characters.
pub fn huge_uidl(n: u64, len: usize) -> String {
    let mut u = format!("uidl-{n}-");
    while u.len() < len {
        u.push('x');
    }
    u
}

impl Conn {
    /// Streams a [`Listing::HugeUidls`] answer; `false` when it could not be sent whole.
    fn huge_uidls(&mut self, verb: &str, lines: u64, uidl_len: usize) -> bool {
        let until = Instant::now() + HUGE_HOLD;
        let mut sent = 0u64;
        let mut chunk = b"+OK listing follows\r\n".to_vec();
        for n in 1..=lines {
            let line = if verb == "LIST" {
                format!("{n} 1000\r\n")
            } else {
                format!("{n} {}\r\n", huge_uidl(n, uidl_len))
            };
            chunk.extend_from_slice(line.as_bytes());
            if chunk.len() >= 64 * 1024 {
                if Instant::now() >= until || self.stopped() || !self.send(&chunk) {
                    return false;
                }
                sent += chunk.len() as u64;
                lock(&self.shared.log).streamed = sent;
                chunk.clear();
            }
        }
        chunk.extend_from_slice(b".\r\n");
        self.send(&chunk)
    }
}
