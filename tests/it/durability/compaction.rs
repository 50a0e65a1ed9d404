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
    let mut want = vec!["popfetch-uidls 3".to_string()];
    let mut lines: Vec<String> = uidls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("D {u} {}", 1_764_000_000 + i))
        .collect();
    lines.sort();
    want.extend(lines);
    // Besides the header and the `D` records, only the delivery settings' fingerprint.
    let (fingerprint, rest): (Vec<&str>, Vec<&str>) =
        compacted.lines().partition(|l| l.starts_with("C d1-"));
    assert_eq!(fingerprint.len(), 1, "{compacted}");
    assert_eq!(rest, want, "one line per kept message, its date kept");

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
    let lines: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with("C d1-"))
        .collect();
    assert_eq!(
        lines.len(),
        500,
        "no `P` record left beside its `D`:\n{text}"
    );
    for (line, u) in lines.iter().zip({
        let mut u = uidls.clone();
        u.sort();
        u
    }) {
        assert!(line.starts_with(&format!("D {u} ")), "{line}");
    }
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
    let mut kept: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("D "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    kept.sort_unstable();
    let mut want: Vec<&str> = uidls.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(kept, want, "every D record kept");
    assert_eq!(d.message_count("alice"), 200);
}
