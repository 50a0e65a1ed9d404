//! Tests of the demo POP3 server, speaking to it over real loopback TCP connections.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{DemoServer, Mailbox, sample_messages};

const USER: &str = "demo";
/// Contains a space: PASS takes the rest of the line.
const PASSWORD: &str = "open sesame";
const WAIT: Duration = Duration::from_secs(5);

async fn server() -> DemoServer {
    server_with(sample_messages()).await
}

async fn server_with(messages: Vec<Vec<u8>>) -> DemoServer {
    DemoServer::start(Mailbox {
        user: USER.into(),
        password: PASSWORD.into(),
        messages,
        ..Mailbox::default()
    })
    .await
    .expect("start demo server")
}

/// A deliberately naive POP3 client that exposes the raw wire.
struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    greeting: String,
}

impl Client {
    async fn connect(server: &DemoServer) -> Client {
        let stream = TcpStream::connect(server.addr()).await.expect("connect");
        let (rd, wr) = stream.into_split();
        let mut client = Client {
            rd: BufReader::new(rd),
            wr,
            greeting: String::new(),
        };
        client.greeting = client.line().await;
        assert!(
            client
                .greeting
                .starts_with("+OK popfetch demo server ready <"),
            "{}",
            client.greeting
        );
        client
    }

    /// The APOP timestamp from the greeting, brackets included.
    fn timestamp(&self) -> &str {
        let start = self.greeting.find('<').expect("timestamp start");
        let end = self.greeting.rfind('>').expect("timestamp end");
        &self.greeting[start..=end]
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
        assert!(
            line.ends_with(b"\r\n"),
            "line not CRLF-terminated: {line:?}"
        );
        line
    }

    /// One status or continuation line, CRLF stripped.
    async fn line(&mut self) -> String {
        let mut line = self.raw_line().await;
        line.truncate(line.len() - 2);
        String::from_utf8(line).expect("UTF-8 status line")
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.line().await
    }

    /// The lines of a multi-line body as on the wire (CRLF included, still dot-stuffed),
    /// up to but excluding the terminating `.CRLF`.
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
        self.multiline()
            .await
            .into_iter()
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

    /// The server closed the connection (possibly after `-ERR`s already read).
    async fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.rd.read_to_end(&mut rest))
            .await
            .expect("server closed in time")
            .expect("read to EOF");
        assert!(rest.is_empty(), "unexpected data: {rest:?}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-MD5 per RFC 2104, written out here instead of using the `hmac` crate.
fn hmac_md5_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..16].copy_from_slice(&Md5::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Md5::digest([&ipad[..], message].concat());
    hex(&Md5::digest([&opad[..], &inner[..]].concat()))
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

fn assert_auth_failure(reply: &str) {
    assert_eq!(reply, "-ERR [AUTH] invalid credentials");
}

async fn assert_in_transaction(client: &mut Client) {
    let stat = client.cmd("STAT").await;
    assert!(stat.starts_with("+OK 7 "), "{stat}");
}

// ---------------------------------------------------------------------------------------
// Greeting, CAPA, state checks

#[tokio::test]
async fn greeting_carries_an_apop_timestamp() {
    let server = server().await;
    let client = Client::connect(&server).await;
    let ts = client.timestamp();
    assert!(ts.ends_with("@localhost>"), "{ts}");
    let inner = &ts[1..ts.len() - "@localhost>".len()];
    let (pid, nanos) = inner.split_once('.').expect("pid.nanos");
    assert_eq!(pid, std::process::id().to_string());
    assert!(!nanos.is_empty() && nanos.bytes().all(|b| b.is_ascii_digit()));
    let other = Client::connect(&server).await;
    assert_ne!(
        other.timestamp(),
        ts,
        "each connection has its own timestamp"
    );
}

#[tokio::test]
async fn capa_before_and_after_authentication() {
    let expected = [
        "TOP",
        "UIDL",
        "USER",
        "RESP-CODES",
        "PIPELINING",
        "AUTH-RESP-CODE",
        "SASL CRAM-MD5 PLAIN LOGIN",
        "IMPLEMENTATION popfetch-demo",
    ];
    let server = server().await;
    let mut client = Client::connect(&server).await;
    assert!(client.cmd("CAPA").await.starts_with("+OK"));
    assert_eq!(client.multiline_text().await, expected);
    client.login().await;
    assert!(client.cmd("capa").await.starts_with("+OK"));
    assert_eq!(client.multiline_text().await, expected);
    client.quit().await;
}

#[tokio::test]
async fn transaction_commands_need_authentication_and_vice_versa() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    for command in [
        "STAT", "LIST", "UIDL", "RETR 1", "TOP 1 0", "DELE 1", "NOOP", "RSET",
    ] {
        assert!(client.cmd(command).await.starts_with("-ERR "), "{command}");
    }
    assert!(
        client.cmd("PASS x").await.starts_with("-ERR "),
        "PASS needs USER"
    );
    client.login().await;
    for command in ["USER demo", "PASS x", "APOP demo 0", "AUTH PLAIN"] {
        assert!(client.cmd(command).await.starts_with("-ERR "), "{command}");
    }
    assert_eq!(client.cmd("NOOP").await, "+OK");
    assert!(client.cmd("FROB").await.starts_with("-ERR "));
    client.quit().await;
}

