//! Issue 13, the edges: durations from server input (LOGIN-DELAY), a `ca_file` that cannot be
//! read, the SMTP relay's DATA phase (progress timeouts, line endings) and a new mbox's
//! directory entry. Everything through the built binary against the scripted POP3 server and a
//! small scripted SMTP relay defined here.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::{Env, Run, run_bounded};
use crate::pop3_server::{Msg, PASSWORD, Script, Server};
use crate::support::config::Account;

/// One `[[account]]` named `alice` on the scripted server, delivering as `deliver` says.
fn account(server: &Server, deliver: &str, extra: &str) -> String {
    Account::scripted(server)
        .set("deliver", deliver)
        .extra(extra)
        .to_toml()
}

fn maildir(env: &Env) -> String {
    format!("{{ maildir = \"{}\" }}", env.maildir().display())
}

/// A running daemon whose stderr goes to a file the test reads while it runs.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        let log = env.path().join("daemon.log");
        let child = env
            .command(&["daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("POPFETCH_LOG", "popfetch=debug")
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `pred` holds, at most `secs`; false when it never did.
fn wait_for(secs: u64, mut pred: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred()
}

fn polls_done(log: &str) -> usize {
    log.lines().filter(|l| l.contains("poll done")).count()
}

#[test]
fn issue13_10_login_delay_u64_max_neither_panics_nor_stops_the_account() {
    let server = Server::start(
        vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")],
        Script {
            login_delay: Some(u64::MAX),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&format!(
        "log_target = \"stderr\"\n{}",
        account(&server, &maildir(&env), "interval = \"1s\"")
    ));
    let daemon = Daemon::start(&env);
    assert!(
        wait_for(20, || polls_done(&daemon.log()) >= 1),
        "first poll; log:\n{}",
        daemon.log()
    );
    // The server asked for more than anyone waits: the account is still scheduled, and a poke
    // polls it at once.
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal("USR1");
    let polled_again = wait_for(20, || server.log().sessions.len() >= 2);
    let log = daemon.log();
    assert!(
        polled_again,
        "the account was never polled again; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("LOGIN-DELAY") && log.contains("capped"),
        "the cap is logged:\n{log}"
    );
    assert_eq!(env.delivered().len(), 1);
}

#[test]
fn issue13_17_advertised_login_delay_raises_the_interval_with_one_log_line() {
    let server = Server::start(
        vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")],
        Script {
            login_delay: Some(3),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&format!(
        "log_target = \"stderr\"\n{}",
        account(&server, &maildir(&env), "interval = \"1s\"")
    ));
    let daemon = Daemon::start(&env);
    let three = wait_for(30, || server.log().connected.len() >= 3);
    let log = daemon.log();
    assert!(three, "three polls; log:\n{log}");
    let at = server.log().connected;
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_secs(3),
            "polls closer than the advertised LOGIN-DELAY 3: {:?}",
            at.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        );
    }
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("LOGIN-DELAY") && l.contains("interval"))
        .collect();
    assert_eq!(said.len(), 1, "one line about the raised interval:\n{log}");
    assert!(said[0].contains("alice"), "{}", said[0]);
}

#[test]
fn issue13_17_the_login_delay_after_login_is_the_one_obeyed() {
    // RFC 2449 §6.5: the largest value before login, the user's own after it.
    let server = Server::start(
        vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")],
        Script {
            login_delay: Some(900),
            login_delay_after_login: Some(2),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&format!(
        "log_target = \"stderr\"\n{}",
        account(&server, &maildir(&env), "interval = \"1s\"")
    ));
    let daemon = Daemon::start(&env);
    let two = wait_for(30, || server.log().connected.len() >= 2);
    let log = daemon.log();
    assert!(
        two,
        "polled again after the per-user delay, not 900 s; log:\n{log}"
    );
    let at = server.log().connected;
    assert!(
        at[1] - at[0] >= Duration::from_secs(2),
        "{:?}",
        at[1] - at[0]
    );
    assert_eq!(
        server.log().commands("CAPA").len() % 2,
        0,
        "CAPA before and after login"
    );
    assert!(log.contains("raised from 1s to 2s"), "{log}");
}

#[test]
fn issue13_17_an_empty_or_unreadable_ca_file_is_refused_by_check() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    let dir = env.path().to_path_buf();
    let smtp = "{ smtp = { host = \"127.0.0.1\", port = 25, to = [\"a@example.org\"], ca_file = \"CA\" } }";
    let oauth2 = "[account.oauth2]\ntoken_url = \"https://127.0.0.1:1/token\"\nclient_id = \"c\"\n\
                  refresh_token_file = \"r\"\nca_file = \"CA\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            account(&server, &maildir(&env), "ca_file = \"\""),
            "ca_file",
        ),
        (
            account(&server, &maildir(&env), "ca_file = \"missing.pem\""),
            "missing.pem",
        ),
        (
            account(
                &server,
                &maildir(&env),
                &format!("ca_file = \"{}\"", dir.display()),
            ),
            "not a regular file",
        ),
        (
            account(&server, &smtp.replace("CA", ""), ""),
            "deliver.smtp.ca_file",
        ),
        (
            account(&server, &smtp.replace("CA", "missing.pem"), ""),
            "deliver.smtp.ca_file",
        ),
        (
            account(&server, &maildir(&env), "")
                .replace(&format!("password = \"{PASSWORD}\"\nauth = \"user\"\n"), "")
                + &oauth2.replace("CA", ""),
            "oauth2.ca_file",
        ),
        (
            account(&server, &maildir(&env), "")
                .replace(&format!("password = \"{PASSWORD}\"\nauth = \"user\"\n"), "")
                + &oauth2.replace("CA", "missing.pem"),
            "oauth2.ca_file",
        ),
    ];
    for (config, expect) in cases {
        env.write_config(&config);
        let run = env.popfetch(&["check"]);
        assert_eq!(run.code, 2, "check accepted:\n{config}\n{}", run.stderr);
        assert!(
            run.stderr.contains(expect) && run.stderr.contains("ca_file"),
            "{config}\n--- stderr\n{}",
            run.stderr
        );
        let run = env.popfetch(&["fetch"]);
        assert_eq!(run.code, 2, "fetch accepted:\n{config}\n{}", run.stderr);
    }
    // A readable one passes `load` (fetch and the daemon); `check` also wants a certificate
    // in it.
    std::fs::write(dir.join("ca.pem"), "no certificate\n").unwrap();
    env.write_config(&account(&server, &maildir(&env), "ca_file = \"ca.pem\""));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("holds no certificate"),
        "{}",
        run.stderr
    );
    // Writes ca.pem, a CA certificate, over it.
    crate::dovecot::make_certificates(&dir);
    env.popfetch(&["check"]).assert_code(0);
    assert!(server.log().sessions.is_empty(), "check connects nowhere");
}

