//! TLS as mail administrators need it. `tls_fingerprint`: a server known by its certificate's
//! or its public key's SHA-256 instead of by a CA; the private Dovecot serves a self-issued
//! certificate, so without the pin nothing vouches for it. `tls_min_version`, client
//! certificates, and the warning before a certificate ends.

use std::path::Path;
use std::process::Command;

use crate::dovecot::Dovecot;
use crate::harness::{Env, message};
use crate::support::config::Account;

/// `openssl`'s SHA-256 of the certificate in `pem` and of its public key, as
/// `sha256:AB:…` and `spki-sha256:AB:…`.
fn fingerprints(pem: &Path) -> (String, String) {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let cert = text.trim().rsplit('=').next().unwrap().to_string();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -noout -pubkey -in {} | openssl pkey -pubin -outform der | openssl dgst -sha256 -r",
            pem.display()
        ))
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap().to_ascii_uppercase();
    let spki = hex
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    (format!("sha256:{cert}"), format!("spki-sha256:{spki}"))
}

/// Call after `require_peers!("dovecot", "openssl")`.
fn setup() -> (Dovecot, Env, String, String) {
    let d = Dovecot::start_with(crate::dovecot::Options {
        self_signed_days: Some(3650),
        ..crate::dovecot::Options::default()
    });
    d.add_user("alice", "pw");
    let server_pem = d.ca_file().with_file_name("server.pem");
    let (cert, spki) = fingerprints(&server_pem);
    (d, Env::new(), cert, spki)
}

/// The account on `d`'s implicit-TLS port with no `ca_file`, pinned by `pins` (TOML strings).
fn pinned(d: &Dovecot, env: &Env, pins: &[&str]) -> String {
    let list = pins
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Account::dovecot(d)
        .without("ca_file")
        .set("tls_fingerprint", format_args!("[{list}]"))
        .maildir(&env.maildir())
        .to_toml()
}

#[test]
fn a_pinned_certificate_or_public_key_is_trusted_without_a_ca() {
    crate::peers::require_peers!("dovecot", "openssl");
    let (d, env, cert, spki) = setup();
    // Without a pin or a CA: refused (the chain leads to no trusted CA).
    env.write_config(
        &Account::dovecot(&d)
            .without("ca_file")
            .maildir(&env.maildir())
            .to_toml(),
    );
    d.deliver("alice", &message(1, 300));
    env.popfetch(&["fetch"]).assert_code(1);
    assert_eq!(d.message_count("alice"), 1);
    // Pinned by the certificate, in the form openssl prints it.
    env.write_config(&pinned(&d, &env, &[&cert]));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(env.delivered().len(), 1, "{}", run.stderr);
    // By the public key, lower case and without colons, and beside a stale pin (rotation).
    d.deliver("alice", &message(2, 300));
    let digits = spki.trim_start_matches("spki-sha256:").replace(':', "");
    let bare = format!("spki-sha256:{}", digits.to_ascii_lowercase());
    let stale = format!("sha256:{}", "AB".repeat(32));
    env.write_config(&pinned(&d, &env, &[&stale, &bare]));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(env.delivered().len(), 2, "{}", run.stderr);
}

#[test]
fn a_wrong_pin_ends_the_session_before_any_credential_and_shows_what_the_server_presented() {
    crate::peers::require_peers!("dovecot", "openssl");
    let (d, env, cert, spki) = setup();
    d.deliver("alice", &message(1, 300));
    let wrong = format!("spki-sha256:{}", "01".repeat(32));
    env.write_config(&pinned(&d, &env, &[&wrong]));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("matches no tls_fingerprint")
            && run.stderr.contains(&cert)
            && run.stderr.contains(&spki),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count("alice"), 1);
    // Dovecot saw no login attempt: the session ended at the handshake.
    let log = d.log();
    assert!(!log.contains("user=<alice>"), "{log}");
    // Over STLS the same.
    env.write_config(
        &Account::dovecot(&d)
            .without("ca_file")
            .set("port", d.pop3_port())
            .text("tls", "starttls")
            .set("tls_fingerprint", format_args!("[{wrong:?}]"))
            .maildir(&env.maildir())
            .to_toml(),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("matches no tls_fingerprint"),
        "{}",
        run.stderr
    );
    assert!(!d.log().contains("user=<alice>"), "{}", d.log());
}

#[test]
fn a_fingerprint_that_is_not_one_is_a_config_error_with_an_example() {
    crate::peers::require_peers!("dovecot", "openssl");
    let (d, env, _, _) = setup();
    env.write_config(&pinned(&d, &env, &["md5:00:11"]));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("tls_fingerprint") && run.stderr.contains("spki-sha256:"),
        "{}",
        run.stderr
    );
    env.write_config(&pinned(&d, &env, &["sha256:00:11"]));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("64 hexadecimal digits"),
        "{}",
        run.stderr
    );
}

