//! A kept mailbox's journal is compacted at the end of a poll to one line per message, and a
//! poll that finds nothing new leaves it alone; neither refetches nor forgets a message.

use crate::dovecot::Dovecot;
use crate::harness::{Env, message};

fn keep_account(d: &Dovecot, env: &Env) {
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"alice\"\npassword = \"pw\"\nkeep = true\ndeliver = {{ maildir = \"{}\" }}\n",
        d.pop3s_port(),
        d.ca_file().display(),
        env.maildir().display()
    ));
}

/// The account's journal (the only `*.uidls` in the state directory).
fn journal(env: &Env) -> std::path::PathBuf {
    let found: Vec<_> = std::fs::read_dir(env.path().join("state"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "uidls"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// The deliveries a journal records, `(uidl, time)` in its order, from `D` lines and from the
/// bare UIDLs after a `T` line; the other lines apart.
pub(super) fn deliveries(text: &str) -> (Vec<(String, u64)>, Vec<&str>) {
    let (mut got, mut other, mut time) = (Vec::new(), Vec::new(), None);
    for line in text.lines().skip(1) {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["T", at] => time = Some(at.parse().unwrap()),
            ["D", u, at] => got.push((u.to_string(), at.parse().unwrap())),
            [u] => got.push((u.to_string(), time.expect("a T line before a bare UIDL"))),
            _ => other.push(line),
        }
    }
    (got, other)
}

#[test]
fn superseded_records_are_compacted_and_nothing_is_fetched_again_or_lost() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let uidls = d.deliver_many("alice", (0..300).map(|i| message(i, 300)));
    let env = Env::new();
    keep_account(&d, &env);

    // As a long life leaves it: every message's `P` beside its `D`, and deliveries of
    // messages long gone, each followed by its `F`.
    let state = env.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut text = String::from("popfetch-uidls 3\n");
    for (i, u) in uidls.iter().enumerate() {
        text += &format!("P {u} 1764000000.k{i}.host\nD {u} {}\n", 1_764_000_000 + i);
    }
    for i in 0..1000 {
        text += &format!("P gone{i} 1763000000.g{i}.host\nD gone{i} 1763000000\nF gone{i}\n");
    }
    let path = state.join("alice.uidls");
    std::fs::write(&path, &text).unwrap();

    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 0 new messages"),
        "{}",
        run.stdout
    );
    assert!(env.delivered().is_empty(), "nothing is fetched again");
    let path = journal(&env);
    let compacted = std::fs::read_to_string(&path).unwrap();
    assert!(compacted.starts_with("popfetch-uidls 4\n"), "{compacted}");
    let want: Vec<(String, u64)> = uidls
        .iter()
        .enumerate()
        .map(|(i, u)| (u.clone(), 1_764_000_000 + i as u64))
        .collect();
    let (got, other) = deliveries(&compacted);
    assert_eq!(got, want, "every kept message once, its date kept");
    // Besides those, only the delivery settings' fingerprint: no `P`, no `F`, nothing gone.
    assert!(
        other.len() == 1 && other[0].starts_with("C d1-"),
        "{other:?}"
    );

    // A poll that finds nothing new neither fetches nor writes the journal.
    let before = std::fs::metadata(&path).unwrap();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 0 new messages"),
        "{}",
        run.stdout
    );
    assert!(env.delivered().is_empty());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), compacted);
    let after = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (before.ino(), before.mtime_nsec(), before.len()),
        (after.ino(), after.mtime_nsec(), after.len()),
        "a no-op poll rewrites nothing"
    );
    assert_eq!(d.message_count("alice"), 300, "keep mode deletes nothing");

    // A new message is fetched once, and its records compacted in their turn later on.
    d.deliver("alice", &message(1000, 300));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 1 new message delivered"),
        "{}",
        run.stdout
    );
    assert_eq!(env.delivered().len(), 1);
    let run = env.popfetch(&["fetch"]);
    assert!(
        run.stdout.contains("alice: 0 new messages"),
        "{}",
        run.stdout
    );
    assert_eq!(env.delivered().len(), 1, "fetched once");
}

#[test]
fn the_first_fetch_of_a_kept_mailbox_leaves_one_line_per_message() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let uidls = d.deliver_many("alice", (0..500).map(|i| message(i, 300)));
    let env = Env::new();
    keep_account(&d, &env);
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 500 new messages delivered"),
        "{}",
        run.stdout
    );
    let text = std::fs::read_to_string(journal(&env)).unwrap();
    let (got, other) = deliveries(&text);
    assert!(
        other.len() == 1 && other[0].starts_with("C d1-"),
        "no `P` record left beside its delivery: {other:?}"
    );
    let mut got: Vec<String> = got.into_iter().map(|(u, _)| u).collect();
    got.sort();
    let mut want = uidls.clone();
    want.sort();
    assert_eq!(got, want);
    // A UIDL list: each a line of its own, the `T` lines few (the fetch took seconds).
    let times = text.lines().filter(|l| l.starts_with("T ")).count();
    assert!((1..=60).contains(&times), "{times} T lines");
    let list: usize = want.iter().map(|u| u.len() + 1).sum();
    let fingerprint = other[0].len() + 1;
    assert_eq!(
        text.len(),
        "popfetch-uidls 4\n".len() + times * "T 1796305041\n".len() + list + fingerprint
    );
    let run = env.popfetch(&["fetch"]);
    assert!(
        run.stdout.contains("alice: 0 new messages"),
        "{}",
        run.stdout
    );
    assert_eq!(env.delivered().len(), 500);
}

/// A crash in the middle of a compaction leaves the journal whole and a torn `.tmp` beside it
/// (the rename never happened): the next poll reads the journal, fetches nothing again, and
/// its own compaction replaces the leftover.
#[test]
fn a_compaction_cut_short_leaves_the_journal_whole() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let uidls = d.deliver_many("alice", (0..200).map(|i| message(i, 300)));
    let env = Env::new();
    keep_account(&d, &env);
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(env.delivered().len(), 200);
    let path = journal(&env);

    // A long life's dead records, then a compaction killed while writing its temp file.
    let mut garbage = String::new();
    for i in 0..1000 {
        garbage += &format!("P gone{i} 1763000000.g{i}.host\nD gone{i} 1763000000\nF gone{i}\n");
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, garbage.as_bytes()).unwrap();
    drop(f);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let torn = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&tmp, &torn[..torn.len() / 3]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();

    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice: 0 new messages"),
        "{}",
        run.stdout
    );
    assert_eq!(env.delivered().len(), 200, "nothing fetched again");
    assert!(!tmp.exists(), "the torn temp file was replaced and renamed");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("gone"), "dead records compacted:\n{text}");
    let mut kept: Vec<String> = deliveries(&text).0.into_iter().map(|(u, _)| u).collect();
    kept.sort_unstable();
    let mut want = uidls.clone();
    want.sort_unstable();
    assert_eq!(kept, want, "every delivery kept");
    assert_eq!(d.message_count("alice"), 200);
}