#[tokio::test]
async fn quit_in_authorization_closes_without_update() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    client.quit().await;
    assert_eq!(server.sessions(), 0);
    assert_eq!(server.remaining().len(), 7);
}

// ---------------------------------------------------------------------------------------
// Logging in, each way

#[tokio::test]
async fn user_pass_login() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    assert_eq!(client.cmd("USER demo").await, "+OK send PASS");
    assert_auth_failure(&client.cmd("PASS open").await);
    // A failed PASS forgets the USER.
    assert!(
        client
            .cmd(&format!("PASS {PASSWORD}"))
            .await
            .starts_with("-ERR ")
    );
    client.send("USER nobody").await;
    client.line().await;
    assert_auth_failure(&client.cmd(&format!("PASS {PASSWORD}")).await);
    // Commands are case-insensitive.
    assert_eq!(client.cmd("user demo").await, "+OK send PASS");
    let reply = client.cmd(&format!("pAsS {PASSWORD}")).await;
    assert!(reply.starts_with("+OK "), "{reply}");
    assert!(reply.contains("7 messages"), "{reply}");
    assert_in_transaction(&mut client).await;
    client.quit().await;
}

#[tokio::test]
async fn apop_login() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    let wrong = hex(&Md5::digest(format!("{}wrong", client.timestamp())));
    assert_auth_failure(&client.cmd(&format!("APOP {USER} {wrong}")).await);
    let digest = hex(&Md5::digest(format!("{}{PASSWORD}", client.timestamp())));
    let reply = client.cmd(&format!("apop {USER} {digest}")).await;
    assert!(reply.starts_with("+OK "), "{reply}");
    assert_in_transaction(&mut client).await;
    client.quit().await;
}

#[tokio::test]
async fn auth_plain_with_initial_response() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    let bad = B64.encode(format!("\0{USER}\0nope"));
    assert_auth_failure(&client.cmd(&format!("AUTH PLAIN {bad}")).await);
    let other_authzid = B64.encode(format!("root\0{USER}\0{PASSWORD}"));
    assert_auth_failure(&client.cmd(&format!("AUTH PLAIN {other_authzid}")).await);
    let good = B64.encode(format!("{USER}\0{USER}\0{PASSWORD}"));
    let reply = client.cmd(&format!("auth plain {good}")).await;
    assert!(reply.starts_with("+OK "), "{reply}");
    assert_in_transaction(&mut client).await;
    client.quit().await;
}

