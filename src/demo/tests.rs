//! Tests of the demo POP3 server, speaking to it over real loopback TCP connections: what the
//! demo's fetch relies on (listings, dot-stuffed RETR, deletion only at QUIT, one session at a
//! time, pipelined answers) and the bounds that keep a stray client from holding it.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{DemoServer, Mailbox, sample_messages};

const USER: &str = "demo";
/// Contains a space: PASS takes the rest of the line.
const PASSWORD: &str = "open sesame";
const WAIT: Duration = Duration::from_secs(5);

async fn server() -> DemoServer {
    DemoServer::start(Mailbox {
        user: USER.into(),
        password: PASSWORD.into(),
        messages: sample_messages(),
    })
    .await
    .expect("start demo server")
}

/// A deliberately naive POP3 client that exposes the raw wire.
struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    async fn connect(server: &DemoServer) -> Client {
        let stream = TcpStream::connect(server.addr()).await.expect("connect");
        let (rd, wr) = stream.into_split();
        let mut client = Client {
            rd: BufReader::new(rd),
            wr,
        };
        assert_eq!(client.line().await, "+OK popfetch demo server ready");
        client
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.expect("write");
    }

    async fn send(&mut self, line: &str) {
        self.write(format!("{line}\r\n").as_bytes()).await;
    }

    /// One line as sent, CRLF included.
    async fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = tokio::time::timeout(WAIT, self.rd.read_until(b'\n', &mut line))
            .await
            .expect("server answered in time")
            .expect("read");
        assert!(n > 0, "unexpected EOF");
        assert!(line.ends_with(b"\r\n"), "not CRLF-terminated: {line:?}");
        line
    }

    /// One status line, CRLF stripped.
    async fn line(&mut self) -> String {
        let mut line = self.raw_line().await;
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("UTF-8 status line")
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    /// The lines of a multi-line body as on the wire (CRLF included, still dot-stuffed), up to
    /// but excluding the terminating `.CRLF`.
    async fn multiline(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        loop {
            let line = self.raw_line().await;
            if line == b".\r\n" {
                return lines;
            }
            lines.push(line);
        }
    }

    async fn multiline_text(&mut self) -> Vec<String> {
        let lines = self.multiline().await.into_iter();
        lines
            .map(|l| String::from_utf8(l[..l.len() - 2].to_vec()).expect("UTF-8 line"))
            .collect()
    }

    async fn login(&mut self) {
        assert_eq!(self.cmd(&format!("USER {USER}")).await, "+OK send PASS");
        let reply = self.cmd(&format!("PASS {PASSWORD}")).await;
        assert!(reply.starts_with("+OK "), "{reply}");
    }

    async fn quit(&mut self) {
        let reply = self.cmd("QUIT").await;
        assert!(reply.starts_with("+OK "), "{reply}");
        self.assert_closed().await;
    }

    /// The server closed the connection (after the answers already read).
    async fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.rd.read_to_end(&mut rest))
            .await
            .expect("server closed in time")
            .expect("read to EOF");
        assert!(rest.is_empty(), "unexpected data: {rest:?}");
    }
}

/// The message as it must arrive: LF becomes CRLF, and it ends with CRLF.
fn expected_wire(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(raw.to_vec()).expect("sample is UTF-8");
    let mut wire = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if !wire.is_empty() && !wire.ends_with("\r\n") {
        wire.push_str("\r\n");
    }
    wire.into_bytes()
}

/// Undoes dot-stuffing of multi-line body lines.
fn unstuff(lines: &[Vec<u8>]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|l| if l.starts_with(b".") { &l[1..] } else { &l[..] })
        .copied()
        .collect()
}

