//! Small things a user sees, each shown through the built binary: an account named twice on the
//! command line, IPv6 addresses in errors, the `Received:` line after STLS, the methods listed
//! when the configured one is not offered, and a bare `-ERR`.

use std::net::TcpListener;

use crate::dovecot::Dovecot;
use crate::harness::{Env, message};
use crate::pop3_server::{Greeting, Msg, Script, Server};
use crate::support::config::Account;

fn scripted(env: &Env, server: &Server) -> Account {
    Account::scripted(server)
        .maildir(&env.maildir())
        .text("timeout", "5s")
}

#[test]
fn an_account_named_twice_is_polled_once() {
    let server = Server::healthy(vec![Msg::new(message(1, 300), "u1")]);
    let env = Env::new();
    env.write_config(&scripted(&env, &server).name("home").to_toml());
    let run = env.popfetch(&["fetch", "home", "home"]);
    run.assert_code(0);
    assert_eq!(
        run.stdout.matches("home: ").count(),
        1,
        "one summary line: {}",
        run.stdout
    );
    assert_eq!(server.log().sessions.len(), 1, "one session");
    assert_eq!(env.delivered().len(), 1);
}

#[test]
fn an_ipv6_address_is_printed_in_brackets() {
    // A port on ::1 nobody listens on: the connection is refused.
    let closed = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::new();
    let account = Account::new("::1", port)
        .text("tls", "none")
        .user("alice")
        .password("pw")
        .text("auth", "user")
        .set("allow_plaintext_auth", true)
        .maildir(&env.maildir());
    env.write_config(&account.to_toml());
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains(&format!("cannot connect to [::1]:{port}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("::1:"), "{}", run.stderr);
}

#[test]
fn an_ipv6_relay_is_printed_in_brackets() {
    let server = Server::healthy(vec![Msg::new(message(1, 300), "u1")]);
    let closed = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::new();
    let account = Account::scripted(&server).set(
        "deliver",
        format_args!("{{ smtp = {{ host = \"::1\", port = {port}, tls = \"none\", to = [\"a@example.org\"] }} }}"),
    );
    env.write_config(&account.to_toml());
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains(&format!("[::1]:{port}")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(" ::1:"), "{}", run.stderr);
    assert_eq!(server.remaining().len(), 1, "nothing deleted");
}

/// The first line of the one delivered message.
fn received_line(env: &Env) -> String {
    let file = std::fs::read_dir(env.maildir().join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let raw = std::fs::read_to_string(file).unwrap();
    raw.lines().next().unwrap().to_string()
}

#[test]
fn the_received_line_says_pop3s_only_for_implicit_tls() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    for (tls, port, with) in [
        ("implicit", d.pop3s_port(), "with POP3S (popfetch "),
        ("starttls", d.pop3_port(), "with POP3 (STLS; popfetch "),
    ] {
        d.deliver("alice", &message(1, 300));
        let env = Env::new();
        let account = Account::dovecot(&d)
            .set("port", port)
            .text("tls", tls)
            .maildir(&env.maildir());
        env.write_config(&account.to_toml());
        env.popfetch(&["fetch"]).assert_code(0);
        let line = received_line(&env);
        assert!(line.contains(with), "{tls}: {line}");
    }
}

#[test]
fn a_method_not_offered_lists_apop_when_the_greeting_offers_it() {
    let server = Server::start(
        vec![Msg::new(message(1, 300), "u1")],
        Script {
            greeting: Greeting::Apop,
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&scripted(&env, &server).text("auth", "cram-md5").to_toml());
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("the server does not offer CRAM-MD5 (it offers USER, APOP)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_bare_err_to_the_login_says_no_reason_was_given() {
    let server = Server::start(
        vec![Msg::new(message(1, 300), "u1")],
        Script {
            pass_answer: Some("-ERR".into()),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&scripted(&env, &server).to_toml());
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("the server answered PASS with -ERR (no reason given)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("-ERR: "), "{}", run.stderr);
}
