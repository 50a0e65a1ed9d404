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
        let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
        s.record_pending(&u("one"), "k1");
        s.record_delivered(&u("one"));
        s.record_pending(&u("two"), "k2");
        s.sync().unwrap();
    }
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert!(s.is_delivered(&u("one")));
    assert!(!s.is_delivered(&u("two")));
    assert_eq!(s.pending(), vec![(u("two"), "k2".to_string())]);
}

#[test]
fn unsynced_records_are_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
        s.record_delivered(&u("x"));
        // dropped without sync, as in a crash
    }
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert!(!s.is_delivered(&u("x")));
}

#[test]
fn second_open_is_refused_while_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = AccountState::open_stem(dir.path(), "a").unwrap();
    let err = AccountState::open_stem(dir.path(), "a").unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("another popfetch process"),
        "{err}"
    );
    AccountState::open_stem(dir.path(), "b").unwrap();
}

#[test]
fn torn_tail_is_ignored_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    std::fs::write(&path, b"popfetch-uidls 1\nD one\nD tw").unwrap();
    {
        let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
        assert!(s.is_delivered(&u("one")) && !s.is_delivered(&u("tw")));
        s.record_delivered(&u("three"));
        s.sync().unwrap();
    }
    // A format 1 file is rewritten in the current format when opened, its deliveries dated
    // (to the upgrade: one `T` line), and the new one appended.
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], format!("popfetch-uidls {FORMAT}"));
    assert!(lines[1].starts_with("T ") && lines[2] == "one" && lines[3].starts_with("D three "));
    std::fs::write(&path, b"popfetch-uidls 1\nD one\n\0\0\0\0").unwrap();
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
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
        let e = AccountState::open_stem(dir.path(), "a").unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e}");
        assert!(e.to_string().contains("move it aside"), "{e}");
    }
    std::fs::write(&path, b"popfetch-uidls 7\nQ x y z\n").unwrap();
    let e = AccountState::open_stem(dir.path(), "a").unwrap_err();
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
        let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
        for i in 0..3000 {
            let x = u(&format!("m{i}"));
            s.record_delivered(&x);
            if i % 10 != 0 {
                s.forget(&x);
            }
        }
        s.record_pending(&u("p"), "key");
        s.sync().unwrap();
        s.finish().unwrap();
    }
    let len = std::fs::metadata(dir.path().join("a.uidls")).unwrap().len();
    assert!(len < 9000, "journal was not compacted: {len} bytes");
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert_eq!(s.delivered_count(), 300);
    assert!(s.is_delivered(&u("m2990")) && !s.is_delivered(&u("m2991")));
    assert_eq!(s.pending().len(), 1);
}

#[test]
fn retain_only_forgets_what_left_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    for x in ["a", "b", "c"] {
        s.record_delivered(&u(x));
    }
    let b = u("b");
    s.retain_only(&HashSet::from([&b]));
    s.sync().unwrap();
    drop(s);
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
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
            let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
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
        let s = AccountState::open_stem(dir.path(), "a").unwrap();
        for id in 0..20 {
            let x = format!("u{id}");
            prop_assert_eq!(s.is_delivered(&u(&x)), model.contains(&x));
        }
        prop_assert!(std::fs::metadata(&path).unwrap().len() >= synced_len.min(17));
    }
}

#[test]
fn format_1_deliveries_are_dated_at_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    std::fs::write(&path, b"popfetch-uidls 1\nD old\nH held\nP p k1\n").unwrap();
    let before = now_secs();
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    let at = s.delivered_at(&u("old")).unwrap();
    assert!(at >= before && at <= now_secs());
    assert!(s.is_held(&u("held")) && s.pending().len() == 1);
    drop(s);
    // The date stays put: reopening does not move it.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("popfetch-uidls 4\n"), "{text}");
    assert!(text.contains(&format!("T {at}\nold\n")), "{text}");
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert_eq!(s.delivered_at(&u("old")), Some(at));
    // Undated D records are format 1 only.
    drop(s);
    std::fs::write(&path, b"popfetch-uidls 2\nD x\n").unwrap();
    assert!(AccountState::open_stem(dir.path(), "a").is_err());
}

