//! `~/.mpoprc` → popfetch accounts, and mpop's UIDLs files → their UIDLs.
//!
//! The rc file has one command per line, `COMMAND [ARGUMENT]`, the argument optionally in
//! double quotes (mpop 1.4 strips them and reads no escapes inside); `#` lines are comments. `defaults` starts settings
//! inherited by every later account; `account NAME [: A, B]` starts an account that also
//! inherits the settings of the accounts A and B.
//!
//! mpop 1.4 keeps UIDLs in `uidls_file` (default `~/.mpop_uidls/%U_at_%H`), rewritten by
//! rename and locked (fcntl) while mpop uses it. It opens with `#` comment lines (the first
//! says which mpop version wrote it), then one list per account: a line ` N HOST USER` (with a
//! leading blank), then N lines of one UID each, sorted. The list holds the messages that were
//! retrieved (or removed by a filter) and are still on the server.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    Account, Deliver, ImportError, Imported, Password, Placeholder, Tls, Tool, Uidls,
    translate_command,
};

/// Bound on the lines of an rc file.
const MAX_LINES: usize = 100_000;

/// One setting: value and line.
type Setting = (String, String, usize);

/// Splits a line into command and argument; `None` for blank and comment lines.
pub fn split_line(raw: &str) -> Option<(String, String)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (cmd, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    // mpop strips one pair of enclosing quotes and reads nothing inside them as an escape.
    let arg = match rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.to_string(),
        None => rest.to_string(),
    };
    Some((cmd.to_ascii_lowercase(), arg))
}

fn set(settings: &mut Vec<Setting>, key: &str, value: String, line: usize) {
    // The password sources replace each other: the one set last counts.
    let same = |k: &str| {
        k == key
            || (matches!(k, "password" | "passwordeval")
                && matches!(key, "password" | "passwordeval"))
    };
    settings.retain(|(k, _, _)| !same(k));
    settings.push((key.to_string(), value, line));
}