#[tokio::test]
async fn auth_plain_after_continuation() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    assert_eq!(client.cmd("AUTH PLAIN").await, "+ ");
    let reply = client
        .cmd(&B64.encode(format!("\0{USER}\0{PASSWORD}")))
        .await;
    assert!(reply.starts_with("+OK "), "{reply}");
    assert_in_transaction(&mut client).await;
    client.quit().await;
}

#[tokio::test]
async fn auth_login() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    assert_eq!(
        client.cmd("AUTH LOGIN").await,
        format!("+ {}", B64.encode("Username:"))
    );
    assert_eq!(
        client.cmd(&B64.encode(USER)).await,
        format!("+ {}", B64.encode("Password:"))
    );
    assert_auth_failure(&client.cmd(&B64.encode("guess")).await);
    // With the user name as initial response.
    let reply = client
        .cmd(&format!("AUTH LOGIN {}", B64.encode(USER)))
        .await;
    assert_eq!(reply, format!("+ {}", B64.encode("Password:")));
    let reply = client.cmd(&B64.encode(PASSWORD)).await;
    assert!(reply.starts_with("+OK "), "{reply}");
    assert_in_transaction(&mut client).await;
    client.quit().await;
}

#[tokio::test]
async fn auth_cram_md5() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    let mut challenges = Vec::new();
    for password in ["wrong", PASSWORD] {
        let line = client.cmd("AUTH CRAM-MD5").await;
        let encoded = line.strip_prefix("+ ").expect("continuation");
        let challenge = String::from_utf8(B64.decode(encoded).expect("base64")).unwrap();
        assert!(
            challenge.starts_with('<') && challenge.ends_with("@localhost>"),
            "{challenge}"
        );
        let digest = hmac_md5_hex(password.as_bytes(), challenge.as_bytes());
        let reply = client.cmd(&B64.encode(format!("{USER} {digest}"))).await;
        if password == PASSWORD {
            assert!(reply.starts_with("+OK "), "{reply}");
        } else {
            assert_auth_failure(&reply);
        }
        challenges.push(challenge);
    }
    assert_ne!(challenges[0], challenges[1], "fresh challenge per exchange");
    assert_in_transaction(&mut client).await;
    client.quit().await;
}

#[test]
fn digests_match_rfc_examples() {
    // RFC 1939 section 7 (APOP) and RFC 2195 section 2 (CRAM-MD5).
    assert_eq!(
        super::apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf"),
        "c4c9334bac560ecc979e58001b3e22fb"
    );
    let challenge = "<1896.697170952@postoffice.reston.mci.net>";
    let expected = "b913a602c7eda7a495b4e6e7334d3890";
    assert_eq!(
        super::cram_md5_digest("tanstaaftanstaaf", challenge),
        expected
    );
    assert_eq!(
        hmac_md5_hex(b"tanstaaftanstaaf", challenge.as_bytes()),
        expected
    );
    // Keys longer than a block are hashed first.
    let long_key = "k".repeat(80);
    assert_eq!(
        super::cram_md5_digest(&long_key, "x"),
        hmac_md5_hex(long_key.as_bytes(), b"x")
    );
}

