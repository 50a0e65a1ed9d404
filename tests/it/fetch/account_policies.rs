//! The per-account policies against a real Dovecot: `max_size` (left and reported once, or
//! deleted unread), `delete_after` with `keep`, `max_messages_per_poll` and
//! `max_bytes_per_poll`, and `dedupe_message_id` when the server gives an old message a new
//! UIDL.

use std::time::Duration;

use crate::dovecot::Dovecot;
use crate::harness::{Env, Run, expected, message};
use crate::support::config::Account;

fn setup(messages: &[Vec<u8>]) -> (Dovecot, Env) {
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many("alice", messages.to_vec());
    (d, Env::new())
}

fn config(d: &Dovecot, env: &Env, extra: &str) {
    let account = Account::dovecot(d).maildir(&env.maildir()).extra(extra);
    env.write_config(&account.to_toml());
}

fn fetch(env: &Env) -> Run {
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    run
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[test]
fn max_size_leaves_large_messages_and_reports_them_once() {
    crate::peers::require_peers!("dovecot");
    let msgs = vec![message(1, 2000), message(2, 300_000), message(3, 2000)];
    let (d, env) = setup(&msgs);
    config(&d, &env, "max_size = \"100KiB\"\n");
    let first = fetch(&env);
    assert_eq!(
        sorted(env.delivered()),
        sorted(vec![expected(&msgs[0]), expected(&msgs[2])])
    );
    assert_eq!(d.message_count("alice"), 1, "the large one stays");
    assert!(
        first
            .stdout
            .contains("1 over max_size (left on the server)"),
        "{}",
        first.stdout
    );
    assert_eq!(
        first.stderr.matches("over max_size").count(),
        1,
        "{}",
        first.stderr
    );
    // Later polls still count it but do not report it again.
    let second = fetch(&env);
    assert!(
        second.stdout.contains("1 over max_size"),
        "{}",
        second.stdout
    );
    assert!(
        !second.stderr.contains("over max_size"),
        "{}",
        second.stderr
    );
    assert_eq!(d.message_count("alice"), 1);
    assert_eq!(env.delivered().len(), 2);
}

#[test]
fn max_size_delete_removes_large_messages_unread() {
    crate::peers::require_peers!("dovecot");
    let msgs = vec![message(1, 2000), message(2, 300_000)];
    let (d, env) = setup(&msgs);
    config(
        &d,
        &env,
        "max_size = 100000\nmax_size_action = \"delete\"\n",
    );
    let run = fetch(&env);
    assert_eq!(env.delivered(), vec![expected(&msgs[0])]);
    assert_eq!(d.message_count("alice"), 0);
    assert!(
        run.stdout.contains("1 over max_size (deleted unread)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("deleting it from the server unread"),
        "{}",
        run.stderr
    );
}

#[test]
fn delete_after_removes_kept_messages_once_they_are_old_enough() {
    crate::peers::require_peers!("dovecot");
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| message(i, 1500)).collect();
    let (d, env) = setup(&msgs);
    config(&d, &env, "keep = true\ndelete_after = \"3s\"\n");
    fetch(&env);
    assert_eq!(env.delivered().len(), 3);
    // Young: kept.
    fetch(&env);
    assert_eq!(d.message_count("alice"), 3);
    std::thread::sleep(Duration::from_millis(3200));
    // A message that arrives now is delivered now, and so is young at the next poll.
    let late = message(9, 1500);
    d.deliver("alice", &late);
    let run = fetch(&env);
    assert!(
        run.stdout.contains("3 deleted after delete_after"),
        "{}",
        run.stdout
    );
    assert_eq!(d.message_count("alice"), 1, "only the young message stays");
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
    want.push(expected(&late));
    assert_eq!(
        sorted(env.delivered()),
        sorted(want),
        "nothing delivered twice"
    );
    fetch(&env);
    assert_eq!(d.message_count("alice"), 1);
    assert_eq!(env.delivered().len(), 4);
}

#[test]
fn per_poll_limits_spread_a_large_first_fetch() {
    crate::peers::require_peers!("dovecot");
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| message(i, 10_000)).collect();
    let (d, env) = setup(&msgs);
    config(&d, &env, "max_messages_per_poll = 2\n");
    let run = fetch(&env);
    assert!(
        run.stdout.contains("3 left for the next poll"),
        "{}",
        run.stdout
    );
    assert_eq!(env.delivered().len(), 2);
    assert_eq!(d.message_count("alice"), 3);
    fetch(&env);
    fetch(&env);
    assert_eq!(
        sorted(env.delivered()),
        sorted(msgs.iter().map(|m| expected(m)).collect())
    );
    assert_eq!(d.message_count("alice"), 0);

    // By bytes: 25,000 bytes a poll takes two of these messages at a time (three would
    // exceed it).
    let msgs: Vec<Vec<u8>> = (10..15).map(|i| message(i, 10_000)).collect();
    let (d, env) = setup(&msgs);
    config(&d, &env, "max_bytes_per_poll = 25000\n");
    fetch(&env);
    assert_eq!(env.delivered().len(), 2);
    assert_eq!(d.message_count("alice"), 3);
    // A limit below one message's size still lets one through per poll.
    config(&d, &env, "max_bytes_per_poll = 10\n");
    fetch(&env);
    assert_eq!(env.delivered().len(), 3);
}

