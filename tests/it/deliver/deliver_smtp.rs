//! The SMTP relay backend against a private Postfix on loopback that delivers into a Maildir:
//! byte-exact relay of the same tricky messages the Maildir tests use, one connection for the
//! poll, and every failure path (451, 550, relay down) ending with nothing lost.

use crate::dovecot::Dovecot;
use crate::harness::{Env, message};
use crate::postfix::{Postfix, strip_postfix_headers};
use crate::support::config::Account;

fn relay_config(d: &Dovecot, env: &Env, port: u16, to: &str, extra: &str) {
    let account = Account::dovecot(d)
        .set(
            "deliver",
            format_args!("{{ smtp = {{ host = \"127.0.0.1\", port = {port}, to = [\"{to}\"] }} }}"),
        )
        .extra(extra);
    env.write_config(&account.to_toml());
}

fn tricky() -> Vec<Vec<u8>> {
    vec![
        b"Return-Path: <bounce@example.org>\nFrom: a@example.org\nSubject: dots\n\n.\n..\n.leading\nend\n".to_vec(),
        "From: b@example.org\nSubject: 8bit\n\nGr\u{fc}\u{df}e \u{1f600}\n".as_bytes().to_vec(),
        b"From: c@example.org\nSubject: empty body\n\n".to_vec(),
        b"Return-Path: <>\nFrom: d@example.org\nSubject: null sender\n\nbounce body\n".to_vec(),
        message(5, 20_000),
    ]
}

/// The relayed copy: popfetch's Received line is the first of the message Postfix got.
fn relayed_body(msg: &[u8]) -> Vec<u8> {
    crate::harness::strip_received(&strip_postfix_headers(msg))
}

#[test]
fn relays_byte_exact_through_postfix() {
    crate::peers::require_peers!("dovecot", "postfix");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let msgs = tricky();
    d.deliver_many("alice", msgs.clone());
    let p = Postfix::start();
    let env = Env::new();
    relay_config(&d, &env, p.port(), "alice@test.example", "");
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("5 new messages delivered"),
        "{}",
        run.stdout
    );
    let mut got: Vec<Vec<u8>> = p.wait_for(5).iter().map(|m| relayed_body(m)).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| crate::harness::expected(m)).collect();
    want.sort();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g == w,
            "relayed copy differs:\n{}\n---\n{}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
    assert_eq!(d.message_count("alice"), 0);
    // The envelope sender came from Return-Path, and the null sender stayed null.
    let log = p.log();
    assert!(log.contains("from=<bounce@example.org>"), "{log}");
    assert!(log.contains("from=<>"), "{log}");
    // One SMTP connection carried the whole poll: its disconnect line counts 5 transactions.
    assert!(log.contains(" mail=5 rcpt=5 data=5 "), "{log}");
}

