use std::path::Path;
use std::time::Duration;

use super::*;

const FULL: &str = r#"
state_dir = "/var/lib/popfetch"
[defaults]
keep = true
timeout = "30s"

[[account]]
name = "alice"
host = "pop.example.org"
user = "alice"
password_file = "alice.pass"
deliver = { maildir = "~/Maildir" }

[[account]]
name = "bob.2"
host = "mail.example.net"
tls = "starttls"
ca_file = "/etc/popfetch/ca.pem"
tls_verify = true
user = "bob"
password_command = ["pass", "show", "pop/bob"]
auth = "cram-md5"
keep = false
received_header = false
deliver = { maildir = "/srv/mail/bob" }
"#;

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new("/etc/popfetch/config.toml"), text)
}

#[test]
fn full_config_with_defaults() {
    let c = p(FULL).unwrap();
    assert_eq!(c.state_dir, Path::new("/var/lib/popfetch"));
    let a = &c.accounts[0];
    assert_eq!(
        (a.port, a.tls, a.auth),
        (995, TlsMode::Implicit, AuthMethod::Auto)
    );
    assert!(a.keep && a.tls_verify && a.received_header && !a.allow_plaintext_auth);
    assert_eq!(a.timeout, Duration::from_secs(30));
    assert_eq!(
        a.password,
        PasswordSource::File("/etc/popfetch/alice.pass".into())
    );
    let b = c.account("bob.2").unwrap();
    assert_eq!(
        (b.port, b.tls, b.auth),
        (110, TlsMode::Starttls, AuthMethod::CramMd5)
    );
    assert!(!b.keep && !b.received_header);
    assert_eq!(
        b.password,
        PasswordSource::Command(vec!["pass".into(), "show".into(), "pop/bob".into()])
    );
    assert_eq!(b.deliver, Deliver::Maildir("/srv/mail/bob".into()));
}

fn err(text: &str) -> ConfigError {
    p(text).unwrap_err()
}

const BASE: &str = "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\npassword = \"p\"\ndeliver = { maildir = \"/m\" }\n";

#[test]
fn unknown_key_names_line_column_and_key() {
    let e = err(&format!("{BASE}pasword = \"x\"\n"));
    assert_eq!(e.position, Some((7, 1)));
    let msg = e.to_string();
    assert!(
        msg.contains("/etc/popfetch/config.toml, line 7, column 1"),
        "{msg}"
    );
    assert!(msg.contains("unknown field `pasword`"), "{msg}");
}

#[test]
fn wrong_types_and_values_are_located() {
    let e = err(&BASE.replace("host = \"h\"", "port = \"x\"\nhost = \"h\""));
    assert_eq!(e.position.map(|p| p.0), Some(3));
    assert!(e.to_string().contains("port = \"x\""), "{e}");
    let e = err(&format!("{BASE}tls = \"ssl\"\n"));
    assert!(e.to_string().contains("line 7"), "{e}");
    let e = err(&format!("{BASE}timeout = \"soon\"\n"));
    assert!(e.to_string().contains("line 7"), "{e}");
}

#[test]
fn missing_and_invalid_fields() {
    let e = err(&BASE.replace("host = \"h\"\n", ""));
    assert_eq!(
        (e.account.as_deref(), e.key.as_deref()),
        (Some("a"), Some("host"))
    );
    let e = err(&BASE.replace("name = \"a\"", "name = \"../etc\""));
    assert_eq!(e.key.as_deref(), Some("name"));
    assert_eq!(e.position, Some((2, 8)));
    let e = err(&BASE.replace("password = \"p\"\n", ""));
    assert_eq!(e.key.as_deref(), Some("password"));
    let e = err(&format!("{BASE}password_file = \"/x\"\n"));
    assert!(e.message.contains("only one"), "{e}");
    let e = err(&format!("{BASE}{BASE}"));
    assert!(e.message.contains("same name"), "{e}");
    let e = err(&BASE.replace("deliver = { maildir = \"/m\" }\n", ""));
    assert_eq!(e.key.as_deref(), Some("deliver"));
    let e = err(&format!("{BASE}password_command = []\n").replace("password = \"p\"\n", ""));
    assert_eq!(e.key.as_deref(), Some("password_command"));
}

