//! `.fetchmailrc` → popfetch accounts, and `.fetchids` → their UIDLs.
//!
//! The rc file is a stream of words: `set` statements, then `defaults`, `poll` and `skip`
//! entries, each with server options and one or more `user` sections. The noise words (`and
//! with has wants options here there`) and the separators `; , :` carry no meaning; `#` starts
//! a comment; strings may be quoted with `"` or `'` and use C-like escapes. Each `user` of each
//! `poll` entry becomes one account; `defaults` fill in what an entry does not say.
//!
//! `.fetchids` (written by fetchmail 6.4 at the end of each run, by rename) has one line per
//! message that was fetched or marked seen and is still on the server: `REMOTEUSER@HOST UIDL`,
//! HOST being the `via` name or else the poll name. fetchmail splits it at the first blank
//! after the first `@`, and takes the host after the last `@` before that blank, comparing
//! user and host without regard to case; so does this.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    Account, Deliver, ImportError, Imported, Password, Placeholder, Tls, Tool, Uidls,
    translate_command,
};

/// Words that only make the rc file read like English.
const NOISE: &[&str] = &["and", "with", "has", "wants", "options", "here", "there"];

/// Bound on the tokens of one rc file; real ones have hundreds.
const MAX_TOKENS: usize = 1_000_000;

/// One word of the rc file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub line: usize,
    pub quoted: bool,
}

/// Splits rc file text into words, dropping comments, separators and noise words.
pub fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if out.len() >= MAX_TOKENS {
            break;
        }
        match c {
            '\n' => {
                line += 1;
                chars.next();
            }
            c if c.is_whitespace() || matches!(c, ';' | ',' | ':') => {
                chars.next();
            }
            '#' => {
                while let Some(&c) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '"' | '\'' => {
                // As fetchmail's lexer: the string ends at the next quote of its kind, a
                // backslash or not; escapes are read inside it afterwards.
                let quote = c;
                let start = line;
                chars.next();
                let mut raw = String::new();
                for c in chars.by_ref() {
                    if c == quote {
                        break;
                    }
                    if c == '\n' {
                        line += 1;
                    }
                    raw.push(c);
                }
                out.push(Token {
                    text: unescape(&raw),
                    line: start,
                    quoted: true,
                });
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ';' | ',' | ':' | '"' | '\'' | '#') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                if !NOISE.contains(&s.to_ascii_lowercase().as_str()) {
                    out.push(Token {
                        text: s,
                        line,
                        quoted: false,
                    });
                }
            }
        }
    }
    out
}

/// Reads the C-like escapes fetchmail allows in a quoted string: `\n \t \r \b`, `\xHH`,
/// `\NNN` (octal), and a backslash before any other character stands for that character.
fn unescape(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            s.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => s.push('\n'),
            Some('t') => s.push('\t'),
            Some('r') => s.push('\r'),
            Some('b') => s.push('\u{8}'),
            Some('x') => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                s.push(char::from_u32(v).unwrap_or('?'));
            }
            Some(d @ '0'..='7') => {
                let mut v = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            v = v * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                s.push(char::from_u32(v).unwrap_or('?'));
            }
            Some(c) => s.push(c),
            None => s.push('\\'),
        }
    }
    s
}

/// Options of a scope (`defaults`, a poll entry, a user section); unset ones fall back to the
/// enclosing scope.
#[derive(Debug, Clone, Default)]
struct Opts {
    via: Option<String>,
    proto: Option<(String, usize)>,
    port: Option<(String, usize)>,
    auth: Option<(String, usize)>,
    timeout: Option<u64>,
    interval: Option<(u64, usize)>,
    password: Option<String>,
    localnames: Option<(Vec<String>, usize)>,
    ssl: Option<bool>,
    sslcertck: Option<bool>,
    sslcertfile: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    sslproto: Option<(String, usize)>,
    keep: Option<bool>,
    fetchall: Option<(bool, usize)>,
    limit: Option<u64>,
    limitflush: Option<bool>,
    fetchlimit: Option<u64>,
    mda: Option<(String, usize)>,
    smtphost: Option<(Vec<String>, usize)>,
    smtpname: Option<String>,
    /// Delivery settings popfetch cannot do (lmtp, bsmtp), with their line.
    odd_delivery: Option<(String, usize)>,
    /// `envelope [N] HEADER` or `no envelope`, with its line (multidrop).
    envelope: Option<(Envelope, usize)>,
    /// `localdomains`, with its line (multidrop).
    localdomains: Option<(Vec<String>, usize)>,
    /// `aka`: other names of the server, with its line (multidrop).
    aka: Option<(Vec<String>, usize)>,
    /// `qvirtual PREFIX`, with its line (multidrop).
    qvirtual: Option<(String, usize)>,
    /// `dns` (fetchmail's default) or `no dns`.
    dns: Option<bool>,
}

/// Where fetchmail reads a multidrop message's recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Envelope {
    /// The first `name` field after skipping `skip` of them (`envelope [skip] name`). fetchmail
    /// compares the start of each line with `name`, so a trailing colon may be part of it.
    Header { skip: u64, name: String },
    /// `no envelope`: To, Cc and Bcc only.
    Disabled,
}

impl Opts {
    fn or(self, o: &Opts) -> Opts {
        Opts {
            via: self.via.or_else(|| o.via.clone()),
            proto: self.proto.or_else(|| o.proto.clone()),
            port: self.port.or_else(|| o.port.clone()),
            auth: self.auth.or_else(|| o.auth.clone()),
            timeout: self.timeout.or(o.timeout),
            interval: self.interval.or(o.interval),
            password: self.password.or_else(|| o.password.clone()),
            localnames: self.localnames.or_else(|| o.localnames.clone()),
            ssl: self.ssl.or(o.ssl),
            sslcertck: self.sslcertck.or(o.sslcertck),
            sslcertfile: self.sslcertfile.or_else(|| o.sslcertfile.clone()),
            sslcert: self.sslcert.or_else(|| o.sslcert.clone()),
            sslkey: self.sslkey.or_else(|| o.sslkey.clone()),
            sslproto: self.sslproto.or_else(|| o.sslproto.clone()),
            keep: self.keep.or(o.keep),
            fetchall: self.fetchall.or(o.fetchall),
            limit: self.limit.or(o.limit),
            limitflush: self.limitflush.or(o.limitflush),
            fetchlimit: self.fetchlimit.or(o.fetchlimit),
            mda: self.mda.or_else(|| o.mda.clone()),
            smtphost: self.smtphost.or_else(|| o.smtphost.clone()),
            smtpname: self.smtpname.or_else(|| o.smtpname.clone()),
            odd_delivery: self.odd_delivery.or_else(|| o.odd_delivery.clone()),
            envelope: self.envelope.or_else(|| o.envelope.clone()),
            localdomains: self.localdomains.or_else(|| o.localdomains.clone()),
            aka: self.aka.or_else(|| o.aka.clone()),
            qvirtual: self.qvirtual.or_else(|| o.qvirtual.clone()),
            dns: self.dns.or(o.dns),
        }
    }
}

