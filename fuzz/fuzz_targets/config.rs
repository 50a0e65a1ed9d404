//! The config loader on arbitrary text (`popfetch::config::parse`, the part of `load` after the
//! file is read; invalid UTF-8 is replaced, as `load` would refuse it before parsing).
//!
//! Checked: no panic; an error renders, and its (line, column) lies inside the text (the column
//! may point just past a line's last character, where "expected ..." errors point); a config that
//! parses keeps the promises the rest of popfetch relies on: account names unique and fit to be
//! file names, and the checked values in range.
#![no_main]

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use popfetch::config::{
    Config, ConfigError, Deliver, OAuth2Source, PasswordSource, PermanentFailure, TlsMode, parse,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/popfetch/config.toml");
    match parse(path, &text) {
        Ok(config) => check_config(&config),
        Err(e) => check_error(&e, &text, path),
    }
});

fn check_error(e: &ConfigError, text: &str, path: &Path) {
    assert_eq!(e.path, path);
    let shown = e.to_string();
    assert!(
        shown.starts_with("config file /etc/popfetch/config.toml"),
        "{shown}"
    );
    let Some((line, col)) = e.position else {
        return;
    };
    // `split('\n')` also yields the empty line after a final newline, where end-of-file errors
    // point.
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        (1..=lines.len()).contains(&line),
        "line {line} outside a text of {} lines: {shown}",
        lines.len()
    );
    let width = lines[line - 1].chars().count();
    assert!(
        (1..=width + 1).contains(&col),
        "column {col} outside line {line} of {width} characters: {shown}"
    );
}

fn check_config(c: &Config) {
    assert!(c.max_parallel >= 1);
    let mut names = HashSet::new();
    for a in &c.accounts {
        assert!(
            names.insert(a.name.as_str()),
            "duplicate account {:?}",
            a.name
        );
        assert!(valid_name(&a.name), "invalid account name {:?}", a.name);
        assert!(
            !a.host.is_empty() && !a.host.contains(char::is_whitespace),
            "{:?}",
            a.host
        );
        assert_ne!(a.port, 0);
        assert!(
            !a.user.is_empty() && !a.user.contains(['\r', '\n', '\0']),
            "{:?}",
            a.user
        );
        assert!(!a.timeout.is_zero() && !a.mda_timeout.is_zero());
        assert!(a.interval >= Duration::from_secs(1));
        if a.on_permanent_failure == PermanentFailure::Quarantine {
            assert!(a.quarantine.is_some());
        }
        // Exactly one login credential (the type says so): a password source or an OAuth2
        // token source, each well formed.
        if let Some(p) = a.password() {
            check_password(p);
        }
        match a.oauth2() {
            Some(OAuth2Source::Command { argv, .. }) => {
                assert!(argv.first().is_some_and(|p| !p.is_empty()));
            }
            Some(OAuth2Source::Refresh(c)) => {
                for url in [
                    Some(&c.token_url),
                    c.device_authorization_url.as_ref(),
                    c.authorization_url.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    assert!(url.starts_with("https://"), "{url:?}");
                }
                assert!(!c.client_id.is_empty());
            }
            None => {}
        }
        match &a.deliver {
            Deliver::Mda(argv) => assert!(argv.first().is_some_and(|p| !p.is_empty())),
            Deliver::Smtp(s) => {
                assert!(!s.host.is_empty() && !s.host.contains(char::is_whitespace));
                assert!(!s.to.is_empty());
                // A relay socket is local: nothing of TLS may come with it.
                if s.socket.is_some() {
                    assert!(s.tls == TlsMode::None && s.ca_file.is_none());
                    assert!(s.tls_fingerprint.is_empty() && s.tls_client.is_none());
                }
                if let Some((_, p)) = &s.credentials {
                    check_password(p);
                }
            }
            Deliver::Lmtp(l) => assert!(!l.to.is_empty()),
            Deliver::Maildir(_) | Deliver::Mbox(_) => {}
        }
    }
}

fn check_password(p: &PasswordSource) {
    if let PasswordSource::Command(argv) = p {
        assert!(argv.first().is_some_and(|p| !p.is_empty()));
    }
}

/// The rule account names must follow: they become file names in the state directory.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
