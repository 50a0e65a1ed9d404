//! Properties of the config loader, mirroring the `config` cargo-fuzz target in `fuzz/` so that
//! CI checks the same invariants without a fuzzer: no text makes `parse` panic, every error's
//! line and column lie inside the text, and a generated valid config parses to exactly the
//! accounts it was written from.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::pop3::login::Method;
use crate::secret::Secret;

const PATH: &str = "/etc/popfetch/config.toml";

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(Path::new(PATH), text)
}

/// A TOML string literal holding `s`, escaped by the toml crate itself.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn q_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn dur(d: Duration) -> String {
    q(&humantime::format_duration(d).to_string())
}

/// The invariants every outcome of `parse` keeps, whatever the text.
fn check_outcome(text: &str, outcome: &Result<Config, ConfigError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(c) => {
            let mut names = HashSet::new();
            for a in &c.accounts {
                prop_assert!(names.insert(a.name.clone()), "duplicate name {:?}", a.name);
                prop_assert!(
                    (1..=64).contains(&a.name.len())
                        && !a.name.starts_with('.')
                        && a.name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
                    "invalid name {:?}",
                    a.name
                );
                prop_assert!(a.port != 0 && !a.timeout.is_zero() && !a.mda_timeout.is_zero());
                prop_assert!(a.interval >= Duration::from_secs(1));
            }
            prop_assert!(c.max_parallel >= 1);
        }
        Err(e) => {
            let shown = e.to_string();
            prop_assert!(
                shown.starts_with(&format!("config file {PATH}")),
                "{}",
                shown
            );
            if let Some((line, col)) = e.position {
                // `split('\n')` also yields the empty line after a final newline, where
                // end-of-file errors point; a column may point just past a line's end.
                let lines: Vec<&str> = text.split('\n').collect();
                prop_assert!(
                    (1..=lines.len()).contains(&line),
                    "line {} outside a text of {} lines: {}",
                    line,
                    lines.len(),
                    shown
                );
                let width = lines[line - 1].chars().count();
                prop_assert!(
                    (1..=width + 1).contains(&col),
                    "column {} outside line {} of {} characters: {}",
                    col,
                    line,
                    width,
                    shown
                );
            }
        }
    }
    Ok(())
}

/// Pieces of TOML that popfetch's config uses, plus noise, for texts that get past the TOML
/// parser more often than random characters do.
fn toml_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("[[account]]\n".to_string()),
        Just("[defaults]\n".to_string()),
        Just("\n".to_string()),
        Just(" = ".to_string()),
        Just("name".to_string()),
        Just("host".to_string()),
        Just("user".to_string()),
        Just("port".to_string()),
        Just("password".to_string()),
        Just("password_command".to_string()),
        Just("deliver".to_string()),
        Just("{ maildir = \"/m\" }".to_string()),
        Just("{ smtp = { host = \"h\", to = [\"a@b\"] } }".to_string()),
        Just("{ mda = [] }".to_string()),
        Just("tls = \"none\"\n".to_string()),
        Just("auth = \"user\"\n".to_string()),
        Just("interval".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"5m\"".to_string()),
        Just("log_level".to_string()),
        Just("metrics_listen".to_string()),
        Just("max_parallel".to_string()),
        Just("0".to_string()),
        Just("70000".to_string()),
        Just("true".to_string()),
        Just("\"a\"".to_string()),
        Just("\"\"".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"".to_string()),
        Just("é".to_string()),
        Just("\r\n".to_string()),
        "\\PC{0,6}",
    ];
    proptest::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

/// One account of a generated config: its TOML and the `Account` it must give.
#[derive(Debug, Clone)]
struct GenAccount {
    toml: String,
    want: Account,
}

#[derive(Debug, Clone)]
struct GenConfig {
    text: String,
    names: Vec<String>,
    accounts: Vec<Account>,
    max_parallel: usize,
}

fn tls_mode() -> impl Strategy<Value = TlsMode> {
    prop_oneof![
        Just(TlsMode::Implicit),
        Just(TlsMode::Starttls),
        Just(TlsMode::None)
    ]
}

fn tls_name(t: TlsMode) -> &'static str {
    match t {
        TlsMode::Implicit => "implicit",
        TlsMode::Starttls => "starttls",
        TlsMode::None => "none",
    }
}

fn auth_method() -> impl Strategy<Value = AuthMethod> {
    prop_oneof![
        Just(AuthMethod::Auto),
        Just(AuthMethod::Only(Method::User)),
        Just(AuthMethod::Only(Method::Apop)),
        Just(AuthMethod::Only(Method::Plain)),
        Just(AuthMethod::Only(Method::Login)),
        Just(AuthMethod::Only(Method::CramMd5)),
    ]
}