/// A `poll` or `skip` entry.
#[derive(Debug, Default)]
struct Entry {
    name: String,
    line: usize,
    skip: bool,
    server: Opts,
    users: Vec<(String, usize, Opts)>,
}

/// Keywords that take one argument and that popfetch has no use for: (keyword, why).
const IGNORED_ARG: &[(&str, &str)] = &[
    (
        "principal",
        "Kerberos principal; popfetch has no Kerberos login",
    ),
    (
        "esmtpname",
        "ESMTP AUTH towards the relay is set in deliver.smtp (user, password)",
    ),
    (
        "esmtppassword",
        "ESMTP AUTH towards the relay is set in deliver.smtp (user, password)",
    ),
    ("plugin", "popfetch connects by itself; no plugin command"),
    (
        "plugout",
        "popfetch connects to the relay by itself; no plugout command",
    ),
    ("interface", "popfetch does not check network interfaces"),
    ("monitor", "popfetch does not watch interfaces for activity"),
    ("bad-header", "popfetch passes every message on unchanged"),
    (
        "sslfingerprint",
        "an MD5 fingerprint, which popfetch does not take: run `popfetch check --connect` and \
         set tls_fingerprint to the sha256: it prints",
    ),
    (
        "sslcommonname",
        "popfetch checks the certificate against `host`",
    ),
    (
        "sslcertpath",
        "popfetch takes one CA file: concatenate the certificates into one file and set ca_file",
    ),
    ("warnings", "popfetch sends no warning mail"),
    ("batchlimit", "popfetch opens one SMTP connection per poll"),
    ("fetchsizelimit", "popfetch reads sizes with one LIST"),
    ("fastuidl", "popfetch always reads the full UIDL list"),
    (
        "expunge",
        "popfetch deletes at QUIT, once all deliveries are durable",
    ),
    ("folder", "folders are an IMAP feature"),
    ("smtpaddress", "the recipient is set with deliver.smtp.to"),
    ("preconnect", "popfetch runs no command before connecting"),
    ("postconnect", "popfetch runs no command after a poll"),
    ("tracepolls", "popfetch adds no poll trace header"),
    ("properties", "no equivalent"),
];

/// Keywords without an argument that popfetch ignores: (keyword, why).
const IGNORED_FLAG: &[(&str, &str)] = &[
    ("rewrite", "popfetch never rewrites addresses"),
    ("stripcr", "popfetch delivers the message as received"),
    ("forcecr", "popfetch delivers the message as received"),
    ("pass8bits", "popfetch delivers the message as received"),
    ("mimedecode", "popfetch delivers the message as received"),
    ("dropstatus", "popfetch delivers the message as received"),
    ("dropdelivered", "popfetch delivers the message as received"),
    ("idle", "IDLE is an IMAP feature"),
    (
        "checkalias",
        "popfetch does no DNS lookups: a shared mailbox routes the domains its \
         route.local_domains names",
    ),
    (
        "limitflush",
        "popfetch never deletes a message it did not deliver",
    ),
    ("showdots", "progress display differs"),
    ("spambounce", "popfetch bounces nothing"),
    ("softbounce", "popfetch bounces nothing"),
    ("bouncemail", "popfetch bounces nothing"),
    (
        "flush",
        "see keep: with keep = false popfetch deletes the messages it delivered before",
    ),
];

/// Keywords taking a list: the list runs until the next keyword.
const LIST_KEYWORDS: &[&str] = &[
    "is",
    "to",
    "aka",
    "localdomains",
    "smtphost",
    "smtp",
    "fetchdomains",
    "antispam",
];