/// Removes the message `name` (its base name) from Dovecot's Maildir.
fn remove(d: &Dovecot, name: &str) {
    for sub in ["new", "cur"] {
        for e in std::fs::read_dir(d.maildir("alice").join(sub)).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with(name) {
                std::fs::remove_file(e.path()).unwrap();
                return;
            }
        }
    }
    panic!("message {name} not found");
}

#[test]
fn dedupe_message_id_skips_a_message_the_server_gave_a_new_uidl() {
    crate::peers::require_peers!("dovecot");
    let a = message(1, 3000);
    let b = message(2, 3000);
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let names = d.deliver_many("alice", vec![a.clone(), b.clone()]);
    let env = Env::new();
    config(&d, &env, "keep = true\ndedupe_message_id = true\n");
    fetch(&env);
    assert_eq!(env.delivered().len(), 2);

    // The server "renumbers": the same message comes back under a new UIDL.
    remove(&d, &names[0]);
    d.deliver("alice", &a);
    // Same Message-ID, other size: a different message, delivered.
    let mut b2 = b.clone();
    b2.extend_from_slice(b"one more line\n");
    d.deliver("alice", &b2);
    let run = fetch(&env);
    assert!(
        run.stdout
            .contains("1 already delivered (same Message-ID), not again"),
        "{}",
        run.stdout
    );
    assert_eq!(
        sorted(env.delivered()),
        sorted(vec![expected(&a), expected(&b), expected(&b2)])
    );
    // Recorded: the next poll neither delivers nor reports it.
    let run = fetch(&env);
    assert!(!run.stdout.contains("already delivered"), "{}", run.stdout);
    assert_eq!(env.delivered().len(), 3);

    // Without keep the duplicate is deleted, still undelivered.
    config(&d, &env, "dedupe_message_id = true\n");
    remove(&d, &names[1]);
    d.deliver("alice", &b);
    d.deliver("alice", &b);
    let run = fetch(&env);
    assert!(run.stdout.contains("2 already delivered"), "{}", run.stdout);
    assert_eq!(d.message_count("alice"), 0);
    assert_eq!(env.delivered().len(), 3);
}

#[test]
fn without_dedupe_a_renumbered_message_is_delivered_again() {
    crate::peers::require_peers!("dovecot");
    let a = message(1, 3000);
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let name = d.deliver("alice", &a);
    let env = Env::new();
    config(&d, &env, "keep = true\n");
    fetch(&env);
    remove(&d, &name);
    d.deliver("alice", &a);
    fetch(&env);
    assert_eq!(env.delivered(), vec![expected(&a), expected(&a)]);
}