#[tokio::test]
async fn auth_exchanges_can_be_cancelled_and_reject_garbage() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    for mechanism in ["PLAIN", "LOGIN", "CRAM-MD5"] {
        assert!(
            client
                .cmd(&format!("AUTH {mechanism}"))
                .await
                .starts_with("+ ")
        );
        assert!(client.cmd("*").await.starts_with("-ERR "), "{mechanism}");
    }
    // Cancelling the second step of LOGIN.
    client.cmd("AUTH LOGIN").await;
    client.cmd(&B64.encode(USER)).await;
    assert!(client.cmd("*").await.starts_with("-ERR "));
    // Not base64, malformed PLAIN, unknown mechanism, initial response for CRAM-MD5.
    assert!(client.cmd("AUTH PLAIN !!!").await.starts_with("-ERR "));
    client.cmd("AUTH PLAIN").await;
    assert!(client.cmd("%%%").await.starts_with("-ERR "));
    let two_parts = B64.encode(format!("{USER}\0{PASSWORD}"));
    assert!(
        client
            .cmd(&format!("AUTH PLAIN {two_parts}"))
            .await
            .starts_with("-ERR ")
    );
    assert!(client.cmd("AUTH PLAIN =").await.starts_with("-ERR "));
    assert!(client.cmd("AUTH GSSAPI").await.starts_with("-ERR "));
    assert!(
        client
            .cmd("AUTH CRAM-MD5 dGVzdA==")
            .await
            .starts_with("-ERR ")
    );
    client.cmd("AUTH CRAM-MD5").await;
    assert!(
        client
            .cmd(&B64.encode("no-space"))
            .await
            .starts_with("-ERR ")
    );
    // Bare AUTH lists the mechanisms.
    assert!(client.cmd("AUTH").await.starts_with("+OK"));
    assert_eq!(
        client.multiline_text().await,
        ["CRAM-MD5", "PLAIN", "LOGIN"]
    );
    // Still in AUTHORIZATION and able to log in.
    client.login().await;
    client.quit().await;
}

// ---------------------------------------------------------------------------------------
// Listing and retrieving

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
    let uidls = client.multiline_text().await;
    let uids: Vec<String> = uidls
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let (n, uid) = line.split_once(' ').expect("n uid");
            assert_eq!(n, (i + 1).to_string());
            uid.to_owned()
        })
        .collect();
    assert_eq!(uids, server.remaining());
    for (i, uid) in uids.iter().enumerate() {
        assert!(uid.starts_with(&format!("demo-{}-", i + 1)), "{uid}");
        assert!((1..=70).contains(&uid.len()));
        assert!(uid.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{uid}");
    }
    let mut unique = uids.clone();
    unique.dedup();
    assert_eq!(unique.len(), uids.len());
    assert_eq!(client.cmd("UIDL 2").await, format!("+OK 2 {}", uids[1]));
    client.quit().await;

    // Stable: the same content gives the same UIDs on another server.
    let again = server_with(sample_messages()).await;
    assert_eq!(again.remaining(), uids);
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
            assert!(line.ends_with(b"\r\n"));
            assert!(
                !line[..line.len() - 2].contains(&b'\n'),
                "bare LF on the wire"
            );
            assert_ne!(line, b".\r\n", "unstuffed terminator inside the body");
        }
        assert_eq!(unstuff(&lines), expected, "message {}", i + 1);
    }

    // Spot-check the wire for the dot messages (2: leading dots, 3: a lone dot).
    client.send("RETR 2").await;
    client.line().await;
    let wire = client.multiline().await;
    assert!(wire.contains(&b"..profile and .bashrc are hidden files on Unix.\r\n".to_vec()));
    assert!(wire.contains(&b"...this line starts with two dots.\r\n".to_vec()));
    assert!(wire.contains(&b"....and this one with three.\r\n".to_vec()));
    client.send("RETR 3").await;
    client.line().await;
    let wire = client.multiline().await;
    assert!(wire.contains(&b"..\r\n".to_vec()));
    assert_eq!(
        wire.last().unwrap(),
        b"If you can read this, dot-stuffing worked.\r\n"
    );
    // 6: no final newline in the mailbox, CRLF added on the wire.
    client.send("RETR 6").await;
    client.line().await;
    let wire = client.multiline().await;
    assert_eq!(
        wire.last().unwrap(),
        b"This message has no final newline; the server adds one on the wire.\r\n"
    );
    client.quit().await;
}