fn is_keyword(w: &str) -> bool {
    const OTHER: &[&str] = &[
        "poll",
        "skip",
        "defaults",
        "set",
        "user",
        "username",
        "via",
        "proto",
        "protocol",
        "port",
        "service",
        "auth",
        "authenticate",
        "timeout",
        "interval",
        "uidl",
        "pass",
        "password",
        "ssl",
        "sslcertck",
        "sslcertfile",
        "sslproto",
        "sslcert",
        "sslkey",
        "keep",
        "nokeep",
        "fetchall",
        "limit",
        "mda",
        "smtpname",
        "no",
        "lmtp",
        "bsmtp",
        "envelope",
        "qvirtual",
        "dns",
    ];
    let w = w.to_ascii_lowercase();
    OTHER.contains(&w.as_str())
        || LIST_KEYWORDS.contains(&w.as_str())
        || IGNORED_ARG.iter().any(|(k, _)| *k == w)
        || IGNORED_FLAG.iter().any(|(k, _)| *k == w)
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
    file: String,
    out: Imported,
    daemon: Option<u64>,
    idfile: Option<String>,
    invisible: bool,
    /// `set postmaster`: where a multidrop message no local name matched went.
    postmaster: Option<String>,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    /// The argument of a keyword on line `line`; a missing one is noted.
    fn arg(&mut self, kw: &str, line: usize) -> Option<String> {
        // Any word can be an argument (`auth password`), except one that starts a new
        // statement.
        const STRUCTURE: &[&str] = &["poll", "skip", "defaults", "set", "user", "username"];
        match self.peek() {
            Some(t) if t.quoted || !STRUCTURE.contains(&t.text.to_ascii_lowercase().as_str()) => {
                self.next().map(|t| t.text)
            }
            _ => {
                let f = self.file.clone();
                self.out.note(&f, line, kw, "has no argument; ignored");
                None
            }
        }
    }

    fn number(&mut self, kw: &str, line: usize) -> Option<u64> {
        let a = self.arg(kw, line)?;
        match a.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let f = self.file.clone();
                self.out
                    .note(&f, line, format!("{kw} {a}"), "not a number; ignored");
                None
            }
        }
    }

    fn list(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(t) = self.peek() {
            if !t.quoted && is_keyword(&t.text) {
                break;
            }
            v.push(t.text.clone());
            self.pos += 1;
        }
        v
    }

    fn note(&mut self, line: usize, what: impl Into<String>, why: impl Into<String>) {
        let f = self.file.clone();
        self.out.note(&f, line, what, why);
    }

    fn parse_set(&mut self, line: usize) {
        let Some(t) = self.next() else {
            self.note(line, "set", "has no argument; ignored");
            return;
        };
        let word = t.text.to_ascii_lowercase();
        match word.as_str() {
            "daemon" => self.daemon = self.number("set daemon", t.line),
            "postmaster" => {
                let a = self.arg("set postmaster", t.line).unwrap_or_default();
                self.postmaster = Some(a.clone());
                self.note(
                    t.line,
                    format!("set postmaster {a}"),
                    "popfetch bounces nothing: a message refused for good stays on the server \
                     (on_permanent_failure)",
                );
            }
            "logfile" => {
                let a = self.arg("set logfile", t.line).unwrap_or_default();
                self.note(
                    t.line,
                    format!("set logfile {a}"),
                    "popfetch logs to the journal or stderr (log_target)",
                );
            }
            "syslog" => self.out.log_target = Some("journald"),
            "idfile" => self.idfile = self.arg("set idfile", t.line),
            "invisible" => self.invisible = true,
            "no" => {
                // `set no syslog`, `set no bouncemail` …: the defaults of popfetch anyway.
                if let Some(t) = self.next()
                    && t.text.eq_ignore_ascii_case("invisible")
                {
                    self.invisible = false;
                }
            }
            "bouncemail" | "spambounce" | "softbounce" | "showdots" => {
                self.note(t.line, format!("set {word}"), "popfetch bounces nothing");
            }
            "properties" => {
                let _ = self.arg("set properties", t.line);
            }
            _ => self.note(
                t.line,
                format!("set {}", t.text),
                "unknown setting; ignored",
            ),
        }
    }

    /// Applies one option word `t` to `o`. Returns false when `t` is no option at all.
    fn option(&mut self, t: &Token, o: &mut Opts) -> bool {
        let line = t.line;
        let word = t.text.to_ascii_lowercase();
        match word.as_str() {
            "via" => o.via = self.arg("via", line),
            "proto" | "protocol" => o.proto = self.arg("proto", line).map(|p| (p, line)),
            "port" | "service" => o.port = self.arg(&word, line).map(|p| (p, line)),
            "auth" | "authenticate" => o.auth = self.arg("auth", line).map(|a| (a, line)),
            "timeout" => o.timeout = self.number("timeout", line),
            "interval" => o.interval = self.number("interval", line).map(|n| (n, line)),
            "uidl" => {}
            "pass" | "password" => o.password = self.arg("password", line),
            "is" | "to" => o.localnames = Some((self.list(), line)),
            "ssl" => o.ssl = Some(true),
            "sslcertck" => o.sslcertck = Some(true),
            "sslcertfile" => o.sslcertfile = self.arg("sslcertfile", line),
            "sslcert" => o.sslcert = self.arg("sslcert", line),
            "sslkey" => o.sslkey = self.arg("sslkey", line),
            "sslproto" => o.sslproto = self.arg("sslproto", line).map(|p| (p, line)),
            "keep" => o.keep = Some(true),
            "nokeep" => o.keep = Some(false),
            "fetchall" => o.fetchall = Some((true, line)),
            "limit" => o.limit = self.number("limit", line),
            "limitflush" => o.limitflush = Some(true),
            "fetchlimit" => o.fetchlimit = self.number("fetchlimit", line),
            "mda" => o.mda = self.arg("mda", line).map(|m| (m, line)),
            "smtphost" | "smtp" => o.smtphost = Some((self.list(), line)),
            "smtpname" => o.smtpname = self.arg("smtpname", line),
            "lmtp" => o.odd_delivery = Some(("lmtp".into(), line)),
            "bsmtp" => {
                let f = self.arg("bsmtp", line).unwrap_or_default();
                o.odd_delivery = Some((format!("bsmtp {f}"), line));
            }
            "no" => {
                let Some(n) = self.next() else {
                    return true;
                };
                match n.text.to_ascii_lowercase().as_str() {
                    "keep" => o.keep = Some(false),
                    "ssl" => o.ssl = Some(false),
                    "sslcertck" => o.sslcertck = Some(false),
                    "fetchall" => o.fetchall = Some((false, n.line)),
                    "limitflush" => o.limitflush = Some(false),
                    "envelope" => o.envelope = Some((Envelope::Disabled, n.line)),
                    "dns" => o.dns = Some(false),
                    // Already popfetch's behaviour, or nothing to carry over.
                    "rewrite" | "flush" | "mimedecode" | "idle" | "checkalias" | "uidl"
                    | "stripcr" | "forcecr" | "pass8bits" | "dropstatus" | "dropdelivered"
                    | "bouncemail" | "spambounce" | "softbounce" | "showdots" | "syslog" => {}
                    other => self.note(n.line, format!("no {other}"), "unknown option; ignored"),
                }
            }
            "localdomains" => o.localdomains = Some((self.list(), line)),
            "aka" => o.aka = Some((self.list(), line)),
            "fetchdomains" => {
                let v = self.list();
                self.note(
                    line,
                    format!("fetchdomains {}", v.join(" ")),
                    "domains for ETRN or ODMR; popfetch speaks POP3 only",
                );
            }
            "antispam" => {
                let v = self.list();
                self.note(
                    line,
                    format!("antispam {}", v.join(" ")),
                    "popfetch discards nothing: a message the relay refuses for good stays on \
                     the server (on_permanent_failure)",
                );
            }
            "envelope" => {
                // `envelope [N] HEADER`: a count is a number followed by another argument.
                let a = self.arg("envelope", line).unwrap_or_default();
                let counted = !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit());
                let (skip, name) = match counted.then(|| self.arg("envelope", line)).flatten() {
                    Some(h) => (a.parse::<u64>().unwrap_or(u64::MAX), h),
                    None => (0, a),
                };
                o.envelope = Some((Envelope::Header { skip, name }, line));
            }
            "qvirtual" => o.qvirtual = self.arg("qvirtual", line).map(|q| (q, line)),
            "dns" => o.dns = Some(true),
            w => {
                if let Some((_, why)) = IGNORED_ARG.iter().find(|(k, _)| *k == w) {
                    let a = self.arg(w, line).unwrap_or_default();
                    self.note(line, format!("{w} {}", super::shorten(&a)), *why);
                } else if let Some((_, why)) = IGNORED_FLAG.iter().find(|(k, _)| *k == w) {
                    self.note(line, w, *why);
                } else {
                    return false;
                }
            }
        }
        true
    }
}

