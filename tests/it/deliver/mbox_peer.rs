//! The mbox backend against a real mboxrd reader: messages go from a private Dovecot through
//! the real `popfetch fetch` into `deliver = { mbox = ... }`, and mblaze's `mdeliver -M` (which
//! splits an mbox and undoes mboxrd quoting, one `>` off each `^>+From ` line) reads them back.
//!
//! mblaze keeps the empty line that ends each mbox entry as part of the message, so a message
//! read back is the message as fetched plus one `\n`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::dovecot::{Dovecot, run_bounded};
use crate::harness::{Env, expected, strip_received};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// An mblaze program; panics with a hint when it is not installed.
fn mblaze(name: &str) -> PathBuf {
    let p = Path::new("/usr/bin").join(name);
    assert!(
        p.is_file(),
        "{name} is not installed: run tests/install-peers as root (Debian: mblaze)"
    );
    p
}

/// Runs an mblaze program with `input` on stdin; returns its stdout.
fn run(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let out = run_bounded(cmd, input, Duration::from_secs(30)).unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Splits `mbox` with `mdeliver -M` into a fresh Maildir under `dir`; the messages in mbox
/// order.
fn read_back(dir: &Path, mbox: &[u8]) -> Vec<Vec<u8>> {
    let maildir = dir.join("readback");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    // `-v` prints each new file's name, in the order of the mbox.
    let names = run(
        Command::new(mblaze("mdeliver"))
            .args(["-M", "-v"])
            .arg(&maildir),
        mbox,
    );
    String::from_utf8(names)
        .unwrap()
        .lines()
        .map(|name| std::fs::read(name).unwrap())
        .collect()
}

/// A message that mblaze's own mboxrd writer, `mexport`, puts in an mbox: without the final
/// empty line, so popfetch must add one before its first `From_` line.
fn mexported(dir: &Path, message: &[u8]) -> Vec<u8> {
    let maildir = dir.join("export");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let name = run(
        Command::new(mblaze("mdeliver")).arg("-v").arg(&maildir),
        message,
    );
    let name = String::from_utf8(name).unwrap();
    let mbox = run(Command::new(mblaze("mexport")).arg(name.trim_end()), b"");
    assert!(
        mbox.starts_with(b"From "),
        "{}",
        String::from_utf8_lossy(&mbox)
    );
    mbox
}

#[test]
fn mblaze_reads_back_each_message_byte_exact() {
    crate::peers::require_peers!("dovecot", "mblaze");
    let d = Dovecot::start();
    d.add_user(USER, PASSWORD);
    let messages: Vec<Vec<u8>> = vec![
        b"Return-Path: <bounce@example.org>\nFrom: Alice <alice@example.org>\n\
          Subject: from lines\n\nFrom the start\n>From quoted\n>>From twice\nFromage\n\
          From\n From indented\nend\n"
            .to_vec(),
        b"From: bob@example.net\nSubject: 8-bit\nContent-Transfer-Encoding: 8bit\n\n\
          Gr\xc3\xbc\xc3\x9fe \xff\xfe\x80\n\nFrom after an empty line\n"
            .to_vec(),
        b"Subject: no sender, no final newline\n\n>>>From deep\nlast line".to_vec(),
    ];
    d.deliver_many(USER, messages.clone());

    let env = Env::new();
    let mbox = env.path().join("mbox");
    let old = b"Subject: old\nDate: Thu, 26 Nov 2026 10:00:00 +0000\n\nFrom old times\n";
    std::fs::write(&mbox, mexported(env.path(), old)).unwrap();
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\n\
         ca_file = \"{}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
         deliver = {{ mbox = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        mbox.display()
    ));
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count(USER), 0, "delivered, then deleted");
    assert!(!env.path().join("mbox.lock").exists(), "dotlock removed");

    let bytes = std::fs::read(&mbox).unwrap();
    let from_lines: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"From "))
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let senders: Vec<&str> = from_lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        senders,
        [
            "nobody",
            "bounce@example.org",
            "bob@example.net",
            "MAILER-DAEMON"
        ],
        "{from_lines:#?}"
    );

    let got = read_back(env.path(), &bytes);
    assert_eq!(got.len(), 1 + messages.len(), "messages in the mbox");
    // mexport's entry had no empty line after it: popfetch added it, mblaze keeps it.
    assert_eq!(
        String::from_utf8_lossy(&got[0]),
        String::from_utf8_lossy(&[&old[..], b"\n"].concat())
    );
    for (i, (g, m)) in got[1..].iter().zip(&messages).enumerate() {
        let g = strip_received(g);
        let want = [expected(m), b"\n".to_vec()].concat();
        assert!(
            g == want,
            "message {i} differs:\n--- got\n{}\n--- want\n{}",
            String::from_utf8_lossy(&g),
            String::from_utf8_lossy(&want)
        );
    }
}
