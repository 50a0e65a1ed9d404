use proptest::prelude::*;
use tracing::Level;

use super::*;

#[test]
fn the_plain_grammar_is_taken() {
    for ok in [
        "info",
        "OFF",
        " popfetch=debug , warn",
        "popfetch::fetch=Trace,warn,",
        "a-b_c::d=error",
    ] {
        assert!(filter(ok).is_some(), "{ok:?}");
    }
}

#[test]
fn what_targets_would_read_otherwise_is_refused() {
    for bad in [
        "",
        " , ,",
        "chatty",     // Targets: the target `chatty` at trace
        "popfetch",   // the same
        "popfetch=3", // Targets: a number is a level
        "popfetch=",  // Targets: an empty level is error
        "=info",
        "a b=info",              // Targets: a target with a blank
        " \u{e9}=info",          // found by fuzzing: EnvFilter panicked
        "[{a=/(a+)+b/}]=info",   // a field filter (EnvFilter: a regex)
        "popfetch[{uidl}]=info", // Targets: the field list is taken
        "a=b=info",
        "info;debug",
    ] {
        assert!(filter(bad).is_none(), "{bad:?}");
    }
    assert!(filter(&"a=info,".repeat(200)).is_none(), "over 1024 bytes");
}

#[test]
fn a_filter_means_what_it_says() {
    let f = filter("popfetch=debug,warn").unwrap();
    assert!(f.would_enable("popfetch::fetch", &Level::DEBUG));
    assert!(!f.would_enable("popfetch::fetch", &Level::TRACE));
    assert!(f.would_enable("lettre", &Level::WARN));
    assert!(!f.would_enable("lettre", &Level::INFO));
    let f = filter("popfetch=off").unwrap();
    assert!(!f.would_enable("popfetch", &Level::ERROR));
    assert!(
        !f.would_enable("other", &Level::ERROR),
        "no default: nothing else"
    );
}

/// The sanitiser this module had before it built `Targets` itself: what it accepted, cleaned,
/// was handed to tracing-subscriber's parser.
fn cleaned_as_before(directives: &str) -> Option<String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if directives.len() > 1024 {
        return None;
    }
    let mut cleaned = Vec::new();
    for d in directives
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, d),
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return None;
        }
        if let Some(t) = target
            && (t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')))
        {
            return None;
        }
        cleaned.push(match target {
            Some(t) => format!("{t}={level}"),
            None => level.to_string(),
        });
    }
    (!cleaned.is_empty()).then(|| cleaned.join(","))
}

fn directives() -> impl Strategy<Value = String> {
    let directive = (
        prop_oneof![Just(""), Just(" "), Just("\t")],
        prop_oneof![
            Just(""),
            Just("popfetch"),
            Just("a::b"),
            Just("x-y"),
            Just("é"),
            Just("a b")
        ],
        prop_oneof![
            Just(""),
            Just("="),
            Just("=info"),
            Just("= DEBUG "),
            Just("=off"),
            Just("=3"),
            Just("=x"),
            Just("[s]"),
            Just("[{f=1}]=debug"),
            Just("warn"),
            Just("=a=info"),
        ],
        prop_oneof![Just(""), Just(" ")],
    )
        .prop_map(|(pre, target, rest, post)| format!("{pre}{target}{rest}{post}"));
    proptest::collection::vec(directive, 0..4).prop_map(|d| d.join(","))
}

proptest! {
    /// The same texts are taken as before, and each means the same filter as its cleaned text
    /// read by tracing-subscriber.
    #[test]
    fn the_grammar_is_the_one_taken_before(text in directives()) {
        let before = cleaned_as_before(&text);
        let now = filter(&text);
        prop_assert_eq!(before.is_some(), now.is_some(), "{:?}", text);
        if let (Some(before), Some(now)) = (before, now) {
            let before: Targets = before.parse().unwrap();
            let sorted = |t: &Targets| {
                let mut v: Vec<(String, String)> =
                    t.iter().map(|(t, l)| (t.to_string(), l.to_string())).collect();
                v.sort();
                v
            };
            prop_assert_eq!(sorted(&before), sorted(&now), "{:?}", text);
        }
    }
}

#[test]
fn a_line_names_its_account_once() {
    let f = |k: &'static str, v: &str| (k, v.to_string());
    assert_eq!(
        compose("poll failed: refused", &[f("account", "home")]),
        "account home: poll failed: refused"
    );
    // The innermost `account` wins; a message naming its account is left as it is.
    assert_eq!(
        compose("x", &[f("account", "outer"), f("account", "inner")]),
        "account inner: x"
    );
    assert_eq!(
        compose("account home: its task panicked", &[f("account", "home")]),
        "account home: its task panicked"
    );
    assert_eq!(compose("daemon started", &[]), "daemon started");
    // A message that only begins with the word is no exception.
    assert_eq!(
        compose("account added", &[f("account", "two")]),
        "account two: account added"
    );
}

#[test]
fn journal_datagram_known_answer() {
    let line = Line {
        level: Level::WARN,
        text: "account home: poll failed".into(),
        fields: vec![
            ("account", "home".into()),
            ("error", "two\nlines".into()),
            ("elapsed_ms", "12".into()),
        ],
        file: Some("src/daemon/mod.rs"),
        line: Some(7),
    };
    let mut want = b"MESSAGE=account home: poll failed\nPRIORITY=4\nSYSLOG_IDENTIFIER=popfetch\n\
CODE_FILE=src/daemon/mod.rs\nCODE_LINE=7\nPOPFETCH_ACCOUNT=home\nPOPFETCH_ERROR\n"
        .to_vec();
    want.extend_from_slice(&9u64.to_le_bytes());
    want.extend_from_slice(b"two\nlines\nPOPFETCH_ELAPSED_MS=12\n");
    assert_eq!(journal_datagram(&line), want);
    assert_eq!(journal_field("a-b.c"), "POPFETCH_A_B_C");
}

#[test]
fn auto_is_the_journal_under_systemd_and_stderr_at_a_terminal() {
    // (JOURNAL_STREAM set, stderr a terminal, socket exists) -> journal?
    for (stream, tty, socket, want) in [
        (true, false, true, true),
        (true, true, true, true),
        (false, true, true, false),
        (false, false, true, true),
        (false, false, false, false),
    ] {
        assert_eq!(
            LogTarget::Auto.wants_journal(stream, tty, socket),
            want,
            "{stream} {tty} {socket}"
        );
    }
    assert!(LogTarget::Journald.wants_journal(false, true, false));
    assert!(!LogTarget::Stderr.wants_journal(true, false, true));
}