/// Any string that is a valid single-line value: no CR, LF or NUL, not empty.
fn line_text() -> impl Strategy<Value = String> {
    "[^\\r\\n\\x00]{1,16}"
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    ("/[a-z/]{1,12}", proptest::collection::vec(".{0,8}", 0..3)).prop_map(|(prog, args)| {
        let mut v = vec![prog];
        v.extend(args);
        v
    })
}

/// (TOML value of the `password*` key, the key, the source it must give).
fn password() -> impl Strategy<Value = (String, &'static str, PasswordSource)> {
    prop_oneof![
        ".{0,16}".prop_map(|s| (q(&s), "password", PasswordSource::Inline(Secret::new(s)))),
        "[a-z]{1,8}".prop_map(|f| (
            q(&format!("{f}.pass")),
            "password_file",
            PasswordSource::File(PathBuf::from(format!("/etc/popfetch/{f}.pass")))
        )),
        argv().prop_map(|a| (q_list(&a), "password_command", PasswordSource::Command(a))),
    ]
}

/// (TOML value of `deliver`, the target it must give); relative paths are taken from the
/// config file's directory.
fn deliver(name: String) -> impl Strategy<Value = (String, Deliver)> {
    let smtp_host = prop_oneof![Just("localhost"), Just("127.0.0.1"), Just("mx.example.org")];
    prop_oneof![
        Just((
            format!("{{ maildir = {} }}", q(&format!("/srv/mail/{name}"))),
            Deliver::Maildir(PathBuf::from(format!("/srv/mail/{name}")))
        )),
        Just((
            format!("{{ maildir = {} }}", q(&format!("mail/{name}"))),
            Deliver::Maildir(PathBuf::from(format!("/etc/popfetch/mail/{name}")))
        )),
        Just((
            format!("{{ mbox = {} }}", q(&format!("/var/mail/{name}"))),
            Deliver::Mbox(PathBuf::from(format!("/var/mail/{name}")))
        )),
        argv().prop_map(|a| (format!("{{ mda = {} }}", q_list(&a)), Deliver::Mda(a))),
        Just((
            format!(
                "{{ lmtp = {{ socket = \"run/lmtp\", to = [{}] }} }}",
                q(&name)
            ),
            Deliver::Lmtp(Lmtp {
                at: LmtpAt::Socket(PathBuf::from("/etc/popfetch/run/lmtp")),
                to: vec![name.clone()],
                from: None,
                lhlo: None,
            })
        )),
        smtp_host.prop_map(|host| {
            let loopback = host != "mx.example.org";
            (
                format!(
                    "{{ smtp = {{ host = {}, to = [\"postmaster@example.org\"] }} }}",
                    q(host)
                ),
                Deliver::Smtp(Box::new(Smtp {
                    socket: None,
                    host: host.to_string(),
                    port: 25,
                    tls: if loopback {
                        TlsMode::None
                    } else {
                        TlsMode::Starttls
                    },
                    ca_file: None,
                    tls_fingerprint: Vec::new(),
                    tls_min_version: crate::net::TlsVersion::V1_2,
                    tls_client: None,
                    to: vec!["postmaster@example.org".to_string()],
                    from: None,
                    helo: None,
                    credentials: None,
                })),
            )
        }),
    ]
}

