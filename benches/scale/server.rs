//! A fast POP3 server for many users, inside the benchmark process: plain TCP on 127.0.0.1,
//! one thread per connection, USER/PASS, CAPA (UIDL, USER, PIPELINING), STAT, LIST, UIDL,
//! RETR, DELE (marks), RSET, NOOP, QUIT (applies the deletions, then `+OK`). Answers are
//! buffered and written when the client has nothing more pipelined, so a pipelined batch costs
//! one write. It does no more work than a session needs, so that a cycle over thousands of
//! accounts measures the client, and it counts sessions and the most open at once.
//!
//! Every wait is bounded: a connection silent for [`IDLE`] is closed, and dropping the
//! [`Server`] stops its accept loop (connections in flight end on their own).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// A connection silent this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// A command line longer than this ends the connection.
const MAX_LINE: usize = 1024;

/// A message: its UIDL and its text with LF line endings (served with CRLF, dot-stuffed).
pub struct Msg {
    pub uidl: String,
    pub data: Vec<u8>,
    /// The size in CRLF form, as LIST and STAT report it.
    size: usize,
}

impl Msg {
    pub fn new(uidl: String, data: Vec<u8>) -> Msg {
        let size = data.len() + data.iter().filter(|&&b| b == b'\n').count();
        Msg { uidl, data, size }
    }
}

struct Shared {
    password: String,
    /// Each user's mailbox; a user not in the map is refused at PASS.
    boxes: Mutex<HashMap<String, Vec<Arc<Msg>>>>,
    open: AtomicUsize,
    peak_open: AtomicUsize,
    sessions: AtomicUsize,
}