#[tokio::test]
async fn top_sends_headers_and_some_body_lines() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    client.login().await;
    let full = expected_wire(&sample_messages()[0]);
    let text = String::from_utf8(full.clone()).unwrap();
    let header_end = text.find("\r\n\r\n").unwrap() + 4;

    assert!(client.cmd("TOP 1 0").await.starts_with("+OK"));
    assert_eq!(unstuff(&client.multiline().await), &full[..header_end]);
    assert!(client.cmd("top 1 3").await.starts_with("+OK"));
    let three = unstuff(&client.multiline().await);
    assert_eq!(
        String::from_utf8(three).unwrap(),
        format!(
            "{}Hi!\r\n\r\nThis message came from the popfetch demo server, a tiny POP3 server\r\n",
            &text[..header_end]
        )
    );
    assert!(
        client
            .cmd("TOP 1 99999999999999999999999")
            .await
            .starts_with("+OK")
    );
    assert_eq!(unstuff(&client.multiline().await), full);
    // Empty body: just the headers and the blank line.
    assert!(client.cmd("TOP 5 10").await.starts_with("+OK"));
    assert_eq!(
        unstuff(&client.multiline().await),
        expected_wire(&sample_messages()[4])
    );
    // The lone-dot line is stuffed in TOP too.
    assert!(client.cmd("TOP 3 2").await.starts_with("+OK"));
    assert_eq!(client.multiline().await.last().unwrap(), b"..\r\n");

    for bad in [
        "TOP 1",
        "TOP 1 -1",
        "TOP 0 1",
        "TOP 8 1",
        "TOP x 1",
        "TOP 1 1 1",
    ] {
        assert!(client.cmd(bad).await.starts_with("-ERR "), "{bad}");
    }
    client.quit().await;
}

#[tokio::test]
async fn empty_mailbox_and_odd_messages() {
    let server = server_with(Vec::new()).await;
    let mut client = Client::connect(&server).await;
    client.login().await;
    assert_eq!(client.cmd("STAT").await, "+OK 0 0");
    assert!(client.cmd("LIST").await.starts_with("+OK"));
    assert!(client.multiline().await.is_empty());
    assert!(client.cmd("RETR 1").await.starts_with("-ERR "));
    client.quit().await;

    // An empty message, bare CR, and a message that is only headers with no newline.
    let server = server_with(vec![
        Vec::new(),
        b"Subject: x\r".to_vec(),
        b"Subject: y".to_vec(),
    ])
    .await;
    let mut client = Client::connect(&server).await;
    client.login().await;
    assert_eq!(client.cmd("LIST 1").await, "+OK 1 0");
    assert_eq!(client.cmd("RETR 1").await, "+OK 0 octets");
    assert!(client.multiline().await.is_empty());
    assert_eq!(client.cmd("RETR 2").await, "+OK 12 octets");
    assert_eq!(client.multiline().await, [b"Subject: x\r\n".to_vec()]);
    assert!(client.cmd("TOP 3 0").await.starts_with("+OK"));
    assert_eq!(client.multiline().await, [b"Subject: y\r\n".to_vec()]);
    client.quit().await;
}

// ---------------------------------------------------------------------------------------
// Deleting, UPDATE, locking

#[tokio::test]
async fn dele_then_quit_removes_for_good() {
    let server = server().await;
    let before = server.remaining();
    let mut client = Client::connect(&server).await;
    client.login().await;
    assert_eq!(client.cmd("DELE 2").await, "+OK message 2 deleted");
    assert_eq!(client.cmd("DELE 5").await, "+OK message 5 deleted");
    assert!(
        client.cmd("DELE 2").await.starts_with("-ERR "),
        "already deleted"
    );
    assert!(client.cmd("RETR 2").await.starts_with("-ERR "));
    assert!(client.cmd("LIST 2").await.starts_with("-ERR "));
    assert!(client.cmd("UIDL 5").await.starts_with("-ERR "));
    assert!(client.cmd("STAT").await.starts_with("+OK 5 "));
    assert!(client.cmd("LIST").await.starts_with("+OK"));
    let numbers: Vec<String> = client
        .multiline_text()
        .await
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(numbers, ["1", "3", "4", "6", "7"]);
    // Deletions are not visible outside the session before QUIT.
    assert_eq!(server.remaining(), before);
    client.quit().await;

    let expected: Vec<String> = [0, 2, 3, 5, 6].iter().map(|&i| before[i].clone()).collect();
    assert_eq!(server.remaining(), expected);
    assert_eq!(server.sessions(), 1);

    // A new session sees the renumbered maildrop with the same UIDs.
    let mut client = Client::connect(&server).await;
    client.login().await;
    assert!(client.cmd("STAT").await.starts_with("+OK 5 "));
    assert_eq!(client.cmd("UIDL 2").await, format!("+OK 2 {}", before[2]));
    assert!(client.cmd("RETR 6").await.starts_with("-ERR "));
    client.quit().await;
    assert_eq!(server.sessions(), 2);
}

