//! Checks of the Postfix fixture (`postfix.rs`) with plain SMTP by hand, and of the MDAs
//! (procmail, maildrop, dovecot-lda) run as test peers delivering into Maildirs in temp dirs.
//! What each program adds or changes is documented in `postfix.rs`; these tests pin it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use crate::dovecot::{Dovecot, run_bounded};
use crate::postfix::{
    self, DOVECOT_LDA, HOSTNAME, Postfix, RCPT_PERMFAIL, RCPT_TEMPFAIL, maildir_count,
    maildir_messages, maildrop_filter, procmail_rc, split_postfix_headers, strip_postfix_headers,
};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MDA_TIMEOUT: Duration = Duration::from_secs(30);

/// A minimal SMTP client for the tests.
struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    /// Connects to 127.0.0.1:`port` and checks the 220 greeting.
    fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut smtp = Smtp {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let (code, lines) = smtp.reply();
        assert_eq!(code, 220, "greeting: {lines:?}");
        assert!(lines[0].contains(HOSTNAME), "greeting: {lines:?}");
        smtp
    }

    /// Reads one (possibly multi-line) reply: its code and its lines without CRLF.
    fn reply(&mut self) -> (u16, Vec<String>) {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("reading a reply after {lines:?}: {e}"));
            assert!(n > 0, "connection closed after {lines:?}");
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            assert!(line.len() >= 3, "bad reply line {line:?}");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                break;
            }
        }
        let code = lines[0][..3].parse().expect("numeric reply code");
        (code, lines)
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the server");
    }

    /// Sends one command line, returns the reply.
    fn cmd(&mut self, line: &str) -> (u16, Vec<String>) {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends one command line and asserts the reply code.
    fn expect(&mut self, line: &str, code: u16) -> Vec<String> {
        let (got, lines) = self.cmd(line);
        assert_eq!(got, code, "{line} answered {lines:?}");
        lines
    }

    /// MAIL/RCPT/DATA of one message given with LF line endings (CRLF and dot-stuffing are
    /// applied here); asserts every step succeeds.
    fn send_message(&mut self, from: &str, rcpts: &[&str], message_lf: &[u8]) {
        self.expect(&format!("MAIL FROM:<{from}> BODY=8BITMIME"), 250);
        for r in rcpts {
            self.expect(&format!("RCPT TO:<{r}>"), 250);
        }
        self.expect("DATA", 354);
        self.send(&to_wire(message_lf));
        let (code, lines) = self.reply();
        assert_eq!(code, 250, "end of DATA answered {lines:?}");
    }

    fn quit(mut self) {
        self.expect("QUIT", 221);
    }
}

