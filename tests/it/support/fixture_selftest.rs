//! Self-tests of the Dovecot fixture ([`crate::dovecot`]): they speak POP3 by hand over plain
//! TCP (std only; TLS through the `openssl` CLI) to prove that an instance starts, serves the
//! users and messages the fixture gives it, and behaves as the other tests expect.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::dovecot::{Dovecot, Options, run_bounded};

/// A minimal POP3 client for these tests.
struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    greeting: String,
}

impl Pop3 {
    fn connect(host: &str, port: u16) -> Pop3 {
        let stream = TcpStream::connect((host, port))
            .unwrap_or_else(|e| panic!("connect {host}:{port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set read timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mut client = Pop3 {
            reader: BufReader::new(stream),
            writer,
            greeting: String::new(),
        };
        client.greeting = client.text_line();
        assert!(
            client.greeting.starts_with("+OK"),
            "greeting {:?}",
            client.greeting
        );
        client
    }

    /// One line without its CRLF, as raw bytes.
    fn line(&mut self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.reader
            .read_until(b'\n', &mut buf)
            .expect("read from server");
        assert!(
            buf.ends_with(b"\r\n"),
            "line not ended by CRLF: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.truncate(buf.len() - 2);
        buf
    }

    fn text_line(&mut self) -> String {
        String::from_utf8_lossy(&self.line()).into_owned()
    }

    /// Sends a command and returns the status line.
    fn cmd(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("write to server");
        self.text_line()
    }

    /// Sends a command that must succeed and returns its multi-line body, still dot-stuffed.
    fn multi(&mut self, command: &str) -> Vec<Vec<u8>> {
        let status = self.cmd(command);
        assert!(status.starts_with("+OK"), "{command}: {status}");
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            if line == b"." {
                return lines;
            }
            lines.push(line);
        }
    }

    fn multi_text(&mut self, command: &str) -> Vec<String> {
        self.multi(command)
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }

    fn login(&mut self, user: &str, password: &str) {
        let r = self.cmd(&format!("USER {user}"));
        assert!(r.starts_with("+OK"), "USER: {r}");
        let r = self.cmd(&format!("PASS {password}"));
        assert!(r.starts_with("+OK"), "PASS: {r}");
    }

    fn quit(mut self) -> String {
        self.cmd("QUIT")
    }
}

/// The message as it travels in POP3 (CRLF line ends), before dot-stuffing.
fn crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 20);
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

const PLAIN: &[u8] = b"From: a@example.org\nTo: b@example.org\nSubject: plain\n\nHello.\n";
const DOTTED: &[u8] =
    b"From: a@example.org\nSubject: dots\n\nfirst\n.leading dot\n..two dots\n.\nlast\n";
const EIGHT_BIT: &[u8] =
    b"From: a@example.org\nSubject: 8bit\nContent-Type: text/plain; charset=latin1\n\nGr\xfc\xdfe, \xe9t\xe9 \xff\n";

#[test]
fn fixture_serves_users_and_messages_over_plain_pop3() {
    crate::peers::require_peers!("dovecot");
    let server = Dovecot::start();
    server.add_user("alice", "s3cret");
    let messages = [PLAIN, DOTTED, EIGHT_BIT];
    let names: Vec<String> = messages
        .iter()
        .map(|m| server.deliver("alice", m))
        .collect();
    assert_eq!(server.message_count("alice"), 3);

    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    assert!(
        !pop.greeting.contains('<'),
        "no APOP timestamp without apop: {}",
        pop.greeting
    );
    let capa = pop.multi_text("CAPA");
    for want in ["STLS", "USER", "UIDL", "TOP", "SASL PLAIN LOGIN CRAM-MD5"] {
        assert!(
            capa.iter().any(|c| c == want),
            "CAPA lacks {want}: {capa:?}"
        );
    }
    pop.login("alice", "s3cret");

    let total: usize = messages.iter().map(|m| crlf(m).len()).sum();
    assert_eq!(pop.cmd("STAT"), format!("+OK 3 {total}"));
    let uidl = pop.multi_text("UIDL");
    let expected: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} {n}", i + 1))
        .collect();
    assert_eq!(uidl, expected, "UIDLs are the delivered names, in order");
    let list = pop.multi_text("LIST");
    let expected: Vec<String> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| format!("{} {}", i + 1, crlf(m).len()))
        .collect();
    assert_eq!(list, expected, "LIST sizes are the CRLF sizes");

    let dotted = pop.multi("RETR 2");
    let dotted_text: Vec<String> = dotted
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    for want in ["..leading dot", "...two dots", ".."] {
        assert!(
            dotted_text.iter().any(|l| l == want),
            "RETR 2 lacks the dot-stuffed line {want:?}: {dotted_text:?}"
        );
    }
    for (i, message) in messages.iter().enumerate() {
        let lines = pop.multi(&format!("RETR {}", i + 1));
        let mut body = Vec::new();
        for line in lines {
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            body.extend_from_slice(unstuffed);
            body.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            body,
            crlf(message),
            "RETR {} gives the message back byte for byte",
            i + 1
        );
    }
    assert!(pop.quit().starts_with("+OK"));
    assert_eq!(server.message_count("alice"), 3, "nothing deleted");
    assert!(
        server.log().contains("user=<alice>"),
        "log records the login:\n{}",
        server.log()
    );
}

