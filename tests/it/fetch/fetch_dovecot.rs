//! `popfetch fetch` against a private Dovecot: every TLS mode, every login method Dovecot can
//! offer, keep and delete modes, byte-exact content, a 50 MB message and 1,000 small ones.

use crate::dovecot::{Dovecot, Options};
use crate::harness::{Env, expected, message};
use crate::support::config::Account;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// An account table for `d`, with `extra` lines appended (later keys win by not repeating them).
fn account(d: &Dovecot, env: &Env, tls: &str, extra: &str) -> String {
    let port = match tls {
        "implicit" => d.pop3s_port(),
        _ => d.pop3_port(),
    };
    Account::dovecot(d)
        .set("port", port)
        .text("tls", tls)
        .user(USER)
        .password(PASSWORD)
        .maildir(&env.maildir())
        .extra(extra)
        .to_toml()
}

fn start() -> Dovecot {
    let d = Dovecot::start();
    d.add_user(USER, PASSWORD);
    d
}

/// Messages whose content exercises the transfer: dot lines, 8-bit bytes, an empty body, no
/// final newline, long lines.
fn tricky_messages() -> Vec<Vec<u8>> {
    let long_line = "x".repeat(20_000);
    vec![
        message(1, 4000),
        b"Subject: dots\n\n.\n..\n.leading dot\n...three\n. space\nend\n".to_vec(),
        "Subject: 8-bit\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} \u{1f600}\n"
            .as_bytes()
            .iter()
            .copied()
            .chain([0xff, 0xfe, 0x80, b'\n'])
            .collect(),
        b"Subject: empty body\n\n".to_vec(),
        b"Subject: no final newline\n\nlast line without newline".to_vec(),
        format!("Subject: long line\n\n{long_line}\n").into_bytes(),
        b"Subject: trailing blank lines\n\nbody\n\n\n".to_vec(),
    ]
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[track_caller]
fn assert_delivered(env: &Env, sources: &[Vec<u8>]) {
    let want = sorted(sources.iter().map(|m| expected(m)).collect());
    let got = sorted(env.delivered());
    assert_eq!(got.len(), want.len(), "number of delivered messages");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g == w,
            "content differs:\n--- got\n{}\n--- want\n{}",
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(w)
        );
    }
}

#[test]
fn implicit_tls_with_ca_file_delivers_byte_exact_and_deletes() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    let sources = tricky_messages();
    d.deliver_many(USER, sources.clone());
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", ""));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 7 new messages delivered"),
        "{}",
        run.stdout
    );
    assert_delivered(&env, &sources);
    assert_eq!(d.message_count(USER), 0, "delete mode empties the mailbox");
    // Nothing left in tmp/, and a second run finds nothing.
    assert_eq!(
        std::fs::read_dir(env.maildir().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 0 new messages"),
        "{}",
        run.stdout
    );
    assert_eq!(env.delivered().len(), 7);
}

#[test]
fn received_header_names_popfetch_server_and_account() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    let uidl = d.deliver(USER, &message(1, 500));
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", ""));
    env.popfetch(&["fetch"]).assert_code(0);
    let file = std::fs::read_dir(env.maildir().join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = String::from_utf8(std::fs::read(file).unwrap()).unwrap();
    let first_two: Vec<&str> = text.lines().take(2).collect();
    assert!(
        first_two[0].starts_with("Received: from localhost by "),
        "{text}"
    );
    assert!(first_two[0].contains("with POP3S (popfetch "), "{text}");
    assert!(
        first_two[1].contains(&format!("(account alice, uidl {uidl})")),
        "{text}"
    );

    // received_header = false: the file is the message, nothing more.
    let d = start();
    let src = message(2, 500);
    d.deliver(USER, &src);
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", "received_header = false\n"));
    env.popfetch(&["fetch"]).assert_code(0);
    let file = std::fs::read_dir(env.maildir().join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read(file).unwrap(), src);
}

#[test]
fn starttls_upgrades_and_verifies() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    let sources = vec![message(1, 3000), message(2, 100)];
    d.deliver_many(USER, sources.clone());
    let env = Env::new();
    env.write_config(&account(&d, &env, "starttls", ""));
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert_delivered(&env, &sources);
    // Over STLS the Received line says POP3 upgraded by STLS, and auto picked a method.
    let raw = std::fs::read_dir(env.maildir().join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let raw = std::fs::read_to_string(raw.path()).unwrap();
    assert!(
        raw.lines().next().unwrap().contains("with POP3 (STLS; "),
        "{raw}"
    );
    assert!(run.stderr.contains("logged in"), "{}", run.stderr);
}

