//! What reaches the journal and stderr: lines that read on their own, fields journalctl can
//! match, a failure said once and its end once, `auto` at a terminal, and `-vvv`'s both
//! directions. The journal is a datagram socket the test binds (`POPFETCH_JOURNAL_SOCKET`).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, message};
use crate::pop3_server::{Msg, PASSWORD, Server};
use crate::support::config::Account;

/// One journal entry: its fields (the last value of a name repeated).
type Entry = HashMap<String, String>;

/// Parses a datagram of journald's native protocol.
fn parse(mut d: &[u8]) -> Entry {
    let mut e = Entry::new();
    while !d.is_empty() {
        let nl = d.iter().position(|&b| b == b'\n').expect("a field ends");
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            e.insert(
                String::from_utf8_lossy(&line[..eq]).into(),
                String::from_utf8_lossy(&line[eq + 1..]).into(),
            );
            d = &d[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &d[nl + 9..nl + 9 + len];
            assert_eq!(d[nl + 9 + len], b'\n', "a binary field ends in a newline");
            e.insert(name, String::from_utf8_lossy(value).into());
            d = &d[nl + 10 + len..];
        }
    }
    e
}

/// A journal: a datagram socket in the test's directory.
struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    entries: Vec<Entry>,
}

impl Journal {
    fn bind(dir: &Path) -> Journal {
        let path = dir.join("journal.socket");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Journal {
            socket,
            path,
            entries: Vec::new(),
        }
    }

    /// Reads entries until one's MESSAGE satisfies `pred`, at most `secs`; returns it.
    #[track_caller]
    fn wait(&mut self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) -> Entry {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if let Some(e) = self
                .entries
                .iter()
                .find(|e| e.get("MESSAGE").is_some_and(|m| pred(m)))
            {
                return e.clone();
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; journal:\n{}",
                self.messages().join("\n")
            );
            if let Ok(n) = self.socket.recv(&mut buf)
                && n > 0
            {
                self.entries.push(parse(&buf[..n]));
            }
        }
    }

    fn messages(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| e.get("MESSAGE").cloned())
            .collect()
    }
}

/// An executable MDA script in `dir`.
fn mda(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\ncat >/dev/null\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn daemon(env: &Env, journal: &Path, stderr: Stdio) -> Child {
    let mut cmd = env.command(&["daemon"]);
    cmd.stdout(Stdio::null())
        .stderr(stderr)
        .env("POPFETCH_JOURNAL_SOCKET", journal);
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// Two accounts on scripted servers, each with one message, polled every `interval` by a
/// daemon logging to the journal: `home`'s MDA fails for now ("mailbox is full", 75) until the
/// returned flag file exists, `work`'s refuses for good ("no such user", 67). The servers are
/// returned to keep them running.
fn home_and_work(interval: &str) -> (Server, Server, Env, PathBuf) {
    let home = Server::healthy(vec![Msg::new(message(0, 400), "uidl-home")]);
    let work = Server::healthy(vec![Msg::new(message(1, 400), "uidl-work")]);
    let env = Env::new();
    let flag = env.path().join("mailbox-ok");
    let flaky = mda(
        env.path(),
        "flaky-mda",
        &format!(
            "[ -e {} ] && exit 0\necho 'mailbox is full' >&2\nexit 75",
            flag.display()
        ),
    );
    let refusing = mda(
        env.path(),
        "refusing-mda",
        "echo 'no such user' >&2\nexit 67",
    );
    let account = |server: &Server, name: &str, mda: &Path| {
        Account::scripted(server)
            .name(name)
            .set(
                "deliver",
                format_args!("{{ mda = [\"{}\"] }}", mda.display()),
            )
            .text("interval", interval)
            .to_toml()
    };
    env.write_config(&format!(
        "log_target = \"journald\"\nshutdown_timeout = \"5s\"\n{}{}",
        account(&home, "home", &flaky),
        account(&work, "work", &refusing)
    ));
    (home, work, env, flag)
}

#[test]
fn journal_lines_say_what_happened_to_whom_once_per_change() {
    let (_home, _work, env, flag) = home_and_work("1h");
    let mut journal = Journal::bind(env.path());
    let mut child = daemon(&env, &journal.path, Stdio::piped());

    // A transient failure: said once, with its cause, at warning priority.
    let failing = journal.wait(20, "home's failure", |m| {
        m.starts_with("account home: 1 message not delivered for now")
    });
    let text = &failing["MESSAGE"];
    assert!(
        text.contains("exited with 75") && text.contains("it said: mailbox is full (retrying in "),
        "{text}"
    );
    assert_eq!(failing["PRIORITY"], "4");
    assert_eq!(failing["SYSLOG_IDENTIFIER"], "popfetch");
    assert_eq!(failing["POPFETCH_ACCOUNT"], "home");
    assert!(!failing.keys().any(|k| k.starts_with("F_")), "{failing:?}");
    // A held message: an error, once.
    let held = journal.wait(20, "work's held message", |m| {
        m.starts_with("account work: message uidl-work held: delivery refused for good")
    });
    assert_eq!(held["PRIORITY"], "3");
    assert_eq!(held["POPFETCH_UIDL"], "uidl-work");
    assert!(
        held["MESSAGE"].contains("it said: no such user"),
        "{held:?}"
    );

    // The same failure again: nothing new is said.
    signal(&child, "USR1");
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "USR1");
    std::thread::sleep(Duration::from_secs(2));
    // The MDA works again: the recovery is said once, at info.
    std::fs::write(&flag, "").unwrap();
    signal(&child, "USR1");
    let recovered = journal.wait(20, "home's recovery", |m| {
        m.starts_with("account home: recovered after")
    });
    assert_eq!(recovered["PRIORITY"], "6");
    assert!(
        recovered["MESSAGE"].contains("(last: 1 message not delivered for now"),
        "{recovered:?}"
    );
    journal.wait(10, "home's delivery", |m| {
        m.starts_with("account home: poll done: 1 new message delivered")
    });
    signal(&child, "TERM");
    let _ = child.wait();
    let messages = journal.messages();
    let said = |prefix: &str| messages.iter().filter(|m| m.starts_with(prefix)).count();
    assert_eq!(
        said("account home: 1 message not delivered for now"),
        1,
        "{messages:#?}"
    );
    assert_eq!(
        said("account work: message uidl-work held"),
        1,
        "{messages:#?}"
    );
    // A poll that delivers nothing is no info line: the failure was said once, and work's
    // polls after the one that held its message say nothing.
    assert_eq!(said("account home: poll done: 0 new"), 0, "{messages:#?}");
    assert!(said("account work: poll done") <= 1, "{messages:#?}");
    // Nothing reached stderr: the journal had it all.
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err, "");
    for m in &messages {
        eprintln!("journal: {m}");
    }
}