/// Parses `.fetchmailrc` text. `file` names it in notes.
/// The options a keyword sets: the defaults' (scope 0), the current entry's server part (1) or
/// its current user's (2); `None` when that entry or user is not there.
fn scoped<'a>(scope: u8, defaults: &'a mut Opts, entries: &'a mut [Entry]) -> Option<&'a mut Opts> {
    match scope {
        0 => Some(defaults),
        1 => entries.last_mut().map(|e| &mut e.server),
        _ => entries
            .last_mut()
            .and_then(|e| e.users.last_mut())
            .map(|u| &mut u.2),
    }
}

pub fn parse(text: &str, file: &str) -> (Vec<Account>, Imported, Option<String>) {
    let toks = tokenize(text);
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        file: file.to_string(),
        out: Imported {
            tool: Some(Tool::Fetchmail),
            sources: vec![file.to_string()],
            ..Imported::default()
        },
        daemon: None,
        idfile: None,
        invisible: false,
        postmaster: None,
    };
    let mut defaults = Opts::default();
    let mut entries: Vec<Entry> = Vec::new();
    // Where options go: 0 defaults, 1 the current entry's server part, 2 its current user.
    let mut scope: u8 = 0;
    let mut in_defaults_users = false;
    while let Some(t) = p.next() {
        let word = t.text.to_ascii_lowercase();
        match word.as_str() {
            "set" if !t.quoted => p.parse_set(t.line),
            "defaults" if !t.quoted => {
                scope = 0;
                in_defaults_users = false;
            }
            "poll" | "skip" if !t.quoted => {
                let name = p.arg(&word, t.line).unwrap_or_default();
                entries.push(Entry {
                    name,
                    line: t.line,
                    skip: word == "skip",
                    ..Entry::default()
                });
                scope = 1;
            }
            "user" | "username" if !t.quoted => {
                let name = p.arg("user", t.line).unwrap_or_default();
                match entries.last_mut() {
                    Some(e) if scope != 0 => {
                        e.users.push((name, t.line, Opts::default()));
                        scope = 2;
                    }
                    _ => {
                        if !in_defaults_users {
                            p.note(
                                t.line,
                                format!("defaults user {name}"),
                                "a user in `defaults` is not carried over; name it in each \
                                 poll entry",
                            );
                        }
                        in_defaults_users = true;
                    }
                }
            }
            _ => {
                let mut spare = Opts::default();
                let o = scoped(scope, &mut defaults, &mut entries).unwrap_or(&mut spare);
                let known = !t.quoted && p.option(&t, o);
                if !known {
                    p.note(
                        t.line,
                        super::shorten(&t.text),
                        "not a fetchmail keyword popfetch knows; ignored",
                    );
                }
            }
        }
    }
    let mut accounts = Vec::new();
    for e in &entries {
        translate_entry(&mut p, e, &defaults, &mut accounts);
    }
    p.out.interval_secs = p.daemon.filter(|&d| d > 0);
    let idfile = p.idfile.clone();
    (accounts, p.out, idfile)
}

/// The name fetchmail gives the local user when the rc file names none: the one running it.
fn running_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "root".into())
}

fn translate_entry(p: &mut Parser, e: &Entry, defaults: &Opts, accounts: &mut Vec<Account>) {
    let entry_opts = e.server.clone().or(defaults);
    if e.skip {
        p.note(
            e.line,
            format!("skip {}", e.name),
            "fetchmail polls a `skip` entry only when named on its command line; not \
             translated (change it to `poll` to have it translated)",
        );
        return;
    }
    if e.name.is_empty() {
        return;
    }
    if let Some((proto, line)) = &entry_opts.proto {
        let lower = proto.to_ascii_lowercase();
        if !matches!(lower.as_str(), "pop3" | "auto" | "apop") {
            p.note(
                *line,
                format!("poll {} proto {proto}", e.name),
                "popfetch speaks POP3 only; entry not translated",
            );
            return;
        }
    }
    if e.users.is_empty() {
        p.note(
            e.line,
            format!("poll {}", e.name),
            "no `user`: fetchmail would log in as the local user; name the account in a `user` \
             section to have it translated",
        );
        return;
    }
    for (remote, uline, uopts) in &e.users {
        let o = uopts.clone().or(&entry_opts);
        let names = o
            .localnames
            .as_ref()
            .map(|(n, _)| local_names(n))
            .unwrap_or_default();
        // fetchmail's MULTIDROP(): several local names, or `*`.
        let multidrop = names.len() > 1 || names.contains(&LocalName::Wildcard);
        let host = o.via.clone().unwrap_or_else(|| e.name.clone());
        let mut a = Account::new(
            format!("{} line {uline}: poll {} user {remote}", p.file, e.name),
            host.clone(),
            remote.clone(),
        );
        a.name = format!("{remote}@{host}");
        if multidrop {
            translate_user(p, &mut a, &o, Target::Routed, e);
            multidrop_route(p, &mut a, e, &o, &names);
        } else {
            let local = match names.first() {
                Some(LocalName::Plain(n)) => n.clone(),
                Some(LocalName::Map(_, local)) => local.clone(),
                _ => running_user(),
            };
            single_drop_notes(p, &o, &local);
            translate_user(p, &mut a, &o, Target::One(&local), e);
        }
        accounts.push(a);
    }
}

/// One name of an `is`/`to` list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LocalName {
    /// A local name, or (fetchmail 6.3.5 and later) a full address, standing for itself.
    Plain(String),
    /// `'server'='local'`: mail for the server's name goes to the local one.
    Map(String, String),
    /// `*`: a name no entry matches passes through unchanged.
    Wildcard,
}

/// Reads an `is`/`to` list (`golux 'hurkle'='happy' snark *`), `=` a word of its own or part
/// of one.
fn local_names(words: &[String]) -> Vec<LocalName> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut joined = words[i].clone();
        while i + 1 < words.len() && (joined.ends_with('=') || words[i + 1].starts_with('=')) {
            i += 1;
            joined.push_str(&words[i]);
        }
        i += 1;
        out.push(match joined.split_once('=') {
            Some((server, local)) if !server.is_empty() && !local.is_empty() => {
                LocalName::Map(server.to_string(), local.to_string())
            }
            _ if joined == "*" => LocalName::Wildcard,
            _ => LocalName::Plain(joined),
        });
    }
    out
}

/// Who the messages of one `user` section are for.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// Single-drop: every message to this local name.
    One(&'a str),
    /// Multidrop: each recipient the route finds, `{recipient}` in the delivery target.
    Routed,
}

