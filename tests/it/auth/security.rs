//! Security properties: certificates are checked (wrong name, expired, self-signed: refused with
//! a hint), a password never reaches a log at any level, files popfetch creates are private, and
//! files others may write are refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::{Dovecot, Options};
use crate::harness::{Env, message};

const SECRET: &str = "S3cr3t-Pa55w0rd-Never-Logged";

/// A self-signed certificate for localhost with the given validity, made with `openssl ca`.
fn certificate(dir: &Path, start: &str, end: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndir = .\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.pem",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "ca",
        "-config",
        "ca.cnf",
        "-selfsign",
        "-keyfile",
        "key.pem",
        "-in",
        "req.pem",
        "-out",
        "cert.pem",
        "-startdate",
        start,
        "-enddate",
        end,
        "-batch",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A bare TLS endpoint (`openssl s_server`) with that certificate, on a free port.
fn tls_server(cert: &Path, key: &Path) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
        ])
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn tls_account(env: &Env, port: u16, extra: &str) {
    env.write_config(&format!(
        "[[account]]\nname = \"a\"\nhost = \"localhost\"\nport = {port}\nuser = \"u\"\n\
         password = \"pw\"\ntimeout = \"5s\"\ndeliver = {{ maildir = \"{}\" }}\n{extra}",
        env.maildir().display()
    ));
}

#[test]
fn expired_and_self_signed_certificates_are_refused_with_a_hint() {
    crate::peers::require_peers!("openssl");
    let env = Env::new();
    let dir = env.path().join("expired");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = certificate(&dir, "20200101000000Z", "20200201000000Z");
    let (mut server, port) = tls_server(&cert, &key);
    tls_account(&env, port, &format!("ca_file = \"{}\"\n", cert.display()));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("certificate has expired"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("its administrator must renew it"),
        "{}",
        run.stderr
    );
    let _ = server.kill();

    let dir = env.path().join("self");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = certificate(&dir, "20200101000000Z", "20991231000000Z");
    let (mut server, port) = tls_server(&cert, &key);
    tls_account(&env, port, "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("self-signed") || run.stderr.contains("self signed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("set `ca_file`"), "{}", run.stderr);
    let _ = server.kill();
}

#[test]
fn wrong_host_name_is_refused_with_a_hint() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("u", "pw");
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"a\"\nhost = \"{}\"\nport = {}\nca_file = \"{}\"\nuser = \"u\"\n\
         password = \"pw\"\ndeliver = {{ maildir = \"{}\" }}\n",
        d.insecure_host(),
        d.pop3s_port(),
        d.ca_file().display(),
        env.maildir().display()
    ));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("does not name this host"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_password_never_reaches_a_trace_log() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start_with(Options {
        apop: true,
        ..Options::default()
    });
    d.add_user("u", SECRET);
    let env = Env::new();
    let encodings = [
        SECRET.to_string(),
        // What PLAIN and LOGIN put on the wire.
        base64(&format!("\0u\0{SECRET}")),
        base64(SECRET),
    ];
    for (auth, password) in [
        ("user", SECRET),
        ("plain", SECRET),
        ("login", SECRET),
        ("cram-md5", SECRET),
        ("apop", SECRET),
        ("auto", SECRET),
        ("plain", "wrong-but-also-secret"),
        ("cram-md5", "wrong-but-also-secret"),
    ] {
        d.deliver("u", &message(1, 200));
        env.write_config(&format!(
            "[[account]]\nname = \"a\"\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\n\
             ca_file = \"{}\"\nuser = \"u\"\npassword = \"{password}\"\nauth = \"{auth}\"\n\
             deliver = {{ maildir = \"{}\" }}\n",
            d.pop3_port(),
            d.ca_file().display(),
            env.maildir().display()
        ));
        let run = env
            .command(&["fetch"])
            .env("POPFETCH_LOG", "trace")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&run.stderr).into_owned()
            + &String::from_utf8_lossy(&run.stdout);
        assert!(log.contains("TRACE"), "trace level was not on: {log}");
        for secret in encodings.iter().map(String::as_str).chain([password]) {
            assert!(
                !log.contains(secret),
                "{auth}: the log holds {secret:?}:\n{log}"
            );
        }
    }
}

fn base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