#[test]
fn oversize_and_message_ids_survive_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
        s.record_oversize(&u("big"));
        s.record_oversize(&u("big"));
        s.record_message_id("0123abcd", 4096);
        s.sync().unwrap();
    }
    let path = dir.path().join("a.uidls");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("O big").count(), 1, "{text}");
    // An old Message-ID record falls out of the window.
    let old = now_secs() - DEDUPE_WINDOW.as_secs() - 10;
    std::fs::write(&path, format!("{text}M {old} 10 ffff\n")).unwrap();
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert!(s.is_oversize(&u("big")));
    assert!(s.seen_message_id("0123abcd", 4096));
    assert!(!s.seen_message_id("0123abcd", 4097));
    assert!(!s.seen_message_id("ffff", 10));
    // Gone from the server: forgotten.
    s.retain_only(&std::collections::HashSet::new());
    assert!(!s.is_oversize(&u("big")));
    s.compact().unwrap();
    drop(s);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("ffff") && text.contains("M ") && !text.contains("O big"),
        "{text}"
    );
    for bad in [
        "M x 1 ab\n",
        "M 1 2 a-b\n",
        "M 1 2\n",
        "M 1 2 ab extra\n",
        "D y notanumber\n",
    ] {
        std::fs::write(&path, format!("popfetch-uidls 2\n{bad}")).unwrap();
        let e = AccountState::open_stem(dir.path(), "a").unwrap_err();
        assert!(
            matches!(e, StateError::Corrupt { line: 2, .. }),
            "{bad}: {e}"
        );
    }
}

// ---- the mailbox key, and trust

fn mailbox() -> Mailbox {
    Mailbox::new("POP.Example.org", 995, "alice")
}

#[test]
fn mailbox_file_stem_is_readable_plain_and_never_an_account_name() {
    assert_eq!(mailbox().file_stem(), "alice@pop.example.org:995");
    assert_eq!(mailbox().to_string(), "alice@pop.example.org:995");
    let odd = Mailbox::new("::1", 110, "a/b c%@d");
    assert_eq!(odd.file_stem(), "a%2Fb%20c%25%40d@%3A%3A1:110");
    assert_eq!(odd.to_string(), "a/b c%@d@[::1]:110");
    let long = Mailbox::new("h", 110, &"x".repeat(300));
    let stem = long.file_stem();
    assert!(
        stem.starts_with("mailbox-") && stem.len() == 8 + 32,
        "{stem}"
    );
    assert_ne!(stem, Mailbox::new("h", 110, &"x".repeat(301)).file_stem());
}

#[test]
fn renamed_account_finds_the_mailbox_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open(dir.path(), &mailbox(), "old").unwrap();
        s.record_delivered(&u("one"));
        s.sync().unwrap();
    }
    let s = AccountState::open(dir.path(), &mailbox(), "new").unwrap();
    assert!(s.is_delivered(&u("one")));
    assert!(s.path().ends_with("alice@pop.example.org:995.uidls"));
}

#[test]
fn name_keyed_journal_is_moved_to_the_mailbox_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open_stem(dir.path(), "home").unwrap();
        s.record_delivered(&u("one"));
        s.sync().unwrap();
    }
    {
        let s = AccountState::open(dir.path(), &mailbox(), "home").unwrap();
        assert!(s.is_delivered(&u("one")));
    }
    assert!(!dir.path().join("home.uidls").exists());
    // A name-keyed journal is not taken by another account's mailbox that has its own.
    std::fs::write(
        dir.path().join("other.uidls"),
        "popfetch-uidls 2\nD two 1\n",
    )
    .unwrap();
    let s = AccountState::open(dir.path(), &mailbox(), "other").unwrap();
    assert!(s.is_delivered(&u("one")) && !s.is_delivered(&u("two")));
}