#[tokio::test]
async fn rset_unmarks_deletions() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    client.login().await;
    client.cmd("DELE 1").await;
    client.cmd("DELE 7").await;
    let reply = client.cmd("RSET").await;
    assert!(reply.starts_with("+OK maildrop has 7 messages"), "{reply}");
    assert!(client.cmd("RETR 1").await.starts_with("+OK"));
    client.multiline().await;
    client.quit().await;
    assert_eq!(server.remaining().len(), 7);
}

#[tokio::test]
async fn dele_then_drop_keeps_everything_and_releases_the_lock() {
    let server = server().await;
    let before = server.remaining();
    let mut client = Client::connect(&server).await;
    client.login().await;
    for n in 1..=7 {
        assert!(client.cmd(&format!("DELE {n}")).await.starts_with("+OK"));
    }
    drop(client);
    // The server notices the hang-up asynchronously; the lock must come free.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut client = loop {
        let mut client = Client::connect(&server).await;
        client.send(&format!("USER {USER}")).await;
        client.line().await;
        let reply = client.cmd(&format!("PASS {PASSWORD}")).await;
        if reply.starts_with("+OK") {
            break client;
        }
        assert!(reply.starts_with("-ERR [IN-USE]"), "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "lock never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_in_transaction(&mut client).await;
    client.quit().await;
    assert_eq!(server.remaining(), before);
    assert_eq!(server.sessions(), 1);
}

#[tokio::test]
async fn concurrent_session_gets_in_use() {
    let server = server().await;
    let mut first = Client::connect(&server).await;
    first.login().await;
    let mut second = Client::connect(&server).await;
    second.send(&format!("USER {USER}")).await;
    second.line().await;
    let reply = second.cmd(&format!("PASS {PASSWORD}")).await;
    assert!(reply.starts_with("-ERR [IN-USE] "), "{reply}");
    let digest = hex(&Md5::digest(format!("{}{PASSWORD}", second.timestamp())));
    let reply = second.cmd(&format!("APOP {USER} {digest}")).await;
    assert!(reply.starts_with("-ERR [IN-USE] "), "{reply}");
    // Wrong credentials are still reported as such, not as IN-USE.
    assert_auth_failure(&second.cmd(&format!("APOP {USER} {}", "0".repeat(32))).await);
    assert!(
        second.cmd("STAT").await.starts_with("-ERR "),
        "still unauthenticated"
    );

    first.cmd("DELE 1").await;
    first.quit().await;
    // The lock is released before QUIT's +OK, so retrying now succeeds.
    second.login().await;
    assert!(second.cmd("STAT").await.starts_with("+OK 6 "));
    second.quit().await;
    assert_eq!(server.sessions(), 2);
}

// ---------------------------------------------------------------------------------------
// Pipelining, limits, hostile input, shutdown

#[tokio::test]
async fn pipelined_commands_in_one_write() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    client
        .write(format!("USER {USER}\r\nPASS {PASSWORD}\r\nSTAT\r\n").as_bytes())
        .await;
    assert_eq!(client.line().await, "+OK send PASS");
    assert!(client.line().await.starts_with("+OK "));
    assert!(client.line().await.starts_with("+OK 7 "));

    client.write(b"UIDL\r\nLIST\r\nRETR 1\r\n").await;
    assert!(client.line().await.starts_with("+OK"));
    let uidl = client.multiline_text().await;
    assert_eq!(uidl.len(), 7);
    assert!(uidl[0].starts_with("1 demo-1-"));
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
    assert_eq!(client.line().await, "+OK");
    client.write(b"OP\r\nDELE 1\r\nQUIT\r\n").await;
    assert_eq!(client.line().await, "+OK");
    assert!(client.line().await.starts_with("+OK"));
    assert!(client.line().await.starts_with("+OK"));
    client.assert_closed().await;
    assert_eq!(server.remaining().len(), 6);
}

