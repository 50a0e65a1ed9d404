use std::collections::HashSet;
use std::path::Path;

use proptest::prelude::*;

use super::*;

#[test]
fn toml_strings_escape_quotes_backslashes_and_controls() {
    let nasty = "a\"b\\c\nd\te\u{1}f\u{7f}g ü";
    let s = toml_out::string(nasty);
    let t: toml::Table = toml::from_str(&format!("k = {s}")).unwrap();
    assert_eq!(t["k"].as_str(), Some(nasty));
    assert_eq!(
        toml_out::array(&["x".into(), "\"".into()]),
        r#"["x", "\""]"#
    );
}

#[test]
fn names_are_valid_and_unique() {
    assert_eq!(
        sanitize_name("alice@pop.example.org"),
        "alice-pop.example.org"
    );
    assert_eq!(sanitize_name("..@@"), "imported");
    let mut accounts: Vec<Account> = ["a b", "a-b", "a@b", &"x".repeat(80)]
        .iter()
        .map(|n| {
            let mut a = Account::new(String::new(), "h".into(), "u".into());
            a.name = n.to_string();
            a
        })
        .collect();
    unique_names(&mut accounts);
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names[..3], ["a-b", "a-b-2", "a-b-3"]);
    assert_eq!(names[3].len(), 64);
}

#[test]
fn sizes_take_k_and_m() {
    assert_eq!(parse_size("10m"), Some(10 * 1024 * 1024));
    assert_eq!(parse_size("512k"), Some(512 * 1024));
    assert_eq!(parse_size("77"), Some(77));
    assert_eq!(parse_size("k"), None);
    assert_eq!(parse_size("99999999999999999999m"), None);
}

#[test]
fn fetchmail_tokens_drop_noise_separators_and_comments() {
    let toks = fetchmail::tokenize(
        "poll a.example with proto pop3:\n  user 'x\\x41y' there has pass \"p#w\" # c\n",
    );
    let words: Vec<(&str, usize)> = toks.iter().map(|t| (t.text.as_str(), t.line)).collect();
    assert_eq!(
        words,
        [
            ("poll", 1),
            ("a.example", 1),
            ("proto", 1),
            ("pop3", 1),
            ("user", 2),
            ("xAy", 2),
            ("pass", 2),
            ("p#w", 2)
        ]
    );
}

#[test]
fn fetchmail_entries_defaults_and_users() {
    let (accounts, imported, _) = fetchmail::parse(
        "set daemon 60\ndefaults keep ssl\npoll h1 via real.h1 user u1 pass p1 is l1\n\
         user u2 pass p2 no keep\npoll h2 proto imap user u3\n",
        "rc",
    );
    assert_eq!(accounts.len(), 2);
    assert_eq!(accounts[0].host, "real.h1");
    assert!(accounts[0].keep);
    assert_eq!(accounts[0].tls, Tls::Implicit);
    assert!(!accounts[1].keep);
    assert_eq!(imported.interval_secs, Some(60));
    assert_eq!(imported.notes.len(), 1);
    assert_eq!(imported.notes[0].line, 5);
}

#[test]
fn fetchids_lines_go_to_their_account_case_blind() {
    let text = b"u@x@Host.example UID1\n  U@X@host.example   UID2  \nu@x@host.example UID1\n\
                 other@h Z\nno-at-sign\nu@x@host.example \x01bad\n";
    let (uidls, other) = fetchmail::read_ids(
        text,
        Path::new("ids"),
        &[("u@x".into(), "host.example".into())],
    );
    let got: Vec<&str> = uidls[0].valid.iter().map(|u| u.as_str()).collect();
    assert_eq!(got, ["UID1", "UID2"]);
    assert_eq!(uidls[0].invalid.len(), 1);
    assert_eq!(other, 2);
}

#[test]
fn oldmail_files_hold_uidl_nul_timestamp() {
    let u = getmail::read_oldmail(b"A1\x00170\nB-2\x00171\nbroken\n\n", Path::new("o"));
    let got: Vec<&str> = u.valid.iter().map(|u| u.as_str()).collect();
    assert_eq!(got, ["A1", "B-2"]);
    assert_eq!(
        u.invalid,
        [(3, "no NUL between unique-id and timestamp".into())]
    );
    assert_eq!(u.remarks.len(), 1, "a '-' may have been a '/'");
    // The first-seen times come along (getmail writes floats); nonsense is ignored.
    let a1 = crate::pop3::Uidl::parse(b"A1").unwrap();
    assert_eq!(u.first_seen.get(&a1), Some(&170));
    let u = getmail::read_oldmail(b"X\x001700000000.25\nY\x00soon\nZ\x00-5\n", Path::new("o"));
    let at = |id: &[u8]| {
        u.first_seen
            .get(&crate::pop3::Uidl::parse(id).unwrap())
            .copied()
    };
    assert_eq!(
        (at(b"X"), at(b"Y"), at(b"Z")),
        (Some(1_700_000_000), None, None)
    );
    assert_eq!(
        getmail::oldmail_name("pop.example", 995, "a/b:c|d"),
        "oldmail-pop.example-995-a-b-c-d"
    );
}