#[test]
fn two_accounts_on_one_mailbox_share_one_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _first = AccountState::open(dir.path(), &mailbox(), "a").unwrap();
    let err = AccountState::open(dir.path(), &mailbox(), "b").unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("alice@pop.example.org:995"),
        "{err}"
    );
    AccountState::open(
        dir.path(),
        &Mailbox::new("pop.example.org", 110, "alice"),
        "c",
    )
    .unwrap();
}

#[test]
fn state_dir_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = AccountState::open(dir.path(), &mailbox(), "a").unwrap_err();
    assert!(matches!(err, StateError::Untrusted(_)), "{err}");
    assert!(err.to_string().contains("chmod go-w"), "{err}");
    assert!(!dir.path().join("alice@pop.example.org:995.lock").exists());
}

#[test]
fn planted_symlinks_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // At the journal: refused.
    let journal = state.join("alice@pop.example.org:995.uidls");
    std::os::unix::fs::symlink(&victim, &journal).unwrap();
    let err = AccountState::open(&state, &mailbox(), "a").unwrap_err();
    assert!(matches!(err, StateError::Untrusted(_)), "{err}");
    std::fs::remove_file(&journal).unwrap();
    // At the temporary file of an atomic replace: refused, not written through.
    let tmp = state.join("alice@pop.example.org:995.uidls.tmp");
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let err = AccountState::open(&state, &mailbox(), "a").unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    // A stale regular temporary file of ours is replaced.
    std::fs::remove_file(&tmp).unwrap();
    std::fs::write(&tmp, "stale").unwrap();
    AccountState::open(&state, &mailbox(), "a").unwrap();
    assert!(!tmp.exists());
}

proptest! {
    /// Two different mailboxes never share a journal: the stem is injective (escaping is
    /// reversible, and the digest of a long one differs from every readable stem).
    #[test]
    fn mailbox_stems_are_distinct(
        a in ("[a-zA-Z0-9.@%:/ -]{0,12}", "[a-z0-9.:-]{1,12}", 1u16..),
        b in ("[a-zA-Z0-9.@%:/ -]{0,12}", "[a-z0-9.:-]{1,12}", 1u16..),
    ) {
        let (ma, mb) = (Mailbox::new(&a.1, a.2, &a.0), Mailbox::new(&b.1, b.2, &b.0));
        prop_assert_eq!(ma == mb, ma.file_stem() == mb.file_stem());
        let stem = ma.file_stem();
        prop_assert!(!stem.contains('/') && stem.contains('@'));
    }
}

#[test]
fn a_changed_mailbox_of_an_account_with_state_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = AccountState::open(dir.path(), &mailbox(), "home").unwrap();
        s.record_delivered(&u("one"));
        s.sync().unwrap();
    }
    let moved = Mailbox::new("pop.example.org", 110, "alice");
    let err = AccountState::open(dir.path(), &moved, "home").unwrap_err();
    assert!(matches!(err, StateError::MailboxChanged(_)), "{err}");
    let text = err.to_string();
    assert!(text.contains("mv "), "{text}");
    assert!(text.contains("alice@pop.example.org:110.uidls"), "{text}");
    // Done as told: the record follows.
    std::fs::rename(
        dir.path().join("alice@pop.example.org:995.uidls"),
        dir.path().join("alice@pop.example.org:110.uidls"),
    )
    .unwrap();
    let s = AccountState::open(dir.path(), &moved, "home").unwrap();
    assert!(s.is_delivered(&u("one")));
    drop(s);
    // A new account on a new mailbox, or an account whose old journal is gone, just starts.
    AccountState::open(dir.path(), &Mailbox::new("h", 1, "x"), "other").unwrap();
    std::fs::remove_file(dir.path().join("alice@pop.example.org:110.uidls")).unwrap();
    AccountState::open(dir.path(), &mailbox(), "home").unwrap();
}

// ---- the record format