#[tokio::test]
async fn overlong_line_is_refused_and_closed() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    // 510 octets + CRLF is within the limit.
    let ok_line = format!("NOOP {}", "x".repeat(505));
    assert_eq!(ok_line.len() + 2, 512);
    assert!(client.cmd(&ok_line).await.starts_with("-ERR "));
    client.write(&[b'A'; 600]).await;
    assert_eq!(client.line().await, "-ERR line too long");
    client.assert_closed().await;

    let mut client = Client::connect(&server).await;
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
async fn hostile_input_gets_errors_not_panics() {
    let server = server().await;
    let mut client = Client::connect(&server).await;
    let junk: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b" \r\n",
        b"\xff\xfe\x00\r\n",
        b"USER\r\n",
        b"USER a b\r\n",
        b"PASS\r\n",
        b"APOP x\r\n",
        b"AUTH PLAIN a b\r\n",
        b"CAPA x\r\n",
        b"\x00\x00\x00\r\n",
    ];
    for line in junk {
        client.write(line).await;
        let reply = client.line().await;
        assert!(reply.starts_with("-ERR "), "{line:?} -> {reply}");
    }
    client.login().await;
    for line in [
        "RETR 0",
        "RETR 8",
        "RETR -1",
        "RETR +1",
        "RETR 1.0",
        "RETR 99999999999999999999999999",
        "RETR",
        "RETR 1 2",
        "DELE 0",
        "LIST 18446744073709551616",
        "UIDL x",
        "STAT 1",
        "RSET 1",
    ] {
        let reply = client.cmd(line).await;
        assert!(reply.starts_with("-ERR "), "{line} -> {reply}");
    }
    client.quit().await;
    assert_eq!(server.remaining().len(), 7);
    // A hang-up in the middle of a line, and one in the middle of an AUTH exchange.
    let mut client = Client::connect(&server).await;
    client.write(b"USER de").await;
    drop(client);
    let mut client = Client::connect(&server).await;
    client.cmd("AUTH LOGIN").await;
    drop(client);
    let mut client = Client::connect(&server).await;
    assert!(client.cmd("NOOP").await.starts_with("-ERR "));
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_sessions() {
    let server = server().await;
    let addr = server.addr();
    let mut client = Client::connect(&server).await;
    server.shutdown();
    client.assert_closed().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Sample messages and helpers

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

    let wire = b"H: 1\r\n\r\nl1\r\nl2\r\n";
    assert_eq!(super::top_part(wire, 0), b"H: 1\r\n\r\n");
    assert_eq!(super::top_part(wire, 1), b"H: 1\r\n\r\nl1\r\n");
    assert_eq!(super::top_part(wire, 5), wire);

    let mut out = Vec::new();
    super::push_multiline_body(&mut out, b".a\r\n.\r\nb\r\n");
    assert_eq!(out, b"..a\r\n..\r\nb\r\n.\r\n");
    out.clear();
    super::push_multiline_body(&mut out, b"");
    assert_eq!(out, b".\r\n");

    assert_eq!(super::parse_number("12"), Some(12));
    assert_eq!(
        super::parse_number("99999999999999999999999"),
        Some(usize::MAX)
    );
    for bad in ["", "-1", "+1", "1x", " 1"] {
        assert_eq!(super::parse_number(bad), None, "{bad}");
    }
}
