//! The way out of a TOML error: the right form of a value written with the wrong type, the argv
//! list a command written as one string becomes, the known key closest to an unknown one. The
//! examples live in one table, [`EXAMPLES`].

use std::ops::Range;

use crate::shell::{Placeholder, translate_command};

/// Each typed key with a value of the right form. A key of several tables (`ca_file`, `port`)
/// has one example: the form is the same everywhere.
const EXAMPLES: &[(&str, &str)] = &[
    ("state_dir", r#"state_dir = "/var/lib/popfetch""#),
    ("interval", r#"interval = "5m""#),
    ("max_parallel", "max_parallel = 4"),
    ("shutdown_timeout", r#"shutdown_timeout = "30s""#),
    (
        "log_target",
        r#"log_target = "journald" (or "stderr", "auto")"#,
    ),
    ("log_level", r#"log_level = "info""#),
    ("metrics_listen", r#"metrics_listen = "127.0.0.1:9469""#),
    ("metrics_listen_public", "metrics_listen_public = true"),
    (
        "metrics_textfile",
        r#"metrics_textfile = "/var/lib/node_exporter/popfetch.prom""#,
    ),
    (
        "defaults",
        "[defaults] (one table of keys every account takes unless it sets them)",
    ),
    ("name", r#"name = "home""#),
    ("host", r#"host = "pop.example.org""#),
    ("port", "port = 995"),
    ("tls", r#"tls = "implicit" (or "starttls", "none")"#),
    ("ca_file", r#"ca_file = "/etc/ssl/certs/my-ca.pem""#),
    ("tls_verify", "tls_verify = true"),
    ("user", r#"user = "alice""#),
    (
        "password",
        r#"password = "secret" (better: password_file or password_command)"#,
    ),
    (
        "password_file",
        r#"password_file = "~/.config/popfetch/home.pass""#,
    ),
    (
        "password_command",
        r#"password_command = ["pass", "show", "pop/alice"]"#,
    ),
    (
        "oauth2_token_command",
        r#"oauth2_token_command = ["oama", "access", "alice@example.org"]"#,
    ),
    ("oauth2_token_ttl", r#"oauth2_token_ttl = "50m""#),
    (
        "oauth2",
        r#"oauth2 = { provider = "google", client_id = "…", refresh_token_file = "…" }"#,
    ),
    ("auth", r#"auth = "auto""#),
    ("allow_plaintext_auth", "allow_plaintext_auth = false"),
    ("keep", "keep = true"),
    ("received_header", "received_header = true"),
    ("timeout", r#"timeout = "1m""#),
    ("deliver", r#"deliver = { maildir = "~/Maildir" }"#),
    ("maildir", r#"deliver = { maildir = "~/Maildir" }"#),
    ("mbox", r#"deliver = { mbox = "/var/mail/alice" }"#),
    ("mda", r#"mda = ["/usr/bin/procmail", "-d", "{user}"]"#),
    (
        "smtp",
        r#"smtp = { host = "localhost", to = ["alice@example.org"] }"#,
    ),
    ("to", r#"to = ["alice@example.org"]"#),
    ("mda_timeout", r#"mda_timeout = "5m""#),
    (
        "on_permanent_failure",
        r#"on_permanent_failure = "keep" (or "quarantine")"#,
    ),
    ("quarantine", r#"quarantine = "~/Maildir/.Quarantine""#),
    ("max_size", r#"max_size = "50MiB""#),
    (
        "max_size_action",
        r#"max_size_action = "keep" (or "delete")"#,
    ),
    ("delete_after", r#"delete_after = "30days""#),
    ("max_messages_per_poll", "max_messages_per_poll = 100"),
    ("max_bytes_per_poll", r#"max_bytes_per_poll = "200MiB""#),
    ("dedupe_message_id", "dedupe_message_id = true"),
];

/// The keys whose value is a command, and the placeholders an rc file's version of it used.
const COMMANDS: &[(&str, &[(&str, &str)])] = &[
    ("mda", &[("%F", "{from}"), ("%T", "{user}")]),
    ("password_command", &[]),
    ("oauth2_token_command", &[]),
];

/// `message` (a TOML error at `span` of `text`) with what to write instead.
pub(super) fn toml_message(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let message = message.trim();
    if let Some(better) = unknown_name(message) {
        return better;
    }
    let Some(span) = span else {
        return message.to_string();
    };
    let Some(key) = key_at(text, span.start) else {
        return message.to_string();
    };
    if !message.starts_with("invalid type") && !message.starts_with("invalid value") {
        return message.to_string();
    }
    match key.as_str() {
        "account" if message.contains("expected a sequence") => {
            return format!(
                "{message}; write [[account]] (two brackets): each account is one table in a list"
            );
        }
        "defaults" if line_at(text, span.start).starts_with("[[") => {
            return format!(
                "{message}; write [defaults] (one bracket): there is one table of defaults"
            );
        }
        _ => {}
    }
    if let Some(argv) = command_as_argv(text, &span, &key) {
        return format!(
            "{message}; a command is a list of arguments, run without a shell: {key} = {argv}"
        );
    }
    match EXAMPLES.iter().find(|(k, _)| *k == key) {
        Some((_, example)) => format!("{message}; for example {example}"),
        None => message.to_string(),
    }
}

/// "unknown field `x`, expected one of `a`, `b`" (a key) or "unknown variant `x`, expected …"
/// (a value such as a `deliver` kind), answered with the closest of the names serde lists, or
/// with the list when none is close.
fn unknown_name(message: &str) -> Option<String> {
    let (what, rest) =
        [("field", "key"), ("variant", "value")]
            .iter()
            .find_map(|(serde, ours)| {
                message
                    .strip_prefix(&format!("unknown {serde} `"))
                    .map(|r| (*ours, r))
            })?;
    let (given, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest
        .split_once("expected")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    Some(match crate::text::closest(given, known.iter().copied()) {
        Some(near) => format!("unknown {what} `{given}`: did you mean `{near}`?"),
        None if known.is_empty() => format!("unknown {what} `{given}`"),
        None => format!(
            "unknown {what} `{given}`; {}: {}",
            if what == "key" {
                "this table's keys are"
            } else {
                "it is one of"
            },
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The line `at` is on, trimmed.
fn line_at(text: &str, at: usize) -> &str {
    let start = text
        .get(..at.min(text.len()))
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    text[start..].split('\n').next().unwrap_or_default().trim()
}

/// The key whose value starts at `at`, or the table a header at `at` opens: the last dotted
/// part of `key =` before it, or of `[key]` / `[[key]]` on its line.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let line = line_at(text, at);
    if line.starts_with('[') {
        let name = line.trim_start_matches('[');
        let name = name.split(']').next().unwrap_or_default();
        return last_part(name);
    }
    let before = text.get(..at)?.trim_end();
    let before = match before.strip_suffix('=') {
        Some(b) => b.trim_end(),
        // The span is the key itself.
        None => return last_part(line.split('=').next().unwrap_or_default()),
    };
    let start = before
        .char_indices()
        .rfind(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"')))
        .map_or(0, |(i, c)| i + c.len_utf8());
    last_part(before[start..].trim())
}

fn last_part(dotted: &str) -> Option<String> {
    let k = dotted.trim().rsplit('.').next()?.trim().trim_matches('"');
    (!k.is_empty()).then(|| k.to_string())
}

/// A command key written as one string, as the list popfetch runs: the words the shell would
/// split it into, or `/bin/sh -c` with the string when it needs the shell.
fn command_as_argv(text: &str, span: &Range<usize>, key: &str) -> Option<String> {
    let (_, placeholders) = COMMANDS.iter().find(|(k, _)| *k == key)?;
    let value = text.get(span.clone())?;
    let parsed: toml::Table = toml::from_str(&format!("v = {value}")).ok()?;
    let cmd = parsed.get("v")?.as_str()?;
    let placeholders: Vec<(&str, Placeholder)> = placeholders
        .iter()
        .map(|(p, ours)| (*p, Placeholder::Popfetch(ours)))
        .collect();
    let argv = translate_command(cmd, &placeholders).argv;
    Some(toml::Value::from(argv).to_string())
}

#[cfg(test)]
mod tests;