/// Every kind of record, with its line.
fn known_records() -> Vec<(Record, &'static str, u32)> {
    vec![
        (
            Record::Pending {
                uidl: u("u1"),
                key: "1700000000.M1P2.host".into(),
            },
            "P u1 1700000000.M1P2.host",
            2,
        ),
        (
            Record::Delivered {
                uidl: u("u2"),
                at: Some(1_700_000_000),
            },
            "D u2 1700000000",
            2,
        ),
        (
            Record::Delivered {
                uidl: u("u3"),
                at: None,
            },
            "D u3",
            1,
        ),
        (Record::Forget(u("u4")), "F u4", 2),
        (Record::Held(u("u5")), "H u5", 2),
        (
            Record::Config("d1-0123456789abcdef".into()),
            "C d1-0123456789abcdef",
            2,
        ),
        (Record::Oversize(u("u6")), "O u6", 2),
        (
            Record::MessageId {
                at: 1_700_000_001,
                size: 4096,
                digest: "0123abcdef".into(),
            },
            "M 1700000001 4096 0123abcdef",
            2,
        ),
    ]
}

#[test]
fn every_record_kind_encodes_to_its_known_line() {
    for (rec, line, _) in known_records() {
        assert_eq!(rec.encode(), line);
    }
}

#[test]
fn every_record_kind_parses_from_its_known_line() {
    for (rec, line, format) in known_records() {
        assert_eq!(Record::parse(line.as_bytes(), format), Ok(rec));
    }
    // Words after a fingerprint have always been ignored.
    assert_eq!(
        Record::parse(b"C abc def", 2),
        Ok(Record::Config("abc".into()))
    );
}