/// The multidrop settings of a single-drop account: fetchmail never read them (it delivers
/// every message to the one local name), and neither does popfetch; said so, not dropped.
fn single_drop_notes(p: &mut Parser, o: &Opts, local: &str) {
    let why = format!(
        "fetchmail reads it only for a multidrop account (several local names or `*`); this one \
         delivered every message to {local}, and so does popfetch"
    );
    if let Some((env, line)) = &o.envelope {
        let what = match env {
            Envelope::Header { skip: 0, name } => format!("envelope {name}"),
            Envelope::Header { skip, name } => format!("envelope {skip} {name}"),
            Envelope::Disabled => "no envelope".into(),
        };
        p.note(*line, what, why.clone());
    }
    for (key, v) in [("localdomains", &o.localdomains), ("aka", &o.aka)] {
        if let Some((list, line)) = v {
            p.note(*line, format!("{key} {}", list.join(" ")), why.clone());
        }
    }
    if let Some((q, line)) = &o.qvirtual {
        p.note(
            *line,
            format!("qvirtual {}", super::shorten(q)),
            why.clone(),
        );
    }
}

/// The domain names of a list (`localdomains`, `aka` …), lower case, without a final dot;
/// anything that cannot be one is noted and left out.
fn domain_list(p: &mut Parser, key: &str, list: &[String], line: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in list {
        let d2 = d.trim().trim_end_matches('.').to_ascii_lowercase();
        if d2.is_empty() || d2.contains(['@', '*', '"', '\\']) || d2.contains(char::is_whitespace) {
            p.note(
                line,
                format!("{key} {}", super::shorten(d)),
                "not a domain name; left out of route.local_domains",
            );
        } else if !out.contains(&d2) {
            out.push(d2);
        }
    }
    out
}

