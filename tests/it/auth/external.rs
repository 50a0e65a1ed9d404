//! `auth = "external"`: an account that logs in with its TLS client certificate alone (SASL
//! EXTERNAL, RFC 4422 appendix A), against a Dovecot that takes the user from the
//! certificate's commonName and has no password for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dovecot::{Dovecot, Options};
use crate::harness::{Env, message};
use crate::support::config::Account;

/// A Dovecot offering EXTERNAL; `alice` (the CN of [`Dovecot::client_cert`]) has a mailbox and
/// no password.
fn external_server() -> Dovecot {
    let d = Dovecot::start_with(Options {
        external: true,
        ..Options::default()
    });
    d.add_mailbox("alice");
    d
}

/// The account on `d` with the certificate and key and no password.
fn with_cert(a: Account, cert: &Path, key: &Path, env: &Env) -> Account {
    a.without("password")
        .text("tls_client_cert", cert.display())
        .text("tls_client_key", key.display())
        .maildir(&env.maildir())
}

/// Logins Dovecot logged as successful for `alice` with EXTERNAL.
fn external_logins(d: &Dovecot) -> usize {
    d.log()
        .lines()
        .filter(|l| l.contains("Login: user=<alice>") && l.contains("method=EXTERNAL"))
        .count()
}

#[test]
fn a_client_certificate_alone_logs_in_with_external_over_implicit_tls_and_stls() {
    crate::peers::require_peers!("dovecot", "openssl");
    let d = external_server();
    let env = Env::new();
    let (cert, key) = d.client_cert();
    d.deliver("alice", &message(1, 300));
    env.write_config(
        &with_cert(Account::dovecot(&d), &cert, &key, &env)
            .text("auth", "external")
            .to_toml(),
    );
    // `check` finds nothing wrong with a password-less account.
    env.popfetch(&["check"]).assert_code(0);
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(env.delivered().len(), 1, "{}", run.stderr);
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(external_logins(&d), 1, "{}", d.log());
    // Over STLS, with `auth` left at `auto`: a certificate and no password means EXTERNAL.
    d.deliver("alice", &message(2, 300));
    env.write_config(
        &with_cert(
            Account::dovecot(&d)
                .set("port", d.pop3_port())
                .text("tls", "starttls"),
            &cert,
            &key,
            &env,
        )
        .to_toml(),
    );
    let run = env.popfetch(&["fetch", "-v"]);
    run.assert_code(0);
    assert_eq!(env.delivered().len(), 2, "{}", run.stderr);
    assert_eq!(external_logins(&d), 2, "{}", d.log());
    // `check --connect` logs in the same way and says how.
    let run = env.popfetch(&["check", "--connect"]);
    run.assert_code(0);
    assert!(run.stdout.contains("EXTERNAL"), "{}", run.stdout);
}

/// A certificate with CN `alice` that no CA the server trusts has signed, and its key (0600).
fn untrusted_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("stranger.pem"), dir.join("stranger.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=alice", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (cert, key)
}

#[test]
fn a_certificate_the_server_does_not_trust_is_refused_and_nothing_is_deleted() {
    crate::peers::require_peers!("dovecot", "openssl");
    let d = external_server();
    let env = Env::new();
    let (cert, key) = untrusted_cert(env.path());
    d.deliver("alice", &message(1, 300));
    env.write_config(
        &with_cert(Account::dovecot(&d), &cert, &key, &env)
            .text("auth", "external")
            .to_toml(),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("answered AUTH with -ERR [AUTH]"),
        "{}",
        run.stderr
    );
    assert!(env.delivered().is_empty());
    assert_eq!(d.message_count("alice"), 1);
    assert_eq!(external_logins(&d), 0, "{}", d.log());
}

#[test]
fn a_server_that_does_not_offer_external_is_not_asked() {
    crate::peers::require_peers!("dovecot", "openssl");
    // A client certificate is required, but only password mechanisms are offered.
    let d = Dovecot::start_with(Options {
        client_cert: true,
        ..Options::default()
    });
    d.add_user("alice", "pw");
    d.deliver("alice", &message(1, 300));
    let env = Env::new();
    let (cert, key) = d.client_cert();
    env.write_config(
        &with_cert(Account::dovecot(&d), &cert, &key, &env)
            .text("auth", "external")
            .to_toml(),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("the server does not offer EXTERNAL (it offers SASL: PLAIN LOGIN CRAM-MD5"),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count("alice"), 1);
    // No AUTH reached the server: Dovecot logged no attempt at all.
    let log = d.log();
    assert!(
        !log.contains("user=<alice>") && !log.contains("auth failed"),
        "{log}"
    );
}

#[test]
fn check_says_what_auth_external_lacks() {
    let env = Env::new();
    let cert = env.path().join("c.pem");
    let key = env.path().join("c.key");
    let base = || {
        Account::new("pop.example.org", 995)
            .user("alice")
            .maildir(&env.maildir())
            .text("auth", "external")
    };
    // No certificate.
    env.write_config(&base().to_toml());
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("tls_client_cert")
            && run
                .stderr
                .contains("logs in with the TLS client certificate"),
        "{}",
        run.stderr
    );
    let with_cert = || {
        base()
            .text("tls_client_cert", cert.display())
            .text("tls_client_key", key.display())
    };
    // No TLS.
    env.write_config(&with_cert().text("tls", "none").set("port", 110).to_toml());
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("`tls`") && run.stderr.contains("only a TLS connection carries"),
        "{}",
        run.stderr
    );
    // A password it would not use.
    env.write_config(&with_cert().password("pw").to_toml());
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("certificate alone") && run.stderr.contains("remove the password"),
        "{}",
        run.stderr
    );
    // Without `auth = "external"` and without a certificate, the missing password names both
    // ways in.
    env.write_config(&base().without("auth").to_toml());
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("no password") && run.stderr.contains("auth = \"external\""),
        "{}",
        run.stderr
    );
}