#[test]
fn tls_without_the_ca_is_refused_and_nothing_is_deleted() {
    crate::peers::require_peers!("dovecot");
    for tls in ["implicit", "starttls"] {
        let d = start();
        d.deliver_many(USER, vec![message(1, 1000), message(2, 1000)]);
        let env = Env::new();
        let cfg = account(&d, &env, tls, "");
        let cfg: String = cfg
            .lines()
            .filter(|l| !l.starts_with("ca_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        env.write_config(&cfg);
        let run = env.popfetch(&["fetch"]);
        run.assert_code(1);
        assert!(
            run.stderr
                .contains("account alice: TLS with localhost failed"),
            "{tls}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("certificate verify failed"),
            "{tls}: {}",
            run.stderr
        );
        assert_eq!(d.message_count(USER), 2, "{tls}: nothing deleted");
        assert!(env.delivered().is_empty());

        // tls_verify = false is the only way around, and it warns.
        env.write_config(&format!("{cfg}tls_verify = false\n"));
        let run = env.popfetch(&["fetch"]);
        run.assert_code(0);
        assert!(run.stderr.contains("tls_verify = false"), "{}", run.stderr);
        assert_eq!(d.message_count(USER), 0);
    }
}

#[test]
fn host_name_must_match_the_certificate() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    d.deliver(USER, &message(1, 100));
    let env = Env::new();
    // The certificate names localhost and 127.0.0.1, not this second loopback address.
    let cfg = account(&d, &env, "implicit", "").replace(
        "host = \"localhost\"",
        &format!("host = \"{}\"", d.insecure_host()),
    );
    env.write_config(&cfg);
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("TLS with"), "{}", run.stderr);
    assert_eq!(d.message_count(USER), 1);
}

#[test]
fn plain_connection_with_user_pass_needs_opt_in() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    d.deliver_many(USER, vec![message(1, 700)]);
    let env = Env::new();
    // Without the opt-in, the config itself is refused for auth = "user" over tls = "none".
    env.write_config(&account(&d, &env, "none", "auth = \"user\"\n"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(2);
    assert!(run.stderr.contains("key `auth`"), "{}", run.stderr);
    env.write_config(&account(
        &d,
        &env,
        "none",
        "auth = \"user\"\nallow_plaintext_auth = true\n",
    ));
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("logged in with USER/PASS"),
        "{}",
        run.stderr
    );
    assert_eq!(env.delivered().len(), 1);
    // The Received line tells the truth about the transport.
    let raw = std::fs::read_dir(env.maildir().join("new"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let raw = std::fs::read_to_string(raw.path()).unwrap();
    assert!(raw.lines().next().unwrap().contains("with POP3 ("), "{raw}");
}

#[test]
fn auto_never_sends_the_password_in_clear() {
    crate::peers::require_peers!("dovecot");
    // A server offering only clear-text methods on an unencrypted connection.
    let d = Dovecot::start_with(Options {
        mechanisms: "plain login",
        ..Options::default()
    });
    d.add_user(USER, PASSWORD);
    d.deliver(USER, &message(1, 100));
    let env = Env::new();
    env.write_config(&account(&d, &env, "none", ""));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("not encrypted"), "{}", run.stderr);
    assert!(!run.stderr.contains(PASSWORD));
    assert_eq!(d.message_count(USER), 1);
    // The same server over STLS: auto may use PLAIN now.
    env.write_config(&account(&d, &env, "starttls", ""));
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("logged in with PLAIN"),
        "{}",
        run.stderr
    );
}

#[test]
fn every_login_method_dovecot_offers() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start_with(Options {
        apop: true,
        ..Options::default()
    });
    d.add_user(USER, PASSWORD);
    let env = Env::new();
    let cases = [
        ("auth = \"user\"", "USER/PASS"),
        ("auth = \"plain\"", "PLAIN"),
        ("auth = \"login\"", "LOGIN"),
        ("auth = \"cram-md5\"", "CRAM-MD5"),
        ("auth = \"apop\"", "APOP"),
        // Over verified TLS, PLAIN: one round trip with its initial response, CRAM-MD5 two.
        ("auth = \"auto\"", "PLAIN"),
        // A server whose certificate is not checked gets no password it could read.
        ("auth = \"auto\"\ntls_verify = false", "CRAM-MD5"),
    ];
    for (i, (auth, shown)) in cases.iter().enumerate() {
        d.deliver(USER, &message(i, 300));
        env.write_config(&account(&d, &env, "starttls", &format!("{auth}\n")));
        let run = env.popfetch(&["-vv", "fetch"]);
        run.assert_code(0);
        assert!(
            run.stderr.contains(&format!("logged in with {shown}")),
            "{auth}: {}",
            run.stderr
        );
        assert_eq!(env.delivered().len(), i + 1, "{auth}");
        assert!(!run.stderr.contains(PASSWORD), "password in the log");
    }
    // APOP and CRAM-MD5 keep the password secret even without TLS.
    for (auth, shown) in [
        ("apop", "APOP"),
        ("cram-md5", "CRAM-MD5"),
        ("auto", "CRAM-MD5"),
    ] {
        d.deliver(USER, &message(99, 300));
        env.write_config(&account(&d, &env, "none", &format!("auth = \"{auth}\"\n")));
        let run = env.popfetch(&["-vv", "fetch"]);
        run.assert_code(0);
        assert!(
            run.stderr.contains(&format!("logged in with {shown}")),
            "{auth}: {}",
            run.stderr
        );
    }
}

