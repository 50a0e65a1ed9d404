//! OAuth2 logins end to end: the scripted server for the exchanges a test must steer (both
//! mechanisms inline and in two steps, a 5 KB token, the failure challenge, a token source that
//! fails before any connection), and the real Dovecot with an OAuth2 passdb for the rest.

use crate::auth::oauth_peer::start_dovecot_with_oauth;
use crate::dovecot::Dovecot;
use crate::harness::{Env, expected, message};
use crate::pop3_server::{Msg, Script, Server};
use crate::support::config::Account;

fn server(token: &str) -> Server {
    Server::start(
        vec![Msg::new(message(1, 800), "uidl-1")],
        Script {
            oauth_token: Some(token.to_string()),
            ..Script::default()
        },
    )
}

/// An account on the scripted server whose token comes from `command` (TOML array text).
fn config(env: &Env, server: &Server, auth: &str, command: &str) {
    let account = Account::scripted(server)
        .without("password")
        .text("timeout", "5s")
        .text("auth", auth)
        .set("oauth2_token_command", command)
        .maildir(&env.maildir());
    env.write_config(&account.to_toml());
}

/// The session's command log lines that concern the login.
fn auth_log(server: &Server) -> Vec<String> {
    server
        .log()
        .sessions
        .iter()
        .flatten()
        .filter(|l| l.starts_with("AUTH") || l.starts_with('<'))
        .cloned()
        .collect()
}

#[test]
fn both_mechanisms_send_the_token_inline_when_it_fits() {
    for (auth, mech) in [("xoauth2", "XOAUTH2"), ("oauthbearer", "OAUTHBEARER")] {
        let s = server("ya29.short-token");
        let env = Env::new();
        config(&env, &s, auth, "[\"printf\", \"ya29.short-token\"]");
        let run = env.popfetch(&["fetch"]);
        run.assert_code(0);
        assert_eq!(env.delivered(), vec![expected(&message(1, 800))], "{auth}");
        let log = auth_log(&s);
        assert_eq!(log.len(), 1, "{auth}: {log:?}");
        assert!(
            log[0].starts_with(&format!("AUTH {mech} <initial response")),
            "{log:?}"
        );
        assert!(s.remaining().is_empty(), "{auth}: delivered and deleted");
    }
}

#[test]
fn auto_prefers_oauthbearer_when_a_token_source_is_set() {
    let s = server("tok");
    let env = Env::new();
    config(&env, &s, "auto", "[\"printf\", \"tok\"]");
    env.popfetch(&["fetch"]).assert_code(0);
    assert!(auth_log(&s)[0].starts_with("AUTH OAUTHBEARER "));
}

#[test]
fn a_5kb_token_goes_in_a_second_step() {
    // RFC 5034 §4: a command over 255 octets must not carry the initial response.
    let token = "t".repeat(5 * 1024);
    for (auth, mech) in [("xoauth2", "XOAUTH2"), ("oauthbearer", "OAUTHBEARER")] {
        let s = server(&token);
        let env = Env::new();
        std::fs::write(env.path().join("token"), &token).unwrap();
        config(
            &env,
            &s,
            auth,
            &format!("[\"cat\", \"{}\"]", env.path().join("token").display()),
        );
        let run = env.popfetch(&["fetch"]);
        run.assert_code(0);
        assert_eq!(env.delivered().len(), 1, "{auth}: {}", run.stderr);
        let log = auth_log(&s);
        assert_eq!(log[0], format!("AUTH {mech}"), "{log:?}");
        let octets: usize = log[1]
            .trim_start_matches("<response, ")
            .trim_end_matches(" octets>")
            .parse()
            .unwrap();
        assert!(octets > 5 * 1024 * 4 / 3, "{log:?}");
        assert!(!run.stderr.contains(&token[..64]));
    }
}