#[test]
fn auto_logs_to_a_terminal_and_to_the_journal_when_unattended() {
    let env = Env::new();
    // A port nobody listens on: every poll fails the same way.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    env.write_config(&format!(
        "log_target = \"auto\"\n{}",
        Account::new("127.0.0.1", port)
            .name("home")
            .user("alice")
            .text("tls", "none")
            .password(PASSWORD)
            .text("auth", "user")
            .set("allow_plaintext_auth", true)
            .maildir(&env.maildir())
            .to_toml()
    ));
    // Not at a terminal: the journal.
    let mut journal = Journal::bind(env.path());
    let log = env.path().join("stderr.log");
    let mut child = daemon(
        &env,
        &journal.path,
        std::fs::File::create(&log).unwrap().into(),
    );
    let e = journal.wait(
        20,
        &format!("the failure; stderr: {:?}", std::fs::read_to_string(&log)),
        |m| m.starts_with("account home: poll failed: cannot connect to 127.0.0.1:"),
    );
    assert!(e["MESSAGE"].contains("onnection refused"), "{e:?}");
    let _ = child.kill();
    let _ = child.wait();

    // At a terminal (script(1) gives it one): stderr, and nothing in the journal.
    std::fs::create_dir(env.path().join("t")).unwrap();
    let mut quiet = Journal::bind(&env.path().join("t"));
    let cmd = format!(
        "POPFETCH_JOURNAL_SOCKET={} timeout -s INT 4 {} -c {} daemon",
        quiet.path.display(),
        env!("CARGO_BIN_EXE_popfetch"),
        env.config_path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(
        tty.contains("account home: poll failed: cannot connect to 127.0.0.1:"),
        "{tty}"
    );
    let mut buf = [0u8; 65536];
    let got = quiet.socket.recv(&mut buf);
    assert!(got.is_err(), "the journal got a line: {got:?}");
    quiet.entries.clear();
}

/// The same story through a real journald: a private one in a mount namespace of its own (a
/// tmpfs on `/run`, so the host's journal and `/run` are untouched), read back with
/// `journalctl` as an administrator would, by identifier and by field.
#[test]
fn a_real_journal_shows_the_lines_and_finds_them_by_account() {
    crate::peers::require_peers!("journald");
    let (_home, _work, env, flag) = home_and_work("5m");
    let script = format!(
        r#"set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log
/lib/systemd/systemd-journald &
journald=$!
for _ in $(seq 50); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
{bin} -c {config} daemon &
daemon=$!
sleep 3
touch {flag}
kill -USR1 $daemon
sleep 2
kill -TERM $daemon
wait $daemon || true
echo '--- by identifier'
journalctl --no-pager -t popfetch -o short-iso
echo '--- by account'
journalctl --no-pager POPFETCH_ACCOUNT=home -o cat
echo '--- fields'
journalctl --no-pager POPFETCH_ACCOUNT=work PRIORITY=3 -o verbose
kill $journald
"#,
        bin = env!("CARGO_BIN_EXE_popfetch"),
        config = env.config_path().display(),
        flag = flag.display(),
    );
    let out = std::process::Command::new("timeout")
        .args([
            "60",
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .env_remove("POPFETCH_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let section = |name: &str| {
        let start = text.find(&format!("--- {name}\n")).expect("section") + name.len() + 5;
        let end = text[start..]
            .find("\n--- ")
            .map_or(text.len(), |e| start + e);
        text[start..end].to_string()
    };
    let all = section("by identifier");
    for want in [
        "popfetch[",
        "account home: 1 message not delivered for now: message 1 (uidl uidl-home): the MDA",
        "exited with 75 (try again later); it said: mailbox is full (retrying in ",
        "account work: message uidl-work held: delivery refused for good",
        "account home: recovered after 1 failed poll (last: 1 message not delivered for now",
        "account home: poll done: 1 new message delivered",
    ] {
        assert!(all.contains(want), "no {want:?} in:\n{all}");
    }
    // By field: only home's lines.
    let home_lines = section("by account");
    assert!(
        !home_lines.is_empty() && !home_lines.contains("account work"),
        "{home_lines}"
    );
    assert!(
        home_lines.lines().all(|l| l.starts_with("account home: ")),
        "{home_lines}"
    );
    let fields = section("fields");
    for want in [
        "SYSLOG_IDENTIFIER=popfetch",
        "POPFETCH_ACCOUNT=work",
        "POPFETCH_UIDL=uidl-work",
        "PRIORITY=3",
    ] {
        assert!(fields.contains(want), "no {want:?} in:\n{fields}");
    }
    eprintln!("{text}");
}