#[test]
fn wrong_password_fails_cleanly_without_leaking_it() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    d.deliver(USER, &message(1, 100));
    let env = Env::new();
    let cfg = account(&d, &env, "implicit", "").replace(PASSWORD, "wrong-password-123");
    env.write_config(&cfg);
    let run = env.popfetch(&["-vv", "fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("[AUTH]"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-password-123"), "{}", run.stderr);
    assert_eq!(d.message_count(USER), 1);
}

#[test]
fn password_file_and_password_command() {
    crate::peers::require_peers!("dovecot");
    use std::os::unix::fs::PermissionsExt;
    let d = start();
    let env = Env::new();
    let pw_file = env.path().join("alice.pass");
    std::fs::write(&pw_file, format!("{PASSWORD}\nsecond line ignored\n")).unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let base = account(&d, &env, "implicit", "");
    let base: String = base
        .lines()
        .filter(|l| !l.starts_with("password"))
        .map(|l| format!("{l}\n"))
        .collect();

    d.deliver(USER, &message(1, 100));
    env.write_config(&format!(
        "{base}password_file = \"{}\"\n",
        pw_file.display()
    ));
    env.popfetch(&["fetch"]).assert_code(0);

    d.deliver(USER, &message(2, 100));
    // An argv list, no shell: the quotes and $ reach printf untouched.
    env.write_config(&format!(
        "{base}password_command = [\"printf\", \"%s\\n\", \"{PASSWORD}\"]\n"
    ));
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(env.delivered().len(), 2);

    d.deliver(USER, &message(3, 100));
    env.write_config(&format!("{base}password_command = [\"false\"]\n"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("password_command \"false\""),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count(USER), 1);
}

#[test]
fn keep_mode_fetches_each_message_once() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    let first = vec![message(1, 2000), message(2, 2000), message(3, 2000)];
    d.deliver_many(USER, first.clone());
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", "keep = true\n"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("3 new messages delivered"),
        "{}",
        run.stdout
    );
    assert_eq!(d.message_count(USER), 3, "keep leaves them on the server");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(run.stdout.contains("0 new messages"), "{}", run.stdout);
    assert_eq!(env.delivered().len(), 3);
    // One more arrives: only it is fetched.
    let late = message(4, 2000);
    d.deliver(USER, &late);
    let run = env.popfetch(&["fetch"]);
    assert!(
        run.stdout.contains("1 new message delivered"),
        "{}",
        run.stdout
    );
    let mut all = first;
    all.push(late);
    assert_delivered(&env, &all);
    // Switching to delete mode deletes what was delivered, without fetching it again.
    env.write_config(&account(&d, &env, "implicit", "keep = false\n"));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("0 new messages delivered"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("4 deleted"), "{}", run.stdout);
    assert_eq!(d.message_count(USER), 0);
    assert_eq!(env.delivered().len(), 4);
}

#[test]
fn second_run_on_a_locked_account_says_why() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    d.deliver(USER, &message(1, 100));
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", ""));
    let mailbox = popfetch::state::Mailbox::new("localhost", d.pop3s_port(), USER);
    let held =
        popfetch::state::AccountState::open(&env.path().join("state"), &mailbox, "alice").unwrap();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("another popfetch process"),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count(USER), 1);
    drop(held);
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count(USER), 0);
}

/// Peak RSS in KiB and wall seconds of a command run under `/usr/bin/time -v`.
fn time_v(cmd: std::process::Command) -> (crate::harness::Run, u64, f64) {
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed.arg("-v").arg(prog).args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = timed
        .output()
        .expect("/usr/bin/time (tests/install-peers installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {stderr}"))
            .trim()
            .to_string()
    };
    let rss: u64 = field("Maximum resident set size (kbytes):")
        .parse()
        .unwrap();
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):");
    let secs = wall
        .split(':')
        .fold(0.0, |acc, part| acc * 60.0 + part.parse::<f64>().unwrap());
    let run = crate::harness::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    };
    (run, rss, secs)
}

