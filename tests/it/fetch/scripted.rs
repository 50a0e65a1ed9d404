//! `popfetch fetch` against servers Dovecot will not imitate: one without UIDL, one without STLS,
//! one that never greets. The scripted server (`pop3_server.rs`) and a closed port play them.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::harness::{Env, expected, message};
use crate::pop3_server::{Greeting, Listing, Msg, PASSWORD, Script, Server, USER};
use crate::support::config::Account;

/// Messages with the given data, UIDLs `uidl-1` ... `uidl-n`.
fn msgs(data: &[Vec<u8>]) -> Vec<Msg> {
    data.iter()
        .enumerate()
        .map(|(i, d)| Msg::new(d.clone(), &format!("uidl-{}", i + 1)))
        .collect()
}

/// An account on `server`; `extra` may set `tls` (default "none") and `timeout` (default "2s").
fn config(env: &Env, server: &Server, extra: &str) {
    let account = Account::scripted(server)
        .maildir(&env.maildir())
        .text("timeout", "2s")
        .extra(extra);
    env.write_config(&account.to_toml());
}

#[test]
fn server_without_uidl_fetch_all_and_delete_works_keep_is_refused() {
    let data = vec![message(1, 300), message(2, 300)];
    let server = Server::start(
        msgs(&data),
        Script {
            uidl: Listing::Refused,
            ..Script::default()
        },
    );
    let env = Env::new();

    config(&env, &server, "keep = true\n");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("does not support UIDL"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("keep = true needs it"),
        "{}",
        run.stderr
    );
    assert_eq!(server.remaining().len(), 2, "nothing deleted");
    assert!(env.delivered().is_empty());

    config(&env, &server, "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("2 new messages delivered"),
        "{}",
        run.stdout
    );
    assert!(server.remaining().is_empty());
    let mut got = env.delivered();
    got.sort();
    let mut want: Vec<_> = data.iter().map(|m| expected(m)).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn starttls_without_stls_offered_fails_and_never_continues_in_clear() {
    let server = Server::healthy(msgs(&[message(1, 300)]));
    let env = Env::new();
    config(&env, &server, "tls = \"starttls\"\n");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("does not offer STLS"), "{}", run.stderr);
    assert_eq!(server.remaining().len(), 1);
    let log = server.log();
    assert_eq!(log.quits, 0, "it never logged in");
    for verb in ["USER", "PASS", "AUTH", "APOP"] {
        assert!(log.commands(verb).is_empty(), "{verb} sent: {log:?}");
    }
}

#[test]
fn implicit_tls_against_a_clear_text_server_fails_cleanly() {
    let server = Server::healthy(msgs(&[message(1, 300)]));
    let env = Env::new();
    config(&env, &server, "tls = \"implicit\"\n");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("TLS with 127.0.0.1 failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("this port speaks plain POP3"),
        "{}",
        run.stderr
    );
    assert_eq!(server.remaining().len(), 1);
}

#[test]
fn a_greeting_that_never_comes_times_out() {
    // Accepts and says nothing, for longer than the account's timeout.
    let server = Server::start(
        Vec::new(),
        Script {
            greeting: Greeting::Silent,
            ..Script::default()
        },
    );
    let env = Env::new();
    config(&env, &server, "timeout = \"1s\"\n");
    let t = Instant::now();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("timed out after 1s waiting for the server's greeting"),
        "{}",
        run.stderr
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the timeout was not applied"
    );
    assert_eq!(
        server.log().sessions.len(),
        1,
        "one connection, held silent"
    );
}

#[test]
fn connection_refused_is_reported_per_account_and_others_go_on() {
    let server = Server::healthy(msgs(&[message(1, 300)]));
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::new();
    env.write_config(&format!(
        "[defaults]\nhost = \"127.0.0.1\"\ntls = \"none\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
         auth = \"user\"\nallow_plaintext_auth = true\n\
         deliver = {{ maildir = \"{}\" }}\n\n\
         [[account]]\nname = \"down\"\nport = {closed_port}\n\n\
         [[account]]\nname = \"up\"\nport = {}\n",
        env.maildir().display(),
        server.port()
    ));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("account down: cannot connect to 127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("up: 1 new message delivered"),
        "{}",
        run.stdout
    );
    assert!(server.remaining().is_empty());
}