#[test]
fn files_popfetch_creates_are_private() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("u", "pw");
    d.deliver("u", &message(1, 200));
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"a\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\nuser = \"u\"\n\
         password = \"pw\"\nkeep = true\ndeliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        env.maildir().display()
    ));
    env.popfetch(&["fetch"]).assert_code(0);
    let state = env.path().join("state");
    assert_eq!(mode(&state), 0o700);
    // The journal and its lock are named after the mailbox, the status after the account.
    let mailbox = format!("u@localhost:{}", d.pop3s_port());
    for f in [
        format!("{mailbox}.uidls"),
        format!("{mailbox}.lock"),
        "a.status".to_string(),
    ] {
        assert_eq!(mode(&state.join(&f)), 0o600, "{f}");
    }
    for sub in ["", "tmp", "new", "cur"] {
        assert_eq!(mode(&env.maildir().join(sub)), 0o700, "Maildir/{sub}");
    }
    for e in std::fs::read_dir(env.maildir().join("new")).unwrap() {
        assert_eq!(mode(&e.unwrap().path()), 0o600);
    }
}

#[test]
fn files_others_may_write_are_refused() {
    let env = Env::new();
    let pw = env.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    env.write_config(&format!(
        "[[account]]\nname = \"a\"\nhost = \"localhost\"\nport = 1\nuser = \"u\"\n\
         password_file = \"{}\"\ndeliver = {{ maildir = \"{}\" }}\n",
        pw.display(),
        env.maildir().display()
    ));
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o646)).unwrap();
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("writable by group or others"),
        "{}",
        run.stderr
    );
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o666)).unwrap();
    // Refused when the config is loaded: `check` and `fetch` alike.
    let run = env.popfetch(&["fetch"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("writable by group or others"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("chmod go-w"), "{}", run.stderr);
}

/// Without `ca_file` the system's trust store decides (OpenSSL's default locations, which
/// `SSL_CERT_FILE` overrides); with one, only the CAs in it are trusted, even when the system
/// store would accept the server.
#[test]
fn system_trust_store_without_ca_file_and_only_the_ca_file_with_one() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("u", "pw");
    d.deliver("u", &message(1, 500));
    let env = Env::new();
    let other = env.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (other_ca, _) = certificate(&other, "20200101000000Z", "20991231000000Z");
    let config = |extra: &str| {
        env.write_config(&format!(
            "[[account]]\nname = \"a\"\nhost = \"localhost\"\nport = {}\nuser = \"u\"\n\
             password = \"pw\"\nkeep = true\ndeliver = {{ maildir = \"{}\" }}\n{extra}",
            d.pop3s_port(),
            env.maildir().display()
        ));
    };
    let fetch = |system_ca: Option<&Path>| {
        let mut c = env.command(&["fetch"]);
        match system_ca {
            Some(ca) => c.env("SSL_CERT_FILE", ca),
            None => c
                .env("SSL_CERT_FILE", "/nonexistent")
                .env("SSL_CERT_DIR", "/nonexistent"),
        };
        c.output().unwrap()
    };

    // No ca_file, and the system store does not know the test CA: refused with the hint.
    config("");
    let out = fetch(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set `ca_file`"));
    // No ca_file, and the system store trusts the test CA: accepted.
    let out = fetch(Some(d.ca_file()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.delivered().len(), 1);
    // A ca_file of another CA: refused, although the system store would accept the server.
    config(&format!("ca_file = \"{}\"\n", other_ca.display()));
    let out = fetch(Some(d.ca_file()));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
    // The right ca_file with an empty system store: accepted.
    config(&format!("ca_file = \"{}\"\n", d.ca_file().display()));
    let out = fetch(None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 14 item 2: every certificate of a `ca_file` bundle counts, not only the first.
#[test]
fn issue14_2_pop3_trusts_a_ca_second_in_ca_file() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("u", "pw");
    d.deliver("u", &message(1, 500));
    let env = Env::new();
    let bundle = crate::deliver::issue13_edge::bundle_with_ca_second(env.path(), d.ca_file());
    env.write_config(&format!(
        "[[account]]\nname = \"a\"\nhost = \"localhost\"\nport = {}\nuser = \"u\"\n\
         password = \"pw\"\nca_file = \"{}\"\ndeliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        bundle.display(),
        env.maildir().display()
    ));
    let out = env
        .command(&["fetch"])
        .env("SSL_CERT_FILE", "/nonexistent")
        .env("SSL_CERT_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.delivered().len(), 1);
}