#[test]
fn fifty_megabyte_message_streams_in_flat_memory() {
    crate::peers::require_peers!("time", "dovecot");
    let d = start();
    let big = message(1, 50 * 1024 * 1024);
    d.deliver(USER, &big);
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", ""));
    let (run, rss_kib, secs) = time_v(env.command(&["fetch"]));
    run.assert_code(0);
    eprintln!("measure: one 50 MB message: peak RSS {rss_kib} KiB, wall {secs:.2} s");
    // Memory stays flat: far below the message size.
    assert!(
        rss_kib < 40 * 1024,
        "peak RSS {rss_kib} KiB for a 50 MB message"
    );
    let got = env.delivered();
    assert_eq!(got.len(), 1);
    assert!(got[0] == big, "50 MB message differs");
    assert_eq!(d.message_count(USER), 0);
}

#[test]
fn thousand_small_messages() {
    crate::peers::require_peers!("time", "dovecot");
    let d = start();
    let sources: Vec<Vec<u8>> = (0..1000).map(|i| message(i, 4096)).collect();
    d.deliver_many(USER, sources.clone());
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", ""));
    let (run, rss_kib, secs) = time_v(env.command(&["fetch"]));
    run.assert_code(0);
    eprintln!("measure: 1000 x 4 KB fetch-and-delete: wall {secs:.2} s, peak RSS {rss_kib} KiB");
    assert!(
        run.stdout.contains("1000 new messages delivered"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1000 deleted"), "{}", run.stdout);
    assert_delivered(&env, &sources);
    assert_eq!(d.message_count(USER), 0);
}

/// Once a poll has seen the server's capabilities (kept beside the journal), the next sends its
/// login in the flight of CAPA, over TLS in both modes: a poll that finds nothing takes five
/// round trips over implicit TLS instead of six. A hint that no longer holds (the server dropped
/// PLAIN) costs one refused try, and the fresh CAPA's method logs in; the hint is brought up to
/// date.
#[test]
fn the_login_rides_with_capa_once_the_server_is_known() {
    crate::peers::require_peers!("dovecot");
    let d = start();
    d.deliver(USER, &message(1, 300));
    let env = Env::new();
    env.write_config(&account(&d, &env, "implicit", "keep = true\n"));
    let first = env.popfetch(&["-vv", "fetch"]);
    first.assert_code(0);
    assert!(
        !first.stderr.contains("in the flight of CAPA"),
        "{}",
        first.stderr
    );
    let hint = env
        .path()
        .join(format!("state/{USER}@localhost:{}.capa", d.pop3s_port()));
    let kept = std::fs::read_to_string(&hint).expect("the capabilities kept");
    assert!(kept.lines().any(|l| l == "PIPELINING"), "{kept}");
    let again = env.popfetch(&["-vv", "fetch"]);
    again.assert_code(0);
    assert!(
        again.stderr.contains("in the flight of CAPA"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("logged in with PLAIN"),
        "{}",
        again.stderr
    );
    // Connect, TLS, greeting, CAPA with AUTH PLAIN, STAT with UIDL (QUIT not waited for).
    assert_eq!(
        super::round_trips::round_trips(&again.stderr),
        5,
        "{}",
        again.stderr
    );
    assert_eq!(env.delivered().len(), 1);

    // STLS: the CAPA after the upgrade carries the login.
    env.write_config(&account(
        &d,
        &env,
        "starttls",
        "keep = true\nname = \"stls\"\n",
    ));
    env.popfetch(&["fetch"]).assert_code(0);
    let stls = env.popfetch(&["-vv", "fetch"]);
    stls.assert_code(0);
    assert!(
        stls.stderr.contains("in the flight of CAPA"),
        "{}",
        stls.stderr
    );

    // A server that no longer offers PLAIN: the hint's PLAIN is refused, the fresh CAPA's
    // CRAM-MD5 logs in, and the hint follows.
    let d2 = Dovecot::start_with(Options {
        mechanisms: "login cram-md5",
        ..Options::default()
    });
    d2.add_user(USER, PASSWORD);
    d2.deliver(USER, &message(2, 300));
    let env2 = Env::new();
    env2.write_config(&account(&d2, &env2, "implicit", ""));
    let stale = env2
        .path()
        .join(format!("state/{USER}@localhost:{}.capa", d2.pop3s_port()));
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    let mut perms = std::fs::metadata(stale.parent().unwrap())
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
    std::fs::set_permissions(stale.parent().unwrap(), perms).unwrap();
    std::fs::write(
        &stale,
        "USER\nPIPELINING\nUIDL\nSASL PLAIN LOGIN CRAM-MD5\n",
    )
    .unwrap();
    let run = env2.popfetch(&["-vv", "fetch"]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("in the flight of CAPA"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("logged in with CRAM-MD5"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(PASSWORD), "password in the log");
    assert_eq!(env2.delivered().len(), 1);
    let kept = std::fs::read_to_string(&stale).unwrap();
    assert!(
        kept.contains("SASL LOGIN CRAM-MD5") && !kept.contains("PLAIN"),
        "{kept}"
    );
}