fn on(v: &str) -> Option<bool> {
    match v.trim() {
        "" | "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// Parses mpop rc text into `(name, line, settings)` per account.
pub fn parse(text: &str, file: &str, out: &mut Imported) -> Vec<(String, usize, Vec<Setting>)> {
    let mut defaults: Vec<Setting> = Vec::new();
    let mut accounts: Vec<(String, usize, Vec<Setting>)> = Vec::new();
    let mut in_defaults = false;
    for (i, raw) in text.lines().take(MAX_LINES).enumerate() {
        let line = i + 1;
        let Some((cmd, arg)) = split_line(raw) else {
            continue;
        };
        match cmd.as_str() {
            "defaults" => in_defaults = true,
            "account" => {
                in_defaults = false;
                let (name, parents) = match arg.split_once(':') {
                    Some((n, p)) => (n.trim().to_string(), Some(p)),
                    None => (arg.trim().to_string(), None),
                };
                let mut settings = defaults.clone();
                for p in parents
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    match accounts.iter().find(|(n, _, _)| n == p) {
                        Some((_, _, ps)) => {
                            for (k, v, l) in ps.clone() {
                                set(&mut settings, &k, v, l);
                            }
                        }
                        None => out.note(
                            file,
                            line,
                            format!("account {name} : {p}"),
                            "no account of that name is defined before; nothing inherited",
                        ),
                    }
                }
                if name.is_empty() {
                    out.note(file, line, "account", "has no name; ignored");
                }
                accounts.push((name, line, settings));
            }
            _ if in_defaults => set(&mut defaults, &cmd, arg, line),
            _ => match accounts.last_mut() {
                Some((_, _, s)) => set(s, &cmd, arg, line),
                None => out.note(
                    file,
                    line,
                    super::shorten(&cmd),
                    "outside `defaults` and any account; ignored",
                ),
            },
        }
    }
    accounts.retain(|(n, _, _)| !n.is_empty());
    accounts
}

/// Translates one account; also returns its UIDLs file (before `~`, `%U`, `%H` expansion).
pub fn translate(
    name: &str,
    line: usize,
    settings: &[Setting],
    file: &str,
    out: &mut Imported,
) -> Option<(Account, String)> {
    let get = |k: &str| settings.iter().find(|(key, _, _)| key == k);
    let Some((_, host, _)) = get("host") else {
        out.note(
            file,
            line,
            format!("account {name}"),
            "has no host; not translated",
        );
        return None;
    };
    let user = match get("user") {
        Some((_, u, _)) if !u.is_empty() => u.clone(),
        _ => {
            out.note(
                file,
                line,
                format!("account {name}"),
                "has no user; not translated (popfetch needs the login name)",
            );
            return None;
        }
    };
    let mut a = Account::new(
        format!("{file} line {line}: account {name}"),
        host.clone(),
        user,
    );
    a.name = name.to_string();
    let tls = get("tls").and_then(|(_, v, _)| on(v)).unwrap_or(false);
    let starttls = get("tls_starttls")
        .and_then(|(_, v, _)| on(v))
        .unwrap_or(true);
    a.tls = match (tls, starttls) {
        (false, _) => Tls::None,
        (true, true) => Tls::Starttls,
        (true, false) => Tls::Implicit,
    };
    let mut seen = Seen {
        uidls_file: "~/.mpop_uidls/%U_at_%H".to_string(),
        skipsize: None,
        killsize: None,
        explicit_plain: false,
    };
    for (k, v, l) in settings {
        setting(k, v, *l, file, out, &mut a, &mut seen);
    }
    if let Some((_, _, l)) = settings.iter().rev().find(|(k, _, _)| *k == "auth")
        && a.auth == Some("external")
    {
        // Settled once every setting is known: the certificate may come after `auth`.
        a.auth = None;
        if let Err(why) = super::auth_external(&mut a) {
            out.note(file, *l, "auth external", why);
        }
    }
    sizes(&seen, file, out, &mut a);
    let uidls_file = seen.uidls_file;
    let explicit_plain = seen.explicit_plain;
    if a.tls == Tls::None {
        if explicit_plain {
            a.allow_plaintext_auth = true;
        }
        a.comments
            .push("tls off in mpop: the connection is not encrypted, as before".into());
    }
    a.deliver = match get("delivery") {
        Some((_, d, l)) => delivery(d, *l, file, out, &mut a),
        None => {
            out.note(
                file,
                line,
                format!("account {name}"),
                "has no delivery; it delivers to ~/Maildir: change `deliver`",
            );
            Deliver::Maildir("~/Maildir".into())
        }
    };
    Some((a, uidls_file))
}

/// What the settings of one account say beyond the fields they set directly.
struct Seen {
    /// The UIDLs file, before `~`, `%U`, `%H` expansion.
    uidls_file: String,
    skipsize: Option<u64>,
    /// killsize, with its line.
    killsize: Option<(u64, usize)>,
    /// A clear-text login method was asked for by name.
    explicit_plain: bool,
}

/// Applies one setting `k v` (at line `l`) to `a`, or notes why it is not carried over: here
/// the connection, login and TLS, the rest in [`policy_setting`].
/// mpop settings popfetch has nothing for: noted when set, ignored.
const NO_EQUIVALENT: &[&str] = &[
    "tls_crl_file",
    "tls_priorities",
    "tls_host_override",
    "tls_min_dh_prime_bits",
    "ntlmdomain",
    "proxy_host",
    "proxy_port",
    "socket",
    "source_ip",
];

fn setting(
    k: &str,
    v: &str,
    l: usize,
    file: &str,
    out: &mut Imported,
    a: &mut Account,
    seen: &mut Seen,
) {
    let bad = |out: &mut Imported| {
        out.note(
            file,
            l,
            format!("{k} {}", super::shorten(v)),
            "not a value mpop accepts; ignored",
        )
    };
    match k {
        "host" | "user" | "tls" | "tls_starttls" => {}
        "port" => match v.parse::<u16>() {
            Ok(p) if p > 0 => a.port = Some(p),
            _ => bad(out),
        },
        "timeout" => match v {
            "off" => {}
            n => match n.parse::<u64>() {
                Ok(t) if t > 0 => a.timeout_secs = Some(t),
                _ => bad(out),
            },
        },
        "pipelining" => {}
        "auth" => auth(v, l, file, out, a, seen),
        "password" => a.password = Password::Inline(v.to_string()),
        "passwordeval" => {
            let c = translate_command(v, &[]);
            if c.shell_reason.is_some() {
                a.comments.push(
                    "passwordeval ran through the shell, and so does this password_command".into(),
                );
            }
            a.password = Password::Command(c.argv);
        }
        "tls_trust_file" => match v {
            "system" => {}
            "" => out.note(
                file,
                l,
                "tls_trust_file \"\"",
                "trusting no CA (only a fingerprint) is not supported; the system's CAs are \
                 used",
            ),
            f => a.ca_file = Some(f.to_string()),
        },
        "tls_certcheck" => {
            if on(v) == Some(false) {
                a.tls_verify = Some(false);
                a.comments.push(
                    "tls_certcheck off: certificates are not checked, as in the rc file".into(),
                );
            }
        }
        "tls_cert_file" if !v.is_empty() => a.tls_client.0 = Some(v.to_string()),
        "tls_key_file" if !v.is_empty() => a.tls_client.1 = Some(v.to_string()),
        "tls_fingerprint" => {
            // mpop's is the certificate's, in hex with colons: SHA-256 (32 bytes) carries
            // over as it is; SHA-1 and MD5 cannot, popfetch pins by SHA-256 only.
            let pin = format!("sha256:{v}");
            let digits = v.chars().filter(|c| *c != ':').count();
            if digits == 64 && pin.parse::<crate::net::Fingerprint>().is_ok() {
                a.tls_fingerprint
                    .push(pin.to_ascii_uppercase().replacen("SHA256", "sha256", 1));
                return;
            }
            if !v.is_empty() {
                out.note(
                    file,
                    l,
                    "tls_fingerprint",
                    "not a SHA-256 fingerprint (SHA-1 and MD5 are not taken): run `popfetch \
                     check --connect` and set tls_fingerprint to the sha256: it prints",
                );
            }
        }
        k if NO_EQUIVALENT.contains(&k) => {
            if !v.is_empty() {
                out.note(
                    file,
                    l,
                    format!("{k} {}", super::shorten(v)),
                    "popfetch has no equivalent; ignored",
                );
            }
        }
        _ => policy_setting(k, v, l, file, out, a, seen),
    }
}

/// The `auth` setting: the login method.
fn auth(v: &str, l: usize, file: &str, out: &mut Imported, a: &mut Account, seen: &mut Seen) {
    match v {
        "" | "on" => {}
        "user" | "plain" | "login" => {
            a.auth = Some(match v {
                "user" => "user",
                "plain" => "plain",
                _ => "login",
            });
            seen.explicit_plain = true;
        }
        "apop" => a.auth = Some("apop"),
        "cram-md5" => a.auth = Some("cram-md5"),
        // Checked against the certificate and TLS once the account is read.
        "external" => a.auth = Some("external"),
        "off" => out.note(file, l, "auth off", "popfetch always logs in"),
        other => out.note(
            file,
            l,
            format!("auth {other}"),
            "popfetch logs in with USER/PASS, APOP, PLAIN, LOGIN, CRAM-MD5 or EXTERNAL; left \
             at \"auto\"",
        ),
    }
}

/// [`setting`] for what to fetch, keep and delete, and where to deliver.
fn policy_setting(
    k: &str,
    v: &str,
    l: usize,
    file: &str,
    out: &mut Imported,
    a: &mut Account,
    seen: &mut Seen,
) {
    let bad = |out: &mut Imported| {
        out.note(
            file,
            l,
            format!("{k} {}", super::shorten(v)),
            "not a value mpop accepts; ignored",
        )
    };
    match k {
        "keep" => match on(v) {
            Some(b) => a.keep = b,
            None => bad(out),
        },
        "only_new" => {
            if on(v) == Some(false) {
                out.note(
                    file,
                    l,
                    "only_new off",
                    "mpop processed every message at every run; popfetch fetches each \
                     message once",
                );
            }
        }
        "killsize" => {
            if v != "off" {
                match super::parse_size(v) {
                    Some(0) => out.note(
                        file,
                        l,
                        "killsize 0",
                        "deletes every message unread; not carried over",
                    ),
                    Some(n) => seen.killsize = Some((n, l)),
                    None => bad(out),
                }
            }
        }
        "skipsize" => {
            if v != "off" {
                match super::parse_size(v) {
                    Some(0) => {}
                    Some(n) => seen.skipsize = Some(n),
                    None => bad(out),
                }
            }
        }
        "filter" if !v.is_empty() => out.note(
            file,
            l,
            format!("filter {}", super::shorten(v)),
            "popfetch runs no filters; an MDA such as procmail or maildrop can",
        ),
        "filter" => {}
        "received_header" => a.received_header = on(v),
        "uidls_file" => seen.uidls_file = v.to_string(),
        "delivery" => {}
        "eval" => out.note(
            file,
            l,
            "eval",
            "commands that print configuration are not run by the import",
        ),
        _ => out.note(
            file,
            l,
            super::shorten(k),
            "not an mpop command popfetch knows; ignored",
        ),
    }
}

/// killsize deletes larger messages unread (only skips them with keep), skipsize skips
/// them; popfetch has one threshold and one action.
fn sizes(seen: &Seen, file: &str, out: &mut Imported, a: &mut Account) {
    let (skipsize, killsize) = (seen.skipsize, seen.killsize);
    a.max_size = skipsize;
    if let Some((k, l)) = killsize {
        match skipsize {
            _ if a.keep => a.max_size = Some(skipsize.map_or(k, |s| s.min(k))),
            Some(s) if s < k => out.note(
                file,
                l,
                format!("killsize {k}"),
                "popfetch has one size limit: messages over skipsize stay on the server, none \
                 is deleted unread",
            ),
            _ => {
                a.max_size = Some(k);
                a.max_size_delete = true;
            }
        }
    }
}

fn delivery(d: &str, line: usize, file: &str, out: &mut Imported, a: &mut Account) -> Deliver {
    let (method, arg) = match d.split_once(char::is_whitespace) {
        Some((m, r)) => (m, r.trim()),
        None => (d, ""),
    };
    let arg = arg
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(arg);
    match method {
        "maildir" => Deliver::Maildir(arg.trim_end_matches('/').to_string()),
        "mbox" => Deliver::Mbox(arg.to_string()),
        "mda" => {
            let c = translate_command(
                arg,
                &[
                    ("%F", Placeholder::Popfetch("{from}")),
                    ("%S", Placeholder::Unknown),
                ],
            );
            for p in &c.unknown_placeholders {
                out.note(
                    file,
                    line,
                    format!("delivery mda {p}"),
                    "popfetch has no placeholder for it; passed on unchanged",
                );
            }
            if let Some(why) = &c.shell_reason {
                a.comments.push(format!(
                    "The mda command runs through /bin/sh -c as it did in mpop ({why}); \"$1\" \
                     is the envelope sender (mpop's %F)."
                ));
            }
            Deliver::Mda(c.argv)
        }
        other => {
            out.note(
                file,
                line,
                format!("delivery {other}"),
                "popfetch delivers to a Maildir, an mbox, an MDA or an SMTP relay; the account \
                 delivers to ~/Maildir: change `deliver`",
            );
            Deliver::Maildir("~/Maildir".into())
        }
    }
}

/// Reads an mpop UIDLs file: the list of `user` at `host`. Returns `None` when the file
/// has no list for them.
pub fn read_uidls(text: &[u8], source: &Path, host: &str, user: &str) -> Option<Uidls> {
    let mut out = Uidls::new(source.to_path_buf());
    let mut seen = HashSet::new();
    let mut found = false;
    let mut comments = true;
    let mut current: Option<(bool, u64)> = None;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        if raw.is_empty() && current.is_none() {
            continue;
        }
        if comments && raw.first() == Some(&b'#') {
            continue;
        }
        comments = false;
        match current {
            None => {
                // ` N HOST USER`
                let Some(head) = raw.strip_prefix(b" ") else {
                    out.invalid
                        .push((lineno, "a unique-id outside any account's list".into()));
                    continue;
                };
                let head = String::from_utf8_lossy(head);
                let mut f = head.splitn(3, ' ');
                let n = f.next().and_then(|n| n.parse::<u64>().ok());
                let (h, u) = (f.next(), f.next());
                match (n, h, u) {
                    (Some(n), Some(h), Some(u)) if n > 0 => {
                        let mine = h == host && u == user;
                        found |= mine;
                        current = Some((mine, n));
                    }
                    _ => out.invalid.push((lineno, "a bad list header".into())),
                }
            }
            Some((mine, left)) => {
                if mine {
                    out.push(lineno, raw, &mut seen);
                }
                current = (left > 1).then_some((mine, left - 1));
            }
        }
    }
    found.then_some(out)
}