/// Translates a multidrop `user` section into `[account.route]`: the recipients fetchmail
/// would have found in the envelope header, mapped as its `is` list, `localdomains` and
/// `qvirtual` did; whatever differs is noted.
fn multidrop_route(p: &mut Parser, a: &mut Account, e: &Entry, o: &Opts, names: &[LocalName]) {
    let names_line = o.localnames.as_ref().map_or(e.line, |(_, l)| *l);
    // Through SMTP the recipient is `{recipient}@localhost` (a relay recipient is an address),
    // so the map names local parts: fetchmail's RCPT TO for a bare name was NAME@localhost too,
    // but a full address it passed whole, which is noted where it happens.
    let smtp = matches!(a.deliver, Deliver::Smtp { .. });
    let rcpt = |r: &str| match smtp {
        true => r.split('@').next().unwrap_or(r).to_string(),
        false => r.to_string(),
    };
    let mut whole = Vec::new();

    // Where the recipient comes from.
    let choose = "name the header your provider writes each message's envelope recipient to \
                  (look at a message: Delivered-To, X-Original-To, X-Envelope-To ...) in \
                  route.envelope_header";
    let (header, index) = match &o.envelope {
        Some((Envelope::Header { skip, name }, line)) => {
            let h = name.trim().trim_end_matches(':').trim_end();
            let shown = match skip {
                0 => format!("envelope {name}"),
                n => format!("envelope {n} {name}"),
            };
            if h.eq_ignore_ascii_case("received") {
                (None, None)
            } else if h.is_empty() || !h.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
                p.note(
                    *line,
                    super::shorten(&shown),
                    format!("not a header field name; {choose}"),
                );
                a.inactive = Some("its route names no envelope header".into());
                (Some(String::new()), None)
            } else {
                p.note(
                    *line,
                    super::shorten(&shown),
                    "a message without this header went by its To/Cc/Bcc in fetchmail; popfetch \
                     never guesses recipients from those and gives it to the route's \"*\"",
                );
                // fetchmail reads one field: the first after `skip`; popfetch counts from 1.
                let index = usize::try_from(*skip).ok().and_then(|s| s.checked_add(1));
                (Some(h.to_string()), index)
            }
        }
        Some((Envelope::Disabled, line)) => {
            p.note(
                *line,
                "no envelope",
                format!(
                    "fetchmail took the recipients from To/Cc/Bcc, which popfetch never trusts (a \
                     Bcc or list message names no local recipient there); {choose}"
                ),
            );
            a.inactive = Some("its route names no envelope header".into());
            (None, None)
        }
        None => (None, None),
    };
    let header = match header {
        Some(h) if !h.is_empty() => Some(h),
        Some(_) => None,
        None if a.inactive.is_some() => None,
        None => {
            p.note(
                o.envelope.as_ref().map_or(e.line, |(_, l)| *l),
                format!("poll {} envelope Received", e.name),
                format!(
                    "fetchmail's default reads the recipient from the server's `Received: ... for \
                     <address>` line, which popfetch does not parse (a Received line names the \
                     recipient only for a message with one, in a form each server chooses); \
                     {choose}"
                ),
            );
            a.inactive = Some("its route names no envelope header".into());
            None
        }
    };

    // Which domains are local. fetchmail passes an address in a `localdomains` domain (or a
    // subdomain) through whole, and maps the local part of one at the server's own names
    // (poll name, via, aka) through the `is` list.
    let pass = o
        .localdomains
        .as_ref()
        .map(|(l, line)| domain_list(p, "localdomains", l, *line))
        .unwrap_or_default();
    let mut servers = vec![e.name.to_ascii_lowercase()];
    if let Some(v) = &o.via {
        servers.push(v.to_ascii_lowercase());
    }
    if let Some((aka, line)) = &o.aka {
        servers.extend(domain_list(p, "aka", aka, *line));
    }
    let under = |d: &str, of: &str| d == of || d.ends_with(&format!(".{of}"));
    let (passed, servers): (Vec<String>, Vec<String>) = servers
        .into_iter()
        .partition(|s| pass.iter().any(|d| under(s, d)));
    let mut pass_domains = pass.clone();
    for s in passed {
        if !pass_domains.contains(&s) {
            pass_domains.push(s);
        }
    }
    let mut server_domains: Vec<String> = Vec::new();
    for s in servers {
        if !server_domains.contains(&s) {
            server_domains.push(s);
        }
    }
    let mut local_domains: Vec<String> = pass_domains.clone();
    local_domains.extend(server_domains.iter().cloned());

    let prefix = o.qvirtual.as_ref().map(|(q, _)| q.to_ascii_lowercase());
    let q = prefix.as_deref().unwrap_or("");
    let mut map: Vec<(String, String)> = Vec::new();
    let mut add = |p: &mut Parser, key: String, to: String| {
        if !crate::config::Route::usable_recipient(&to.replace("{local}", "x")) {
            p.note(
                names_line,
                format!("is ... {}", super::shorten(&to)),
                "popfetch routes to names of letters, digits and `._+-=@` only; left out of the \
                 route's map",
            );
            return;
        }
        let key = key.to_ascii_lowercase();
        // fetchmail takes the first entry that matches.
        if !map.iter().any(|(k, _)| *k == key) {
            map.push((key, to));
        }
    };
    if server_domains.is_empty()
        && names
            .iter()
            .any(|n| matches!(n, LocalName::Plain(x) | LocalName::Map(x, _) if !x.contains('@')))
    {
        p.note(
            names_line,
            format!("poll {} is (multidrop)", e.name),
            "fetchmail applied local names only to addresses at the server's own names, and \
             each of those is in localdomains, where addresses pass through whole: the route \
             lists no names",
        );
    }
    let mut wildcard = false;
    for n in names {
        match n {
            LocalName::Plain(full) if full.contains('@') => {
                add_domain(&mut local_domains, full);
                add(p, format!("{q}{full}"), rcpt(full));
                whole.push(full.clone());
            }
            LocalName::Map(server, local) if server.contains('@') => {
                add_domain(&mut local_domains, server);
                add(p, format!("{q}{server}"), rcpt(local));
            }
            LocalName::Plain(name) => {
                for d in &server_domains {
                    add(p, format!("{q}{name}@{d}"), rcpt(name));
                }
            }
            LocalName::Map(server, local) => {
                for d in &server_domains {
                    add(p, format!("{q}{server}@{d}"), rcpt(local));
                }
            }
            LocalName::Wildcard => wildcard = true,
        }
    }
    let postmaster = match &p.postmaster {
        Some(pm) => pm.clone(),
        // fetchmail's default: the user running it, `postmaster` for root.
        None => match running_user().as_str() {
            "root" => "postmaster".to_string(),
            u => u.to_string(),
        },
    };
    let passes_through = (wildcard && !server_domains.is_empty()) || !pass_domains.is_empty();
    if let (Some((qv, line)), true) = (&o.qvirtual, passes_through) {
        p.note(
            *line,
            format!("qvirtual {}", super::shorten(qv)),
            format!(
                "popfetch cannot strip a prefix from an address it passes on ({{local}} would keep \
                 it), so the route has no pass-through entries and those addresses go to \"*\" \
                 ({postmaster}): add one \"{qv}NAME@DOMAIN\" = \"NAME\" entry per person under \
                 [account.route.map]"
            ),
        );
    } else {
        if wildcard {
            for d in &server_domains {
                add(p, format!("*@{d}"), rcpt("{local}"));
            }
        }
        for d in &pass_domains {
            add(p, format!("*@{d}"), rcpt(&format!("{{local}}@{d}")));
            whole.push(format!("NAME@{d}"));
        }
    }
    if smtp && !whole.is_empty() {
        p.note(
            names_line,
            format!("poll {} smtphost (multidrop)", e.name),
            format!(
                "fetchmail passed {} whole to the SMTP server; popfetch's relay recipient is \
                 {{recipient}}@localhost, so the local part goes with @localhost",
                whole.join(", ")
            ),
        );
    }
    let any = match postmaster.as_str() {
        "" => {
            p.note(
                0,
                "set postmaster \"\"",
                "fetchmail discarded a multidrop message no local name matched; popfetch \
                 discards nothing and holds it on the server (\"*\" = \"hold\")",
            );
            "hold".to_string()
        }
        pm if crate::config::Route::usable_recipient(pm) => rcpt(pm),
        pm => {
            p.note(
                0,
                format!("set postmaster {}", super::shorten(pm)),
                "not a name popfetch can route to; a multidrop message no local name matches is \
                 held on the server instead (\"*\" = \"hold\")",
            );
            "hold".to_string()
        }
    };
    map.retain(|(k, _)| k != "*");
    map.push(("*".to_string(), any));

    // What fetchmail matched that popfetch's exact domains do not.
    if let Some((l, line)) = &o.localdomains {
        p.note(
            *line,
            format!("localdomains {}", l.join(" ")),
            "fetchmail also took their subdomains; route.local_domains names domains exactly: \
             add each subdomain that receives mail",
        );
    }
    if let Some((l, line)) = &o.aka {
        p.note(
            *line,
            format!("aka {}", l.join(" ")),
            "fetchmail also took names ending in these; route.local_domains names domains \
             exactly: add each one that receives mail",
        );
    }
    if o.dns != Some(false) {
        p.note(
            e.line,
            format!("poll {} dns", e.name),
            "fetchmail also took as the server's own every domain DNS named an alias of it (the \
             `dns` option, on unless `no dns`); popfetch does no DNS lookups: add such domains \
             to route.local_domains",
        );
    }
    a.comments.push(format!(
        "Multidrop in fetchmail: one mailbox for {}. Each message goes to the recipients its \
         envelope header names, as [account.route] maps them; see ROUTING in popfetch.toml(5).",
        match wildcard {
            true => "any local name".to_string(),
            false => format!("{} local name{}", names.len(), super::plural(names.len())),
        }
    ));
    if let Some(i) = index {
        a.comments.push(format!(
            "fetchmail read only the envelope header's {} occurrence from the top, hence \
             envelope_header_index = {i}.",
            ordinal(i)
        ));
    }
    if !pass_domains.is_empty() && !smtp {
        a.comments.push(format!(
            "fetchmail passed an address in {} through whole, without the is list, and so does \
             the route (\"*@DOMAIN\" = \"{{local}}@DOMAIN\").",
            pass_domains.join(", ")
        ));
    }
    if !q.is_empty() && !passes_through {
        a.comments.push(format!(
            "qvirtual: the map's addresses carry the prefix {q:?} fetchmail stripped."
        ));
    }
    a.route = Some(super::Route {
        envelope_header: header,
        envelope_header_index: index,
        local_domains,
        map,
    });
}

/// Adds the domain of `address` to `domains` when missing.
fn add_domain(domains: &mut Vec<String>, address: &str) {
    if let Some((_, d)) = address.rsplit_once('@') {
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        if !d.is_empty() && !domains.contains(&d) {
            domains.push(d);
        }
    }
}

fn ordinal(n: usize) -> String {
    match (n % 10, n % 100) {
        (1, r) if r != 11 => format!("{n}st"),
        (2, r) if r != 12 => format!("{n}nd"),
        (3, r) if r != 13 => format!("{n}rd"),
        _ => format!("{n}th"),
    }
}