#[tokio::test]
async fn capa_login_and_the_states() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    assert!(client.cmd("CAPA").await.starts_with("+OK"));
    let caps = client.multiline_text().await;
    assert_eq!(caps, ["USER", "UIDL", "PIPELINING", "RESP-CODES"]);
    for command in [
        "STAT", "LIST", "UIDL", "RETR 1", "DELE 1", "NOOP", "RSET", "PASS x",
    ] {
        assert!(client.cmd(command).await.starts_with("-ERR "), "{command}");
    }
    assert_eq!(client.cmd("USER demo").await, "+OK send PASS");
    let refused = "-ERR [AUTH] invalid user name or password";
    assert_eq!(client.cmd("PASS open").await, refused);
    // A failed PASS forgets the USER; an unknown user is refused at PASS.
    assert!(
        client
            .cmd(&format!("PASS {PASSWORD}"))
            .await
            .starts_with("-ERR ")
    );
    client.cmd("USER nobody").await;
    assert_eq!(client.cmd(&format!("PASS {PASSWORD}")).await, refused);
    // Commands are case-insensitive.
    assert_eq!(client.cmd("user demo").await, "+OK send PASS");
    let reply = client.cmd(&format!("pAsS {PASSWORD}")).await;
    assert_eq!(reply, "+OK maildrop has 7 messages");
    for command in ["USER demo", "PASS x", "FROB", "RETR", "RETR 1 2", "STAT 1"] {
        assert!(client.cmd(command).await.starts_with("-ERR "), "{command}");
    }
    assert!(client.cmd("NOOP").await.starts_with("+OK"));
    client.quit().await;
    assert_eq!(server.remaining().await.len(), 7);
}

#[tokio::test]
async fn stat_list_uidl_describe_the_maildrop() {
    let samples = sample_messages();
    let server = server().await;
    let mut client = Client::connect(&server).await;
    client.login().await;
    let sizes: Vec<usize> = samples.iter().map(|m| expected_wire(m).len()).collect();
    let total: usize = sizes.iter().sum();
    assert_eq!(client.cmd("STAT").await, format!("+OK 7 {total}"));
    assert!(client.cmd("LIST").await.starts_with("+OK"));
    let listed: Vec<String> = (1..=7).map(|n| format!("{n} {}", sizes[n - 1])).collect();
    assert_eq!(client.multiline_text().await, listed);
    assert_eq!(client.cmd("LIST 3").await, format!("+OK 3 {}", sizes[2]));
    assert!(client.cmd("UIDL").await.starts_with("+OK"));
    let uidls: Vec<String> = (1..=7).map(|n| format!("{n} demo-{n}")).collect();
    assert_eq!(client.multiline_text().await, uidls);
    assert_eq!(client.cmd("UIDL 2").await, "+OK 2 demo-2");
    for bad in [
        "RETR 0",
        "RETR 8",
        "RETR +1",
        "RETR 99999999999999999999999",
        "UIDL x",
    ] {
        assert!(client.cmd(bad).await.starts_with("-ERR "), "{bad}");
    }
    client.quit().await;
}

#[tokio::test]
async fn retr_sends_each_message_dot_stuffed_with_crlf() {
    let samples = sample_messages();
    let server = server().await;
    let mut client = Client::connect(&server).await;
    client.login().await;
    for (i, raw) in samples.iter().enumerate() {
        let expected = expected_wire(raw);
        let reply = client.cmd(&format!("RETR {}", i + 1)).await;
        assert_eq!(reply, format!("+OK {} octets", expected.len()));
        let lines = client.multiline().await;
        for line in &lines {
            assert!(
                !line[..line.len() - 2].contains(&b'\n'),
                "bare LF on the wire"
            );
            assert_ne!(line, b".\r\n", "unstuffed terminator inside the body");
        }
        assert_eq!(unstuff(&lines), expected, "message {}", i + 1);
    }
    // The wire of the dot messages (2: leading dots, 3: a lone dot).
    client.send("RETR 2").await;
    client.line().await;
    let wire = client.multiline().await;
    assert!(wire.contains(&b"..profile and .bashrc are hidden files on Unix.\r\n".to_vec()));
    assert!(wire.contains(&b"...this line starts with two dots.\r\n".to_vec()));
    client.send("RETR 3").await;
    client.line().await;
    assert!(client.multiline().await.contains(&b"..\r\n".to_vec()));
    // 6: no final newline in the mailbox, CRLF added on the wire.
    client.send("RETR 6").await;
    client.line().await;
    let last = b"This message has no final newline; the server adds one on the wire.\r\n";
    assert_eq!(client.multiline().await.last().unwrap(), last);
    client.quit().await;
}