/// The DATA payload for a message with LF line endings: CRLF, dot-stuffed, terminated.
fn to_wire(message_lf: &[u8]) -> Vec<u8> {
    assert!(
        message_lf.ends_with(b"\n"),
        "test messages end with a newline"
    );
    let mut out = Vec::new();
    for line in message_lf[..message_lf.len() - 1].split(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The header section (up to the first empty line) as text, for header assertions.
fn header_section(msg: &[u8]) -> String {
    let end = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(msg.len(), |p| p + 1);
    String::from_utf8_lossy(&msg[..end]).into_owned()
}

fn has_header(msg: &[u8], name: &str) -> bool {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    header_section(msg)
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with(&prefix))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A message that exercises the transparency: 8-bit bytes (also invalid UTF-8), lines that
/// need dot-stuffing, a body `From ` line, headers Postfix drops by default (Return-Path,
/// Content-Length), and no Message-ID/Date/To.
const MESSAGE: &[u8] = b"From: Sender <sender@example.org>\n\
Subject: =?UTF-8?Q?caf=C3=A9?= fixture test\n\
Return-Path: <original@example.org>\n\
Content-Length: 3\n\
X-Eight-Bit: caf\xc3\xa9 \xff\xfe\n\
MIME-Version: 1.0\n\
Content-Type: text/plain; charset=utf-8\n\
Content-Transfer-Encoding: 8bit\n\
\n\
First line, caf\xc3\xa9.\n\
.a line that starts with a dot\n\
..two dots\n\
.\n\
From the body (no > quoting expected)\n\
\tindented\n\
last line\n";

#[test]
fn ehlo_advertises_8bitmime_and_pipelining() {
    crate::peers::require_peers!("postfix");
    let server = Postfix::start();
    let mut smtp = Smtp::connect(server.port());
    let lines = smtp.expect("EHLO client.example", 250);
    let keywords: Vec<&str> = lines.iter().skip(1).map(|l| &l[4..]).collect();
    for wanted in [
        "8BITMIME",
        "PIPELINING",
        "SIZE",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
    ] {
        assert!(keywords.contains(&wanted), "EHLO: {lines:?}");
    }
    smtp.quit();
}

#[test]
fn delivers_message_byte_exact() {
    crate::peers::require_peers!("postfix");
    let server = Postfix::start();
    let mut smtp = Smtp::connect(server.port());
    smtp.expect("EHLO client.example", 250);
    smtp.send_message("bounce@example.org", &["someone@test.example"], MESSAGE);
    smtp.quit();

    let msgs = server.wait_for(1);
    let (added, rest) = split_postfix_headers(&msgs[0]);
    assert_eq!(text(rest), text(MESSAGE), "log:\n{}", server.log());
    assert_eq!(rest, MESSAGE);
    assert_eq!(strip_postfix_headers(&msgs[0]), MESSAGE);

    // Exactly the documented lines were added at the top.
    let added = text(added);
    let lines: Vec<&str> = added.lines().collect();
    assert_eq!(lines.len(), 6, "{added}");
    assert_eq!(lines[0], "Return-Path: <bounce@example.org>");
    assert_eq!(lines[1], "X-Original-To: someone@test.example");
    assert_eq!(lines[2], "Delivered-To: someone@test.example");
    assert_eq!(
        lines[3],
        "Received: from client.example (unknown [127.0.0.1])"
    );
    assert!(
        lines[4].starts_with(&format!("\tby {HOSTNAME} (Postfix) with ESMTP id ")),
        "{added}"
    );
    assert!(
        lines[5].starts_with("\tfor <someone@test.example>; "),
        "{added}"
    );

    // Nothing was added to a message lacking Message-ID and Date, LF line endings.
    assert!(!has_header(rest, "Message-ID") && !has_header(rest, "Date"));
    assert!(!has_header(rest, "To"));
    assert!(!msgs[0].contains(&b'\r'));
}

#[test]
fn fault_recipients_get_451_and_550_at_rcpt_time() {
    crate::peers::require_peers!("postfix");
    let server = Postfix::start();
    let mut smtp = Smtp::connect(server.port());
    let ehlo = smtp.expect("EHLO client.example", 250);
    assert!(ehlo.iter().any(|l| l.ends_with("PIPELINING")));

    // One pipelined group: the replies come back in order.
    smtp.send(
        format!(
            "MAIL FROM:<s@example.org>\r\nRCPT TO:<{RCPT_TEMPFAIL}>\r\nRCPT TO:<{RCPT_PERMFAIL}>\r\n\
             RCPT TO:<elsewhere@example.org>\r\nRCPT TO:<good@test.example>\r\nDATA\r\n"
        )
        .as_bytes(),
    );
    let replies: Vec<(u16, Vec<String>)> = (0..6).map(|_| smtp.reply()).collect();
    let codes: Vec<u16> = replies.iter().map(|r| r.0).collect();
    assert_eq!(codes, [250, 451, 550, 554, 250, 354], "{replies:?}");
    assert!(replies[1].1[0].starts_with("451 4.7.1 "), "{replies:?}");
    assert!(replies[2].1[0].starts_with("550 5.1.1 "), "{replies:?}");
    assert!(
        replies[3].1[0].contains("Relay access denied"),
        "{replies:?}"
    );
    smtp.send(&to_wire(b"Subject: after faults\n\nbody\n"));
    assert_eq!(smtp.reply().0, 250);

    // Each code also alone, in a new transaction.
    smtp.expect("RSET", 250);
    smtp.expect("MAIL FROM:<>", 250);
    smtp.expect(&format!("RCPT TO:<{RCPT_TEMPFAIL}>"), 451);
    smtp.expect(&format!("RCPT TO:<{RCPT_PERMFAIL}>"), 550);
    smtp.expect("RSET", 250);
    smtp.quit();

    let msgs = server.wait_for(1);
    let msg = strip_postfix_headers(&msgs[0]);
    assert_eq!(msg, b"Subject: after faults\n\nbody\n");
    assert!(text(&msgs[0]).contains("Delivered-To: good@test.example\n"));
}

#[test]
fn each_recipient_gets_its_own_file() {
    crate::peers::require_peers!("postfix");
    let server = Postfix::start();
    let mut smtp = Smtp::connect(server.port());
    smtp.expect("EHLO c", 250);
    let message = b"Subject: two recipients\n\nbody\n";
    smtp.send_message(
        "s@example.org",
        &["a@test.example", "b@test.example"],
        message,
    );
    smtp.quit();
    let msgs = server.wait_for(2);
    let mut delivered_to: Vec<String> = Vec::new();
    for m in &msgs {
        let (added, rest) = split_postfix_headers(m);
        assert_eq!(rest, message);
        // With several recipients the Received header has no "for <…>".
        let added = text(added);
        assert!(!added.contains("\tfor <"), "{added}");
        let dt = added
            .lines()
            .find_map(|l| l.strip_prefix("Delivered-To: "))
            .expect("Delivered-To");
        delivered_to.push(dt.to_owned());
    }
    delivered_to.sort();
    assert_eq!(delivered_to, ["a@test.example", "b@test.example"]);
}

#[test]
fn postfix_quirks_as_documented() {
    crate::peers::require_peers!("postfix");
    let server = Postfix::start();
    let mut smtp = Smtp::connect(server.port());
    smtp.expect("HELO c", 250);
    // No header at all: Postfix puts an empty line before the first body line.
    smtp.send_message(
        "s@example.org",
        &["noheader@test.example"],
        b"just a body\n",
    );
    // Long lines pass unchanged.
    let mut long = b"Subject: long\nX-Long: ".to_vec();
    long.extend(std::iter::repeat_n(b'h', 3000));
    long.extend_from_slice(b"\n\n");
    long.extend(std::iter::repeat_n(b'b', 5000));
    long.extend_from_slice(b"\n");
    smtp.send_message("s@example.org", &["long@test.example"], &long);
    smtp.quit();
    let msgs = server.wait_for(2);
    let by_rcpt = |rcpt: &str| {
        let needle = format!("Delivered-To: {rcpt}\n");
        msgs.iter()
            .find(|m| text(m).contains(&needle))
            .unwrap_or_else(|| panic!("no message for {rcpt}"))
    };
    let noheader = by_rcpt("noheader@test.example");
    assert_eq!(strip_postfix_headers(noheader), b"\njust a body\n");
    // After HELO the protocol is SMTP, not ESMTP.
    assert!(text(noheader).contains(" (Postfix) with SMTP id "));
    assert_eq!(strip_postfix_headers(by_rcpt("long@test.example")), long);
}

#[test]
fn two_instances_at_once() {
    crate::peers::require_peers!("postfix");
    let threads: Vec<_> = (0..2)
        .map(|i| {
            thread::spawn(move || {
                let server = Postfix::start();
                let message = format!("Subject: instance {i}\n\nbody {i}\n").into_bytes();
                let mut smtp = Smtp::connect(server.port());
                smtp.expect("EHLO c", 250);
                smtp.send_message("s@example.org", &[&format!("u{i}@test.example")], &message);
                smtp.quit();
                let msgs = server.wait_for(1);
                assert_eq!(strip_postfix_headers(&msgs[0]), message);
                server
            })
        })
        .collect();
    // Keep both alive until both delivered, then compare.
    let servers: Vec<Postfix> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_ne!(servers[0].port(), servers[1].port());
    assert_ne!(servers[0].maildir(), servers[1].maildir());
    for (i, s) in servers.iter().enumerate() {
        let msgs = s.delivered();
        assert_eq!(msgs.len(), 1);
        assert!(text(&msgs[0]).contains(&format!("Subject: instance {i}\n")));
    }
}

/// A timeout names the counts and shows the log. (Caught rather than `#[should_panic]`, so that
/// the test can skip without Postfix.)
#[test]
fn wait_for_panics_with_counts_when_messages_are_missing() {
    crate::peers::require_peers!("postfix");
    let server = Postfix::start();
    let mut smtp = Smtp::connect(server.port());
    smtp.expect("EHLO c", 250);
    smtp.send_message(
        "s@example.org",
        &["one@test.example"],
        b"Subject: one\n\nx\n",
    );
    smtp.quit();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        server.wait_for_within(2, Duration::from_millis(500));
    }))
    .expect_err("wait_for_within returned although a message is missing");
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert!(
        text.contains("1 of 2 messages delivered, 0 still queued"),
        "{text}"
    );
}

