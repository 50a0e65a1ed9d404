//! `popfetch check --connect` against a private Dovecot (clear text, STLS, implicit TLS) and
//! the scripted server: what it prints, and proof that it retrieves, deletes and writes
//! nothing. Also the hints for a TLS mode that does not match the port, through `fetch`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::{Env, message, run_bounded};
use crate::pop3_server::{Greeting, Msg, Script, Server};
use crate::support::config::Account;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

fn start() -> Dovecot {
    let d = Dovecot::start();
    d.add_user(USER, PASSWORD);
    d
}

fn dovecot_account(d: &Dovecot, env: &Env, tls: &str, port: u16) -> String {
    account_of(USER, d, env, tls, port)
}

fn account_of(user: &str, d: &Dovecot, env: &Env, tls: &str, port: u16) -> String {
    Account::dovecot(d)
        .set("port", port)
        .text("tls", tls)
        .user(user)
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
    for args in [&["fetch"][..], &["check", "--connect"]] {
        let run = env.popfetch(args);
        run.assert_code(1);
        assert!(
            run.stderr.contains(
                "this port speaks plain POP3: use tls = \"starttls\" or the POP3S port (995)"
            ),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("ssl3_get_record"), "{}", run.stderr);
    }
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
        for args in [&["fetch"][..], &["check", "--connect"]] {
            let started = Instant::now();
            let run = run_bounded(env.command(args), Duration::from_secs(60));
            let took = started.elapsed();
            run.assert_code(1);
            assert!(
                run.stderr
                    .contains("this port expects implicit TLS: use tls = \"implicit\""),
                "{tls} {args:?}: {}",
                run.stderr
            );
            assert!(
                took < Duration::from_secs(15),
                "{tls} {args:?}: took {took:?}"
            );
        }
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

/// Every file under `dir` with its bytes and modification time (empty when `dir` is absent).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            } else {
                out.push((
                    e.path(),
                    std::fs::read(e.path()).unwrap_or_default(),
                    meta.modified().unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// The names of the messages in a Maildir (`new/` and `cur/`), flags included: Dovecot adds
/// `S` to a message that was retrieved.
fn maildir_names(maildir: &Path) -> Vec<String> {
    let mut v: Vec<String> = ["new", "cur"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(maildir.join(sub)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The base names of the messages (without the `:2,FLAGS` info) that carry the Seen flag.
fn seen(maildir: &Path) -> Vec<String> {
    maildir_names(maildir)
        .into_iter()
        .filter_map(|n| {
            let (base, info) = n.split_once(":2,")?;
            info.contains('S').then(|| base.to_string())
        })
        .collect()
}

/// The SHA-256 fingerprints of the server's certificate and of its public key, as the
/// `openssl` command line computes them, in popfetch's notation.
fn openssl_fingerprints(cert: &Path) -> (String, String) {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let cert_fp = text.trim().rsplit('=').next().unwrap().to_string();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -noout -pubkey -in \"$1\" | openssl pkey -pubin -outform DER \
             | openssl dgst -sha256 -hex -c",
        )
        .arg("sh")
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let spki = text.trim().rsplit(' ').next().unwrap().to_uppercase();
    (format!("sha256:{cert_fp}"), format!("spki-sha256:{spki}"))
}

/// Against Dovecot in each TLS mode: three messages fetched before with `keep = true`, two
/// arrived since. `check --connect` shows the certificate, the capabilities, the login method
/// and the counts, in text and in JSON, and leaves the server, its flags and the state as they
/// were.
#[test]
fn check_connect_shows_the_server_and_changes_nothing_in_every_tls_mode() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    for user in ["ivy", "stan", "nell"] {
        d.add_user(user, PASSWORD);
    }
    let sizes = [1500, 2500, 3500, 9000, 500];
    let server_cert = d.ca_file().with_file_name("server.pem");
    let (fingerprint, spki) = openssl_fingerprints(&server_cert);
    for (user, tls, port) in [
        ("ivy", "implicit", d.pop3s_port()),
        ("stan", "starttls", d.pop3_port()),
        ("nell", "none", d.pop3_port()),
    ] {
        let some = |range: std::ops::Range<usize>| -> Vec<Vec<u8>> {
            range.map(|i| message(i, sizes[i])).collect()
        };
        d.deliver_many(user, some(0..3));
        let env = Env::new();
        let mut acct = account_of(user, &d, &env, tls, port);
        acct.push_str("keep = true\n");
        if tls == "none" {
            acct.push_str("allow_plaintext_auth = true\n");
        }
        env.write_config(&acct);
        env.popfetch(&["fetch"]).assert_code(0);
        let maildir = d.maildir(user);
        // A poll that deleted nothing does not wait for QUIT's answer, so Dovecot may still be
        // flagging the three retrieved messages Seen when popfetch has exited: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen(&maildir).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            seen(&maildir).len(),
            3,
            "{tls}: the fetch's RETRs flag them Seen"
        );
        d.deliver_many(user, some(3..5));
        let state = env.path().join("state");
        let (count, names, flagged) = (
            d.message_count(user),
            maildir_names(&maildir),
            seen(&maildir),
        );
        let files = snapshot(&state);

        let run = env.popfetch(&["check", "--connect"]);
        run.assert_code(0);
        let text = &run.stdout;
        eprintln!("{tls}:\n{text}{}", run.stderr);
        assert!(
            text.starts_with(&format!("alice: localhost:{port}, tls = \"{tls}\"\n")),
            "{text}"
        );
        if tls == "none" {
            assert!(text.contains("tls:          none"), "{text}");
            assert!(!text.contains("fingerprint"), "{text}");
        } else {
            assert!(text.contains("certificate verified"), "{text}");
            assert!(text.contains("subject:      CN=localhost\n"), "{text}");
            assert!(
                text.contains("issuer:       CN=popfetch test CA\n"),
                "{text}"
            );
            assert!(
                text.contains(&format!("fingerprint:  {fingerprint}\n")),
                "{text}"
            );
            assert!(text.contains(&format!("public key:   {spki}\n")), "{text}");
            assert!(text.contains("days left)"), "{text}");
        }
        assert_eq!(text.contains("after STLS"), tls == "starttls", "{text}");
        assert!(
            text.contains("UIDL") && text.contains("PIPELINING"),
            "{text}"
        );
        let msgs = "5 on the server (";
        assert!(text.contains(msgs), "{text}");
        assert!(text.contains("), 2 new for popfetch ("), "{text}");
        assert!(text.contains("login-delay:  none"), "{text}");

        let json = env.popfetch(&["check", "--connect", "--json", "alice"]);
        json.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        let a = &v[0];
        assert_eq!(a["account"], "alice");
        assert_eq!(a["on_server"], 5);
        assert_eq!(a["new"], 2);
        assert_eq!(a["held"], 0);
        assert_eq!(a["uidl"], true);
        assert_eq!(a["tls_mode"], tls);
        let wire: u64 = a["total_bytes"].as_u64().unwrap();
        let new_bytes: u64 = a["new_bytes"].as_u64().unwrap();
        assert!(new_bytes > 9500 && new_bytes < wire, "{a}");
        assert!(a["largest"].as_u64().unwrap() >= 9000, "{a}");
        assert!(
            text.contains(&a["login_method"].as_str().unwrap().to_string()),
            "{a}"
        );
        if tls == "none" {
            assert!(a["tls"].is_null(), "{a}");
        } else {
            assert_eq!(a["tls"]["fingerprint"], fingerprint.as_str());
            assert_eq!(a["tls"]["spki_fingerprint"], spki.as_str());
            assert_eq!(a["tls"]["verified"], true);
        }

        // Nothing retrieved, deleted or written.
        assert_eq!(d.message_count(user), count, "{tls}: a message was deleted");
        assert_eq!(seen(&maildir), flagged, "{tls}: a message was retrieved");
        assert_eq!(maildir_names(&maildir).len(), names.len());
        assert_eq!(snapshot(&state), files, "{tls}: the state changed");
    }
    // Dovecot's own account of each session: the fetch retrieved 3, each look none.
    for user in ["ivy", "stan", "nell"] {
        let prefix = format!("pop3({user})");
        let deadline = Instant::now() + Duration::from_secs(5);
        let sessions = loop {
            let log = d.log();
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains(&prefix) && l.contains("Logged out"))
                .map(str::to_string)
                .collect();
            if lines.len() >= 3 || Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(sessions.len(), 3, "{user}: {sessions:#?}");
        assert!(sessions[0].contains("retr=3/"), "{}", sessions[0]);
        for look in &sessions[1..] {
            assert!(look.contains("top=0/0, retr=0/0, del=0/5"), "{look}");
        }
    }
}

/// Against the scripted server, whose log has every command: a look before any poll (no state
/// directory, and none made), then one after a poll with `keep = true`. Only CAPA, the login,
/// STAT, UIDL, LIST and QUIT are sent; the server's LOGIN-DELAY is shown.
#[test]
fn check_connect_sends_no_retr_top_or_dele_to_the_scripted_server() {
    let msgs = |range: std::ops::Range<usize>| -> Vec<Msg> {
        range
            .map(|i| Msg::new(message(i, 1000 * (i + 1)), &format!("uid-{i}")))
            .collect()
    };
    let server = Server::start(
        msgs(0..2),
        Script {
            login_delay: Some(900),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(
        &Account::scripted(&server)
            .set("keep", true)
            .maildir(&env.maildir())
            .to_toml(),
    );
    let state = env.path().join("state");

    let first = env.popfetch(&["check", "--connect", "--json"]);
    first.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(
        (v[0]["on_server"].as_u64(), v[0]["new"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(v[0]["journal"], serde_json::Value::Null);
    assert_eq!(v[0]["login_delay"], 900);
    assert!(!state.exists(), "a look made the state directory");

    env.popfetch(&["fetch"]).assert_code(0);
    server.push(msgs(2..4).remove(0));
    server.push(msgs(3..4).remove(0));
    let files = snapshot(&state);
    let before = server.log().sessions.len();
    let run = env.popfetch(&["check", "--connect"]);
    run.assert_code(0);
    let text = &run.stdout;
    assert!(text.contains("tls:          none"), "{text}");
    assert!(text.contains("login:        USER/PASS"), "{text}");
    assert!(text.contains("4 on the server ("), "{text}");
    assert!(text.contains("2 new for popfetch (6.9 KiB)"), "{text}");
    assert!(text.contains("login-delay:  900 s"), "{text}");

    let log = server.log();
    assert_eq!(log.sessions.len(), before + 1);
    let verbs: Vec<&str> = log.sessions[before]
        .iter()
        .map(|c| c.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        verbs,
        [
            "CAPA", "USER", "PASS", "CAPA", "STAT", "UIDL", "LIST", "QUIT"
        ],
        "{log:?}"
    );
    for session in [&log.sessions[0], &log.sessions[before]] {
        for c in session {
            assert!(
                !["RETR", "TOP", "DELE"].iter().any(|v| c.starts_with(v)),
                "{c}"
            );
        }
    }
    assert_eq!(server.remaining().len(), 4);
    assert_eq!(snapshot(&state), files, "the state changed");

    // While a poll holds the mailbox, a look waits for another time rather than log in beside it.
    let lock = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "lock"))
        .expect("the poll's lock file");
    let held = std::fs::File::open(&lock).unwrap();
    held.try_lock().unwrap();
    let busy = env.popfetch(&["check", "--connect"]);
    busy.assert_code(1);
    assert!(
        busy.stderr
            .contains("is being fetched by another popfetch process"),
        "{}",
        busy.stderr
    );
    assert_eq!(server.log().sessions.len(), before + 1, "it logged in");
}

/// `--json` and account names belong to `--connect`; an unknown account is a usage error.
#[test]
fn check_connect_options_are_checked() {
    let server = Server::healthy(Vec::new());
    let env = Env::new();
    env.write_config(&Account::scripted(&server).maildir(&env.maildir()).to_toml());
    for args in [&["check", "--json"][..], &["check", "alice"]] {
        let run = env.popfetch(args);
        run.assert_code(2);
        assert!(run.stderr.contains("--connect"), "{args:?}: {}", run.stderr);
    }
    let run = env.popfetch(&["check", "--connect", "nosuch"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("no account named `nosuch`"),
        "{}",
        run.stderr
    );
    assert!(server.log().sessions.is_empty());
}

/// A routed account's look reads headers with TOP to preview the routing, but never from a server
/// that announces EXPIRE: some count TOP as a retrieval, and under `EXPIRE 0` would delete at
/// QUIT what was only looked at.
#[test]
fn check_connect_previews_no_routing_from_a_server_that_announces_expire() {
    let server = Server::start(
        vec![Msg::new(
            b"Delivered-To: alice@example.org\nSubject: x\n\nbody\n".to_vec(),
            "uid-0",
        )],
        Script {
            expire: Some(0),
            ..Script::default()
        },
    );
    let env = Env::new();
    let mail = env.path().join("mail");
    env.write_config(
        &Account::scripted(&server)
            .set(
                "deliver",
                format_args!("{{ maildir = \"{}/{{recipient}}\" }}", mail.display()),
            )
            .extra(
                "[account.route]\nenvelope_header = \"Delivered-To\"\n\
                 local_domains = [\"example.org\"]\nmap = { \"*\" = \"postmaster\" }\n",
            )
            .to_toml(),
    );
    let run = env.popfetch(&["check", "--connect"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("routing:      not previewed: the server announces EXPIRE 0"),
        "{}",
        run.stdout
    );
    let log = server.log();
    for c in log.sessions.iter().flatten() {
        assert!(
            !["RETR", "TOP", "DELE"].iter().any(|v| c.starts_with(v)),
            "{c}"
        );
    }
    assert_eq!(server.remaining().len(), 1);
}