fn translate_user(p: &mut Parser, a: &mut Account, o: &Opts, target: Target, e: &Entry) {
    if let Some((port, line)) = &o.port {
        match port.parse::<u16>() {
            Ok(n) if n > 0 => a.port = Some(n),
            _ => match port.to_ascii_lowercase().as_str() {
                "pop3" | "pop-3" => a.port = Some(110),
                "pop3s" => a.port = Some(995),
                _ => p.note(*line, format!("port {port}"), "not a port number; ignored"),
            },
        }
    }
    user_tls(p, a, o);
    a.password = match &o.password {
        Some(pw) => Password::Inline(pw.clone()),
        None => Password::Missing,
    };
    let proto_apop = o
        .proto
        .as_ref()
        .is_some_and(|(p, _)| p.eq_ignore_ascii_case("apop"));
    if proto_apop {
        a.auth = Some("apop");
    }
    if let Some((m, line)) = &o.auth {
        match m.to_ascii_lowercase().as_str() {
            "any" => {}
            "password" => a.auth = Some("user"),
            "cram-md5" => a.auth = Some("cram-md5"),
            "apop" => a.auth = Some("apop"),
            "external" => {
                if let Err(why) = super::auth_external(a) {
                    p.note(*line, "auth external", why);
                }
            }
            other => p.note(
                *line,
                format!("auth {other}"),
                "popfetch logs in with USER/PASS, APOP, PLAIN, LOGIN, CRAM-MD5 or EXTERNAL; left \
                 at \"auto\"",
            ),
        }
    }
    if a.tls == Tls::None && !matches!(a.auth, Some("apop" | "cram-md5")) {
        a.allow_plaintext_auth = true;
    }
    a.keep = o.keep.unwrap_or(false);
    if let Some((true, line)) = o.fetchall
        && a.keep
    {
        p.note(
            line,
            format!("poll {} fetchall", e.name),
            "with keep, fetchall fetched every message at every poll; popfetch fetches each \
             message once",
        );
    }
    a.max_size = o.limit.filter(|&l| l > 0);
    a.max_size_delete = o.limitflush == Some(true);
    a.max_messages_per_poll = o.fetchlimit.filter(|&l| l > 0);
    a.timeout_secs = o.timeout.filter(|&t| t > 0);
    if let Some((n, line)) = o.interval {
        match p.daemon {
            Some(d) if d > 0 && n > 0 => a.interval_secs = Some(d.saturating_mul(n)),
            _ => p.note(
                line,
                format!("interval {n}"),
                "counts `set daemon` cycles, and there is none",
            ),
        }
    }
    if p.invisible {
        a.received_header = Some(false);
    }
    if let Some((what, line)) = &o.odd_delivery {
        p.note(
            *line,
            what.clone(),
            "popfetch delivers to a Maildir, an mbox, an MDA or an SMTP relay; this account \
             goes to the SMTP server on localhost instead: change `deliver`",
        );
    }
    let deliver = user_deliver(p, a, o, target);
    a.deliver = deliver;
}

/// The TLS settings of a `user` entry.
fn user_tls(p: &mut Parser, a: &mut Account, o: &Opts) {
    let sslproto = o
        .sslproto
        .as_ref()
        .map(|(s, l)| (s.to_ascii_lowercase(), *l));
    if o.ssl == Some(true) {
        a.tls = Tls::Implicit;
    } else if sslproto.as_ref().is_some_and(|(s, _)| s.is_empty()) {
        a.tls = Tls::None;
        a.comments.push(
            "sslproto '' turned TLS off in fetchmail, and so does tls = \"none\"; the password \
             crosses the network in clear text, as it did"
                .into(),
        );
    } else {
        a.tls = Tls::Starttls;
        if sslproto.is_none() {
            a.comments.push(
                "fetchmail used STLS when the server offered it; popfetch insists on it".into(),
            );
        }
    }
    match sslproto.as_ref().map(|(s, l)| (s.as_str(), *l)) {
        // fetchmail's `TLS1.3+` (and a bare `TLS1.3`) is popfetch's floor of 1.3.
        Some(("tls1.3+" | "tls1.3", _)) => a.tls_min_version = Some("1.3"),
        Some(("tls1.2+" | "tls1.2", _)) => {}
        Some((s, line)) if !s.is_empty() && s != "auto" => p.note(
            line,
            format!("sslproto {s}"),
            "popfetch accepts TLS 1.2 or newer (tls_min_version raises the floor to 1.3); \
             older versions are never used",
        ),
        _ => {}
    }
    if o.sslcertck == Some(false) {
        a.tls_verify = Some(false);
        a.comments
            .push("no sslcertck: certificates are not checked, as in the rc file".into());
    }
    a.ca_file = o.sslcertfile.clone();
    a.tls_client = (o.sslcert.clone(), o.sslkey.clone());
}