#[test]
fn fixture_dele_and_quit_removes_the_file() {
    crate::peers::require_peers!("dovecot");
    let server = Dovecot::start();
    server.add_user("bob", "pw");
    let names = server.deliver_many("bob", [PLAIN.to_vec(), DOTTED.to_vec()]);
    assert_eq!(server.message_count("bob"), 2);

    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    pop.login("bob", "pw");
    let r = pop.cmd("DELE 1");
    assert!(r.starts_with("+OK"), "DELE: {r}");
    assert_eq!(
        server.message_count("bob"),
        2,
        "nothing removed before QUIT"
    );
    let r = pop.quit();
    assert!(r.starts_with("+OK"), "QUIT: {r}");
    assert_eq!(server.message_count("bob"), 1, "log:\n{}", server.log());

    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    pop.login("bob", "pw");
    assert_eq!(pop.multi_text("UIDL"), vec![format!("1 {}", names[1])]);
    pop.quit();
}

#[test]
fn fixture_wrong_password_is_refused() {
    crate::peers::require_peers!("dovecot");
    let server = Dovecot::start();
    server.add_user("carol", "right");
    server.add_user("carol", "changed");
    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    assert!(pop.cmd("USER carol").starts_with("+OK"));
    let r = pop.cmd("PASS right");
    assert!(r.starts_with("-ERR"), "old password refused: {r}");
    pop.login("carol", "changed");
    pop.quit();
}

#[test]
fn fixture_apop_greeting_has_a_timestamp_and_apop_works() {
    crate::peers::require_peers!("dovecot");
    let server = Dovecot::start_with(Options {
        apop: true,
        ..Options::default()
    });
    server.add_user("dave", "tanstaaf");
    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    let greeting = pop.greeting.clone();
    let start = greeting.find('<').expect("greeting has <timestamp>");
    let end = greeting.rfind('>').expect("greeting has <timestamp>");
    let timestamp = &greeting[start..=end];
    assert!(
        timestamp.contains('@') && end > start,
        "timestamp {timestamp:?}"
    );

    // RFC 1939: the digest is MD5(timestamp + secret) in lowercase hex.
    let out = run_bounded(
        &mut Command::new("md5sum"),
        format!("{timestamp}tanstaaf").as_bytes(),
        Duration::from_secs(10),
    )
    .expect("md5sum runs");
    let digest = String::from_utf8(out.stdout).expect("hex");
    let digest = digest.split_whitespace().next().expect("md5sum output");
    let r = pop.cmd(&format!("APOP dave {digest}"));
    assert!(r.starts_with("+OK"), "APOP: {r}\n{}", server.log());
    pop.quit();
}

#[test]
fn fixture_default_uidl_format_without_option() {
    crate::peers::require_peers!("dovecot");
    let server = Dovecot::start_with(Options {
        uidl_format: None,
        ..Options::default()
    });
    server.add_user("erin", "pw");
    let name = server.deliver("erin", PLAIN);
    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    pop.login("erin", "pw");
    let uidl = pop.multi_text("UIDL");
    assert_eq!(uidl.len(), 1);
    let uid = uidl[0].strip_prefix("1 ").expect("UIDL line");
    assert_ne!(uid, name);
    assert!(
        uid.len() == 16 && uid.chars().all(|c| c.is_ascii_hexdigit()),
        "Dovecot's default %08Xu%08Xv: {uid}"
    );
    pop.quit();
}

#[test]
fn fixture_plaintext_off_is_enforced_only_on_the_insecure_host() {
    crate::peers::require_peers!("dovecot");
    let server = Dovecot::start_with(Options {
        plaintext: false,
        ..Options::default()
    });
    server.add_user("frank", "pw");

    // 127.0.0.1 -> 127.0.0.1 counts as secured for Dovecot: plaintext still works.
    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    assert!(pop.multi_text("CAPA").iter().any(|c| c == "USER"));
    pop.login("frank", "pw");
    pop.quit();

    let mut pop = Pop3::connect(server.insecure_host(), server.pop3_port());
    let capa = pop.multi_text("CAPA");
    assert!(!capa.iter().any(|c| c == "USER"), "CAPA {capa:?}");
    assert!(capa.iter().any(|c| c == "STLS"), "CAPA {capa:?}");
    assert!(
        capa.iter().any(|c| c == "SASL CRAM-MD5"),
        "only non-plaintext SASL: {capa:?}"
    );
    let _ = pop.cmd("USER frank");
    let r = pop.cmd("PASS pw");
    assert!(r.starts_with("-ERR [AUTH]"), "PASS: {r}");
    pop.quit();
}