#[test]
fn getmail_tuples_and_ini() {
    assert_eq!(
        getmail::parse_tuple(r#"("-f", '%(sender)', "a\"b",)"#),
        Some(vec!["-f".into(), "%(sender)".into(), "a\"b".into()])
    );
    assert_eq!(getmail::parse_tuple("(1, 2)"), None);
    let ini = getmail::parse_ini("[a]\nk = v\n  more\n; c\nx: y\nstray\n");
    assert_eq!(ini.sections[0].2[0].value, "v\nmore");
    assert_eq!(ini.sections[0].2[1].key, "x");
    assert_eq!(ini.stray, [6]);
}

#[test]
fn mpop_uidls_lists_are_picked_by_host_and_user() {
    let text = b"# mpop 1.4.18\n 2 h u\n#uid\nB\n 1 h other\nC\n";
    let u = mpop::read_uidls(text, Path::new("f"), "h", "u").unwrap();
    let got: Vec<&str> = u.valid.iter().map(|u| u.as_str()).collect();
    assert_eq!(got, ["#uid", "B"]);
    assert!(mpop::read_uidls(text, Path::new("f"), "h", "nobody").is_none());
}

#[test]
fn mpop_accounts_inherit_defaults_and_parents() {
    let mut out = Imported::default();
    let accounts = mpop::parse(
        "defaults\nkeep on\naccount a\nhost h\nuser u\npassword \"x \"y\"\"\n\
         account b : a\nuser v\npasswordeval pass show b\n",
        "rc",
        &mut out,
    );
    let (a, _) = mpop::translate(&accounts[0].0, 1, &accounts[0].2, "rc", &mut out).unwrap();
    let (b, _) = mpop::translate(&accounts[1].0, 1, &accounts[1].2, "rc", &mut out).unwrap();
    assert_eq!(a.password, Password::Inline("x \"y\"".into()));
    assert!(a.keep && b.keep);
    assert_eq!(b.host, "h");
    assert_eq!(
        b.password,
        Password::Command(vec!["pass".into(), "show".into(), "b".into()])
    );
}

#[test]
fn uidl_sets_drop_duplicates_and_count_invalid() {
    let mut u = Uidls::new("x".into());
    let mut seen = HashSet::new();
    for raw in [&b"a"[..], b"a", b"", b"b c", b"b"] {
        u.push(1, raw, &mut seen);
    }
    assert_eq!(u.valid.len(), 2);
    assert_eq!(u.invalid.len(), 2);
}

fn rendered_is_toml(imported: &Imported) {
    let text = render(imported, Some(Path::new("/s\"tate")));
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        panic!("not TOML: {e}\n{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any rc file text: the parsers do not panic, and what is rendered is TOML.
    #[test]
    fn any_fetchmail_rc_renders_toml(text in "(poll|user|pass|is|mda|set|daemon|defaults|keep|ssl|limit|'|\"|\\\\|#|\n| |x|%F|\u{0}|é|;|smtphost|via){0,60}") {
        let (accounts, mut imported, _) = fetchmail::parse(&text, "rc");
        imported.accounts = accounts;
        unique_names(&mut imported.accounts);
        rendered_is_toml(&imported);
    }

    #[test]
    fn any_mpop_rc_renders_toml(text in "(account|defaults|host|user|password|passwordeval|delivery|mda|maildir|tls|keep|on|off|:|,|\"|%F|'|\n| |x|\u{1}){0,60}") {
        let mut out = Imported::default();
        for (name, line, settings) in mpop::parse(&text, "rc", &mut out) {
            if let Some((a, _)) = mpop::translate(&name, line, &settings, "rc", &mut out) {
                out.accounts.push(a);
            }
        }
        unique_names(&mut out.accounts);
        rendered_is_toml(&out);
    }

    #[test]
    fn any_getmail_rc_renders_toml(text in "(\\[retriever\\]|\\[destination\\]|\\[options\\]|type|=|:|SimplePOP3Retriever|MDA_external|server|username|password|path|arguments|\\(|\\)|\"|'|,|\n| |x|%\\(sender\\)){0,60}") {
        let mut out = Imported::default();
        if let Some(a) = getmail::translate(&text, "rc", "label", &mut out).account {
            out.accounts.push(a);
        }
        unique_names(&mut out.accounts);
        rendered_is_toml(&out);
    }

    /// Arbitrary bytes as state files: no panic, and what is kept is valid.
    #[test]
    fn any_state_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (u, _) = fetchmail::read_ids(&bytes, Path::new("i"), &[("a".into(), "b".into())]);
        prop_assert_eq!(u.len(), 1);
        let _ = getmail::read_oldmail(&bytes, Path::new("o"));
        let _ = mpop::read_uidls(&bytes, Path::new("m"), "h", "u");
    }

    /// Any command text: a non-empty argv, and a shell script only behind /bin/sh -c.
    #[test]
    fn any_command_translates(cmd in "[a-z %F'\"|$\\\\;=~-]{0,40}") {
        let c = translate_command(&cmd, &[("%F", Placeholder::Popfetch("{from}"))]);
        prop_assert!(!c.argv.is_empty());
        if c.shell_reason.is_some() {
            prop_assert_eq!(&c.argv[0], "/bin/sh");
        }
    }
}