/// How the scripted relay takes DATA.
#[derive(Clone, Copy, Debug)]
enum Data {
    /// Reads it at once and answers 250.
    Normal,
    /// Reads `chunk` octets, then waits `pause`, and so on; answers 250.
    Slow { chunk: usize, pause: Duration },
    /// Reads this many octets of it, then stops reading (and answers nothing) until the client
    /// goes away or [`RELAY_HOLD`] has passed.
    StopAfter(usize),
    /// Reads it, answers 451, then reads whatever comes and never answers again.
    SilentAfter451,
    /// Answers STARTTLS with its 220 and, in the same write, a reply of its own: what someone
    /// on the path injects before the handshake.
    InjectAfterStarttls,
    /// Answers EHLO with a line that never ends: octets without a line feed, as fast as the
    /// client reads them, up to [`ENDLESS_REPLY`] or [`RELAY_HOLD`].
    EndlessReply,
}

/// The most an endless reply sends.
const ENDLESS_REPLY: usize = 256 << 20;

/// The longest the relay holds a connection it no longer serves.
const RELAY_HOLD: Duration = Duration::from_secs(40);

/// A scripted SMTP relay on 127.0.0.1: EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; it records the
/// raw DATA octets of each message (up to and including the CRLF "." CRLF it stopped at) and
/// every command line. One thread per connection; dropping it stops them all.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    commands: Arc<Mutex<Vec<String>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(mode: Data) -> Relay {
        Relay::start_with(mode, None)
    }

    /// The same, offering STARTTLS with a certificate for 127.0.0.1 made in `dir` (whose
    /// `ca.pem` is its CA).
    fn start_tls(mode: Data, dir: &std::path::Path) -> Relay {
        crate::dovecot::make_certificates(dir);
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_private_key_file(dir.join("server.key"), SslFiletype::PEM)
            .unwrap();
        b.set_certificate_chain_file(dir.join("server.pem"))
            .unwrap();
        Relay::start_with(mode, Some(Arc::new(b.build())))
    }

    fn start_with(mode: Data, tls: Option<Arc<openssl::ssl::SslAcceptor>>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        if !matches!(mode, Data::Normal) {
            // A small receive buffer, so that what the relay has not read stays in the client's
            // writes instead of vanishing into the kernel's buffers. (Not below loopback's MSS of
            // 64 KiB: a window that never reaches one segment stalls TCP on its persist timer.)
            set_rcvbuf(&listener, 256 * 1024);
        }
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (st, rc, cm) = (stop.clone(), received.clone(), commands.clone());
        let acceptor = std::thread::spawn(move || {
            let tls = tls;
            let mut conns = Vec::new();
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let c = RelayConn {
                            stream: Io::Plain(s),
                            tls: tls.clone(),
                            buf: Vec::new(),
                            stop: st.clone(),
                            received: rc.clone(),
                            commands: cm.clone(),
                        };
                        conns.push(std::thread::spawn(move || c.serve(mode)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Relay {
            port,
            stop,
            received,
            commands,
            acceptor: Some(acceptor),
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn set_rcvbuf(l: &TcpListener, size: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket, a pointer to a c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt SO_RCVBUF");
}

/// The relay's side of a connection, in clear text or after STARTTLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<openssl::ssl::SslStream<TcpStream>>),
    Gone,
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
            Io::Gone => Ok(0),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
            Io::Gone => Err(ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
            Io::Gone => Ok(()),
        }
    }
}

struct RelayConn {
    stream: Io,
    tls: Option<Arc<openssl::ssl::SslAcceptor>>,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    commands: Arc<Mutex<Vec<String>>>,
}

impl RelayConn {
    fn serve(mut self, mode: Data) {
        if let Io::Plain(s) = &self.stream {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        }
        if !self.send("220 relay.test ESMTP\r\n") {
            return;
        }
        let mut silent = false;
        while let Some(line) = self.read_line() {
            self.commands.lock().unwrap().push(line.clone());
            if silent {
                continue;
            }
            let verb = line
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let ok = match verb.as_str() {
                "EHLO" if self.tls.is_some() && matches!(self.stream, Io::Plain(_)) => {
                    self.send("250-relay.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
                }
                "EHLO" if matches!(mode, Data::EndlessReply) => {
                    let since = Instant::now();
                    let chunk = "x".repeat(64 * 1024);
                    let mut sent = self.send("250-relay.test ");
                    let mut total = 0;
                    while sent
                        && total < ENDLESS_REPLY
                        && since.elapsed() < RELAY_HOLD
                        && !self.stop.load(Ordering::SeqCst)
                    {
                        sent = self.send(&chunk);
                        total += chunk.len();
                    }
                    return;
                }
                "EHLO" => self.send("250-relay.test\r\n250 8BITMIME\r\n"),
                "STARTTLS" if self.tls.is_some() => {
                    let answer = if matches!(mode, Data::InjectAfterStarttls) {
                        "220 ready\r\n250-relay.test\r\n250 AUTH PLAIN\r\n"
                    } else {
                        "220 ready\r\n"
                    };
                    if !self.send(answer) {
                        return;
                    }
                    let Io::Plain(tcp) = std::mem::replace(&mut self.stream, Io::Gone) else {
                        return;
                    };
                    // The handshake with blocking reads (the 100 ms tick would abort it).
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(tls) = self.tls.as_ref().unwrap().accept(tcp) else {
                        return;
                    };
                    let _ = tls
                        .get_ref()
                        .set_read_timeout(Some(Duration::from_millis(100)));
                    self.stream = Io::Tls(Box::new(tls));
                    true
                }
                "MAIL" | "RCPT" | "RSET" | "NOOP" => self.send("250 ok\r\n"),
                "QUIT" => {
                    self.send("221 bye\r\n");
                    return;
                }
                "DATA" => {
                    if !self.send("354 go on\r\n") {
                        return;
                    }
                    let Some(data) = self.read_data(mode) else {
                        return;
                    };
                    self.received.lock().unwrap().push(data);
                    if matches!(mode, Data::SilentAfter451) {
                        silent = true;
                        self.send("451 4.3.0 try again later\r\n")
                    } else {
                        self.send("250 2.0.0 queued\r\n")
                    }
                }
                _ => self.send("502 unknown\r\n"),
            };
            if !ok {
                return;
            }
        }
    }

    fn send(&mut self, s: &str) -> bool {
        self.stream.write_all(s.as_bytes()).is_ok()
    }

    /// One read of at most `max` octets into the buffer; false at EOF, on an error, or when
    /// the relay stops or has held the connection for [`RELAY_HOLD`].
    fn fill(&mut self, max: usize, since: Instant) -> bool {
        let mut chunk = vec![0u8; max];
        loop {
            if self.stop.load(Ordering::SeqCst) || since.elapsed() > RELAY_HOLD {
                return false;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
        }
    }

    fn read_line(&mut self) -> Option<String> {
        let since = Instant::now();
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            if !self.fill(4096, since) {
                return None;
            }
        }
    }

    /// Reads DATA up to the first CRLF "." CRLF (a strict relay's end of data).
    fn read_data(&mut self, mode: Data) -> Option<Vec<u8>> {
        let since = Instant::now();
        let mut data = std::mem::take(&mut self.buf);
        let mut looked: usize = 0;
        loop {
            // The data begins right after "354": its first line may be "." CRLF too.
            let hay = if data.starts_with(b".\r\n") {
                return self.end_data(data, 3);
            } else {
                &data[looked.saturating_sub(4)..]
            };
            if let Some(i) = hay.windows(5).position(|w| w == b"\r\n.\r\n") {
                let end = looked.saturating_sub(4) + i + 5;
                return self.end_data(data, end);
            }
            looked = data.len();
            let (max, pause) = match mode {
                Data::Slow { chunk, pause } => (chunk, Some(pause)),
                Data::StopAfter(n) if data.len() >= n => {
                    while !self.stop.load(Ordering::SeqCst) && since.elapsed() < RELAY_HOLD {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    return None;
                }
                _ => (64 * 1024, None),
            };
            self.buf.clear();
            // `max` octets a turn, in as many reads as that takes (a TLS record holds 16 KiB).
            while self.buf.len() < max {
                if !self.fill(max - self.buf.len(), since) {
                    return None;
                }
                let mut tail = data[data.len().saturating_sub(5)..].to_vec();
                tail.extend_from_slice(&self.buf[self.buf.len().saturating_sub(5)..]);
                if tail.ends_with(b"\r\n.\r\n") {
                    break;
                }
            }
            data.append(&mut self.buf);
            if let Some(p) = pause {
                std::thread::sleep(p);
            }
        }
    }

    fn end_data(&mut self, mut data: Vec<u8>, end: usize) -> Option<Vec<u8>> {
        self.buf = data.split_off(end);
        Some(data)
    }
}

/// An account relaying to `relay` with `timeout`.
fn relay_account(server: &Server, relay: &Relay, timeout: &str) -> String {
    account(
        server,
        &format!(
            "{{ smtp = {{ host = \"127.0.0.1\", port = {}, to = [\"rcpt@example.org\"] }} }}",
            relay.port
        ),
        &format!("timeout = \"{timeout}\"\nreceived_header = false"),
    )
}

/// A message of about `size` octets in lines of 76.
fn big_message(size: usize) -> Vec<u8> {
    let mut m = b"From: a@example.org\nSubject: big\n\n".to_vec();
    let line = [b'x'; 75];
    while m.len() < size {
        m.extend_from_slice(&line);
        m.push(b'\n');
    }
    m
}

#[test]
fn issue13_14_a_slow_but_steady_relay_gets_a_large_message() {
    let msg = big_message(24 << 20);
    let server = Server::healthy(vec![Msg::new(msg.clone(), "big")]);
    // 128 KiB every 50 ms: at most 2.6 MB/s, so the 24 MiB take over 9 s, more than the old
    // fixed 4 × timeout (8 s) for the whole DATA phase.
    let relay = Relay::start(Data::Slow {
        chunk: 128 * 1024,
        pause: Duration::from_millis(50),
    });
    let env = Env::new();
    env.write_config(&relay_account(&server, &relay, "2s"));
    let started = Instant::now();
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    let took = started.elapsed();
    run.assert_code(0);
    let got = relay.received();
    assert_eq!(got.len(), 1, "{}", run.stderr);
    assert!(got[0].len() > msg.len(), "the whole message arrived");
    assert!(server.remaining().is_empty(), "deleted once relayed");
    // Not an assertion on speed: a check that the test exercised what it claims (a transfer
    // longer than the old fixed 4 × timeout for the whole DATA phase).
    assert!(
        took > Duration::from_secs(8),
        "the relay was not slow enough: {took:?}"
    );
}

#[test]
fn issue13_14_a_relay_that_stops_reading_mid_data_fails_the_message_and_keeps_it() {
    let msg = big_message(8 << 20);
    let server = Server::healthy(vec![Msg::new(msg, "big")]);
    let relay = Relay::start(Data::StopAfter(256 * 1024));
    let env = Env::new();
    env.write_config(&relay_account(&server, &relay, "1s"));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(30));
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no progress"),
        "the error says why:\n{}",
        run.stderr
    );
    assert_eq!(
        server.remaining().len(),
        1,
        "the message stays on the server"
    );
    assert!(server.log().deles.is_empty());
    assert!(relay.received().is_empty());
}

#[test]
fn issue13_14_a_relay_silent_after_an_error_does_not_hang_the_poll() {
    let server = Server::healthy(vec![
        Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1"),
        Msg::new(b"Subject: two\n\nbody\n".to_vec(), "u2"),
    ]);
    let relay = Relay::start(Data::SilentAfter451);
    let env = Env::new();
    env.write_config(&relay_account(&server, &relay, "1s"));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(30));
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        server.remaining().len(),
        2,
        "both messages stay: {}",
        run.stderr
    );
    assert!(server.log().deles.is_empty());
    assert!(
        !relay.received().is_empty(),
        "the relay got DATA and answered 451"
    );
}

#[test]
fn issue13_15_a_bare_cr_before_a_dot_cannot_smuggle_smtp_commands() {
    let evil = b"From: a@example.org\nSubject: smuggle\n\nevil\r.\nMAIL FROM:<x@example.org>\n\
                 RCPT TO:<victim@example.org>\nDATA\nSubject: smuggled\n\nhi\r.\nlast line\n"
        .to_vec();
    let server = Server::healthy(vec![Msg::new(evil, "evil")]);
    let relay = Relay::start(Data::Normal);
    let env = Env::new();
    env.write_config(&relay_account(&server, &relay, "5s"));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(30));
    run.assert_code(0);
    let got = relay.received();
    assert_eq!(got.len(), 1, "{}", run.stderr);
    let data = &got[0];
    let text = String::from_utf8_lossy(data);
    assert!(data.ends_with(b"last line\r\n.\r\n"), "{text:?}");
    let body = &data[..data.len() - 3];
    for (i, &b) in body.iter().enumerate() {
        assert!(
            b != b'\r' || body.get(i + 1) == Some(&b'\n'),
            "a bare CR reached DATA at {i}: {text:?}"
        );
        assert!(
            b != b'\n' || (i > 0 && body[i - 1] == b'\r'),
            "bare LF: {text:?}"
        );
    }
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    assert!(
        !lines.iter().any(|l| *l == b".\r" || *l == b"."),
        "a line holding only \".\" before the end: {text:?}"
    );
    assert!(
        text.contains("\r\nMAIL FROM:<x@example.org>\r\n"),
        "kept as text"
    );
    let mails = relay
        .commands()
        .iter()
        .filter(|c| c.starts_with("MAIL"))
        .count();
    assert_eq!(mails, 1, "one transaction: {:?}", relay.commands());
}

#[test]
fn issue13_16_the_first_delivery_creates_the_mbox_and_it_holds_the_message() {
    let server = Server::healthy(vec![
        Msg::new(
            b"From: a@example.org\nSubject: one\n\nFrom here\n".to_vec(),
            "u1",
        ),
        Msg::new(b"Subject: two\n\nbody\n".to_vec(), "u2"),
    ]);
    let env = Env::new();
    let mbox = env.path().join("mail").join("alice");
    std::fs::create_dir(env.path().join("mail")).unwrap();
    env.write_config(&account(
        &server,
        &format!("{{ mbox = \"{}\" }}", mbox.display()),
        "",
    ));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(30));
    run.assert_code(0);
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From a@example.org "), "{text}");
    assert!(text.contains("\n>From here\n"), "{text}");
    assert_eq!(text.matches("\nFrom MAILER-DAEMON ").count(), 1, "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&mbox).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(server.remaining().is_empty());
}

#[test]
fn issue13_14_a_slow_relay_over_starttls_gets_a_large_message() {
    crate::peers::require_peers!("dovecot");
    let msg = big_message(24 << 20);
    let server = Server::healthy(vec![Msg::new(msg.clone(), "big")]);
    let env = Env::new();
    let tls = env.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let relay = Relay::start_tls(
        Data::Slow {
            chunk: 128 * 1024,
            pause: Duration::from_millis(50),
        },
        &tls,
    );
    env.write_config(&account(
        &server,
        &format!(
            "{{ smtp = {{ host = \"127.0.0.1\", port = {}, tls = \"starttls\", ca_file = \"{}\", \
             to = [\"rcpt@example.org\"] }} }}",
            relay.port,
            tls.join("ca.pem").display()
        ),
        "timeout = \"2s\"\nreceived_header = false",
    ));
    let started = Instant::now();
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    let took = started.elapsed();
    run.assert_code(0);
    assert!(relay.commands().iter().any(|c| c == "STARTTLS"));
    let got = relay.received();
    assert_eq!(got.len(), 1, "{}", run.stderr);
    assert!(got[0].len() > msg.len(), "the whole message arrived");
    assert!(server.remaining().is_empty());
    // The transfer outlasted the old fixed 4 x timeout (see the clear-text test).
    assert!(
        took > Duration::from_secs(8),
        "the relay was not slow enough: {took:?}"
    );
}

/// A relay's reply is read with a cap (lettre's reply parser bounds a line): one that sends a
/// line without end fails the message, kept on the server, instead of filling memory.
#[test]
fn issue13_14_a_relay_reply_without_end_is_capped() {
    let server = Server::healthy(vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")]);
    let relay = Relay::start(Data::EndlessReply);
    let env = Env::new();
    // The cap must be what ends it, not the timeout: generous, so a loaded machine that sends
    // the endless line slowly still reaches the cap first.
    env.write_config(&relay_account(&server, &relay, "20s"));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("response line too long"),
        "the error says why:\n{}",
        run.stderr
    );
    assert_eq!(
        server.remaining().len(),
        1,
        "the message stays on the server"
    );
    assert!(server.log().deles.is_empty());
}

/// The system calls of a `popfetch fetch` traced by strace: `(pid, call line)` in order.
fn traced_fetch(env: &Env) -> (Run, Vec<String>) {
    let trace = env.path().join("strace.txt");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-s", "16", "-e"])
        .arg("trace=openat,fsync,fdatasync,write,sendto,sendmsg")
        .arg("-o")
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_popfetch"))
        .arg("-c")
        .arg(env.config_path())
        .arg("fetch")
        .env_remove("POPFETCH_LOG")
        .env_remove("POPFETCH_CONFIG");
    let run = run_bounded(cmd, Duration::from_secs(60));
    let text = std::fs::read_to_string(&trace).expect("strace wrote its trace");
    // strace prefixes each line with the thread id; calls that other threads interrupted come
    // as `<unfinished ...>` and `<... resumed>` halves: kept as they are (the fd of an open is
    // on its resumed half).
    (run, text.lines().map(str::to_string).collect())
}

/// The fd an `openat` line returned.
fn opened_fd(line: &str) -> Option<String> {
    let (_, ret) = line.rsplit_once(" = ")?;
    let fd = ret.split_whitespace().next()?;
    fd.parse::<u32>().ok().map(|n| n.to_string())
}

/// Item 16 seen through the binary: the new mbox's name is fsync'd in its directory (an
/// `fsync` of a descriptor opened on the directory, after the mbox was created) before the DELE
/// that depends on it goes out.
#[test]
fn issue13_16_a_new_mbox_has_its_directory_synced_before_the_dele() {
    crate::peers::require_peers!("strace");
    let server = Server::healthy(vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")]);
    let env = Env::new();
    let dir = env.path().join("mail");
    std::fs::create_dir(&dir).unwrap();
    let mbox = dir.join("alice");
    env.write_config(&account(
        &server,
        &format!("{{ mbox = \"{}\" }}", mbox.display()),
        "",
    ));
    let (run, calls) = traced_fetch(&env);
    run.assert_code(0);
    assert!(server.remaining().is_empty(), "the message was deleted");
    let mbox_q = format!("\"{}\"", mbox.display());
    let dir_q = format!("\"{}\"", dir.display());
    let created = calls
        .iter()
        .position(|l| l.contains("openat(") && l.contains(&mbox_q) && l.contains("O_CREAT"))
        .unwrap_or_else(|| {
            panic!(
                "no creation of the mbox in the trace:\n{}",
                calls.join("\n")
            )
        });
    let dele = calls
        .iter()
        .position(|l| l.contains("DELE "))
        .unwrap_or_else(|| panic!("no DELE in the trace:\n{}", calls.join("\n")));
    // Directory descriptors opened after the creation, and whether one was fsync'd before DELE.
    let mut dir_fds = Vec::new();
    let mut synced = false;
    for l in &calls[created..dele] {
        if l.contains("openat(") && l.contains(&dir_q) {
            dir_fds.extend(opened_fd(l));
        }
        if l.contains("fsync(") && dir_fds.iter().any(|fd| l.contains(&format!("fsync({fd})"))) {
            synced = true;
        }
    }
    assert!(
        synced,
        "the mbox's directory was not fsync'd between its creation and the DELE:\n{}",
        calls[created..=dele].join("\n")
    );
}

/// `other/ca.pem` (a CA that signed nothing here) followed by `ca`: a bundle whose useful CA
/// is second.
pub(crate) fn bundle_with_ca_second(dir: &std::path::Path, ca: &std::path::Path) -> PathBuf {
    let other = dir.join("other-ca");
    std::fs::create_dir_all(&other).unwrap();
    crate::dovecot::make_certificates(&other);
    let mut pem = std::fs::read(other.join("ca.pem")).unwrap();
    pem.extend_from_slice(&std::fs::read(ca).unwrap());
    let bundle = dir.join("bundle.pem");
    std::fs::write(&bundle, pem).unwrap();
    bundle
}

/// Issue 14 item 2: the relay's STARTTLS trusts every certificate of `ca_file`, as POP3 does
/// (it once went through a second TLS stack that took only the first).
#[test]
fn issue14_2_a_relay_over_starttls_trusts_a_ca_second_in_ca_file() {
    crate::peers::require_peers!("dovecot");
    let server = Server::healthy(vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")]);
    let env = Env::new();
    let tls = env.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let relay = Relay::start_tls(Data::Normal, &tls);
    let bundle = bundle_with_ca_second(env.path(), &tls.join("ca.pem"));
    env.write_config(&account(
        &server,
        &format!(
            "{{ smtp = {{ host = \"127.0.0.1\", port = {}, tls = \"starttls\", ca_file = \"{}\", \
             to = [\"rcpt@example.org\"] }} }}",
            relay.port,
            bundle.display()
        ),
        "timeout = \"5s\"\nreceived_header = false",
    ));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    run.assert_code(0);
    let commands = relay.commands();
    let starttls = commands.iter().position(|c| c == "STARTTLS");
    assert!(starttls.is_some(), "{commands:?}");
    // RFC 3207 §4.2: EHLO again over TLS, before the envelope.
    assert!(
        commands[starttls.unwrap()..]
            .iter()
            .any(|c| c.starts_with("EHLO")),
        "{commands:?}"
    );
    assert_eq!(relay.received().len(), 1, "{}", run.stderr);
    assert!(server.remaining().is_empty());
}

/// With `tls = "starttls"` a relay that does not offer STARTTLS gets nothing in clear text:
/// the message stays on the server.
#[test]
fn issue14_2_a_relay_without_starttls_gets_no_mail_in_clear_text() {
    let server = Server::healthy(vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")]);
    let relay = Relay::start(Data::Normal);
    let env = Env::new();
    env.write_config(&account(
        &server,
        &format!(
            "{{ smtp = {{ host = \"127.0.0.1\", port = {}, tls = \"starttls\", \
             to = [\"rcpt@example.org\"] }} }}",
            relay.port
        ),
        "timeout = \"5s\"\nreceived_header = false",
    ));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("does not offer STARTTLS"),
        "{}",
        run.stderr
    );
    let commands = relay.commands();
    assert!(
        !commands.iter().any(|c| c.starts_with("MAIL")),
        "{commands:?}"
    );
    assert!(relay.received().is_empty());
    assert_eq!(server.remaining().len(), 1);
    assert!(server.log().deles.is_empty());
}

/// What the relay sends after its STARTTLS 220 and before the handshake was injected: refused,
/// as for POP3's STLS, and nothing is sent.
#[test]
fn issue14_2_data_injected_after_the_relays_starttls_answer_is_refused() {
    crate::peers::require_peers!("dovecot");
    let server = Server::healthy(vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")]);
    let env = Env::new();
    let tls = env.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let relay = Relay::start_tls(Data::InjectAfterStarttls, &tls);
    env.write_config(&account(
        &server,
        &format!(
            "{{ smtp = {{ host = \"127.0.0.1\", port = {}, tls = \"starttls\", ca_file = \"{}\", \
             to = [\"rcpt@example.org\"] }} }}",
            relay.port,
            tls.join("ca.pem").display()
        ),
        "timeout = \"5s\"\nreceived_header = false",
    ));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("sent data after its STARTTLS answer"),
        "{}",
        run.stderr
    );
    let commands = relay.commands();
    assert!(
        !commands.iter().any(|c| c.starts_with("MAIL")),
        "{commands:?}"
    );
    assert_eq!(server.remaining().len(), 1);
    assert!(server.log().deles.is_empty());
}

/// The relay's STARTTLS takes `tls_fingerprint` as POP3 does: pinned, it needs no CA; a wrong
/// pin ends the connection before the envelope, and the message stays on the server.
#[test]
fn a_relay_pinned_by_tls_fingerprint_needs_no_ca_and_a_wrong_pin_sends_nothing() {
    crate::peers::require_peers!("dovecot", "openssl");
    let server = Server::healthy(vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")]);
    let env = Env::new();
    let tls = env.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let relay = Relay::start_tls(Data::Normal, &tls);
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(tls.join("server.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let pin = format!("sha256:{}", text.trim().rsplit('=').next().unwrap());
    let write = |pin: &str| {
        env.write_config(&account(
            &server,
            &format!(
                "{{ smtp = {{ host = \"127.0.0.1\", port = {}, tls = \"starttls\", \
                 tls_fingerprint = [\"{pin}\"], to = [\"rcpt@example.org\"] }} }}",
                relay.port
            ),
            "timeout = \"5s\"\nreceived_header = false",
        ));
    };
    write(&format!("sha256:{}", "00".repeat(32)));
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    assert_ne!(run.code, 0);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("matches no tls_fingerprint"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(
        !relay.commands().iter().any(|c| c.starts_with("MAIL")),
        "{:?}",
        relay.commands()
    );
    assert_eq!(server.remaining().len(), 1);
    write(&pin);
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    run.assert_code(0);
    assert_eq!(relay.received().len(), 1, "{}", run.stderr);
    assert!(server.remaining().is_empty());
}