#[test]
fn clear_text_auth_without_tls_needs_opt_in() {
    let e = err(&format!("{BASE}tls = \"none\"\nauth = \"user\"\n"));
    assert_eq!(e.key.as_deref(), Some("auth"));
    let c = p(&format!(
        "{BASE}tls = \"none\"\nauth = \"user\"\nallow_plaintext_auth = true\n"
    ))
    .unwrap();
    assert_eq!(c.accounts[0].port, 110);
    // auto and challenge-response methods are fine: auto never picks clear text without opt-in.
    p(&format!("{BASE}tls = \"none\"\nauth = \"apop\"\n")).unwrap();
}

#[test]
fn debug_output_redacts_inline_password() {
    let c = p(&BASE.replace("\"p\"", "\"hunter2\"")).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn world_readable_config_with_password_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, BASE).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load(&path).unwrap_err();
    assert!(e.message.contains("chmod 600"), "{e}");
    assert_eq!(e.position, Some((5, 12)));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    load(&path).unwrap();
    // Without an inline password the mode does not matter.
    std::fs::write(
        &path,
        BASE.replace("password = \"p\"", "password_file = \"p\""),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    load(&path).unwrap();
}

#[test]
fn log_levels_that_crash_the_filter_parser_are_refused() {
    // Found by the config fuzz target: tracing-subscriber panics on this directive.
    let e = p("log_level = \" \u{e9}=info\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("log_level"));
    p("log_level = \" popfetch=debug , warn\"\n").unwrap();
    // Field filters compile to regexes that can take seconds and gigabytes: not taken.
    let e = p("log_level = \"[{a=/(a+)+b/}]=info\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("log_level"));
    assert!(p("log_level = \"chatty\"\n").is_err());
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_size("1000"), Ok(1000));
    assert_eq!(parse_size("50MiB"), Ok(50 << 20));
    assert_eq!(parse_size(" 10 MB "), Ok(10_000_000));
    assert_eq!(parse_size("512k"), Ok(512_000));
    assert_eq!(parse_size("2gib"), Ok(2 << 30));
    assert!(parse_size("").is_err());
    assert!(parse_size("MiB").is_err());
    assert!(
        parse_size("5 parsecs")
            .unwrap_err()
            .contains("unknown unit")
    );
    assert!(
        parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large")
    );
}

const POLICIES: &str = r#"
[defaults]
max_size = "50MiB"
dedupe_message_id = true

[[account]]
name = "a"
host = "pop.example.org"
user = "a"
password_file = "a.pass"
keep = true
delete_after = "30d"
max_size_action = "delete"
max_messages_per_poll = 100
max_bytes_per_poll = 1000000
deliver = { maildir = "~/Maildir" }

[[account]]
name = "b"
host = "pop.example.org"
user = "b"
password_file = "b.pass"
max_size = 4096
deliver = { maildir = "~/Maildir" }
"#;

#[test]
fn account_policies() {
    let c = p(POLICIES).unwrap();
    let (a, b) = (&c.accounts[0], &c.accounts[1]);
    assert_eq!(a.max_size, Some(50 << 20));
    assert_eq!(a.max_size_action, SizeAction::Delete);
    assert_eq!(a.delete_after, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(a.max_messages_per_poll, Some(100));
    assert_eq!(a.max_bytes_per_poll, Some(1_000_000));
    assert!(a.dedupe_message_id && b.dedupe_message_id);
    assert_eq!(b.max_size, Some(4096));
    assert_eq!(b.max_size_action, SizeAction::Keep);
    assert_eq!(
        (
            b.delete_after,
            b.max_messages_per_poll,
            b.max_bytes_per_poll
        ),
        (None, None, None)
    );
}

#[test]
fn account_policy_errors_name_the_key() {
    let cases = [
        ("keep = true\ndelete_after = \"30d\"", None),
        ("delete_after = \"30d\"", Some("delete_after")),
        ("max_size = 0", Some("max_size")),
        ("max_size = \"12 furlongs\"", Some("unknown unit")),
        ("max_size = -5", Some("negative")),
        ("max_messages_per_poll = 0", Some("max_messages_per_poll")),
        ("max_bytes_per_poll = \"0\"", Some("max_bytes_per_poll")),
        ("max_size_action = \"bounce\"", Some("max_size_action")),
    ];
    for (extra, want) in cases {
        let text = format!(
            "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\npassword_file = \"p\"\n\
             deliver = {{ maildir = \"/m\" }}\n{extra}\n"
        );
        match (p(&text), want) {
            (Ok(_), None) => {}
            (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{extra}: {e}"),
            (r, w) => panic!("{extra}: {r:?}, wanted {w:?}"),
        }
    }
}