#[tokio::test]
async fn dele_applies_only_at_quit_and_rset_undoes_it() {
    let server = server().await;
    let before = server.remaining().await;
    let mut client = Client::connect(&server).await;
    client.login().await;
    client.cmd("DELE 1").await;
    assert!(client.cmd("RSET").await.starts_with("+OK"));
    assert_eq!(client.cmd("DELE 2").await, "+OK message 2 deleted");
    assert_eq!(client.cmd("DELE 5").await, "+OK message 5 deleted");
    for bad in ["DELE 2", "RETR 2", "LIST 2", "UIDL 5"] {
        assert!(client.cmd(bad).await.starts_with("-ERR "), "{bad}");
    }
    assert!(client.cmd("STAT").await.starts_with("+OK 5 "));
    assert!(client.cmd("LIST").await.starts_with("+OK"));
    let numbers: Vec<String> = client
        .multiline_text()
        .await
        .iter()
        .map(|l| l[..1].to_owned())
        .collect();
    assert_eq!(numbers, ["1", "3", "4", "6", "7"]);
    client.quit().await;
    let kept: Vec<String> = [0, 2, 3, 5, 6].iter().map(|&i| before[i].clone()).collect();
    assert_eq!(server.remaining().await, kept);

    // A new session sees the renumbered maildrop with the same unique-ids.
    let mut client = Client::connect(&server).await;
    client.login().await;
    assert!(client.cmd("STAT").await.starts_with("+OK 5 "));
    assert_eq!(client.cmd("UIDL 2").await, format!("+OK 2 {}", before[2]));
    // A hang-up keeps everything and frees the maildrop.
    client.cmd("DELE 1").await;
    drop(client);
    let mut client = Client::connect(&server).await;
    client.send(&format!("USER {USER}")).await;
    client.line().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !client
        .cmd(&format!("PASS {PASSWORD}"))
        .await
        .starts_with("+OK")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the maildrop stayed held"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.cmd(&format!("USER {USER}")).await;
    }
    assert!(client.cmd("STAT").await.starts_with("+OK 5 "));
    client.quit().await;
}

#[tokio::test]
async fn a_second_session_gets_in_use_until_the_first_quits() {
    let server = server().await;
    let mut first = Client::connect(&server).await;
    first.login().await;
    let mut second = Client::connect(&server).await;
    second.send(&format!("USER {USER}")).await;
    second.line().await;
    let reply = second.cmd(&format!("PASS {PASSWORD}")).await;
    assert!(reply.starts_with("-ERR [IN-USE] "), "{reply}");
    assert!(
        second.cmd("STAT").await.starts_with("-ERR "),
        "still logged out"
    );
    first.cmd("DELE 1").await;
    first.quit().await;
    // The maildrop is free before QUIT's +OK, so logging in now succeeds.
    second.login().await;
    assert!(second.cmd("STAT").await.starts_with("+OK 6 "));
    second.quit().await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    let login = format!("USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\n");
    client.write(login.as_bytes()).await;
    assert_eq!(client.line().await, "+OK send PASS");
    assert!(client.line().await.starts_with("+OK "));
    assert!(client.line().await.starts_with("+OK 7 "));
    client.write(b"UIDL\r\nLIST\r\nRETR 1\r\n").await;
    assert!(client.line().await.starts_with("+OK"));
    assert_eq!(client.multiline_text().await.len(), 7);
    assert!(client.line().await.starts_with("+OK"));
    assert_eq!(client.multiline_text().await.len(), 7);
    let expected = expected_wire(&sample_messages()[0]);
    assert_eq!(
        client.line().await,
        format!("+OK {} octets", expected.len())
    );
    assert_eq!(unstuff(&client.multiline().await), expected);
    // A pipeline ending in QUIT, and a command split across writes.
    client.write(b"NOOP\r\nNO").await;
    assert!(client.line().await.starts_with("+OK"));
    client.write(b"OP\r\nDELE 1\r\nQUIT\r\n").await;
    for _ in 0..3 {
        assert!(client.line().await.starts_with("+OK"));
    }
    client.assert_closed().await;
    assert_eq!(server.remaining().await.len(), 6);
}