#[test]
fn malformed_records_are_refused_saying_why() {
    for (line, format, why) in [
        (&b"H"[..], 2, "record without an argument"),
        (b"", 2, "record without an argument"),
        (b"Z u", 2, "unknown record"),
        (b"H u extra", 2, "unknown record"),
        (b"D u", 2, "unknown record"),
        (b"D u 5", 1, "unknown record"),
        (b"D u x", 2, "bad number"),
        (b"D u -1", 2, "bad number"),
        (b"P u", 2, "unknown record"),
        (b"P u ", 2, "unknown record"),
        (b"P u \xff", 2, "bad key"),
        (b"C \xff", 2, "bad fingerprint"),
        (b"M 1 2", 2, "bad Message-ID digest"),
        (b"M 1 2 a-b", 2, "bad Message-ID digest"),
        (b"M 1 2 ab x", 2, "unknown record"),
        (b"M x 2 ab", 2, "bad number"),
        (
            b"H bad\x01",
            2,
            "unique-id contains the byte 0x01, outside 0x21-0x7e",
        ),
        (b"H ", 2, "empty unique-id"),
    ] {
        assert_eq!(
            Record::parse(line, format),
            Err(why.to_string()),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn headers_encode_and_parse() {
    assert_eq!(record::header(2), "popfetch-uidls 2\n");
    assert_eq!(record::parse_header(b"popfetch-uidls 2"), Some(2));
    assert_eq!(record::parse_header(b"popfetch-uidls 1"), Some(1));
    assert_eq!(record::parse_header(b"popfetch-uidls x"), None);
    assert_eq!(record::parse_header(b"something 2"), None);
}

/// A journal as this format writes it, every kind of record in the order compaction writes
/// them; `now` dates the Message-ID so that it is inside the window.
fn fixture(now: u64) -> String {
    format!(
        "popfetch-uidls 4\n\
         T 1700000000\n\
         a\n\
         T 1700000100\n\
         b\n\
         O big\n\
         M {now} 4096 0123abcd\n\
         P p 1700000200.M1P2.host\n\
         C 0123456789abcdef\n\
         H h1\n\
         H h2\n\
         R h1 bob\n\
         R h1 carol@example.org\n"
    )
}

#[test]
fn a_journal_of_the_current_format_reads_the_same_and_compacts_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    let text = fixture(now_secs() - 60);
    std::fs::write(&path, &text).unwrap();
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert_eq!(s.delivered_at(&u("a")), Some(1_700_000_000));
    assert_eq!(s.delivered_at(&u("b")), Some(1_700_000_100));
    assert_eq!(s.delivered_count(), 2);
    assert!(s.is_oversize(&u("big")));
    assert!(s.seen_message_id("0123abcd", 4096));
    assert_eq!(
        s.pending(),
        vec![(u("p"), "1700000200.M1P2.host".to_string())]
    );
    assert!(s.is_held(&u("h1")) && s.is_held(&u("h2")));
    assert_eq!(s.reached(&u("h1")), ["bob", "carol@example.org"]);
    assert!(s.reached(&u("h2")).is_empty());
    assert_eq!(s.fingerprint.as_deref(), Some("0123456789abcdef"));
    // Opening did not rewrite it; compacting writes it back byte for byte.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    s.compact().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn appended_records_are_written_in_the_journal_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    s.set_fingerprint("0123456789abcdef");
    s.record_pending(&u("x"), "key");
    s.record_delivered_at(&u("x"), 5);
    s.record_held(&u("y"));
    s.record_oversize(&u("z"));
    s.forget(&u("z"));
    s.record_reached(&u("y"), "bob");
    s.record_reached(&u("y"), "bob");
    s.sync().unwrap();
    assert_eq!(
        std::fs::read_to_string(s.path()).unwrap(),
        "popfetch-uidls 4\nC 0123456789abcdef\nP x key\nD x 5\nH y\nO z\nF z\nR y bob\n"
    );
}

#[test]
fn reached_recipients_survive_a_retry_and_go_with_delivery_or_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    s.record_held(&u("m"));
    s.record_reached(&u("m"), "bob");
    s.record_reached(&u("n"), "bob");
    s.record_reached(&u("gone"), "bob");
    s.sync().unwrap();
    // `popfetch retry` releases the hold, not what bob has.
    assert_eq!(s.release_held(), 1);
    s.sync().unwrap();
    drop(s);
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert!(!s.is_held(&u("m")));
    assert_eq!(s.reached(&u("m")), ["bob"]);
    // Delivered to all at last: nothing left to remember per recipient.
    s.record_delivered(&u("m"));
    // Gone from the server: forgotten.
    s.retain_only_by(|x| x != "gone");
    s.sync().unwrap();
    drop(s);
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert!(s.reached(&u("m")).is_empty());
    assert!(s.reached(&u("gone")).is_empty());
    assert_eq!(s.reached(&u("n")), ["bob"]);
    // A format-2 journal cannot hold them.
    assert!(Record::parse(b"R n bob", 2).is_err());
}

fn any_uidl() -> impl Strategy<Value = Uidl> {
    "[!-~]{1,70}".prop_map(|s| u(&s))
}

/// Any record this build writes (undated deliveries are format 1's, read but never written).
fn any_record() -> impl Strategy<Value = Record> {
    let word = "[^ \n]{1,24}";
    prop_oneof![
        (any_uidl(), word).prop_map(|(uidl, key)| Record::Pending { uidl, key }),
        (any_uidl(), any::<u64>()).prop_map(|(uidl, at)| Record::Delivered { uidl, at: Some(at) }),
        any_uidl().prop_map(Record::Forget),
        any_uidl().prop_map(Record::Held),
        word.prop_map(Record::Config),
        any_uidl().prop_map(Record::Oversize),
        (any::<u64>(), any::<u64>(), "[A-Za-z0-9]{1,32}")
            .prop_map(|(at, size, digest)| Record::MessageId { at, size, digest }),
        (any_uidl(), word).prop_map(|(uidl, rcpt)| Record::Reached { uidl, rcpt }),
        any::<u64>().prop_map(Record::Time),
        any_uidl().prop_map(Record::Kept),
    ]
}

/// Format 4's compacted deliveries: a `T` line, then bare UIDLs. A bare UIDL needs a `T`
/// before it, and neither is a record of an older format.
#[test]
fn bare_uidls_take_the_time_before_them_and_only_in_format_4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    std::fs::write(
        &path,
        "popfetch-uidls 4\nT 1700000000\na\nb\nT 1700000100\nc\nD d 1700000200\nF b\n",
    )
    .unwrap();
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert_eq!(s.delivered_at(&u("a")), Some(1_700_000_000));
    assert_eq!(s.delivered_at(&u("b")), None);
    assert_eq!(s.delivered_at(&u("c")), Some(1_700_000_100));
    assert_eq!(s.delivered_at(&u("d")), Some(1_700_000_200));
    drop(s);
    for (bad, line) in [
        ("popfetch-uidls 4\nD x 5\nlonely\n", 3),
        ("popfetch-uidls 3\nT 1700000000\n", 2),
        ("popfetch-uidls 3\nD x 5\nbare\n", 3),
        ("popfetch-uidls 4\nT 17x\n", 2),
        ("popfetch-uidls 4\nT 1 2\n", 2),
    ] {
        std::fs::write(&path, bad).unwrap();
        let e = AccountState::open_stem(dir.path(), "a").unwrap_err();
        assert!(
            matches!(&e, StateError::Corrupt { line: l, .. } if *l == line),
            "{bad:?}: {e}"
        );
    }
}