pub struct Server {
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `users`, each with an empty mailbox and the password `password`.
    pub fn start(users: impl IntoIterator<Item = String>, password: &str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            password: password.to_owned(),
            boxes: Mutex::new(users.into_iter().map(|u| (u, Vec::new())).collect()),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || serve(&sh, conn))
                    .expect("spawn a connection thread");
            }
        });
        Server {
            port,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Appends `msgs` to `user`'s mailbox.
    pub fn push(&self, user: &str, msgs: impl IntoIterator<Item = Msg>) {
        let mut boxes = lock(&self.shared.boxes);
        let b = boxes.get_mut(user).expect("a served user");
        b.extend(msgs.into_iter().map(Arc::new));
    }

    /// The number of messages left on the server, over every user.
    pub fn remaining(&self) -> usize {
        lock(&self.shared.boxes).values().map(Vec::len).sum()
    }

    /// Sessions so far, and the most open at once since the last call (then reset).
    pub fn take_counts(&self) -> (usize, usize) {
        let open = self.shared.open.load(Ordering::SeqCst);
        (
            self.shared.sessions.load(Ordering::SeqCst),
            self.shared.peak_open.swap(open, Ordering::SeqCst),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn serve(sh: &Shared, conn: TcpStream) {
    let now = sh.open.fetch_add(1, Ordering::SeqCst) + 1;
    sh.peak_open.fetch_max(now, Ordering::SeqCst);
    sh.sessions.fetch_add(1, Ordering::SeqCst);
    let _ = session(sh, conn);
    sh.open.fetch_sub(1, Ordering::SeqCst);
}

/// After PASS: the user, the mailbox as it was at login and the numbers marked deleted.
type Open = Option<(String, Vec<Arc<Msg>>, Vec<bool>)>;

fn session(sh: &Shared, conn: TcpStream) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(IDLE))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = BufWriter::with_capacity(64 * 1024, conn);
    w.write_all(b"+OK scale bench server ready\r\n")?;
    w.flush()?;
    let mut user: Option<String> = None;
    let mut mailbox: Open = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = r
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 || !line.ends_with(b"\n") {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let verb = verb.to_ascii_uppercase();
        let num = |m: &Open| -> Option<usize> {
            let (_, msgs, dele) = m.as_ref()?;
            let i = arg.trim().parse::<usize>().ok()?.checked_sub(1)?;
            (i < msgs.len() && !dele[i]).then_some(i)
        };
        match (verb.as_str(), &mut mailbox) {
            ("CAPA", _) => w.write_all(b"+OK\r\nUIDL\r\nUSER\r\nPIPELINING\r\n.\r\n")?,
            ("QUIT", m) => {
                if let Some((u, msgs, dele)) = m.take() {
                    let gone: std::collections::HashSet<&str> = msgs
                        .iter()
                        .zip(&dele)
                        .filter(|(_, d)| **d)
                        .map(|(m, _)| m.uidl.as_str())
                        .collect();
                    if !gone.is_empty() {
                        let mut boxes = lock(&sh.boxes);
                        if let Some(b) = boxes.get_mut(&u) {
                            b.retain(|m| !gone.contains(m.uidl.as_str()));
                        }
                    }
                }
                w.write_all(b"+OK bye\r\n")?;
                w.flush()?;
                return Ok(());
            }
            ("USER", None) => {
                user = Some(arg.to_owned());
                w.write_all(b"+OK\r\n")?;
            }
            ("PASS", None) => {
                let msgs = user
                    .as_ref()
                    .filter(|_| arg == sh.password)
                    .and_then(|u| lock(&sh.boxes).get(u).cloned());
                match msgs {
                    Some(msgs) => {
                        let n = msgs.len();
                        mailbox = Some((user.take().unwrap(), msgs, vec![false; n]));
                        w.write_all(b"+OK logged in\r\n")?;
                    }
                    None => w.write_all(b"-ERR [AUTH] invalid login\r\n")?,
                }
            }
            ("STAT", Some((_, msgs, dele))) => {
                let (n, size) = msgs
                    .iter()
                    .zip(dele.iter())
                    .filter(|(_, d)| !**d)
                    .fold((0, 0), |(n, s), (m, _)| (n + 1, s + m.size));
                write!(w, "+OK {n} {size}\r\n")?;
            }
            ("LIST" | "UIDL", m @ Some(_)) if !arg.is_empty() => match num(m) {
                Some(i) => {
                    let msg = &m.as_ref().unwrap().1[i];
                    if verb == "LIST" {
                        write!(w, "+OK {} {}\r\n", i + 1, msg.size)?;
                    } else {
                        write!(w, "+OK {} {}\r\n", i + 1, msg.uidl)?;
                    }
                }
                None => w.write_all(b"-ERR no such message\r\n")?,
            },
            ("LIST" | "UIDL", Some((_, msgs, dele))) => {
                w.write_all(b"+OK\r\n")?;
                for (i, m) in msgs.iter().enumerate().filter(|(i, _)| !dele[*i]) {
                    if verb == "LIST" {
                        write!(w, "{} {}\r\n", i + 1, m.size)?;
                    } else {
                        write!(w, "{} {}\r\n", i + 1, m.uidl)?;
                    }
                }
                w.write_all(b".\r\n")?;
            }
            ("RETR", m @ Some(_)) => match num(m) {
                Some(i) => {
                    let msg = m.as_ref().unwrap().1[i].clone();
                    write!(w, "+OK {} octets\r\n", msg.size)?;
                    for l in msg.data.split_inclusive(|&b| b == b'\n') {
                        let l = l.strip_suffix(b"\n").unwrap_or(l);
                        if l.starts_with(b".") {
                            w.write_all(b".")?;
                        }
                        w.write_all(l)?;
                        w.write_all(b"\r\n")?;
                    }
                    w.write_all(b".\r\n")?;
                }
                None => w.write_all(b"-ERR no such message\r\n")?,
            },
            ("DELE", m @ Some(_)) => match num(m) {
                Some(i) => {
                    m.as_mut().unwrap().2[i] = true;
                    w.write_all(b"+OK marked\r\n")?;
                }
                None => w.write_all(b"-ERR no such message\r\n")?,
            },
            ("RSET", Some((_, _, dele))) => {
                dele.iter_mut().for_each(|d| *d = false);
                w.write_all(b"+OK\r\n")?;
            }
            ("NOOP", Some(_)) => w.write_all(b"+OK\r\n")?,
            _ => w.write_all(b"-ERR not now\r\n")?,
        }
        // Everything the client pipelined is answered in one write.
        if r.buffer().is_empty() {
            w.flush()?;
        }
    }
}