#[test]
fn a_rejected_token_gets_the_failure_challenge_answered_and_reported() {
    for (auth, mech) in [("xoauth2", "XOAUTH2"), ("oauthbearer", "OAUTHBEARER")] {
        let s = server("the-right-token");
        let env = Env::new();
        config(&env, &s, auth, "[\"printf\", \"a-stale-token\"]");
        let run = env.popfetch(&["fetch"]);
        run.assert_code(1);
        let log = auth_log(&s);
        assert_eq!(log.len(), 2, "{auth}: {log:?}");
        assert!(log[0].starts_with(&format!("AUTH {mech} ")));
        assert_eq!(log[1], "<abort as required>", "{auth}");
        assert!(
            run.stderr.contains(
                "token rejected: status 401, scope https://mail.example.test/pop, schemes bearer"
            ),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("[AUTH]"), "{}", run.stderr);
        assert!(!run.stderr.contains("a-stale-token"), "{}", run.stderr);
        assert!(env.delivered().is_empty());
        assert_eq!(s.remaining().len(), 1, "nothing deleted");
    }
}

#[test]
fn a_failing_token_command_stops_before_any_connection() {
    for (command, want) in [
        (
            "[\"sh\", \"-c\", \"echo token service down >&2; exit 3\"]",
            "token service down",
        ),
        ("[\"true\"]", "no token"),
        (
            "[\"/nonexistent/token-helper\"]",
            "/nonexistent/token-helper",
        ),
    ] {
        let s = server("tok");
        let env = Env::new();
        config(&env, &s, "xoauth2", command);
        let run = env.popfetch(&["fetch"]);
        run.assert_code(1);
        assert!(
            run.stderr.contains("oauth2_token_command"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(want), "{command}: {}", run.stderr);
        assert!(
            s.log().sessions.is_empty(),
            "{command}: connected although there was no token"
        );
    }
}

/// An account on Dovecot's implicit-TLS port, logging in with `auth` and a token from a file.
fn dovecot_config(env: &Env, d: &Dovecot, auth: &str, token_file: &std::path::Path) {
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"alice\"\nauth = \"{auth}\"\noauth2_token_command = [\"cat\", \"{}\"]\n\
         deliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        token_file.display(),
        env.maildir().display()
    ));
}

#[test]
fn dovecot_with_an_oauth2_passdb_accepts_both_mechanisms() {
    crate::peers::require_peers!("dovecot");
    let (d, endpoint) =
        start_dovecot_with_oauth(&[("tok-xoauth2", "alice"), ("tok-bearer", "alice")]);
    d.add_mailbox("alice");
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| message(i, 2000)).collect();
    for (auth, token) in [
        ("xoauth2", "tok-xoauth2"),
        ("oauthbearer", "tok-bearer"),
        ("auto", "tok-bearer"),
    ] {
        d.deliver_many("alice", msgs.clone());
        let env = Env::new();
        let token_file = env.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        dovecot_config(&env, &d, auth, &token_file);
        let run = env.popfetch(&["fetch"]);
        run.assert_code(0);
        let mut got = env.delivered();
        got.sort();
        let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
        want.sort();
        assert_eq!(got, want, "{auth}: {}", run.stderr);
        assert_eq!(d.message_count("alice"), 0, "{auth}");
        assert!(endpoint.tokens_seen().iter().any(|t| t == token), "{auth}");
    }
}

#[test]
fn dovecot_refuses_a_revoked_token_and_nothing_is_deleted() {
    crate::peers::require_peers!("dovecot");
    let (d, endpoint) = start_dovecot_with_oauth(&[("tok", "alice")]);
    d.add_mailbox("alice");
    d.deliver("alice", &message(1, 1000));
    endpoint.revoke("tok");
    for auth in ["xoauth2", "oauthbearer"] {
        let env = Env::new();
        let token_file = env.path().join("token");
        std::fs::write(&token_file, "tok").unwrap();
        dovecot_config(&env, &d, auth, &token_file);
        let run = env.popfetch(&["fetch"]);
        run.assert_code(1);
        assert!(
            run.stderr.contains("token rejected: status"),
            "{auth}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("tok\n"), "{}", run.stderr);
        assert!(env.delivered().is_empty());
        assert_eq!(d.message_count("alice"), 1);
    }
}