/// One valid account named `name`, with every optional key either set or left to the
/// defaults (`default_keep` and `default_timeout` stand for the `[defaults]` table).
fn account(
    name: String,
    interval_default: Duration,
    default_keep: Option<bool>,
    default_timeout: Option<Duration>,
) -> impl Strategy<Value = GenAccount> {
    let host = "[a-z0-9][a-z0-9.-]{0,20}";
    let keys = (
        host,
        proptest::option::of(1u16..),
        proptest::option::of(tls_mode()),
        line_text(),
        password(),
        proptest::option::of(auth_method()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
    );
    let more = (
        proptest::option::of(1u64..100_000),
        proptest::option::of(1u64..100_000),
        proptest::option::of(1u64..100_000),
        proptest::option::of(any::<bool>()),
        deliver(name.clone()),
        any::<bool>(),
    );
    (keys, more).prop_map(
        move |(
            (host, port, tls, user, (pw_value, pw_key, pw), auth, keep, received, verify),
            (timeout, interval, mda_timeout, plaintext, (deliver_value, deliver), quarantine),
        )| {
            let mut t = format!("[[account]]\nname = {}\nhost = {}\n", q(&name), q(&host));
            let mut set = |key: &str, value: String| t.push_str(&format!("{key} = {value}\n"));
            set("user", q(&user));
            set(pw_key, pw_value);
            set("deliver", deliver_value);
            if let Some(port) = port {
                set("port", port.to_string());
            }
            if let Some(tls) = tls {
                set("tls", q(tls_name(tls)));
            }
            if let Some(auth) = auth {
                set("auth", q(auth.config_name()));
            }
            if let Some(keep) = keep {
                set("keep", keep.to_string());
            }
            if let Some(r) = received {
                set("received_header", r.to_string());
            }
            if let Some(v) = verify {
                set("tls_verify", v.to_string());
            }
            let secs = |s: Option<u64>| s.map(Duration::from_secs);
            if let Some(d) = secs(timeout) {
                set("timeout", dur(d));
            }
            if let Some(d) = secs(interval) {
                set("interval", dur(d));
            }
            if let Some(d) = secs(mda_timeout) {
                set("mda_timeout", dur(d));
            }
            let tls_mode = tls.unwrap_or(TlsMode::Implicit);
            let auth = auth.unwrap_or(AuthMethod::Auto);
            // A clear-text login without TLS must be allowed explicitly: keep the config valid.
            let needs_opt_in = tls_mode == TlsMode::None
                && matches!(
                    auth,
                    AuthMethod::Only(Method::User)
                        | AuthMethod::Only(Method::Plain)
                        | AuthMethod::Only(Method::Login)
                );
            let plaintext = if needs_opt_in { Some(true) } else { plaintext };
            if let Some(pt) = plaintext {
                set("allow_plaintext_auth", pt.to_string());
            }
            if quarantine {
                set("on_permanent_failure", q("quarantine"));
                set("quarantine", q(&format!("/srv/quarantine/{name}")));
            }
            let want = Account {
                name: name.clone(),
                host: host.clone(),
                port: port.unwrap_or(if tls_mode == TlsMode::Implicit {
                    995
                } else {
                    110
                }),
                tls: tls_mode,
                ca_file: None,
                tls_verify: verify.unwrap_or(true),
                tls_fingerprint: Vec::new(),
                tls_min_version: crate::net::TlsVersion::V1_2,
                tls_expiry_warning: crate::config::DEFAULT_TLS_EXPIRY_WARNING,
                tls_client: None,
                user: user.clone(),
                credentials: Credentials::Password(pw),
                auth,
                allow_plaintext_auth: plaintext.unwrap_or(false),
                keep: keep.or(default_keep).unwrap_or(false),
                received_header: received.unwrap_or(true),
                timeout: secs(timeout).or(default_timeout).unwrap_or(DEFAULT_TIMEOUT),
                deliver,
                mda_timeout: secs(mda_timeout).unwrap_or(DEFAULT_MDA_TIMEOUT),
                on_permanent_failure: if quarantine {
                    PermanentFailure::Quarantine
                } else {
                    PermanentFailure::Keep
                },
                quarantine: quarantine.then(|| PathBuf::from(format!("/srv/quarantine/{name}"))),
                interval: secs(interval).unwrap_or(interval_default),
                max_size: None,
                max_size_action: crate::config::SizeAction::Keep,
                delete_after: None,
                max_messages_per_poll: None,
                max_bytes_per_poll: None,
                dedupe_message_id: false,
                route: None,
            };
            GenAccount { toml: t, want }
        },
    )
}

/// Distinct account names that pass the file-name rule, in a fixed order.
fn names() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}", 0..6).prop_map(|mut v| {
        let mut seen = HashSet::new();
        v.retain(|n| seen.insert(n.clone()));
        v
    })
}

fn valid_config() -> impl Strategy<Value = GenConfig> {
    (
        names(),
        proptest::option::of(1u64..100_000),
        proptest::option::of(1usize..64),
        proptest::option::of(any::<bool>()),
        proptest::option::of(1u64..100_000),
    )
        .prop_flat_map(
            |(names, interval, max_parallel, default_keep, default_timeout)| {
                let interval_default = interval.map_or(DEFAULT_INTERVAL, Duration::from_secs);
                let default_timeout = default_timeout.map(Duration::from_secs);
                let accounts: Vec<_> = names
                    .iter()
                    .map(|n| account(n.clone(), interval_default, default_keep, default_timeout))
                    .collect();
                (
                    Just((names, interval, max_parallel, default_keep, default_timeout)),
                    accounts,
                )
            },
        )
        .prop_map(
            |((names, interval, max_parallel, default_keep, default_timeout), accounts)| {
                let mut text = String::from("state_dir = \"/var/lib/popfetch\"\n");
                if let Some(i) = interval {
                    text.push_str(&format!("interval = {}\n", dur(Duration::from_secs(i))));
                }
                if let Some(m) = max_parallel {
                    text.push_str(&format!("max_parallel = {m}\n"));
                }
                if default_keep.is_some() || default_timeout.is_some() {
                    text.push_str("[defaults]\n");
                    if let Some(k) = default_keep {
                        text.push_str(&format!("keep = {k}\n"));
                    }
                    if let Some(t) = default_timeout {
                        text.push_str(&format!("timeout = {}\n", dur(t)));
                    }
                }
                for a in &accounts {
                    text.push('\n');
                    text.push_str(&a.toml);
                }
                GenConfig {
                    text,
                    names,
                    accounts: accounts.into_iter().map(|a| a.want).collect(),
                    max_parallel: max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL),
                }
            },
        )
}