/// The hand-made queue layout passes Postfix's own full check (which `start` skips).
#[test]
fn postfix_check_accepts_layout() {
    crate::peers::require_peers!("postfix");
    let server = Postfix::start();
    let out = run_bounded(
        Command::new("/usr/sbin/postfix")
            .arg("-c")
            .arg(server.config_dir())
            .arg("check"),
        b"",
        MDA_TIMEOUT,
    )
    .unwrap();
    let log = server.log();
    assert!(out.status.success(), "postfix check: {out:?}\n{log}");
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("warning:") || l.contains("fatal:") || l.contains("error:"))
        .collect();
    assert!(complaints.is_empty(), "{complaints:#?}");
}

// ---------------------------------------------------------------------------------------
// MDAs as test peers. The message goes to stdin; the tests run as root.

/// A message for the MDAs (LF line endings, 8-bit, a leading-dot line, a body `From ` line).
const MDA_MESSAGE: &[u8] = b"From: a@example.org\n\
Subject: MDA test\n\
X-Eight-Bit: caf\xc3\xa9 \xff\n\
\n\
body caf\xc3\xa9\n\
.leading dot\n\
From in the body\n";

fn mda_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("popfetch-mda-")
        .tempdir()
        .expect("temp dir")
}

fn run_mda(cmd: &mut Command, input: &[u8]) -> Output {
    run_bounded(cmd, input, MDA_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {}; stdout {:?}; stderr {:?}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Delivers `input` with `cmd`, expects exit 0 and exactly one new message in `maildir`,
/// returns it and removes it (so the next case starts empty).
fn deliver_one(mut cmd: Command, input: &[u8], maildir: &Path) -> Vec<u8> {
    let out = run_mda(&mut cmd, input);
    assert_exit(&out, 0, &format!("{cmd:?}"));
    let mut msgs = maildir_messages(maildir);
    assert_eq!(msgs.len(), 1, "{cmd:?}: expected one message");
    for sub in ["new", "cur"] {
        for e in fs::read_dir(maildir.join(sub)).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    msgs.remove(0)
}

/// A temp dir owned by `nobody` (0755) for running an MDA unprivileged; returns it with
/// nobody's uid and gid. Root can still write in it (e.g. the Maildir the helpers create, which
/// stays root's, so [`make_read_only`] makes it unwritable for `nobody`).
fn dir_for_nobody() -> (tempfile::TempDir, u32, u32) {
    let (uid, gid) = (65534, 65534);
    let dir = mda_dir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    chown(dir.path(), Some(uid), Some(gid)).unwrap();
    (dir, uid, gid)
}

/// Mode 0555 on the Maildir and its subfolders (only root can still write there).
fn make_read_only(maildir: &Path) {
    for d in ["new", "cur", "tmp", ""] {
        fs::set_permissions(maildir.join(d), fs::Permissions::from_mode(0o555)).unwrap();
    }
}

fn as_user(uid: u32, gid: u32, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(program);
    cmd
}

/// procmail adds nothing; it drops a leading `From ` line and adds no final newline.
#[test]
fn mda_procmail_delivers_into_maildir() {
    crate::peers::require_peers!("procmail");
    let dir = mda_dir();
    let rc = procmail_rc(dir.path());
    let maildir = dir.path().join("Maildir");
    let procmail = || {
        let mut c = Command::new("procmail");
        c.arg("-m").arg(&rc);
        c
    };
    assert_eq!(deliver_one(procmail(), MDA_MESSAGE, &maildir), MDA_MESSAGE);
    let mut with_from_line = b"From a@example.org Thu Jan  1 00:00:00 2024\n".to_vec();
    with_from_line.extend_from_slice(MDA_MESSAGE);
    assert_eq!(
        deliver_one(procmail(), &with_from_line, &maildir),
        MDA_MESSAGE
    );
    let crlf = b"Subject: crlf\r\n\r\nbody\r\n";
    assert_eq!(deliver_one(procmail(), crlf, &maildir), crlf);
    let no_newline = b"Subject: x\n\nno final newline";
    assert_eq!(deliver_one(procmail(), no_newline, &maildir), no_newline);
}

/// procmail: 73 (EX_CANTCREAT) when the Maildir cannot be written, 75 (EX_TEMPFAIL) with -t.
#[test]
fn mda_procmail_unwritable_maildir_exit_code() {
    crate::peers::require_peers!("procmail");
    // As root: the Maildir path is a regular file.
    let dir = mda_dir();
    let rc = procmail_rc(dir.path());
    let maildir = dir.path().join("Maildir");
    fs::remove_dir_all(&maildir).unwrap();
    fs::write(&maildir, b"").unwrap();
    let out = run_mda(Command::new("procmail").arg("-m").arg(&rc), MDA_MESSAGE);
    assert_exit(&out, 73, "procmail -m, Maildir is a file");
    let out = run_mda(
        Command::new("procmail").arg("-t").arg("-m").arg(&rc),
        MDA_MESSAGE,
    );
    assert_exit(&out, 75, "procmail -t -m, Maildir is a file");
    assert_eq!(fs::read(&maildir).unwrap(), b"");

    // As nobody: a read-only Maildir.
    let (dir, uid, gid) = dir_for_nobody();
    let rc = procmail_rc(dir.path());
    chown(&rc, Some(uid), Some(gid)).unwrap();
    let maildir = dir.path().join("Maildir");
    make_read_only(&maildir);
    let out = run_mda(
        as_user(uid, gid, "procmail").arg("-m").arg(&rc),
        MDA_MESSAGE,
    );
    assert_exit(&out, 73, "procmail -m as nobody, read-only Maildir");
    let out = run_mda(
        as_user(uid, gid, "procmail").arg("-t").arg("-m").arg(&rc),
        MDA_MESSAGE,
    );
    assert_exit(&out, 75, "procmail -t -m as nobody, read-only Maildir");
    assert_eq!(maildir_count(&maildir), 0);
}

/// maildrop adds nothing; it keeps a leading `From ` line and appends a missing final newline.
#[test]
fn mda_maildrop_delivers_into_maildir() {
    crate::peers::require_peers!("maildrop");
    let dir = mda_dir();
    let filter = maildrop_filter(dir.path());
    assert_eq!(
        fs::metadata(&filter).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let maildir = dir.path().join("Maildir");
    let maildrop = || {
        let mut c = Command::new("maildrop");
        c.arg(&filter);
        c
    };
    assert_eq!(deliver_one(maildrop(), MDA_MESSAGE, &maildir), MDA_MESSAGE);
    let mut with_from_line = b"From a@example.org Thu Jan  1 00:00:00 2024\n".to_vec();
    with_from_line.extend_from_slice(MDA_MESSAGE);
    assert_eq!(
        deliver_one(maildrop(), &with_from_line, &maildir),
        with_from_line
    );
    let crlf = b"Subject: crlf\r\n\r\nbody\r\n";
    assert_eq!(deliver_one(maildrop(), crlf, &maildir), crlf);
    assert_eq!(
        deliver_one(maildrop(), b"Subject: x\n\nno final newline", &maildir),
        b"Subject: x\n\nno final newline\n"
    );
}

/// maildrop: 75 (EX_TEMPFAIL) when the Maildir cannot be written or is missing.
#[test]
fn mda_maildrop_unwritable_maildir_exit_code() {
    crate::peers::require_peers!("maildrop");
    // As root: the Maildir path is a regular file, then missing.
    let dir = mda_dir();
    let filter = maildrop_filter(dir.path());
    let maildir = dir.path().join("Maildir");
    fs::remove_dir_all(&maildir).unwrap();
    fs::write(&maildir, b"").unwrap();
    let out = run_mda(Command::new("maildrop").arg(&filter), MDA_MESSAGE);
    assert_exit(&out, 75, "maildrop, Maildir is a file");
    assert_eq!(fs::read(&maildir).unwrap(), b"");
    fs::remove_file(&maildir).unwrap();
    let out = run_mda(Command::new("maildrop").arg(&filter), MDA_MESSAGE);
    assert_exit(&out, 75, "maildrop, no Maildir");
    assert!(!maildir.exists());

    // As nobody: a read-only Maildir.
    let (dir, uid, gid) = dir_for_nobody();
    let filter = maildrop_filter(dir.path());
    chown(&filter, Some(uid), Some(gid)).unwrap();
    let maildir = dir.path().join("Maildir");
    make_read_only(&maildir);
    let out = run_mda(
        as_user(uid, gid, "maildrop")
            .arg(&filter)
            .current_dir(dir.path()),
        MDA_MESSAGE,
    );
    assert_exit(&out, 75, "maildrop as nobody, read-only Maildir");
    assert_eq!(maildir_count(&maildir), 0);
}

/// dovecot-lda delivers into the Dovecot fixture's store, which then serves it over POP3.
/// It adds nothing (also not with -f/-a), drops a leading `From ` line, turns CRLF into LF.
#[test]
fn mda_dovecot_lda_delivers_into_dovecot_maildir() {
    crate::peers::require_peers!("dovecot", "postfix");
    let dovecot = Dovecot::start();
    dovecot.add_user("alice", "secret");
    let maildir = dovecot.maildir("alice");

    let mut lda = postfix::dovecot_lda_command(&dovecot, "alice");
    lda.args(["-f", "sender@example.org", "-a", "alice@test.example"]);
    let out = run_mda(&mut lda, MDA_MESSAGE);
    assert_exit(&out, 0, "dovecot-lda");
    assert_eq!(dovecot.message_count("alice"), 1, "{}", dovecot.log());
    assert_eq!(maildir_messages(&maildir), [MDA_MESSAGE]);
    assert!(
        dovecot.log().contains("lda(alice)") && dovecot.log().contains("saved mail to INBOX"),
        "{}",
        dovecot.log()
    );

    // The full round trip: fetch it over POP3.
    let retrieved = pop3_retr_1(dovecot.pop3_port(), "alice", "secret", 1);
    assert_eq!(retrieved, MDA_MESSAGE);

    // Edge cases, each alone in the Maildir.
    let mut with_from_line = b"From a@example.org Thu Jan  1 00:00:00 2024\n".to_vec();
    with_from_line.extend_from_slice(MDA_MESSAGE);
    let lda = || postfix::dovecot_lda_command(&dovecot, "alice");
    for sub in ["new", "cur"] {
        for e in fs::read_dir(maildir.join(sub)).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    assert_eq!(deliver_one(lda(), &with_from_line, &maildir), MDA_MESSAGE);
    assert_eq!(
        deliver_one(lda(), b"Subject: crlf\r\n\r\nbody\r\n", &maildir),
        b"Subject: crlf\n\nbody\n"
    );
    assert_eq!(
        deliver_one(lda(), b"Subject: x\n\nno final newline", &maildir),
        b"Subject: x\n\nno final newline"
    );
}

/// dovecot-lda: 64 without -d (as root), 67 (EX_NOUSER) for an unknown user, 75 (EX_TEMPFAIL)
/// when the Maildir cannot be written.
#[test]
fn mda_dovecot_lda_failure_exit_codes() {
    crate::peers::require_peers!("dovecot", "postfix");
    let dovecot = Dovecot::start();
    dovecot.add_user("alice", "secret");
    let conf = postfix::dovecot_config_file(&dovecot);

    let out = run_mda(Command::new(DOVECOT_LDA).arg("-c").arg(&conf), MDA_MESSAGE);
    assert_exit(&out, 64, "dovecot-lda without -d");
    let out = run_mda(
        &mut postfix::dovecot_lda_command(&dovecot, "bob"),
        MDA_MESSAGE,
    );
    assert_exit(&out, 67, "dovecot-lda -d unknown user");

    // dovecot-lda writes as the mail uid (nobody), so a read-only Maildir stops it.
    let maildir = dovecot.maildir("alice");
    for d in ["new", "tmp"] {
        fs::set_permissions(maildir.join(d), fs::Permissions::from_mode(0o555)).unwrap();
    }
    let out = run_mda(
        &mut postfix::dovecot_lda_command(&dovecot, "alice"),
        MDA_MESSAGE,
    );
    assert_exit(&out, 75, "dovecot-lda, read-only Maildir");
    assert_eq!(dovecot.message_count("alice"), 0);
}

/// Logs in with USER/PASS, checks STAT shows `expected` messages, returns message 1 (CRLF
/// turned into LF, dot-stuffing undone).
fn pop3_retr_1(port: u16, user: &str, pass: &str, expected: usize) -> Vec<u8> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut read_line = || {
        let mut l = Vec::new();
        reader.read_until(b'\n', &mut l).unwrap();
        assert!(l.ends_with(b"\r\n"), "POP3 line {:?}", text(&l));
        l.truncate(l.len() - 2);
        l
    };
    let greeting = read_line();
    assert!(greeting.starts_with(b"+OK"), "{}", text(&greeting));
    let mut lines = Vec::new();
    for cmd in [
        format!("USER {user}"),
        format!("PASS {pass}"),
        "STAT".to_owned(),
        "RETR 1".to_owned(),
    ] {
        writer.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let l = read_line();
        assert!(l.starts_with(b"+OK"), "{cmd}: {}", text(&l));
        lines.push(text(&l));
    }
    assert!(
        lines[2].starts_with(&format!("+OK {expected} ")),
        "STAT: {}",
        lines[2]
    );
    let mut msg = Vec::new();
    loop {
        let l = read_line();
        if l == b"." {
            break;
        }
        msg.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
        msg.push(b'\n');
    }
    writer.write_all(b"QUIT\r\n").unwrap();
    assert!(read_line().starts_with(b"+OK"));
    msg
}