#[test]
fn relay_451_leaves_messages_for_the_next_poll() {
    crate::peers::require_peers!("dovecot", "postfix");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many("alice", vec![message(1, 500), message(2, 500)]);
    let p = Postfix::start();
    let env = Env::new();
    relay_config(&d, &env, p.port(), "rcpt451@test.example", "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stdout.contains("2 failed for now"), "{}", run.stdout);
    assert_eq!(d.message_count("alice"), 2);
    relay_config(&d, &env, p.port(), "alice@test.example", "");
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(p.wait_for(2).len(), 2);
    assert_eq!(d.message_count("alice"), 0);
}

#[test]
fn relay_550_holds_the_message() {
    crate::peers::require_peers!("dovecot", "postfix");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver("alice", &message(1, 500));
    let p = Postfix::start();
    let env = Env::new();
    relay_config(&d, &env, p.port(), "rcpt550@test.example", "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("1 held after a permanent failure"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("550"), "{}", run.stderr);
    assert_eq!(d.message_count("alice"), 1);
    assert_eq!(p.delivered_count(), 0);
}

#[test]
fn relay_down_stops_the_poll_and_deletes_nothing() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many("alice", vec![message(1, 500), message(2, 500)]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::new();
    relay_config(&d, &env, port, "alice@test.example", "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("cannot connect to the relay 127.0.0.1"),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count("alice"), 2);
}

fn socket_config(d: &Dovecot, env: &Env, socket: &std::path::Path, to: &str, more: &str) {
    let account = Account::dovecot(d).set(
        "deliver",
        format_args!(
            "{{ smtp = {{ socket = \"{}\", to = [\"{to}\"]{more} }} }}",
            socket.display()
        ),
    );
    env.write_config(&account.to_toml());
}

#[test]
fn relays_byte_exact_over_a_unix_socket() {
    crate::peers::require_peers!("dovecot", "postfix");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let msgs = tricky();
    d.deliver_many("alice", msgs.clone());
    let p = Postfix::start();
    let env = Env::new();
    socket_config(&d, &env, &p.socket(), "alice@test.example", "");
    env.popfetch(&["check"]).assert_code(0);
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("5 new messages delivered"),
        "{}",
        run.stdout
    );
    let mut got: Vec<Vec<u8>> = p.wait_for(5).iter().map(|m| relayed_body(m)).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| crate::harness::expected(m)).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(d.message_count("alice"), 0);
    let log = p.log();
    assert!(log.contains("from=<bounce@example.org>"), "{log}");
    assert!(log.contains("from=<>"), "{log}");
    // The socket, not TCP, carried them, on one connection: smtpd names a Unix-domain client
    // `localhost`, a TCP one on loopback `unknown` (no name lookups).
    assert!(
        log.lines()
            .any(|l| l.contains("disconnect from localhost[127.0.0.1]")
                && l.contains(" mail=5 rcpt=5 data=5 ")),
        "{log}"
    );
}

#[test]
fn relay_socket_missing_leaves_the_mail_and_check_warns() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many("alice", vec![message(1, 500), message(2, 500)]);
    let env = Env::new();
    let socket = env.path().join("no-relay.sock");
    socket_config(&d, &env, &socket, "alice@test.example", "");
    let check = env.popfetch(&["check"]);
    check.assert_code(0);
    assert!(
        check.stderr.contains("is not a socket (yet)")
            || check.stdout.contains("is not a socket (yet)"),
        "{}\n{}",
        check.stdout,
        check.stderr
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("cannot connect to the relay {}", socket.display())),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count("alice"), 2);
    // Nothing was recorded: the next poll with the relay up delivers both.
    let p = Postfix::start();
    socket_config(&d, &env, &p.socket(), "alice@test.example", "");
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(p.wait_for(2).len(), 2);
    assert_eq!(d.message_count("alice"), 0);
}

#[test]
fn check_refuses_tcp_keys_on_a_relay_socket() {
    let env = Env::new();
    let socket = env.path().join("relay.sock");
    let base = |more: &str| {
        Account::new("pop.example.org", 995)
            .user("alice")
            .password("pw")
            .set(
                "deliver",
                format_args!(
                    "{{ smtp = {{ socket = \"{}\", to = [\"a@example.org\"]{more} }} }}",
                    socket.display()
                ),
            )
            .to_toml()
    };
    for (more, key) in [
        (", tls = \"starttls\"", "deliver.smtp.tls"),
        (", port = 25", "deliver.smtp.port"),
        (", ca_file = \"/etc/ssl/ca.pem\"", "deliver.smtp.ca_file"),
        (
            ", tls_min_version = \"1.3\"",
            "deliver.smtp.tls_min_version",
        ),
        (
            ", tls_fingerprint = [\"sha256:00\"]",
            "deliver.smtp.tls_fingerprint",
        ),
    ] {
        env.write_config(&base(more));
        let run = env.popfetch(&["check"]);
        run.assert_code(2);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            all.contains(key)
                && all.contains("a Unix socket (`socket`) is local and has no port or TLS"),
            "{more}: {all}"
        );
    }
    env.write_config(&base(", host = \"localhost\""));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("set exactly one of `host` (TCP) and `socket`"),
        "{all}"
    );
    // A login over the socket stays on this machine: allowed without TLS.
    env.write_config(&base(
        ", user = \"s\", password = \"pw\", helo = \"me.example\"",
    ));
    let run = env.popfetch(&["check"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!(
            "deliver = {{ smtp = {{ socket = \"{}\"",
            socket.display()
        )),
        "{}",
        run.stdout
    );
}
