//! `popfetch fetch` against servers Dovecot will not imitate: one without UIDL, one without STLS,
//! one that never greets. The in-process demo server and bare sockets play them.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use popfetch::demo::{DemoServer, Mailbox};

use crate::harness::{Env, expected, message};
use crate::support::config::Account;

struct Scripted {
    rt: tokio::runtime::Runtime,
    server: DemoServer,
}

fn demo(without_uidl: bool, messages: Vec<Vec<u8>>) -> Scripted {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(DemoServer::start(Mailbox {
            user: "alice".into(),
            password: "pw".into(),
            messages,
            without_uidl,
        }))
        .unwrap();
    Scripted { rt, server }
}

/// An account on 127.0.0.1:`port`; `extra` may set `tls` (default "none") and `timeout`
/// (default "2s").
fn config(env: &Env, port: u16, extra: &str) {
    let account = Account::new("127.0.0.1", port)
        .user("alice")
        .password("pw")
        .maildir(&env.maildir())
        .text("tls", "none")
        .text("timeout", "2s")
        .extra(extra);
    env.write_config(&account.to_toml());
}

#[test]
fn server_without_uidl_fetch_all_and_delete_works_keep_is_refused() {
    let msgs = vec![message(1, 300), message(2, 300)];
    let s = demo(true, msgs.clone());
    let env = Env::new();
    let port = s.server.addr().port();

    config(&env, port, "keep = true\n");
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
    assert_eq!(s.server.remaining().len(), 2, "nothing deleted");
    assert!(env.delivered().is_empty());

    config(&env, port, "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("2 new messages delivered"),
        "{}",
        run.stdout
    );
    assert!(s.server.remaining().is_empty());
    let mut got = env.delivered();
    got.sort();
    let mut want: Vec<_> = msgs.iter().map(|m| expected(m)).collect();
    want.sort();
    assert_eq!(got, want);
    drop(s.rt);
}

#[test]
fn starttls_without_stls_offered_fails_and_never_continues_in_clear() {
    let s = demo(false, vec![message(1, 300)]);
    let env = Env::new();
    config(&env, s.server.addr().port(), "tls = \"starttls\"\n");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("does not offer STLS"), "{}", run.stderr);
    assert_eq!(s.server.remaining().len(), 1);
    assert_eq!(s.server.sessions(), 0, "it never logged in");
}

#[test]
fn implicit_tls_against_a_clear_text_server_fails_cleanly() {
    let s = demo(false, vec![message(1, 300)]);
    let env = Env::new();
    config(&env, s.server.addr().port(), "tls = \"implicit\"\n");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("TLS with 127.0.0.1 failed"),
        "{}",
        run.stderr
    );
    assert_eq!(s.server.remaining().len(), 1);
}

#[test]
fn a_greeting_that_never_comes_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and say nothing, for longer than the account's timeout.
    let silent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(4));
        drop(conn);
    });
    let env = Env::new();
    config(&env, port, "timeout = \"1s\"\n");
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
    silent.join().unwrap();
}

#[test]
fn connection_refused_is_reported_per_account_and_others_go_on() {
    let s = demo(false, vec![message(1, 300)]);
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::new();
    env.write_config(&format!(
        "[defaults]\nhost = \"127.0.0.1\"\ntls = \"none\"\nuser = \"alice\"\npassword = \"pw\"\n\
         deliver = {{ maildir = \"{}\" }}\n\n\
         [[account]]\nname = \"down\"\nport = {closed_port}\n\n\
         [[account]]\nname = \"up\"\nport = {}\n",
        env.maildir().display(),
        s.server.addr().port()
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
    assert!(s.server.remaining().is_empty());
}
