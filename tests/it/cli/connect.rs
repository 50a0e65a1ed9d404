//! `popfetch check --connect` against a private Dovecot (clear text, STLS, implicit TLS) and
//! the scripted server: what it prints, and proof that it retrieves, deletes and writes
//! nothing. Also the hints for a TLS mode that does not match the port, through `fetch`.

use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::{Env, run_bounded};
use crate::pop3_server::{Greeting, Script, Server};
use crate::support::config::Account;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

fn start() -> Dovecot {
    let d = Dovecot::start();
    d.add_user(USER, PASSWORD);
    d
}

fn dovecot_account(d: &Dovecot, env: &Env, tls: &str, port: u16) -> String {
    Account::dovecot(d)
        .set("port", port)
        .text("tls", tls)
        .user(USER)
        .password(PASSWORD)
        .maildir(&env.maildir())
        .set("timeout", "\"30s\"")
        .to_toml()
}

/// `tls = "implicit"` on the clear-text port: the handshake meets Dovecot's greeting.
#[test]
fn implicit_tls_on_a_plain_port_says_the_port_speaks_plain_pop3() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    let env = Env::new();
    env.write_config(&dovecot_account(&d, &env, "implicit", d.pop3_port()));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains(
            "this port speaks plain POP3: use tls = \"starttls\" or the POP3S port (995)"
        ),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("ssl3_get_record"), "{}", run.stderr);
}

/// `tls = "starttls"` on the implicit-TLS port: Dovecot waits for a ClientHello and never
/// greets. The hint comes after a few seconds, not after the 30 s timeout.
#[test]
fn starttls_on_an_implicit_tls_port_says_the_port_expects_tls_without_the_whole_timeout() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    let env = Env::new();
    for tls in ["starttls", "none"] {
        let mut acct = dovecot_account(&d, &env, tls, d.pop3s_port());
        if tls == "none" {
            acct.push_str("allow_plaintext_auth = true\n");
        }
        env.write_config(&acct);
        let started = Instant::now();
        let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
        let took = started.elapsed();
        run.assert_code(1);
        assert!(
            run.stderr
                .contains("this port expects implicit TLS: use tls = \"implicit\""),
            "{tls}: {}",
            run.stderr
        );
        assert!(took < Duration::from_secs(15), "{tls}: took {took:?}");
    }
}

/// A clear-text server that says nothing is not taken for a TLS port: the question over a
/// second connection gets no TLS answer, and the wait is the whole timeout, as before.
#[test]
fn a_silent_server_is_not_taken_for_a_tls_port() {
    let server = Server::start(
        Vec::new(),
        Script {
            greeting: Greeting::Silent,
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(
        &Account::scripted(&server)
            .set("timeout", "\"7s\"")
            .maildir(&env.maildir())
            .to_toml(),
    );
    let started = Instant::now();
    let run = run_bounded(env.command(&["fetch"]), Duration::from_secs(30));
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("timed out after 7s waiting for the server's greeting"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("implicit TLS"), "{}", run.stderr);
    assert!(started.elapsed() >= Duration::from_secs(7));
}