/// A compacted journal is a UIDL list: each UIDL and its newline, one `T` line a time of
/// delivery, and the header; a format 3 journal becomes one when opened.
#[test]
fn a_compacted_journal_costs_a_uidl_and_a_newline_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    let uidls: Vec<String> = (0..5000).map(|i| format!("{i:08X}5f3c2a10")).collect();
    let mut text = String::from("popfetch-uidls 3\n");
    for (i, x) in uidls.iter().enumerate() {
        // Delivered over three seconds, each with its `P`.
        text += &format!(
            "P {x} 1700000000.M{i}P1.host\nD {x} {}\n",
            1_700_000_000 + i % 3
        );
    }
    std::fs::write(&path, &text).unwrap();
    let s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert_eq!(s.delivered_count(), 5000);
    assert_eq!(s.delivered_at(&u(&uidls[4])), Some(1_700_000_001));
    drop(s);
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let list: usize = uidls.iter().map(|x| x.len() + 1).sum();
    assert_eq!(
        len,
        "popfetch-uidls 4\n".len() + 3 * "T 1700000000\n".len() + list
    );
}

proptest! {
    /// Encoding then parsing gives the record back, and the line is one line.
    #[test]
    fn records_round_trip(rec in any_record()) {
        let line = rec.encode();
        prop_assert!(!line.contains('\n'));
        prop_assert_eq!(Record::parse(line.as_bytes(), FORMAT), Ok(rec));
    }

    /// Format 1's undated deliveries round-trip under format 1.
    #[test]
    fn undated_deliveries_round_trip_in_format_1(uidl in any_uidl()) {
        let rec = Record::Delivered { uidl, at: None };
        prop_assert_eq!(Record::parse(rec.encode().as_bytes(), 1), Ok(rec));
    }

    /// No line, however broken, makes the parser panic.
    #[test]
    fn record_parse_never_panics(line in proptest::collection::vec(any::<u8>(), 0..100),
                                 format in 0u32..4) {
        let _ = Record::parse(&line, format);
    }

    /// No file, however broken, makes the journal reader panic; what it accepts is cut at a
    /// line end.
    #[test]
    fn journal_parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300),
                                  header in 0usize..3) {
        let mut bytes = [&b""[..], b"popfetch-uidls 1\n", b"popfetch-uidls 2\n"][header].to_vec();
        bytes.extend_from_slice(&body);
        if let Ok((_, valid)) = parse(Path::new("x"), &bytes) {
            prop_assert!(valid <= bytes.len());
            prop_assert!(valid == 0 || bytes[valid - 1] == b'\n');
        }
    }
}

// ---- the config fingerprint of held messages