/// Where a `user` entry delivers: its mda, or the SMTP server fetchmail forwarded to.
fn user_deliver(p: &mut Parser, a: &mut Account, o: &Opts, target: Target) -> Deliver {
    if let Some((cmd, line)) = &o.mda {
        let to = match target {
            Target::One(local) => Placeholder::Constant(local.to_string()),
            Target::Routed => Placeholder::Popfetch("{recipient}"),
        };
        let c = translate_command(cmd, &[("%F", Placeholder::Popfetch("{from}")), ("%T", to)]);
        if let Some(why) = &c.shell_reason {
            // The positional parameters after the script, in order.
            let params: Vec<String> = c
                .argv
                .iter()
                .skip(4)
                .enumerate()
                .map(|(i, v)| match v.as_str() {
                    "{from}" => format!("\"${}\" is the envelope sender (fetchmail's %F)", i + 1),
                    _ => format!("\"${}\" is the recipient (fetchmail's %T)", i + 1),
                })
                .collect();
            let params = match params.is_empty() {
                true => String::new(),
                false => format!(" {}.", params.join(", ")),
            };
            a.comments.push(format!(
                "The mda command runs through /bin/sh -c as it did in fetchmail: {why}.{params}"
            ));
        }
        if matches!(target, Target::Routed) && !cmd.contains("%T") {
            p.note(
                *line,
                format!("mda {}", super::shorten(cmd)),
                "names no recipient (%T): with a route, popfetch runs the MDA once per recipient \
                 and needs {recipient} among its arguments to say whose copy it is",
            );
            a.inactive = Some("its mda names no recipient: add \"{recipient}\"".into());
        }
        Deliver::Mda(c.argv)
    } else {
        let (host, port) = match &o.smtphost {
            Some((hosts, line)) if !hosts.is_empty() => {
                if hosts.len() > 1 {
                    p.note(
                        *line,
                        format!("smtphost {}", hosts.join(",")),
                        "popfetch uses one relay: the first is taken",
                    );
                }
                let h = &hosts[0];
                if h.starts_with('/') {
                    p.note(
                        *line,
                        format!("smtphost {h}"),
                        "LMTP over a socket is not supported; localhost is taken instead",
                    );
                    ("localhost".to_string(), None)
                } else {
                    match h.rsplit_once('/') {
                        Some((host, port)) => (host.to_string(), port.parse::<u16>().ok()),
                        None => (h.clone(), None),
                    }
                }
            }
            _ => ("localhost".to_string(), None),
        };
        let to = match (target, &o.smtpname) {
            (Target::Routed, smtpname) => {
                if let Some(n) = smtpname {
                    p.note(
                        0,
                        format!("smtpname {}", super::shorten(n)),
                        "fetchmail sent every copy to this one address; the route gives each \
                         recipient its own (deliver.smtp.to = [\"{recipient}@localhost\"])",
                    );
                }
                "{recipient}@localhost".to_string()
            }
            (Target::One(_), Some(n)) if n.contains('@') => n.clone(),
            (Target::One(_), Some(n)) => format!("{n}@localhost"),
            (Target::One(local), None) => format!("{local}@localhost"),
        };
        Deliver::Smtp {
            host,
            port,
            to: vec![to],
        }
    }
}

/// Reads `.fetchids` text and gives each account its UIDLs. Returns the count of lines
/// that belong to no translated account.
pub fn read_ids(text: &[u8], source: &Path, accounts: &[(String, String)]) -> (Vec<Uidls>, usize) {
    let mut out: Vec<Uidls> = accounts
        .iter()
        .map(|_| Uidls::new(source.to_path_buf()))
        .collect();
    let mut seen: Vec<HashSet<crate::pop3::Uidl>> =
        accounts.iter().map(|_| HashSet::new()).collect();
    let mut other = 0;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = raw
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .map_or(&raw[raw.len()..], |s| &raw[s..]);
        if line.is_empty() {
            continue;
        }
        let Some(at) = line.iter().position(|&b| b == b'@') else {
            other += 1;
            continue;
        };
        let Some(sp) = line[at..].iter().position(|&b| b == b' ').map(|p| p + at) else {
            other += 1;
            continue;
        };
        let userhost = &line[..sp];
        let rest = &line[sp..];
        let id_start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        let rest = &rest[id_start..];
        let id_end = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | b'\r'))
            .unwrap_or(rest.len());
        let id = &rest[..id_end];
        let last_at = userhost.iter().rposition(|&b| b == b'@').unwrap_or(at);
        let user = String::from_utf8_lossy(&userhost[..last_at]);
        let host = String::from_utf8_lossy(&userhost[last_at + 1..]);
        match accounts
            .iter()
            .position(|(u, h)| u.eq_ignore_ascii_case(&user) && h.eq_ignore_ascii_case(&host))
        {
            Some(k) => out[k].push(i + 1, id, &mut seen[k]),
            None => other += 1,
        }
    }
    (out, other)
}

/// The fetchmail home: `$FETCHMAILHOME`, else `$HOME`, and whether it was the former.
fn fetchmail_home() -> Result<(PathBuf, bool), ImportError> {
    if let Some(h) = std::env::var_os("FETCHMAILHOME").filter(|h| !h.is_empty()) {
        return Ok((PathBuf::from(h), true));
    }
    Ok((super::home()?, false))
}

/// Refuses to import while a fetchmail daemon runs: it would change `.fetchids` after the
/// import, and both would fetch.
fn check_not_running(pidfile: &Path) -> Result<(), ImportError> {
    let Ok(text) = std::fs::read_to_string(pidfile) else {
        return Ok(());
    };
    let Some(pid) = text
        .split_whitespace()
        .next()
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return Ok(());
    };
    if pid > 0 && Path::new(&format!("/proc/{pid}")).exists() {
        return Err(ImportError::Busy(format!(
            "fetchmail is running (pid {pid}, from {}); stop it first with `fetchmail --quit`, \
             so that it neither changes {} after the import nor fetches alongside popfetch",
            pidfile.display(),
            ".fetchids"
        )));
    }
    Ok(())
}

/// `popfetch import fetchmail`.
pub fn import(rcfile: Option<&Path>, ids: Option<&Path>) -> Result<Imported, ImportError> {
    let (fhome, env_home) = fetchmail_home()?;
    let rc = match rcfile {
        Some(p) => p.to_path_buf(),
        None if env_home => fhome.join("fetchmailrc"),
        None => fhome.join(".fetchmailrc"),
    };
    let text = super::read_file(&rc)?;
    let text = String::from_utf8_lossy(&text);
    let file = rc.display().to_string();
    let (accounts, mut imported, idfile) = parse(&text, &file);
    check_not_running(&fhome.join(".fetchmail.pid"))?;
    let ids_path = match (ids, idfile) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(f)) => expand_tilde(&f)?,
        (None, None) => fhome.join(".fetchids"),
    };
    let explicit = ids.is_some();
    let keys: Vec<(String, String)> = accounts
        .iter()
        .map(|a| (a.user.clone(), a.host.clone()))
        .collect();
    imported.accounts = accounts;
    match super::read_optional(&ids_path)? {
        Some(bytes) => {
            let (uidls, other) = read_ids(&bytes, &ids_path, &keys);
            if other > 0 {
                imported.messages.push(format!(
                    "{}: {other} line{} for accounts not translated here, ignored",
                    ids_path.display(),
                    super::plural(other)
                ));
            }
            imported.state = uidls.into_iter().map(Some).collect();
        }
        None if explicit => {
            return Err(ImportError::Read {
                path: ids_path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        None => {
            imported.messages.push(format!(
                "no {} (fetchmail keeps it only while it has kept messages): no state \
                 imported; in keep mode the first fetch takes every message on the server as new",
                ids_path.display()
            ));
            imported.state = imported.accounts.iter().map(|_| None).collect();
        }
    }
    Ok(imported)
}

fn expand_tilde(p: &str) -> Result<PathBuf, ImportError> {
    match p.strip_prefix("~/") {
        Some(rest) => Ok(super::home()?.join(rest)),
        None => Ok(PathBuf::from(p)),
    }
}
