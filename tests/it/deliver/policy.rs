//! What happens to a message a backend refuses, against a real Dovecot: a transient refusal
//! leaves it for the next poll, a permanent one holds it (or quarantines it), and
//! `popfetch retry` releases it. Nothing is ever deleted from the server undelivered.

use crate::dovecot::Dovecot;
use crate::harness::{Env, delivered_in, expected, message};
use crate::support::config::Account;

fn setup(n: usize) -> (Dovecot, Env, Vec<Vec<u8>>) {
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| message(i, 600)).collect();
    d.deliver_many("alice", msgs.clone());
    (d, Env::new(), msgs)
}

/// An account delivering through `mda` (TOML array text), plus `extra` lines.
fn config(d: &Dovecot, env: &Env, mda: &str, extra: &str) {
    let account = Account::dovecot(d)
        .text("mda_timeout", "2s")
        .set("deliver", format_args!("{{ mda = {mda} }}"))
        .extra(extra);
    env.write_config(&account.to_toml());
}

/// An MDA (run by sh, no shell involved in popfetch) that files the message into `dir` as a
/// Maildir-like drop, unless the message's Subject matches `refuse`, then exits `code`.
fn filer(env: &Env, refuse: &str, code: i32) -> String {
    let out = env.maildir().join("new");
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        "f=$(mktemp {out}/m.XXXXXX); cat > \"$f\"; if grep -q '^Subject: {refuse}$' \"$f\"; then rm -f \"$f\"; exit {code}; fi",
        out = out.display()
    );
    format!("[\"sh\", \"-c\", {script:?}]")
}

#[test]
fn mda_tempfail_leaves_the_message_for_the_next_poll() {
    crate::peers::require_peers!("dovecot");
    let (d, env, msgs) = setup(3);
    config(&d, &env, &filer(&env, "message 1", 75), "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("2 new messages delivered"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("1 failed for now"), "{}", run.stdout);
    // The cause is in the poll's summary line.
    assert!(run.stdout.contains("exited with 75"), "{}", run.stdout);
    assert_eq!(d.message_count("alice"), 1, "only the refused one is left");
    // The MDA recovers: the next poll delivers it.
    config(&d, &env, &filer(&env, "never", 75), "");
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("alice"), 0);
    let mut got: Vec<Vec<u8>> = delivered_in(&env.maildir());
    got.sort();
    let mut want: Vec<_> = msgs.iter().map(|m| expected(m)).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn mda_permanent_failure_holds_the_message_until_retry() {
    crate::peers::require_peers!("dovecot");
    let (d, env, _) = setup(3);
    config(&d, &env, &filer(&env, "message 2", 1), "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("2 new messages delivered"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 held after a permanent failure"),
        "{}",
        run.stdout
    );
    assert_eq!(d.message_count("alice"), 1);
    // Not tried again at the next poll, but reported.
    let run = env.popfetch(&["-v", "fetch"]);
    assert!(run.stdout.contains("0 new messages"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 held after a permanent failure"),
        "{}",
        run.stdout
    );
    assert_eq!(d.message_count("alice"), 1);
    // popfetch retry releases it; the MDA still refuses, so it is held again.
    let run = env.popfetch(&["retry", "alice"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("1 held message will be tried"),
        "{}",
        run.stdout
    );
    let run = env.popfetch(&["fetch"]);
    assert!(
        run.stdout.contains("1 held after a permanent failure"),
        "{}",
        run.stdout
    );
    // A config change releases it too; this MDA accepts it.
    config(&d, &env, &filer(&env, "never", 1), "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("1 new message delivered"),
        "{}",
        run.stdout
    );
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(delivered_in(&env.maildir()).len(), 3);
}

/// The journal of `env`'s one mailbox.
fn journal(env: &Env) -> std::path::PathBuf {
    let dir = env.path().join("state");
    let found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "uidls"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Held mail is released by a change of what delivery does, and by nothing else: not by a
/// setting that cannot turn a refusal around, and not by the upgrade from the fingerprint older
/// popfetch wrote (a hash of the account's whole `Debug` text) to the delivery fingerprint.
#[test]
fn held_mail_is_released_by_a_delivery_change_only_and_survives_the_fingerprint_upgrade() {
    crate::peers::require_peers!("dovecot");
    let (d, env, _) = setup(3);
    let refuse = filer(&env, "message 2", 1);
    config(&d, &env, &refuse, "");
    let run = env.popfetch(&["fetch"]);
    assert!(run.stdout.contains("1 held after"), "{}", run.stdout);
    // The journal as older popfetch left it: its fingerprint is 16 hex digits.
    let path = journal(&env);
    let text = std::fs::read_to_string(&path).unwrap();
    let fp = text.lines().find(|l| l.starts_with("C ")).unwrap();
    assert!(fp.starts_with("C d1-"), "{text}");
    std::fs::write(&path, text.replace(fp, "C 0123456789abcdef")).unwrap();
    // Not tried again: skipped as held (exit 0: nothing newly held).
    let run = env.popfetch(&["-v", "fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("1 held after a permanent failure"),
        "{}",
        run.stdout
    );
    assert!(!run.stderr.contains("refused for good"), "{}", run.stderr);
    assert_eq!(d.message_count("alice"), 1, "still held on the server");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.ends_with(&format!("{fp}\n")),
        "taken over once: {text}"
    );
    // How it is fetched and when: no new try.
    config(&d, &env, &refuse, "timeout = \"45s\"\ninterval = \"10m\"\n");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(!run.stderr.contains("refused for good"), "{}", run.stderr);
    assert_eq!(d.message_count("alice"), 1);
    // What delivery does: tried again (and refused again, by the same filter).
    config(&d, &env, &refuse, "received_header = false\n");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("refused for good"), "{}", run.stderr);
    assert_eq!(d.message_count("alice"), 1);
}

#[test]
fn permanent_failure_with_quarantine_stores_and_deletes() {
    crate::peers::require_peers!("dovecot");
    let (d, env, msgs) = setup(2);
    let q = env.path().join("Quarantine");
    config(
        &d,
        &env,
        &filer(&env, "message 0", 1),
        &format!(
            "on_permanent_failure = \"quarantine\"\nquarantine = \"{}\"\n",
            q.display()
        ),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(run.stdout.contains("1 quarantined"), "{}", run.stdout);
    assert_eq!(
        d.message_count("alice"),
        0,
        "quarantined counts as delivered"
    );
    assert_eq!(delivered_in(&q), vec![expected(&msgs[0])]);
    assert_eq!(delivered_in(&env.maildir()), vec![expected(&msgs[1])]);
}

#[test]
fn a_hanging_mda_is_killed_and_the_message_stays() {
    crate::peers::require_peers!("dovecot");
    let (d, env, _) = setup(1);
    config(&d, &env, "[\"sleep\", \"60\"]", "");
    let t = std::time::Instant::now();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("did not finish within 2s and was killed"),
        "{}",
        run.stdout
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(d.message_count("alice"), 1);
}

#[test]
fn a_missing_mda_stops_the_poll_and_deletes_nothing() {
    crate::peers::require_peers!("procmail", "dovecot");
    let (d, env, _) = setup(3);
    config(&d, &env, "[\"/nonexistent/procmail\"]", "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("cannot run the MDA \"/nonexistent/procmail\""),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count("alice"), 3);
}