#[test]
fn held_messages_survive_the_upgrade_from_the_old_fingerprint_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.uidls");
    // As older popfetch left it: a fingerprint of 16 hex digits, two messages held under it.
    std::fs::write(
        &path,
        "popfetch-uidls 2\nD a 1700000000\nC 0123456789abcdef\nH h1\nH h2\n",
    )
    .unwrap();
    let new = "d1-00112233445566778899aabbccddeeff";
    {
        let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
        assert_eq!(s.set_fingerprint(new), 0);
        assert!(s.is_held(&u("h1")) && s.is_held(&u("h2")));
        s.sync().unwrap();
    }
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .ends_with(&format!("C {new}\n"))
    );
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert!(s.is_held(&u("h1")) && s.is_held(&u("h2")));
    assert_eq!(s.set_fingerprint(new), 0, "the same settings");
    // Taken over once: a real change of the delivery settings releases them.
    assert_eq!(s.set_fingerprint("d1-ffeeddccbbaa99887766554433221100"), 2);
    assert!(!s.is_held(&u("h1")) && !s.is_held(&u("h2")));
    assert!(s.is_delivered(&u("a")));
}

#[test]
fn a_changed_fingerprint_releases_held_messages() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = AccountState::open_stem(dir.path(), "a").unwrap();
    assert_eq!(s.set_fingerprint("d1-aa"), 0);
    s.record_held(&u("h"));
    assert_eq!(s.set_fingerprint("d1-aa"), 0);
    assert!(s.is_held(&u("h")));
    assert_eq!(s.set_fingerprint("d1-bb"), 1);
    assert!(!s.is_held(&u("h")));
    // Going back to an old-style fingerprint (an older popfetch) is a change like any other.
    s.record_held(&u("h"));
    assert_eq!(s.set_fingerprint("0123456789abcdef"), 1);
    // And two old-style fingerprints that differ are a change too.
    s.record_held(&u("h"));
    assert_eq!(s.set_fingerprint("fedcba9876543210"), 1);
}

/// Every file in `dir` with its bytes and modification time.
fn listing(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name(),
                std::fs::read(e.path()).unwrap(),
                meta.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_snapshot_reads_the_journal_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // No state directory: nothing known, and none created.
    let empty = Snapshot::read(&state, &mailbox(), "home").unwrap();
    assert!(empty.path.is_none() && !empty.is_delivered(&u("one")));
    assert!(!state.exists());
    {
        let mut s = AccountState::open(&state, &mailbox(), "home").unwrap();
        s.record_delivered(&u("one"));
        s.record_held(&u("two"));
        s.record_oversize(&u("big"));
        s.sync().unwrap();
    }
    // A torn tail, which an open would cut.
    let journal = state.join(format!("{}.uidls", mailbox().file_stem()));
    let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
    f.write_all(b"D thr").unwrap();
    drop(f);
    let before = listing(&state);
    let snap = Snapshot::read(&state, &mailbox(), "home").unwrap();
    assert_eq!(snap.path.as_deref(), Some(journal.as_path()));
    assert!(snap.is_delivered(&u("one")) && !snap.is_delivered(&u("two")));
    assert!(snap.is_held(&u("two")) && !snap.is_delivered(&u("big")));
    assert!(!snap.is_delivered(&u("thr")));
    // While it lives, a poll of the mailbox is refused, as with a second poll.
    let err = AccountState::open(&state, &mailbox(), "home").unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    drop(snap);
    assert_eq!(listing(&state), before);
}

#[test]
fn a_snapshot_is_refused_while_a_poll_holds_the_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let _poll = AccountState::open(dir.path(), &mailbox(), "home").unwrap();
    let err = Snapshot::read(dir.path(), &mailbox(), "home").unwrap_err();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
}

#[test]
fn a_snapshot_reads_a_name_keyed_journal_where_it_lies() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let named = dir.path().join("home.uidls");
    std::fs::write(&named, b"popfetch-uidls 1\nD one\n").unwrap();
    std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o600)).unwrap();
    let snap = Snapshot::read(dir.path(), &mailbox(), "home").unwrap();
    assert!(snap.is_delivered(&u("one")));
    assert!(named.exists(), "not moved");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