/// `openssl s_server` limited to TLS 1.2, with a throw-away certificate for `localhost`.
struct Tls12Server {
    child: std::process::Child,
    port: u16,
    cert: std::path::PathBuf,
}

impl Tls12Server {
    fn start(dir: &Path) -> Tls12Server {
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "openssl req");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-tls1_2", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < until, "s_server did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Tls12Server { child, port, cert }
    }
}

impl Drop for Tls12Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tls_min_version_1_3_refuses_a_server_limited_to_1_2() {
    crate::peers::require_peers!("openssl");
    let env = Env::new();
    let server = Tls12Server::start(env.path());
    let config = |min: &str| {
        Account::new("localhost", server.port)
            .user("alice")
            .password("pw")
            .text("ca_file", server.cert.display())
            .text("tls_min_version", min)
            .text("timeout", "2s")
            .maildir(&env.maildir())
            .to_toml()
    };
    env.write_config(&config("1.3"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("TLS with localhost failed")
            && (run.stderr.contains("protocol version")
                || run.stderr.contains("unsupported protocol")),
        "{}",
        run.stderr
    );
    // At 1.2 the handshake is made: what fails then is the (absent) POP3 greeting.
    env.write_config(&config("1.2"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(!run.stderr.contains("TLS with"), "{}", run.stderr);
    // An unknown version is a config error.
    env.write_config(&config("1.1"));
    env.popfetch(&["check"]).assert_code(2);
}

#[test]
fn a_certificate_ending_within_tls_expiry_warning_is_warned_of_once_a_day() {
    crate::peers::require_peers!("dovecot", "openssl");
    // A self-issued certificate made to end in five days, pinned; the default warning (14
    // days) covers it.
    let d = Dovecot::start_with(crate::dovecot::Options {
        self_signed_days: Some(5),
        ..crate::dovecot::Options::default()
    });
    d.add_user("alice", "pw");
    let (cert, _) = fingerprints(&d.ca_file().with_file_name("server.pem"));
    let env = Env::new();
    env.write_config(&pinned(&d, &env, &[&cert]));
    let first = env.popfetch(&["fetch"]);
    first.assert_code(0);
    assert!(
        first
            .stderr
            .contains("account alice: the certificate of localhost ends in 4 days (")
            || first
                .stderr
                .contains("account alice: the certificate of localhost ends in 5 days ("),
        "{}",
        first.stderr
    );
    // Once a day: the next poll says nothing.
    let second = env.popfetch(&["fetch"]);
    second.assert_code(0);
    assert!(!second.stderr.contains("certificate"), "{}", second.stderr);
    let status = env.popfetch(&["status"]);
    assert!(
        status.stdout.contains("  certificate:    ends ")
            && status.stdout.contains("days left: soon, renew it)"),
        "{}",
        status.stdout
    );
    let json = env.popfetch(&["status", "--json"]);
    assert!(
        json.stdout.contains("\"tls_not_after\": "),
        "{}",
        json.stdout
    );
    // A shorter warning period: no word.
    env.write_config(&format!(
        "{}tls_expiry_warning = \"2d\"\n",
        pinned(&d, &env, &[&cert])
    ));
    let quiet = env.popfetch(&["fetch"]);
    quiet.assert_code(0);
    assert!(!quiet.stderr.contains("certificate"), "{}", quiet.stderr);
}

#[test]
fn a_server_that_requires_a_client_certificate_gets_one_when_configured() {
    crate::peers::require_peers!("dovecot", "openssl");
    let d = Dovecot::start_with(crate::dovecot::Options {
        client_cert: true,
        ..crate::dovecot::Options::default()
    });
    d.add_user("alice", "pw");
    d.deliver("alice", &message(1, 300));
    let env = Env::new();
    // Without a certificate: Dovecot refuses the login.
    env.write_config(&Account::dovecot(&d).maildir(&env.maildir()).to_toml());
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert_eq!(d.message_count("alice"), 1);
    // With one, over implicit TLS and over STLS.
    let (cert, key) = d.client_cert();
    let with = |a: Account| {
        a.text("tls_client_cert", cert.display())
            .text("tls_client_key", key.display())
            .maildir(&env.maildir())
            .to_toml()
    };
    env.write_config(&with(Account::dovecot(&d)));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(env.delivered().len(), 1, "{}", run.stderr);
    d.deliver("alice", &message(2, 300));
    env.write_config(&with(
        Account::dovecot(&d)
            .set("port", d.pop3_port())
            .text("tls", "starttls"),
    ));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(env.delivered().len(), 2, "{}", run.stderr);
    // A key others may read is refused like any secret file.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(run.stderr.contains("tls_client_key"), "{}", run.stderr);
}
