//! What `fetch` shows: both directions of the protocol at `-vvv` (secrets redacted), the
//! config's `log_level` for every command, and at a terminal, warnings that stay on screen
//! above the live progress, and a failed account shown as failed.

use std::time::Duration;

use crate::harness::{Env, message};
use crate::pop3_server::{Fault, Msg, PASSWORD, Server};
use crate::support::config::Account;

#[test]
fn trace_shows_what_was_sent_and_what_came_back_with_secrets_redacted() {
    let server = Server::healthy(vec![Msg::new(message(0, 300), "uidl-0")]);
    let env = Env::new();
    env.write_config(&Account::scripted(&server).maildir(&env.maildir()).to_toml());
    let run = env.popfetch(&["-vvv", "fetch"]);
    run.assert_code(0);
    let err = &run.stderr;
    for want in [
        "S: +OK",
        "C: CAPA",
        "C: USER alice",
        "C: PASS <redacted>",
        "C: UIDL",
        "C: RETR 1",
        "bytes of the message)",
        "S: .",
        "C: DELE 1",
        "C: QUIT",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    assert!(
        !err.contains(&format!("PASS {PASSWORD}")),
        "the password reached the log:\n{err}"
    );
}

#[test]
fn log_level_in_the_config_applies_to_fetch() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    let account = Account::scripted(&server).maildir(&env.maildir()).to_toml();
    env.write_config(&account);
    let quiet = env.popfetch(&["fetch"]);
    quiet.assert_code(0);
    assert!(!quiet.stderr.contains("DEBUG"), "{}", quiet.stderr);
    env.write_config(&format!("log_level = \"debug\"\n{account}"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("DEBUG account alice: logging in"),
        "{}",
        run.stderr
    );
    // A poll that found nothing is a debug line, not an info line.
    assert!(
        run.stderr
            .contains("DEBUG account alice: poll done: 0 new messages"),
        "{}",
        run.stderr
    );
    // `check` reads the config too: its level holds there as well.
    let check = env.popfetch(&["check"]);
    check.assert_code(0);
}

/// The screen a terminal would show after `out`: enough of VT100 for what popfetch sends
/// (text, CR, LF, cursor up `ESC[nA`, erase below `ESC[J`, erase line `ESC[2K`).
fn screen(out: &str) -> Vec<String> {
    let mut lines: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => {
                row += 1;
                col = 0;
                if lines.len() <= row {
                    lines.push(Vec::new());
                }
            }
            '\x1b' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut arg = String::new();
                let mut cmd = ' ';
                for d in chars.by_ref() {
                    if d.is_ascii_digit() {
                        arg.push(d);
                    } else {
                        cmd = d;
                        break;
                    }
                }
                let n: usize = arg.parse().unwrap_or(1);
                match cmd {
                    'A' => row = row.saturating_sub(n),
                    'J' => {
                        lines[row].truncate(col);
                        lines.truncate(row + 1);
                    }
                    'K' => lines[row].clear(),
                    other => panic!("unexpected escape {arg}{other}"),
                }
            }
            c => {
                let line = &mut lines[row];
                if line.len() <= col {
                    line.resize(col, ' ');
                    line.push(c);
                } else {
                    line[col] = c;
                }
                col += 1;
            }
        }
    }
    lines
        .into_iter()
        .map(|l| l.into_iter().collect::<String>().trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_screen_emulation_follows_popfetch_s_redraws() {
    let out = "\x1b[2Ka: 0/1\n\x1b[1A\x1b[Jwarning\n\x1b[2Ka: 1/1\n\x1b[1A\x1b[Jdone\n";
    assert_eq!(screen(out), ["warning", "done"]);
}

#[test]
fn at_a_terminal_warnings_stay_on_screen_and_a_failed_account_shows_failed() {
    // `slow` trickles its one message for about two seconds and has one over max_size (a
    // warning while the progress is drawn); `broken` is a port nobody listens on.
    let small = b"Subject: s\n\nhi\n".to_vec();
    let server = Server::healthy(vec![
        Msg::new(message(1, 5000), "uidl-big"),
        Msg::new(small, "uidl-slow").fault(Fault::Trickle(Duration::from_millis(60))),
    ]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::new();
    env.write_config(&format!(
        "{}{}",
        Account::scripted(&server)
            .name("slow")
            .set("max_size", 1000)
            .maildir(&env.maildir())
            .to_toml(),
        Account::new("127.0.0.1", port)
            .name("broken")
            .user("alice")
            .text("tls", "none")
            .password(PASSWORD)
            .text("auth", "user")
            .set("allow_plaintext_auth", true)
            .maildir(&env.maildir())
            .to_toml()
    ));
    let cmd = format!(
        "{} -c {} fetch",
        env!("CARGO_BIN_EXE_popfetch"),
        env.config_path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    // A frame drawn while `slow` went on showed `broken` as failed, not done.
    assert!(
        tty.contains("broken: 0/0 messages, 0 B/0 B, failed"),
        "{tty:?}"
    );
    let shown = screen(&tty);
    let warning = shown
        .iter()
        .position(|l| l.contains("account slow: message 1") && l.contains("over max_size"));
    let summary = shown
        .iter()
        .position(|l| l.starts_with("slow: 1 new message delivered"));
    assert!(
        warning.is_some() && summary.is_some() && warning < summary,
        "the warning did not stay on screen above the summary:\n{}",
        shown.join("\n")
    );
    assert!(
        shown
            .iter()
            .any(|l| l.contains("popfetch: account broken: cannot connect to 127.0.0.1:")),
        "{}",
        shown.join("\n")
    );
    // The progress lines are gone at the end.
    assert!(
        !shown.iter().any(|l| l.contains(" messages, ")),
        "{}",
        shown.join("\n")
    );
}
