use std::path::Path;
use std::time::Duration;

use super::*;
use crate::pop3::login::Method;

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
        a.credentials,
        Credentials::Password(PasswordSource::File("/etc/popfetch/alice.pass".into()))
    );
    let b = c.account("bob.2").unwrap();
    assert_eq!(
        (b.port, b.tls, b.auth),
        (110, TlsMode::Starttls, AuthMethod::Only(Method::CramMd5))
    );
    assert!(!b.keep && !b.received_header);
    assert_eq!(
        b.credentials,
        Credentials::Password(PasswordSource::Command(vec![
            "pass".into(),
            "show".into(),
            "pop/bob".into()
        ]))
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
    assert!(
        msg.contains("unknown key `pasword`: did you mean `password`?"),
        "{msg}"
    );
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
    assert_eq!(e.position, Some((5, 1)));
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

/// An account that logs in with OAuth2; `{src}` is its token source.
fn oauth(src: &str) -> String {
    format!(
        "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\ndeliver = {{ maildir = \"/m\" }}\n{src}\n"
    )
}

fn client(c: &Config) -> &OAuth2Client {
    match &c.accounts[0].credentials {
        Credentials::OAuth2(OAuth2Source::Refresh(c)) => c,
        other => panic!("not a refresh source: {other:?}"),
    }
}

#[test]
fn oauth2_presets_fill_urls_scope_and_flow() {
    let c = p(&oauth(
        "[account.oauth2]\nprovider = \"google\"\nclient_id = \"id.apps\"\nclient_secret_file = \"g.secret\"\nrefresh_token_file = \"/var/lib/popfetch/a.rt\"",
    ))
    .unwrap();
    assert_eq!(c.accounts[0].password(), None);
    let g = client(&c);
    assert_eq!(g.token_url, "https://oauth2.googleapis.com/token");
    assert_eq!(
        g.authorization_url.as_deref(),
        Some("https://accounts.google.com/o/oauth2/v2/auth")
    );
    assert_eq!(g.device_authorization_url, None);
    assert_eq!(
        (g.scope.as_str(), g.flow),
        ("https://mail.google.com/", OAuth2Flow::Browser)
    );
    assert_eq!(
        g.client_secret_file.as_deref(),
        Some(Path::new("/etc/popfetch/g.secret"))
    );

    let c = p(&oauth(
        "oauth2 = { provider = \"microsoft\", tenant = \"contoso.onmicrosoft.com\", client_id = \"c1\", refresh_token_file = \"a.rt\" }\noauth2_token_ttl = \"50m\"",
    ))
    .unwrap();
    let m = client(&c);
    let base = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/";
    assert_eq!(m.token_url, format!("{base}token"));
    assert_eq!(
        m.device_authorization_url.as_deref(),
        Some(&*format!("{base}devicecode"))
    );
    assert_eq!(
        m.authorization_url.as_deref(),
        Some(&*format!("{base}authorize"))
    );
    assert_eq!(
        m.scope,
        "https://outlook.office.com/POP.AccessAsUser.All offline_access"
    );
    assert_eq!(
        (m.flow, m.ttl),
        (OAuth2Flow::Device, Some(Duration::from_secs(3000)))
    );
    assert_eq!(m.refresh_token_file, Path::new("/etc/popfetch/a.rt"));

    // A preset's parts can be overridden, the flow forced.
    let c = p(&oauth(
        "oauth2 = { provider = \"microsoft\", client_id = \"c1\", refresh_token_file = \"/r\", scope = \"x  y\", flow = \"browser\" }",
    ))
    .unwrap();
    let m = client(&c);
    assert!(m.token_url.contains("/common/"), "{}", m.token_url);
    assert_eq!((m.scope.as_str(), m.flow), ("x y", OAuth2Flow::Browser));
}

#[test]
fn oauth2_custom_provider_needs_https_urls() {
    let ok = p(&oauth(
        "oauth2 = { token_url = \"https://127.0.0.1:8443/token\", device_authorization_url = \"https://127.0.0.1:8443/device\", client_id = \"c\", refresh_token_file = \"/r\", ca_file = \"ca.pem\" }",
    ))
    .unwrap();
    let c = client(&ok);
    assert_eq!((c.flow, c.scope.as_str()), (OAuth2Flow::Device, ""));
    assert_eq!(
        c.ca_file.as_deref(),
        Some(Path::new("/etc/popfetch/ca.pem"))
    );
    let e = err(&oauth(
        "oauth2 = { token_url = \"http://127.0.0.1:8080/token\", client_id = \"c\", refresh_token_file = \"/r\" }",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2.token_url"));
    assert!(e.message.contains("https://"), "{e}");
    assert_eq!(e.position, Some((6, 24)), "points at the URL");
    let e = err(&oauth(
        "oauth2 = { client_id = \"c\", refresh_token_file = \"/r\" }",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2.token_url"));
    let e = err(&oauth(
        "oauth2 = { provider = \"google\", refresh_token_file = \"/r\" }",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2.client_id"));
    let e = err(&oauth(
        "oauth2 = { provider = \"google\", client_id = \"c\" }",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2.refresh_token_file"));
    let e = err(&oauth(
        "oauth2 = { provider = \"google\", client_id = \"c\", refresh_token_file = \"/r\", flow = \"device\" }",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2.flow"));
    let e = err(&oauth(
        "oauth2 = { provider = \"google\", tenant = \"x\", client_id = \"c\", refresh_token_file = \"/r\" }",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2.tenant"));
    let e = err(&oauth(
        "oauth2 = { provider = \"microsoft\", tenant = \"a/b\", client_id = \"c\", refresh_token_file = \"/r\" }",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2.tenant"));
    let e = err(&oauth("oauth2 = { provider = \"yahoo\" }"));
    assert!(
        e.message
            .contains("unknown value `yahoo`; it is one of: `google`, `microsoft`"),
        "{e}"
    );
    let e = err(&oauth("oauth2 = { client_secret = \"x\" }"));
    assert!(e.message.contains("unknown key `client_secret`"), "{e}");
}

#[test]
fn oauth2_token_command_and_ttl() {
    let c = p(&oauth(
        "oauth2_token_command = [\"oama\", \"access\", \"a@example.org\"]\noauth2_token_ttl = \"50m\"",
    ))
    .unwrap();
    assert_eq!(
        c.accounts[0].credentials,
        Credentials::OAuth2(OAuth2Source::Command {
            argv: vec!["oama".into(), "access".into(), "a@example.org".into()],
            ttl: Some(Duration::from_secs(3000)),
        })
    );
    let c = p(&oauth("oauth2_token_command = [\"t\"]")).unwrap();
    assert!(matches!(
        c.accounts[0].oauth2(),
        Some(OAuth2Source::Command { ttl: None, .. })
    ));
    let e = err(&oauth("oauth2_token_command = []"));
    assert_eq!(e.key.as_deref(), Some("oauth2_token_command"));
    let e = err(&oauth(
        "oauth2_token_command = [\"t\"]\noauth2_token_ttl = \"0s\"",
    ));
    assert_eq!(e.key.as_deref(), Some("oauth2_token_ttl"));
}

#[test]
fn exactly_one_credential_source() {
    let e = err(&oauth("oauth2_token_command = [\"t\"]\npassword = \"p\""));
    assert!(e.message.contains("not both"), "{e}");
    let e = err(&oauth(
        "oauth2_token_command = [\"t\"]\noauth2 = { provider = \"google\", client_id = \"c\", refresh_token_file = \"/r\" }",
    ));
    assert!(
        e.message
            .contains("only one of `oauth2_token_command` and `oauth2`"),
        "{e}"
    );
    let e = err(&oauth(""));
    assert!(
        e.message.contains("no password") && e.message.contains("oauth2"),
        "{e}"
    );
    // An account's own password wins over the defaults' token source, and the reverse.
    let c = p(&format!(
        "[defaults]\noauth2_token_command = [\"t\"]\n{}",
        oauth("password_file = \"/pw\"")
    ))
    .unwrap();
    assert!(matches!(
        c.accounts[0].credentials,
        Credentials::Password(PasswordSource::File(_))
    ));
    let c = p(&format!(
        "[defaults]\npassword_file = \"/pw\"\n{}",
        oauth("oauth2_token_command = [\"t\"]")
    ))
    .unwrap();
    assert!(matches!(
        c.accounts[0].credentials,
        Credentials::OAuth2(OAuth2Source::Command { .. })
    ));
}

#[test]
fn oauth2_defaults_are_merged_key_by_key() {
    let text = format!(
        "[defaults.oauth2]\nprovider = \"google\"\nclient_id = \"shared\"\nclient_secret_file = \"/s\"\n\n{}{}",
        oauth("oauth2 = { refresh_token_file = \"/r/a\" }"),
        oauth("oauth2 = { refresh_token_file = \"/r/b\", client_id = \"own\" }")
            .replace("\"a\"", "\"b\"")
            .replace("user = \"u\"", "user = \"v\"")
    );
    let c = p(&text).unwrap();
    let ids: Vec<_> = c
        .accounts
        .iter()
        .map(|a| match a.oauth2() {
            Some(OAuth2Source::Refresh(c)) => (
                c.client_id.clone(),
                c.token_url.clone(),
                c.refresh_token_file.clone(),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids[0].0, "shared");
    assert_eq!(ids[1].0, "own");
    assert_eq!(ids[0].1, "https://oauth2.googleapis.com/token");
    assert_eq!(ids[1].2, Path::new("/r/b"));
    // Two accounts sharing one refresh token file would undo each other's rotations.
    let e = err(&text.replace("/r/b", "/r/a"));
    assert_eq!(e.key.as_deref(), Some("oauth2.refresh_token_file"));
    assert_eq!(e.account.as_deref(), Some("b"));
}

#[test]
fn oauth2_refuses_password_methods_and_clear_text() {
    let cmd = "oauth2_token_command = [\"t\"]";
    let e = err(&oauth(&format!("{cmd}\nauth = \"plain\"")));
    assert_eq!(e.key.as_deref(), Some("auth"));
    let e = err(&oauth(&format!("{cmd}\ntls = \"none\"")));
    assert_eq!(e.key.as_deref(), Some("tls"));
    p(&oauth(&format!(
        "{cmd}\ntls = \"none\"\nallow_plaintext_auth = true"
    )))
    .unwrap();
    p(&oauth(&format!("{cmd}\ntls = \"starttls\""))).unwrap();
}

// ---- the delivery fingerprint

fn fp_account(extra: &str, deliver: &str) -> Account {
    let text = format!(
        "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\npassword_file = \"p\"\n\
         deliver = {deliver}\n{extra}"
    );
    p(&text).unwrap().accounts[0].as_ref().clone()
}

#[test]
fn delivery_fingerprint_has_a_known_answer() {
    // A change here releases every held message of every user once: only on purpose.
    let a = fp_account("", "{ maildir = \"/m\" }");
    assert_eq!(
        a.delivery_fingerprint(),
        "d1-b75e8b77719120a03f1e523e54bc4aa1"
    );
}

#[test]
fn delivery_fingerprint_counts_what_delivery_does_and_nothing_else() {
    let maildir = "{ maildir = \"/m\" }";
    let mda = "{ mda = [\"procmail\", \"-a\", \"{account}\"] }";
    let smtp = "{ smtp = { host = \"relay\", to = [\"x@example.org\"], user = \"s\", \
                password_file = \"/s\" } }";
    let base = |deliver: &str| fp_account("", deliver).delivery_fingerprint();
    for deliver in [maildir, mda, smtp] {
        let fp = base(deliver);
        assert!(fp.starts_with("d1-") && fp.len() == 35, "{fp}");
        // Settings that cannot turn a refusal around.
        let unchanged: [fn(&mut Account); 14] = [
            |a| a.host = "other".into(),
            |a| a.port = 1110,
            |a| a.tls = TlsMode::Starttls,
            |a| a.ca_file = Some("/ca.pem".into()),
            |a| a.tls_verify = false,
            |a| a.credentials = Credentials::Password(PasswordSource::Command(vec!["p".into()])),
            |a| a.auth = AuthMethod::Only(Method::CramMd5),
            |a| a.allow_plaintext_auth = true,
            |a| a.timeout = Duration::from_secs(5),
            |a| a.interval = Duration::from_secs(3600),
            |a| a.keep = !a.keep,
            |a| a.delete_after = Some(Duration::from_secs(86400)),
            |a| {
                a.max_messages_per_poll = Some(5);
                a.max_bytes_per_poll = Some(5);
            },
            |a| a.mda_timeout = Duration::from_secs(3600),
        ];
        for (i, change) in unchanged.iter().enumerate() {
            let mut a = fp_account("", deliver);
            change(&mut a);
            assert_eq!(a.delivery_fingerprint(), fp, "change {i} with {deliver}");
        }
        // Settings that decide what becomes of the message.
        for extra in [
            "received_header = false",
            "on_permanent_failure = \"quarantine\"\nquarantine = \"/q\"",
            "max_size = \"1MiB\"",
            "max_size = \"1MiB\"\nmax_size_action = \"delete\"",
            "dedupe_message_id = true",
        ] {
            let a = fp_account(extra, deliver);
            assert_ne!(a.delivery_fingerprint(), fp, "{extra} with {deliver}");
        }
    }
    // Every setting of the target counts.
    for other in [
        "{ maildir = \"/n\" }",
        "{ mbox = \"/m\" }",
        "{ mda = [\"procmail\", \"-a\", \"{user}\"] }",
        "{ mda = [\"procmail\", \"-a{account}\"] }",
        "{ smtp = { host = \"relay2\", to = [\"x@example.org\"], user = \"s\", \
         password_file = \"/s\" } }",
        "{ smtp = { host = \"relay\", to = [\"y@example.org\"], user = \"s\", \
         password_file = \"/s\" } }",
        "{ smtp = { host = \"relay\", to = [\"x@example.org\"] } }",
        "{ smtp = { host = \"relay\", port = 26, to = [\"x@example.org\"], user = \"s\", \
         password_file = \"/s\" } }",
        "{ smtp = { socket = \"/run/relay\", to = [\"x@example.org\"], user = \"s\", \
         password_file = \"/s\" } }",
    ] {
        assert_ne!(base(other), base(maildir), "{other}");
        assert_ne!(base(other), base(mda), "{other}");
        assert_ne!(base(other), base(smtp), "{other}");
    }
    // An MDA is given the account's name and user; other targets are not.
    let renamed = |deliver: &str| {
        let mut a = fp_account("", deliver);
        a.name = "b".into();
        a.delivery_fingerprint()
    };
    assert_ne!(renamed(mda), base(mda));
    assert_eq!(renamed(maildir), base(maildir));
    // An inline relay password counts as inline, never by its value.
    let inline = |pw: &str| {
        base(&format!(
            "{{ smtp = {{ host = \"relay\", to = [\"x@example.org\"], user = \"s\", \
             password = \"{pw}\" }} }}"
        ))
    };
    assert_eq!(inline("one"), inline("two"));
    assert_ne!(inline("one"), base(smtp));
    // A relay socket counts by its path; one named `localhost` is not the TCP relay there.
    let socket = |path: &str| {
        base(&format!(
            "{{ smtp = {{ socket = \"{path}\", to = [\"x@example.org\"] }} }}"
        ))
    };
    assert_ne!(socket("/run/relay"), socket("/run/relay2"));
    assert_ne!(
        socket("/run/relay"),
        base("{ smtp = { host = \"localhost\", to = [\"x@example.org\"] } }")
    );
}

// ---- defaults merged into the account

/// An error about a value points where the value was written: in the account's table, or in
/// `[defaults]` when the account took it from there.
#[test]
fn errors_point_where_the_value_was_written_in_the_account_or_the_defaults() {
    let account = "[[account]]\nname = \"a\"\nuser = \"u\"\npassword = \"p\"\n";
    for (line, key) in [
        ("host = \" \"", "host"),
        ("max_size = 0", "max_size"),
        ("max_messages_per_poll = 0", "max_messages_per_poll"),
        ("max_bytes_per_poll = 0", "max_bytes_per_poll"),
        ("deliver = { mda = [] }", "deliver.mda"),
        (
            "deliver = { smtp = { host = \"r\", to = [] } }",
            "deliver.smtp.to",
        ),
        (
            "oauth2 = { token_url = \"http://x\", client_id = \"c\", refresh_token_file = \"/r\" }",
            "oauth2.token_url",
        ),
    ] {
        let host = if key == "host" { "" } else { "host = \"h\"\n" };
        let deliver = if key.starts_with("deliver") {
            ""
        } else {
            "deliver = { maildir = \"/m\" }\n"
        };
        let own = if key.starts_with("oauth2") {
            account.replace("password = \"p\"\n", "")
        } else {
            account.to_string()
        };
        // In [defaults], line 2.
        let e = err(&format!("[defaults]\n{line}\n\n{own}{host}{deliver}"));
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(2), "{line} in defaults: {e}");
        assert_eq!(e.account.as_deref(), Some("a"));
        // In the account, its last line (8 with the defaults above it).
        let e = err(&format!(
            "[defaults]\nkeep = true\n\n{own}{host}{deliver}{line}\n"
        ));
        let last = 3 + own.lines().count() + host.lines().count() + deliver.lines().count() + 1;
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert_eq!(
            e.position.map(|p| p.0),
            Some(last),
            "{line} in the account: {e}"
        );
    }
}

#[test]
fn every_key_left_out_is_taken_from_the_defaults_and_the_login_as_a_whole() {
    let d = "[defaults]\nhost = \"dh\"\nport = 1110\ntls = \"starttls\"\nuser = \"du\"\n\
             password_file = \"/dp\"\nkeep = true\nreceived_header = false\ntimeout = \"9s\"\n\
             deliver = { mbox = \"/dm\" }\nmda_timeout = \"8s\"\ninterval = \"7m\"\n\
             on_permanent_failure = \"quarantine\"\nquarantine = \"/dq\"\nmax_size = 100\n\
             max_size_action = \"delete\"\ndelete_after = \"2d\"\nmax_messages_per_poll = 3\n\
             max_bytes_per_poll = 200\ndedupe_message_id = true\nca_file = \"/dca\"\n\
             tls_verify = false\nauth = \"user\"\n\n";
    let c = p(&format!("{d}[[account]]\nname = \"a\"\n")).unwrap();
    let a = &c.accounts[0];
    assert_eq!(
        (a.host.as_str(), a.port, a.tls),
        ("dh", 1110, TlsMode::Starttls)
    );
    assert_eq!(a.user, "du");
    assert_eq!(
        a.credentials,
        Credentials::Password(PasswordSource::File("/dp".into()))
    );
    assert!(a.keep && !a.received_header && a.dedupe_message_id && !a.tls_verify);
    assert_eq!(a.auth, AuthMethod::Only(Method::User));
    assert_eq!(a.ca_file.as_deref(), Some(Path::new("/dca")));
    assert_eq!(
        (a.timeout, a.mda_timeout, a.interval),
        (
            Duration::from_secs(9),
            Duration::from_secs(8),
            Duration::from_secs(420)
        )
    );
    assert_eq!(a.deliver, Deliver::Mbox("/dm".into()));
    assert_eq!(a.on_permanent_failure, PermanentFailure::Quarantine);
    assert_eq!(a.quarantine.as_deref(), Some(Path::new("/dq")));
    assert_eq!(
        (a.max_size, a.max_size_action, a.delete_after),
        (
            Some(100),
            SizeAction::Delete,
            Some(Duration::from_secs(2 * 86400))
        )
    );
    assert_eq!(
        (a.max_messages_per_poll, a.max_bytes_per_poll),
        (Some(3), Some(200))
    );
    // The account's own values win, key by key; its login wins as a whole: its token command
    // is not mixed with the defaults' password file into "both".
    let c = p(&format!(
        "{d}[[account]]\nname = \"a\"\nhost = \"ah\"\nkeep = false\ndelete_after = \"1d\"\n\
         oauth2_token_command = [\"t\"]\nauth = \"auto\"\n"
    ));
    let e = c.unwrap_err();
    assert_eq!(e.key.as_deref(), Some("delete_after"), "{e}");
    let c = p(&format!(
        "{d}[[account]]\nname = \"a\"\nhost = \"ah\"\noauth2_token_command = [\"t\"]\n\
         auth = \"auto\"\n"
    ))
    .unwrap();
    let a = &c.accounts[0];
    assert_eq!((a.host.as_str(), a.user.as_str()), ("ah", "du"));
    assert!(matches!(
        a.credentials,
        Credentials::OAuth2(OAuth2Source::Command { .. })
    ));
}

#[test]
fn metrics_listen_is_loopback_unless_made_public() {
    let c = p("metrics_listen = \"127.0.0.1:9469\"\n").unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9469".parse().unwrap()));
    assert!(!c.metrics_listen_public);
    p("metrics_listen = \"[::1]:9469\"\n").unwrap();
    p("metrics_listen = \"[::ffff:127.0.0.1]:9469\"\n").unwrap();
    for open in ["0.0.0.0:9469", "[::]:9469", "192.0.2.1:9469"] {
        let e = p(&format!("metrics_listen = \"{open}\"\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("metrics_listen"), "{open}");
        assert!(e.message.contains("metrics_listen_public = true"), "{e}");
        let c = p(&format!(
            "metrics_listen = \"{open}\"\nmetrics_listen_public = true\n"
        ))
        .unwrap();
        assert!(c.metrics_listen_public);
    }
    let e = p("metrics_listen = \"localhost:9469\"\n").unwrap_err();
    assert!(e.message.contains("IP address and port"), "{e}");
    p("metrics_listen = \"127.0.0.1\"\n").unwrap_err();
    let e = p("metrics_listen_public = true\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("metrics_listen_public"));
    let c = p("metrics_listen_public = false\n").unwrap();
    assert_eq!(c.metrics_listen, None);
}

#[test]
fn metrics_textfile_is_a_prom_file_relative_to_the_config() {
    let c = p("metrics_textfile = \"node/popfetch.prom\"\n").unwrap();
    assert_eq!(
        c.metrics_textfile.as_deref(),
        Some(Path::new("/etc/popfetch/node/popfetch.prom"))
    );
    let e = p("metrics_textfile = \"/var/lib/popfetch.txt\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("metrics_textfile"));
    assert!(e.message.contains(".prom"), "{e}");
    p("metrics_textfile = \"/var/lib/prom\"\n").unwrap_err();
}

#[test]
fn a_key_is_found_in_its_table_and_subtables_not_in_comments_or_values() {
    let text = "[[account]]\n# keep = true\nuser = \"keep = x\"\nkeep = false\n\
                [account.oauth2]\nscope = \"s\"\n\n[[account]]\nkeep = true\n";
    let first = validate::table_region(text, 0..11);
    assert!(
        text[first.clone()].ends_with("scope = \"s\"\n\n"),
        "{first:?}"
    );
    let at = validate::key_offset(text, first.clone(), "keep").unwrap();
    assert!(text[at..].starts_with("keep = false"));
    let at = validate::key_offset(text, first.clone(), "oauth2.scope").unwrap();
    assert!(text[at..].starts_with("scope"));
    assert_eq!(validate::key_offset(text, first, "host"), None);
    let inline = "deliver = { smtp = { host = \"h\", to = [] } }";
    let at = validate::key_offset(inline, 10..inline.len(), "deliver.smtp.to").unwrap();
    assert!(inline[at..].starts_with("to = []"));
}

#[test]
fn lmtp_on_a_socket_or_over_tcp() {
    let account = "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u2\"\npassword = \"p\"\n";
    let c = p(&format!(
        "{account}deliver = {{ lmtp = {{ socket = \"/run/dovecot/lmtp\", to = [\"{{user}}\", \"x+{{user}}@d\"] }} }}\n"
    ))
    .unwrap();
    assert_eq!(
        c.accounts[0].deliver,
        Deliver::Lmtp(Lmtp {
            at: LmtpAt::Socket("/run/dovecot/lmtp".into()),
            to: vec!["u2".into(), "x+u2@d".into()],
            from: None,
            lhlo: None,
        })
    );
    let c = p(&format!(
        "{account}deliver = {{ lmtp = {{ host = \"mail.example.org\", to = [\"u@d\"], lhlo = \"me\" }} }}\n"
    ))
    .unwrap();
    let Deliver::Lmtp(l) = &c.accounts[0].deliver else {
        panic!("{:?}", c.accounts[0].deliver)
    };
    assert_eq!(
        l.at,
        LmtpAt::Tcp {
            host: "mail.example.org".into(),
            port: 24,
            tls: TlsMode::Starttls,
            ca_file: None,
        }
    );
    assert_eq!(l.lhlo.as_deref(), Some("me"));
    let loopback = p(&format!(
        "{account}deliver = {{ lmtp = {{ host = \"127.0.0.1\", port = 2424, to = [\"u\"] }} }}\n"
    ))
    .unwrap();
    let Deliver::Lmtp(l) = &loopback.accounts[0].deliver else {
        panic!()
    };
    assert!(matches!(
        l.at,
        LmtpAt::Tcp {
            tls: TlsMode::None,
            port: 2424,
            ..
        }
    ));
    for (bad, key) in [
        (
            "{ socket = \"/s\", host = \"h\", to = [\"u\"] }",
            "deliver.lmtp",
        ),
        ("{ to = [\"u\"] }", "deliver.lmtp"),
        ("{ socket = \"/s\", to = [] }", "deliver.lmtp.to"),
        (
            "{ socket = \"/s\", port = 24, to = [\"u\"] }",
            "deliver.lmtp.socket",
        ),
        ("{ socket = \"/s\", to = [\"a>b\"] }", "deliver.lmtp"),
        (
            "{ socket = \"/s\", to = [\"u\"], from = \"a\\r\\nRSET\" }",
            "deliver.lmtp",
        ),
        (
            "{ socket = \"/s\", to = [\"u\"], lhlo = \"two words\" }",
            "deliver.lmtp.lhlo",
        ),
    ] {
        let e = err(&format!("{account}deliver = {{ lmtp = {bad} }}\n"));
        assert_eq!(e.key.as_deref(), Some(key), "{bad}: {e}");
    }
}

#[test]
fn a_client_certificate_without_a_password_logs_in_with_external() {
    let cert = "tls_client_cert = \"/c.pem\"\ntls_client_key = \"/c.key\"\n";
    let account = |extra: &str| {
        format!(
            "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\n\
             deliver = {{ maildir = \"/m\" }}\n{extra}"
        )
    };
    // Asked for, or the one way `auto` has.
    for auth in ["auth = \"external\"\n", "auth = \"auto\"\n", ""] {
        let c = p(&account(&format!("{cert}{auth}"))).unwrap();
        assert_eq!(
            c.accounts[0].credentials,
            Credentials::Certificate,
            "{auth}"
        );
    }
    // With a password, `auto` keeps to it.
    let c = p(&account(&format!("{cert}password = \"pw\"\n"))).unwrap();
    assert!(matches!(
        c.accounts[0].credentials,
        Credentials::Password(_)
    ));
    // An account's own `auth = "external"` inherits no password from [defaults]...
    let d = "[defaults]\npassword_file = \"/dp\"\n";
    let c = p(&format!(
        "{d}{}",
        account(&format!("{cert}auth = \"external\"\n"))
    ))
    .unwrap();
    assert_eq!(c.accounts[0].credentials, Credentials::Certificate);
    // ...but a password of its own with `external` from [defaults] is refused.
    let d = "[defaults]\nauth = \"external\"\n";
    let e = p(&format!(
        "{d}{}",
        account(&format!("{cert}password = \"pw\"\n"))
    ))
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("auth"), "{e}");
    // A password method without a password is still the missing password.
    let e = p(&account(&format!("{cert}auth = \"plain\"\n"))).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("password"), "{e}");
}
