//! getmail6 rc files → popfetch accounts, and getmail's `oldmail-*` files → their UIDLs.
//!
//! An rc file is Python `configparser` INI: `[retriever]`, `[destination]`, `[options]` and
//! `[filter-*]` sections of `key = value` (or `key: value`) lines, `#`/`;` comment lines,
//! indented continuation lines. Argument lists (`arguments`, `password_command`) are Python
//! tuples of strings. One rc file is one account.
//!
//! getmail6 keeps the state of a POP3 account in `GETMAILDIR/oldmail-SERVER-PORT-USER` (the
//! characters `/ \ : ; < > |` of that name replaced by `-`), rewritten by rename at the end of
//! each session: one line per message delivered (or dropped by a filter) that is still on the
//! server, `UIDL NUL TIMESTAMP`, the timestamp being when getmail first recorded it. getmail
//! itself stores a `/` in a UIDL as `-`. The `BrokenUIDL` retrievers store made-up ids there.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    Account, Deliver, ImportError, Imported, Password, Placeholder, Tls, Tool, Uidls,
    translate_command,
};

/// Bound on the lines of an rc file.
const MAX_LINES: usize = 100_000;

/// One `key = value` with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A parsed INI file: sections in order, each with its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    pub sections: Vec<(String, usize, Vec<Entry>)>,
    /// Lines that are neither a section, an entry, a comment nor a continuation.
    pub stray: Vec<usize>,
}

impl Ini {
    fn section(&self, name: &str) -> Option<&[Entry]> {
        self.sections
            .iter()
            .rev()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, _, e)| e.as_slice())
    }
}

/// Parses INI text the way Python's configparser does for getmail's files (no interpolation).
pub fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::default();
    for (i, raw) in text.lines().take(MAX_LINES).enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let indented = raw.starts_with([' ', '\t']);
        if indented && let Some(e) = ini.sections.last_mut().and_then(|s| s.2.last_mut()) {
            e.value.push('\n');
            e.value.push_str(trimmed);
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            ini.sections
                .push((name.trim().to_string(), line, Vec::new()));
            continue;
        }
        let split = trimmed.find(['=', ':']);
        match (split, ini.sections.last_mut()) {
            (Some(at), Some(section)) => section.2.push(Entry {
                key: trimmed[..at].trim().to_ascii_lowercase(),
                value: trimmed[at + 1..].trim().to_string(),
                line,
            }),
            _ => ini.stray.push(line),
        }
    }
    ini
}

/// Parses a Python tuple or list of string literals, e.g. `("-f", '%(sender)',)`. A bare
/// string is a one-element list. `None` when it is something else.
pub fn parse_tuple(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = match (s.chars().next(), s.chars().last()) {
        (Some('('), Some(')')) | (Some('['), Some(']')) => &s[1..s.len() - 1],
        _ if !s.starts_with(['"', '\'']) => return Some(vec![s.to_string()]),
        _ => s,
    };
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(q) = chars.next() else {
            break;
        };
        if q != '"' && q != '\'' {
            return None;
        }
        let mut v = String::new();
        loop {
            match chars.next()? {
                c if c == q => break,
                '\\' => match chars.next()? {
                    'n' => v.push('\n'),
                    't' => v.push('\t'),
                    c => v.push(c),
                },
                c => v.push(c),
            }
        }
        out.push(v);
    }
    Some(out)
}

fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The state file getmail uses for a POP3 account (`oldmail-SERVER-PORT-USER`).
pub fn oldmail_name(server: &str, port: u16, user: &str) -> String {
    let raw = format!("oldmail-{server}-{port}-{user}");
    let mut out = String::new();
    let mut in_run = false;
    for c in raw.chars() {
        if matches!(c, '/' | '\\' | ':' | ';' | '<' | '>' | '|') {
            if !in_run {
                out.push('-');
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

/// What one rc file became: the account (if any), and where its state would be.
pub struct Translated {
    pub account: Option<Account>,
    /// `(port, state usable)`: `false` for the BrokenUIDL retrievers.
    pub state: Option<(u16, bool)>,
}

/// Translates one rc file. `file` names it in notes; `label` is the account name to use.
pub fn translate(text: &str, file: &str, label: &str, out: &mut Imported) -> Translated {
    let ini = parse_ini(text);
    for l in &ini.stray {
        out.note(
            file,
            *l,
            "line",
            "neither a [section], a key = value nor a comment; ignored",
        );
    }
    let none = Translated {
        account: None,
        state: None,
    };
    let Some(r) = ini.section("retriever") else {
        out.note(file, 0, "[retriever]", "missing; nothing to translate");
        return none;
    };
    let get = |entries: &[Entry], k: &str| entries.iter().rev().find(|e| e.key == k).cloned();
    let Some(kind) = get(r, "type") else {
        out.note(file, 0, "[retriever] type", "missing; nothing to translate");
        return none;
    };
    let (tls, broken) = match kind.value.as_str() {
        "SimplePOP3Retriever" => (Tls::None, false),
        "SimplePOP3SSLRetriever" => (Tls::Implicit, false),
        "BrokenUIDLPOP3Retriever" => (Tls::None, true),
        "BrokenUIDLPOP3SSLRetriever" => (Tls::Implicit, true),
        other => {
            let why = if other.contains("IMAP") {
                "popfetch speaks POP3 only; not translated"
            } else if other.starts_with("Multidrop") {
                "multidrop: popfetch delivers each account to one target; not translated"
            } else {
                "unknown retriever type; not translated"
            };
            out.note(file, kind.line, format!("type = {other}"), why);
            return none;
        }
    };
    let (Some(server), Some(user)) = (get(r, "server"), get(r, "username")) else {
        out.note(
            file,
            kind.line,
            "[retriever]",
            "needs server and username; not translated",
        );
        return none;
    };
    let mut a = Account::new(
        format!("{file} line {}: {}", kind.line, kind.value),
        server.value.clone(),
        user.value.clone(),
    );
    a.name = label.to_string();
    a.tls = tls;
    let default_port = if tls == Tls::Implicit { 995 } else { 110 };
    let mut port = default_port;
    for e in r {
        retriever_setting(e, default_port, &mut port, file, out, &mut a);
    }
    if tls == Tls::None {
        a.comments.push(
            "a SimplePOP3Retriever connects without TLS; so does tls = \"none\", the password \
             crossing the network as it did"
                .into(),
        );
        if a.auth != Some("apop") {
            a.allow_plaintext_auth = true;
        }
    }
    if broken {
        a.comments.push(format!(
            "{}: getmail did not trust the server's UIDL; popfetch relies on it in keep mode",
            kind.value
        ));
    }

    options(&ini, file, out, &mut a);

    other_sections(&ini, file, out);

    a.deliver = match destination(&ini, file, out, &mut a) {
        Some(d) => d,
        None => Deliver::Maildir("~/Maildir".into()),
    };
    Translated {
        account: Some(a),
        state: Some((port, !broken)),
    }
}

/// One `[retriever]` setting, with `port` the port so far.
fn retriever_setting(
    e: &Entry,
    default_port: u16,
    port: &mut u16,
    file: &str,
    out: &mut Imported,
    a: &mut Account,
) {
    match e.key.as_str() {
        "type" | "server" | "username" => {}
        "port" => match e.value.parse::<u16>() {
            Ok(p) if p > 0 => {
                *port = p;
                if p != default_port {
                    a.port = Some(p);
                }
            }
            _ => out.note(
                file,
                e.line,
                format!("port = {}", e.value),
                "not a port; ignored",
            ),
        },
        "password" => a.password = Password::Inline(e.value.clone()),
        "password_command" => match parse_tuple(&e.value) {
            Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                a.password = Password::Command(argv);
            }
            _ => out.note(
                file,
                e.line,
                "password_command",
                "not a tuple of strings; not carried over",
            ),
        },
        "use_apop" => {
            if boolean(&e.value) == Some(true) {
                a.auth = Some("apop");
            }
        }
        "timeout" => match e.value.parse::<u64>() {
            Ok(t) if t > 0 => a.timeout_secs = Some(t),
            _ => out.note(file, e.line, "timeout", "not a number of seconds; ignored"),
        },
        "ca_certs" => a.ca_file = Some(e.value.clone()),
        "keyfile" | "certfile" => out.note(
            file,
            e.line,
            e.key.clone(),
            "client certificates are not supported",
        ),
        "ssl_fingerprints" => out.note(
            file,
            e.line,
            "ssl_fingerprints",
            "popfetch checks certificates against CAs only (ca_file)",
        ),
        "ssl_cert_hostname" => out.note(
            file,
            e.line,
            "ssl_cert_hostname",
            "popfetch checks the certificate against `host`",
        ),
        "ssl_version" | "ssl_ciphers" => out.note(
            file,
            e.line,
            e.key.clone(),
            "popfetch negotiates TLS 1.2 or newer by itself; not pinned",
        ),
        _ => out.note(
            file,
            e.line,
            super::shorten(&e.key),
            "retriever setting popfetch has no equivalent for; ignored",
        ),
    }
}

/// The `[options]` section; getmail's defaults are delete = false, read_all = true.
fn options(ini: &Ini, file: &str, out: &mut Imported, a: &mut Account) {
    let mut delete = false;
    let mut read_all = (true, 0);
    if let Some(opts) = ini.section("options") {
        for e in opts {
            let b = boolean(&e.value);
            match e.key.as_str() {
                "delete" => delete = b.unwrap_or(false),
                "read_all" => read_all = (b.unwrap_or(true), e.line),
                "delete_after" => match e.value.parse::<u64>() {
                    Ok(0) => {}
                    Ok(d) => a.delete_after_days = Some(d),
                    Err(_) => out.note(file, e.line, "delete_after", "not a number; ignored"),
                },
                "max_message_size" => match e.value.parse::<u64>() {
                    Ok(0) => {}
                    Ok(m) => a.max_size = Some(m),
                    Err(_) => out.note(file, e.line, "max_message_size", "not a number; ignored"),
                },
                "received" => a.received_header = b,
                "max_messages_per_session" => match e.value.parse::<u64>() {
                    Ok(0) => {}
                    Ok(n) => a.max_messages_per_poll = Some(n),
                    Err(_) => out.note(file, e.line, e.key.clone(), "not a number; ignored"),
                },
                "max_bytes_per_session" => match e.value.parse::<u64>() {
                    Ok(0) => {}
                    Ok(n) => a.max_bytes_per_poll = Some(n),
                    Err(_) => out.note(file, e.line, e.key.clone(), "not a number; ignored"),
                },
                "verbose" | "to_oldmail_on_each_mail" => {}
                "delivered_to" if b == Some(false) => {}
                "message_log" | "message_log_syslog" | "message_log_verbose" | "logfile" => out
                    .note(
                        file,
                        e.line,
                        e.key.clone(),
                        "popfetch logs each message at -vv to the journal or stderr",
                    ),
                "delivered_to" => out.note(
                    file,
                    e.line,
                    "delivered_to",
                    "popfetch adds a Received: line only (received_header)",
                ),
                "delete_bigger_than" if e.value.trim() == "0" => {}
                "delete_bigger_than" => out.note(
                    file,
                    e.line,
                    format!("delete_bigger_than = {}", e.value),
                    "getmail fetched such messages (up to max_message_size) and then deleted \
                     them; popfetch deletes only unread, with max_size_action = \"delete\"",
                ),
                _ => out.note(
                    file,
                    e.line,
                    super::shorten(&e.key),
                    "option popfetch has no equivalent for; ignored",
                ),
            }
        }
    }
    a.keep = !delete;
    if delete && a.delete_after_days.is_some() {
        a.delete_after_days = None;
    }
    if read_all.0 && !delete {
        out.note(
            file,
            read_all.1,
            "read_all = true (getmail's default) with delete = false",
            "getmail fetched every message at every run; popfetch fetches each message once",
        );
    }
}

/// Notes on the sections other than `[retriever]`, `[destination]` and `[options]`.
fn other_sections(ini: &Ini, file: &str, out: &mut Imported) {
    for (name, line, _) in &ini.sections {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("filter") {
            out.note(
                file,
                *line,
                format!("[{name}]"),
                "popfetch runs no filters; an MDA such as procmail or maildrop can",
            );
        } else if !matches!(lower.as_str(), "retriever" | "destination" | "options") {
            out.note(file, *line, format!("[{name}]"), "unknown section; ignored");
        }
    }
}

fn destination(ini: &Ini, file: &str, out: &mut Imported, a: &mut Account) -> Option<Deliver> {
    let Some(d) = ini.section("destination") else {
        out.note(
            file,
            0,
            "[destination]",
            "missing; the account delivers to ~/Maildir: change `deliver`",
        );
        return None;
    };
    let get = |k: &str| d.iter().rev().find(|e| e.key == k).cloned();
    let kind = get("type")?;
    let path = get("path");
    for e in d {
        if matches!(
            e.key.as_str(),
            "user" | "group" | "unixfrom" | "locktype" | "filemode"
        ) {
            out.note(
                file,
                e.line,
                format!("{} = {}", e.key, super::shorten(&e.value)),
                "popfetch delivers as the user it runs as, with its own locking and modes",
            );
        }
    }
    if !matches!(kind.value.as_str(), "Maildir" | "Mboxrd" | "MDA_external") {
        out.note(
            file,
            kind.line,
            format!("type = {}", kind.value),
            "popfetch delivers each account to one Maildir, mbox, MDA or SMTP relay; the \
             account delivers to ~/Maildir: change `deliver`",
        );
        return None;
    }
    let Some(path) = path else {
        out.note(
            file,
            kind.line,
            format!("type = {}", kind.value),
            "has no path; the account delivers to ~/Maildir: change `deliver`",
        );
        return None;
    };
    match kind.value.as_str() {
        "Maildir" => Some(Deliver::Maildir(
            path.value.trim_end_matches('/').to_string(),
        )),
        "Mboxrd" => Some(Deliver::Mbox(path.value)),
        "MDA_external" => Some(mda_external(
            path.value,
            get("arguments"),
            kind.line,
            file,
            out,
            a,
        )),
        other => {
            out.note(
                file,
                kind.line,
                format!("type = {other}"),
                "popfetch delivers each account to one Maildir, mbox, MDA or SMTP relay; the \
                 account delivers to ~/Maildir: change `deliver`",
            );
            None
        }
    }
}

/// An `MDA_external` destination: the program at `path` with its `arguments`.
fn mda_external(
    path: String,
    arguments: Option<Entry>,
    line: usize,
    file: &str,
    out: &mut Imported,
    a: &mut Account,
) -> Deliver {
    let args = match arguments {
        Some(e) => match parse_tuple(&e.value) {
            Some(v) => v,
            None => {
                out.note(file, e.line, "arguments", "not a tuple of strings; dropped");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let mut argv = vec![path];
    argv.extend(args);
    // getmail runs the program without a shell; a command line is built only so
    // that the shared translation can place the sender.
    let cmd: Vec<String> = argv.iter().map(|s| quote_keeping(s)).collect();
    let c = translate_command(
        &cmd.join(" "),
        &[
            ("%(sender)", Placeholder::Popfetch("{from}")),
            ("%(recipient)", Placeholder::Unknown),
            ("%(local)", Placeholder::Unknown),
            ("%(domain)", Placeholder::Unknown),
            ("%(mailbox)", Placeholder::Unknown),
        ],
    );
    for p in &c.unknown_placeholders {
        out.note(
            file,
            line,
            format!("MDA_external {p}"),
            "popfetch knows the sender ({from}), the account and the user only; the \
             placeholder is passed on unchanged",
        );
    }
    if c.shell_reason.is_some() {
        a.comments.push(
            "The sender appears inside a larger argument, so the MDA runs through \
             /bin/sh -c, the sender passed as \"$1\"."
                .into(),
        );
    }
    Deliver::Mda(c.argv)
}

/// Quotes one argument for a command line that [`super::shell_words`] splits back into the
/// same argument, keeping placeholders as whole quoted words where they are whole.
fn quote_keeping(s: &str) -> String {
    super::sh_quote(s)
}

/// The account label for an rc file: its name without a `getmailrc` prefix or an extension.
pub fn label_for(path: &Path, server: &str, user: &str) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_prefix("getmailrc")
        .unwrap_or(&name)
        .trim_start_matches(['-', '.', '_']);
    let stem = [".rc", ".conf", ".ini", ".cfg"]
        .iter()
        .find_map(|ext| stem.strip_suffix(ext))
        .unwrap_or(stem);
    if stem.is_empty() {
        format!("{user}@{server}")
    } else {
        stem.to_string()
    }
}

/// Reads an oldmail file.
pub fn read_oldmail(text: &[u8], source: &Path) -> Uidls {
    let mut u = Uidls::new(source.to_path_buf());
    let mut seen = HashSet::new();
    let mut dashes = 0;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw.trim_ascii();
        if line.is_empty() {
            continue;
        }
        // getmail skips lines without a NUL as malformed; so does this.
        let Some(nul) = line.iter().position(|&b| b == 0) else {
            u.invalid
                .push((i + 1, "no NUL between unique-id and timestamp".into()));
            continue;
        };
        let id = &line[..nul];
        if id.contains(&b'-') {
            dashes += 1;
        }
        u.push(i + 1, id, &mut seen);
        // getmail writes the time as a float of Unix seconds; a time in the future is not
        // believed (it would delay nothing, but would look odd in the journal).
        let at = std::str::from_utf8(&line[nul + 1..])
            .ok()
            .and_then(|t| t.trim().parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(|t| (t as u64).min(crate::state::now_secs()));
        if let (Some(at), Ok(uidl)) = (at, crate::pop3::Uidl::parse(id)) {
            u.first_seen.entry(uidl).or_insert(at);
        }
    }
    if dashes > 0 {
        u.remarks.push(format!(
            "{dashes} unique-id{} contain '-', which getmail also writes for '/': if this \
             server's unique-ids contain '/', those messages will be fetched once more",
            super::plural(dashes)
        ));
    }
    u
}

/// `popfetch import getmail`.
pub fn import(rcfiles: &[PathBuf], getmaildir: Option<&Path>) -> Result<Imported, ImportError> {
    let gdir = match getmaildir {
        Some(d) => d.to_path_buf(),
        None => super::home()?.join(".getmail"),
    };
    let files: Vec<PathBuf> = if rcfiles.is_empty() {
        vec![gdir.join("getmailrc")]
    } else {
        // getmail takes a relative --rcfile from the getmail directory.
        rcfiles
            .iter()
            .map(|p| {
                if p.is_relative() && !p.exists() {
                    gdir.join(p)
                } else {
                    p.clone()
                }
            })
            .collect()
    };
    let mut out = Imported {
        tool: Some(Tool::Getmail),
        ..Imported::default()
    };
    for path in &files {
        let text = super::read_file(path)?;
        let text = String::from_utf8_lossy(&text);
        let file = path.display().to_string();
        out.sources.push(file.clone());
        // The label needs server and user for files named plainly `getmailrc`.
        let ini = parse_ini(&text);
        let r = ini.section("retriever").unwrap_or_default();
        let val = |k: &str| {
            r.iter()
                .rev()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
                .unwrap_or_default()
        };
        let label = label_for(path, &val("server"), &val("username"));
        let t = translate(&text, &file, &label, &mut out);
        let Some(account) = t.account else {
            continue;
        };
        let state = match t.state {
            Some((port, true)) => {
                let p = gdir.join(oldmail_name(&account.host, port, &account.user));
                match super::read_optional(&p)? {
                    Some(bytes) => Some(read_oldmail(&bytes, &p)),
                    None => {
                        out.messages.push(format!(
                            "{file}: no {}: no state imported; in keep mode the first fetch \
                             takes every message on the server as new",
                            p.display()
                        ));
                        None
                    }
                }
            }
            Some((_, false)) => {
                out.messages.push(format!(
                    "{file}: a BrokenUIDL retriever records made-up ids, not the server's \
                     unique-ids: no state imported"
                ));
                None
            }
            None => None,
        };
        out.accounts.push(account);
        out.state.push(state);
    }
    Ok(out)
}