#[test]
fn fixture_tls_ports_verify_against_the_ca() {
    crate::peers::require_peers!("dovecot");
    let server = Dovecot::start();
    let ca = server.ca_file().to_path_buf();
    let session = |starttls: bool, port: u16, host: &str| {
        let mut cmd = Command::new("openssl");
        cmd.arg("s_client");
        if starttls {
            cmd.args(["-starttls", "pop3"]);
        }
        cmd.arg("-connect")
            .arg(format!("127.0.0.1:{port}"))
            .args(["-servername", "localhost", "-verify_hostname", host])
            .args(["-verify_return_error", "-quiet", "-CAfile"])
            .arg(&ca);
        run_bounded(&mut cmd, b"CAPA\r\nQUIT\r\n", Duration::from_secs(20)).expect("openssl runs")
    };

    let out = session(false, server.pop3s_port(), "localhost");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pop3s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("+OK"), "pop3s greeting: {text}");
    assert!(!text.contains("STLS"), "no STLS inside TLS: {text}");

    let out = session(true, server.pop3_port(), "localhost");
    assert!(
        out.status.success(),
        "STLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\r\nUSER\r\n"), "CAPA after STLS: {text}");

    let out = session(false, server.pop3s_port(), "not-localhost.example");
    assert!(
        !out.status.success(),
        "a wrong host name must fail verification"
    );
}

#[test]
fn fixture_extra_config_is_appended() {
    crate::peers::require_peers!("dovecot");
    // (`pop3_lock_session = yes` works the same way, but Dovecot answers the second session's
    // PASS with `-ERR [IN-USE]` only after about 12 s, too slow for a self-test.)
    let server =
        Dovecot::start_with_extra(Options::default(), "login_greeting = popfetch test ready\n");
    let pop = Pop3::connect("127.0.0.1", server.pop3_port());
    assert_eq!(pop.greeting, "+OK popfetch test ready");
    pop.quit();
}

#[test]
fn fixture_deliver_many_thousands_in_order() {
    crate::peers::require_peers!("dovecot");
    const N: usize = 3000;
    let server = Dovecot::start();
    server.add_user("hank", "pw");
    let started = Instant::now();
    let names = server.deliver_many(
        "hank",
        (0..N).map(|i| format!("Subject: message {i}\n\nbody {i}\n").into_bytes()),
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "deliver_many took {took:?}");
    assert_eq!(names.len(), N);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), N, "names are unique");
    assert_eq!(server.message_count("hank"), N);

    let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
    pop.login("hank", "pw");
    let uidl = pop.multi_text("UIDL");
    let got: Vec<&str> = uidl
        .iter()
        .map(|l| l.split_once(' ').expect("n uid").1)
        .collect();
    assert_eq!(got, names, "Dovecot's order is the order of delivery");
    let top = pop.multi_text(&format!("TOP {N} 0"));
    assert_eq!(top[0], format!("Subject: message {}", N - 1));
    pop.quit();
}

#[test]
fn fixture_instances_start_concurrently_and_leave_nothing_behind() {
    crate::peers::require_peers!("dovecot");
    let servers: Vec<Dovecot> = (0..3)
        .map(|_| thread::spawn(Dovecot::start))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("start in a thread"))
        .collect();
    let mut ports: Vec<u16> = servers
        .iter()
        .flat_map(|s| [s.pop3_port(), s.pop3s_port()])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 6, "every instance has its own ports");

    let mut leftovers = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let user = format!("user{i}");
        server.add_user(&user, "pw");
        server.deliver(&user, PLAIN);
        let mut pop = Pop3::connect("127.0.0.1", server.pop3_port());
        pop.login(&user, "pw");
        assert_eq!(pop.cmd("STAT"), format!("+OK 1 {}", crlf(PLAIN).len()));
        pop.quit();
        leftovers.push((
            server.instance_name().to_owned(),
            server.maildir(&user).parent().expect("home").to_path_buf(),
        ));
    }
    drop(servers);

    for (instance, home) in leftovers {
        assert!(!home.exists(), "{} removed", home.display());
        let procs: Vec<String> = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&instance))
            .collect();
        assert!(procs.is_empty(), "processes left: {procs:?}");
    }
}