/// Expands `~`, `%U` and `%H` in a UIDLs file name, as mpop does.
pub fn uidls_path(template: &str, host: &str, user: &str) -> Result<PathBuf, ImportError> {
    let s = template.replace("%U", user).replace("%H", host);
    match s.strip_prefix('~') {
        Some(rest) => Ok(super::home()?.join(rest.trim_start_matches('/'))),
        None => Ok(PathBuf::from(s)),
    }
}

/// Refuses to read a UIDLs file that mpop has locked: it is fetching right now.
fn check_unlocked(path: &Path) -> Result<(), ImportError> {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else {
        return Ok(());
    };
    // SAFETY: a plain fcntl(F_GETLK) on an open file descriptor with a zeroed flock struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short {
        return Err(ImportError::Busy(format!(
            "{} is locked by process {}: mpop is fetching; try again when it has finished",
            path.display(),
            fl.l_pid
        )));
    }
    Ok(())
}

/// `popfetch import mpop`.
pub fn import(rcfile: Option<&Path>) -> Result<Imported, ImportError> {
    let rc = match rcfile {
        Some(p) => p.to_path_buf(),
        None => {
            let home = super::home()?;
            let classic = home.join(".mpoprc");
            if classic.exists() {
                classic
            } else {
                std::env::var_os("XDG_CONFIG_HOME")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| home.join(".config"))
                    .join("mpop/config")
            }
        }
    };
    let text = super::read_file(&rc)?;
    let text = String::from_utf8_lossy(&text);
    let file = rc.display().to_string();
    let mut out = Imported {
        tool: Some(Tool::Mpop),
        sources: vec![file.clone()],
        ..Imported::default()
    };
    let parsed = parse(&text, &file, &mut out);
    for (name, line, settings) in &parsed {
        let Some((account, template)) = translate(name, *line, settings, &file, &mut out) else {
            continue;
        };
        let path = uidls_path(&template, &account.host, &account.user)?;
        check_unlocked(&path)?;
        let state = match super::read_optional(&path)? {
            Some(bytes) => {
                let u = read_uidls(&bytes, &path, &account.host, &account.user);
                if u.is_none() {
                    out.messages.push(format!(
                        "account {name}: {} has no list for {} at {}: no state imported",
                        path.display(),
                        account.user,
                        account.host
                    ));
                }
                u
            }
            None => {
                out.messages.push(format!(
                    "account {name}: no {}: no state imported; in keep mode the first fetch \
                     takes every message on the server as new",
                    path.display()
                ));
                None
            }
        };
        out.accounts.push(account);
        out.state.push(state);
    }
    Ok(out)
}