#[tokio::test]
async fn an_overlong_line_is_refused_and_closed() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    // 510 octets + CRLF is within the limit.
    let ok_line = format!("NOOP {}", "x".repeat(505));
    assert!(client.cmd(&ok_line).await.starts_with("-ERR "));
    client.send(&format!("NOOP {}", "x".repeat(506))).await;
    assert_eq!(client.line().await, "-ERR line too long");
    client.assert_closed().await;

    // A flood well past the socket buffers still gets the -ERR (no RST before it).
    let mut client = Client::connect(&server).await;
    let flood = vec![b'x'; 256 * 1024];
    let mut reply = Vec::new();
    let (read, _) = tokio::join!(
        tokio::time::timeout(WAIT, client.rd.read_until(b'\n', &mut reply)),
        client.wr.write_all(&flood), // may fail once the server closes
    );
    read.expect("answered in time").expect("read");
    assert_eq!(reply, b"-ERR line too long\r\n");
}

#[tokio::test]
async fn dropping_the_server_closes_its_sessions() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    drop(server);
    client.assert_closed().await;
}

#[test]
fn sample_messages_cover_the_demo_cases() {
    let samples = sample_messages();
    assert!((5..=8).contains(&samples.len()));
    for raw in &samples {
        let text = std::str::from_utf8(raw).expect("UTF-8");
        let headers = text
            .split("\n\n")
            .next()
            .unwrap()
            .split("\r\n\r\n")
            .next()
            .unwrap();
        for name in ["From:", "To:", "Subject:", "Date:", "Message-ID:"] {
            assert!(
                headers.lines().any(|l| l.starts_with(name)),
                "{name} missing in {headers}"
            );
        }
    }
    let body = |raw: &Vec<u8>| {
        let text = String::from_utf8(raw.clone())
            .unwrap()
            .replace("\r\n", "\n");
        text.split_once("\n\n").map(|(_, b)| b.to_owned()).unwrap()
    };
    let bodies: Vec<String> = samples.iter().map(body).collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.lines().any(|l| l.starts_with('.') && l != "."))
    );
    assert!(bodies.iter().any(|b| b.lines().any(|l| l == ".")));
    assert!(bodies.iter().any(|b| !b.is_ascii()), "8-bit UTF-8 body");
    assert!(bodies.iter().any(String::is_empty), "empty body");
    assert!(
        samples.iter().any(|m| !m.ends_with(b"\n")),
        "no final newline"
    );
    assert!(samples.iter().any(|m| {
        let text = String::from_utf8_lossy(m);
        text.contains("multipart/mixed") && text.contains("boundary=")
    }));
    assert!(samples.iter().any(|m| !m.contains(&b'\r')), "some LF-only");
    assert!(
        samples.iter().any(|m| m.windows(2).any(|w| w == b"\r\n")),
        "some CRLF"
    );
}

#[test]
fn wire_helpers() {
    assert_eq!(super::to_wire(b""), b"");
    assert_eq!(super::to_wire(b"a\nb"), b"a\r\nb\r\n");
    assert_eq!(super::to_wire(b"a\r\nb\r\n"), b"a\r\nb\r\n");
    assert_eq!(super::to_wire(b"a\r"), b"a\r\n");
    assert_eq!(super::to_wire(b"\n\n"), b"\r\n\r\n");
    let mut out = Vec::new();
    super::push_multiline_body(&mut out, b".a\r\n.\r\nb\r\n");
    assert_eq!(out, b"..a\r\n..\r\nb\r\n.\r\n");
    out.clear();
    super::push_multiline_body(&mut out, b"");
    assert_eq!(out, b".\r\n");
}