/// Filter directives, valid and not: targets with non-ASCII letters, levels, span and field
/// filters, whitespace around each directive.
fn log_level() -> impl Strategy<Value = String> {
    let directive = (
        prop_oneof![Just(""), Just(" "), Just("\t")],
        "[aé_:]{1,3}",
        prop_oneof![
            Just(""),
            Just("=info"),
            Just("=x"),
            Just("[s]"),
            Just("[{f=1}]=debug")
        ],
        prop_oneof![Just(""), Just(" ")],
    )
        .prop_map(|(pre, target, rest, post)| format!("{pre}{target}{rest}{post}"));
    proptest::collection::vec(directive, 1..4).prop_map(|d| d.join(","))
}

proptest! {
    /// No text makes `parse` panic; a config it accepts has unique, valid names, and an error
    /// it gives points inside the text.
    #[test]
    fn arbitrary_text_never_panics_and_errors_point_inside(text in "\\PC{0,300}") {
        check_outcome(&text, &p(&text))?;
    }

    /// The same for texts made of the config's own keys and values, which reach the validation
    /// behind the TOML parser.
    #[test]
    fn toml_like_text_never_panics_and_errors_point_inside(text in toml_soup()) {
        check_outcome(&text, &p(&text))?;
    }

    /// `log_level` once went to tracing-subscriber's `EnvFilter` parser, which (0.3.23) panics on a
    /// directive with leading blanks before a non-ASCII character (`log_level = " é=info"`,
    /// found by the `config` fuzz target, see fuzz/artifacts/config/): any value must be
    /// accepted or refused with an error, never panic.
    #[test]
    fn any_log_level_is_accepted_or_refused(level in log_level()) {
        let text = format!("log_level = {}\n", q(&level));
        check_outcome(&text, &p(&text))?;
    }

    /// A generated valid config with N accounts parses to exactly those accounts, in order,
    /// with every value and default as written.
    #[test]
    fn generated_valid_config_parses_back(c in valid_config()) {
        let config = p(&c.text).map_err(|e| TestCaseError::fail(format!("{e}\n{}", c.text)))?;
        let names: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        prop_assert_eq!(names, c.names.iter().map(String::as_str).collect::<Vec<_>>());
        for (got, want) in config.accounts.iter().zip(&c.accounts) {
            prop_assert_eq!(&**got, want, "{}", c.text);
        }
        prop_assert_eq!(config.max_parallel, c.max_parallel);
        prop_assert_eq!(&config.state_dir, Path::new("/var/lib/popfetch"));
        check_outcome(&c.text, &Ok(config))?;
    }

    /// A valid config with a few bytes cut out or a token dropped in anywhere still never
    /// panics, and its errors point inside the damaged text.
    #[test]
    fn damaged_valid_config_errors_point_inside(
        c in valid_config(),
        at in any::<prop::sample::Index>(),
        cut in 0usize..12,
        insert in prop_oneof![
            Just(""), Just("\n"), Just("="), Just("\""), Just("["), Just("]]"), Just("0"),
            Just("name = \"x\"\n"), Just("[[account]]\n"), Just("é"), Just("#"),
        ],
    ) {
        let mut text = c.text.clone();
        let mut start = at.index(text.len() + 1);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        text.replace_range(start..end, insert);
        check_outcome(&text, &p(&text))?;
    }
}

#[test]
fn duplicate_names_point_at_the_second_name() {
    let one = "[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\npassword = \"p\"\n\
               deliver = { maildir = \"/m\" }\n";
    let text = format!("{one}{one}");
    let e = p(&text).unwrap_err();
    assert_eq!(e.position, Some((8, 8)), "{e}");
    assert!(
        e.to_string().contains("another account has the same name"),
        "{e}"
    );
}
