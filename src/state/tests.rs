use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

fn u(s: &str) -> Uidl {
    s.parse().unwrap()
}

#[test]
fn records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open(dir.path(), "a").unwrap();
        s.record_pending(&u("one"), "k1");
        s.record_delivered(&u("one"));
        s.record_pending(&u("two"), "k2");
        s.sync().unwrap();
    }
    let s = AccountState::open(dir.path(), "a").unwrap();
    assert!(s.is_delivered(&u("one")));
    assert!(!s.is_delivered(&u("two")));
    assert_eq!(s.pending(), vec![(u("two"), "k2".to_string())]);
}

#[test]
fn unsynced_records_are_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open(dir.path(), "a").unwrap();
        s.record_delivered(&u("x"));
        // dropped without sync, as in a crash
    }
    let s = AccountState::open(dir.path(), "a").unwrap();
    assert!(!s.is_delivered(&u("x")));
}

#[test]
fn second_open_is_refused_while_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = AccountState::open(dir.path(), "a").unwrap();
    let err = AccountState::open(dir.path(), "a").unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another popfetch process"));
    AccountState::open(dir.path(), "b").unwrap();
}

#[test]
fn torn_tail_is_ignored_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    std::fs::write(&path, b"popfetch-uidls 1\nD one\nD tw").unwrap();
    {
        let mut s = AccountState::open(dir.path(), "a").unwrap();
        assert!(s.is_delivered(&u("one")) && !s.is_delivered(&u("tw")));
        s.record_delivered(&u("three"));
        s.sync().unwrap();
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"popfetch-uidls 1\nD one\nD three\n"
    );
    std::fs::write(&path, b"popfetch-uidls 1\nD one\n\0\0\0\0").unwrap();
    let s = AccountState::open(dir.path(), "a").unwrap();
    assert_eq!(s.delivered_count(), 1);
}

#[test]
fn corrupt_truncated_and_future_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    for (content, want) in [
        (&b"popfetch-uidls 1\nD one\nZ two\nD three\n"[..], "line 3"),
        (b"popfetch-uidls 1\nD bad\x01uidl\n", "line 2"),
        (b"", "empty or truncated"),
        (b"popfetch-uid", "empty or truncated"),
        (b"something else\n", "not a popfetch state file"),
    ] {
        std::fs::write(&path, content).unwrap();
        let e = AccountState::open(dir.path(), "a").unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
        assert!(e.to_string().contains("move it aside"), "{e}");
    }
    std::fs::write(&path, b"popfetch-uidls 7\nQ x y z\n").unwrap();
    let e = AccountState::open(dir.path(), "a").unwrap_err();
    assert!(
        matches!(e, StateError::FutureFormat { found: 7, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade popfetch"));
}

#[test]
fn compaction_keeps_the_live_set() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open(dir.path(), "a").unwrap();
        for i in 0..3000 {
            let x = u(&format!("m{i}"));
            s.record_delivered(&x);
            if i % 10 != 0 {
                s.forget(&x);
            }
        }
        s.record_pending(&u("p"), "key");
        s.sync().unwrap();
    }
    let len = std::fs::metadata(dir.path().join("a.uidls")).unwrap().len();
    assert!(len < 5000, "journal was not compacted: {len} bytes");
    let s = AccountState::open(dir.path(), "a").unwrap();
    assert_eq!(s.delivered_count(), 300);
    assert!(s.is_delivered(&u("m2990")) && !s.is_delivered(&u("m2991")));
    assert_eq!(s.pending().len(), 1);
}

#[test]
fn retain_only_forgets_what_left_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = AccountState::open(dir.path(), "a").unwrap();
    for x in ["a", "b", "c"] {
        s.record_delivered(&u(x));
    }
    let b = u("b");
    s.retain_only(&HashSet::from([&b]));
    s.sync().unwrap();
    drop(s);
    let s = AccountState::open(dir.path(), "a").unwrap();
    assert!(s.is_delivered(&b) && !s.is_delivered(&u("a")) && s.delivered_count() == 1);
}

proptest! {
    /// Whatever the operations, a reopened journal holds exactly what was synced, and cutting the
    /// file at any byte after the last sync point never loses a synced record.
    #[test]
    fn journal_replays_synced_state(ops in proptest::collection::vec((0u8..3, 0u8..20), 1..60),
                                     cut in 0usize..64) {
        let dir = tempfile::tempdir().unwrap();
        let mut model: HashSet<String> = HashSet::new();
        let synced_len;
        {
            let mut s = AccountState::open(dir.path(), "a").unwrap();
            for (op, id) in &ops {
                let x = u(&format!("u{id}"));
                match op {
                    0 => { s.record_delivered(&x); model.insert(x.to_string()); }
                    1 => { s.forget(&x); model.remove(x.as_str()); }
                    _ => s.record_pending(&x, "k"),
                }
            }
            s.sync().unwrap();
            synced_len = std::fs::metadata(s.path()).unwrap().len();
            // Unsynced garbage after the sync point, cut at an arbitrary byte (a torn append).
            s.record_delivered(&u("late"));
        }
        let path = dir.path().join("a.uidls");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&b"D torn-record-that-never-finished\n"[..cut.min(33)]).unwrap();
        drop(f);
        let s = AccountState::open(dir.path(), "a").unwrap();
        for id in 0..20 {
            let x = format!("u{id}");
            prop_assert_eq!(s.is_delivered(&u(&x)), model.contains(&x));
        }
        prop_assert!(std::fs::metadata(&path).unwrap().len() >= synced_len.min(17));
    }
}
