//! `popfetch import`: turns the configuration of fetchmail, getmail6 or mpop into a popfetch
//! config (TOML, for stdout) and their records of the messages already fetched into popfetch's
//! UIDL state, so that switching fetches no old mail again.
//!
//! Each tool has its own parser ([`fetchmail`], [`getmail`], [`mpop`]) that reads the rc file
//! into the tool-neutral [`Imported`]: accounts in popfetch's terms, and [`Note`]s for whatever
//! popfetch cannot express, each with its file, line and reason. The parsers never fail on
//! content: odd input becomes a note. They read at most [`MAX_FILE`] bytes of any file.
//!
//! The state files of the three tools all list the messages that were delivered (or dropped by
//! a filter) and are still on the server, one unique-id each; messages skipped for their size
//! are not in them. So every UIDL found is recorded as delivered (`D`) in the account's
//! journal: with `keep = true` popfetch then leaves those messages alone, with `keep = false` it
//! deletes them from the server without fetching them again, as the old tool would have with
//! `flush` or `delete`.

pub mod fetchmail;
pub mod getmail;
pub mod mpop;
mod toml_out;

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::pop3::Uidl;
pub use crate::shell::{Command, Placeholder, sh_quote, shell_words, translate_command};
use crate::state::{AccountState, StateError};

/// The most bytes read from any rc or state file: far above real ones, low enough that a wrong
/// path (a disk image, /dev/zero) cannot exhaust memory.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;

/// Invalid UIDLs named one by one on stderr; the rest are only counted.
const INVALID_SHOWN: usize = 3;

/// Which tool a configuration comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Fetchmail,
    Getmail,
    Mpop,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Fetchmail => "fetchmail",
            Tool::Getmail => "getmail6",
            Tool::Mpop => "mpop",
        }
    }

    /// The `popfetch import` subcommand for it.
    pub fn command(self) -> &'static str {
        match self {
            Tool::Fetchmail => "fetchmail",
            Tool::Getmail => "getmail",
            Tool::Mpop => "mpop",
        }
    }
}

/// Something in the rc file popfetch cannot express, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The file, as the user named it.
    pub file: String,
    /// 1-based; 0 when the note is about the file as a whole.
    pub line: usize,
    pub what: String,
    pub why: String,
}

impl Note {
    pub fn render(&self) -> String {
        let place = if self.line == 0 {
            self.file.clone()
        } else {
            format!("{}:{}", self.file, self.line)
        };
        format!("{place}: {}: {}", self.what, self.why)
    }
}

/// How the connection is protected, in popfetch's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Implicit,
    Starttls,
    None,
}

impl Tls {
    fn as_str(self) -> &'static str {
        match self {
            Tls::Implicit => "implicit",
            Tls::Starttls => "starttls",
            Tls::None => "none",
        }
    }
}

/// Where the password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// Written in the rc file in clear; carried over as it is.
    Inline(String),
    Command(Vec<String>),
    /// The rc file has none (the tool asked for it, or read ~/.netrc).
    Missing,
    /// None is needed: the client certificate alone logs in (`auth = "external"`).
    Certificate,
}

/// `auth external` of an rc file: SASL EXTERNAL with the client certificate alone, so no
/// password is carried over. Without a certificate or without TLS it cannot log in, and the
/// account keeps `auto` and its password; the `Err` says why, for a note.
pub fn auth_external(a: &mut Account) -> Result<(), &'static str> {
    if a.tls_client.0.is_none() {
        return Err(
            "EXTERNAL logs in with a client certificate and the rc file names none; \
                    left at \"auto\"",
        );
    }
    if a.tls == Tls::None {
        return Err("EXTERNAL needs TLS, which the rc file does not use; left at \"auto\"");
    }
    a.auth = Some("external");
    a.password = Password::Certificate;
    Ok(())
}

/// Where messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deliver {
    Maildir(String),
    Mbox(String),
    Mda(Vec<String>),
    Smtp {
        host: String,
        port: Option<u16>,
        to: Vec<String>,
    },
}

/// `[account.route]` of a shared mailbox, in popfetch's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None`: the old tool's setting has no popfetch equivalent; the account is then written
    /// inactive, with an empty header for the user to fill in.
    pub envelope_header: Option<String>,
    pub envelope_header_index: Option<usize>,
    pub local_domains: Vec<String>,
    /// Address pattern to recipient (or `"hold"`), in the order the rc file gave them.
    pub map: Vec<(String, String)>,
}

/// One account in popfetch's terms, before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// Where it was defined, for the comment above it (`file:line` and a short label).
    pub origin: String,
    pub host: String,
    pub port: Option<u16>,
    pub tls: Tls,
    pub ca_file: Option<String>,
    pub tls_verify: Option<bool>,
    /// `tls_fingerprint`, in popfetch's syntax.
    pub tls_fingerprint: Vec<String>,
    /// `tls_client_cert` and `tls_client_key`.
    pub tls_client: (Option<String>, Option<String>),
    /// `tls_min_version`, when the rc file asked for more than 1.2.
    pub tls_min_version: Option<&'static str>,
    pub user: String,
    pub password: Password,
    pub auth: Option<&'static str>,
    pub allow_plaintext_auth: bool,
    pub keep: bool,
    pub received_header: Option<bool>,
    pub timeout_secs: Option<u64>,
    pub deliver: Deliver,
    pub max_size: Option<u64>,
    /// `max_size_action = "delete"`: messages over `max_size` are deleted unread.
    pub max_size_delete: bool,
    pub delete_after_days: Option<u64>,
    pub max_messages_per_poll: Option<u64>,
    pub max_bytes_per_poll: Option<u64>,
    pub interval_secs: Option<u64>,
    /// Comments written above the keys (why a value is what it is).
    pub comments: Vec<String>,
    /// `[account.route]`, for a mailbox shared by several recipients.
    pub route: Option<Route>,
    /// Written commented out, for this reason: it needs an edit before popfetch can run it.
    pub inactive: Option<String>,
}

impl Account {
    /// An account with popfetch's defaults, to be filled in by a parser.
    pub fn new(origin: String, host: String, user: String) -> Account {
        Account {
            name: String::new(),
            origin,
            host,
            port: None,
            tls: Tls::Implicit,
            ca_file: None,
            tls_verify: None,
            tls_fingerprint: Vec::new(),
            tls_client: (None, None),
            tls_min_version: None,
            user,
            password: Password::Missing,
            auth: None,
            allow_plaintext_auth: false,
            keep: false,
            received_header: None,
            timeout_secs: None,
            deliver: Deliver::Smtp {
                host: "localhost".into(),
                port: None,
                to: Vec::new(),
            },
            max_size: None,
            max_size_delete: false,
            delete_after_days: None,
            max_messages_per_poll: None,
            max_bytes_per_poll: None,
            interval_secs: None,
            comments: Vec::new(),
            route: None,
            inactive: None,
        }
    }
}

/// The UIDLs found for one account in the old tool's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uidls {
    /// The state file they came from.
    pub source: PathBuf,
    /// Valid, without duplicates, in the file's order.
    pub valid: Vec<Uidl>,
    /// When the tool first recorded each (Unix seconds), where its state says (getmail).
    pub first_seen: std::collections::HashMap<Uidl, u64>,
    /// Entries that are no RFC 1939 unique-id (line, why); they cannot be recorded.
    pub invalid: Vec<(usize, String)>,
    /// Remarks about this state (e.g. what the tool may have changed in the unique-ids).
    pub remarks: Vec<String>,
}

impl Uidls {
    pub fn new(source: PathBuf) -> Uidls {
        Uidls {
            source,
            ..Uidls::default()
        }
    }

    /// Adds one entry from line `line`, validated; duplicates are counted once.
    pub fn push(&mut self, line: usize, raw: &[u8], seen: &mut HashSet<Uidl>) {
        match Uidl::parse(raw) {
            Ok(u) => {
                if seen.insert(u.clone()) {
                    self.valid.push(u);
                }
            }
            Err(e) => self.invalid.push((line, e.to_string())),
        }
    }
}

/// What a parser made of an rc file (or several, for getmail).
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub tool: Option<Tool>,
    /// The rc files read.
    pub sources: Vec<String>,
    /// Top-level `interval`, from a daemon setting.
    pub interval_secs: Option<u64>,
    /// Top-level `log_target`.
    pub log_target: Option<&'static str>,
    pub accounts: Vec<Account>,
    /// The state found per account (same order as `accounts`; `None`: none looked for or
    /// found).
    pub state: Vec<Option<Uidls>>,
    pub notes: Vec<Note>,
    /// Messages for stderr that are not about untranslated settings (missing state files …).
    pub messages: Vec<String>,
}

impl Imported {
    pub fn note(
        &mut self,
        file: &str,
        line: usize,
        what: impl Into<String>,
        why: impl Into<String>,
    ) {
        self.notes.push(Note {
            file: file.to_string(),
            line,
            what: what.into(),
            why: why.into(),
        });
    }
}

/// What `popfetch import` is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    pub source: Source,
    /// Where popfetch's state goes; `None`: [`crate::config::default_state_dir`], and the
    /// generated config names no `state_dir`.
    pub state_dir: Option<PathBuf>,
    /// Print the config and what would be recorded; write no state.
    pub dry_run: bool,
}

#[derive(Debug, Clone)]
pub enum Source {
    Fetchmail {
        /// `None`: `~/.fetchmailrc`.
        rcfile: Option<PathBuf>,
        /// `None`: `~/.fetchids`, which may be missing.
        ids: Option<PathBuf>,
    },
    Getmail {
        /// Empty: `getmailrc` in the getmail directory.
        rcfiles: Vec<PathBuf>,
        /// `None`: `~/.getmail`.
        getmaildir: Option<PathBuf>,
    },
    Mpop {
        /// `None`: `~/.mpoprc`, else `$XDG_CONFIG_HOME/mpop/config`.
        rcfile: Option<PathBuf>,
    },
}

/// The result: the config for stdout and the lines for stderr.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub config: String,
    pub messages: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_FILE} bytes; not an rc or state file")]
    TooLarge { path: PathBuf },
    #[error("no home directory ($HOME is unset); name the file on the command line")]
    NoHome,
    #[error("{0}")]
    Busy(String),
    #[error(
        "no state directory: $HOME, $XDG_STATE_HOME and $STATE_DIRECTORY are unset or not \
         absolute; pass --state-dir"
    )]
    NoStateDir,
    #[error("nothing to import: {0}")]
    Nothing(String),
    #[error("account {account}: cannot record its state: {source}")]
    State { account: String, source: StateError },
}

/// Runs an import: parse, read the old state, render the config, record the state.
pub fn run(req: &Request) -> Result<Outcome, ImportError> {
    let mut imported = match &req.source {
        Source::Fetchmail { rcfile, ids } => fetchmail::import(rcfile.as_deref(), ids.as_deref())?,
        Source::Getmail {
            rcfiles,
            getmaildir,
        } => getmail::import(rcfiles, getmaildir.as_deref())?,
        Source::Mpop { rcfile } => mpop::import(rcfile.as_deref())?,
    };
    unique_names(&mut imported.accounts);
    // In the order of the rc file(s), whatever stage of the translation found them.
    let order: Vec<String> = imported.sources.clone();
    imported.notes.sort_by_key(|n| {
        (
            order
                .iter()
                .position(|f| *f == n.file)
                .unwrap_or(usize::MAX),
            n.line,
        )
    });
    // An inherited setting is found once per account that inherits it.
    imported.notes.dedup();
    let config = render(&imported, req.state_dir.as_deref());

    let mut messages: Vec<String> = imported
        .notes
        .iter()
        .map(|n| format!("not translated: {}", n.render()))
        .collect();
    messages.append(&mut imported.messages);
    if imported.accounts.is_empty() {
        messages.push("no account could be translated".into());
    }
    if imported
        .accounts
        .iter()
        .any(|a| matches!(a.password, Password::Inline(_)))
    {
        messages.push(
            "the config holds passwords from the rc file: save it with mode 0600 (popfetch \
             refuses it otherwise), e.g. `(umask 077; popfetch import ... > config.toml)`, or \
             move them to password_file / password_command"
                .into(),
        );
    }
    if let Err(e) = crate::config::parse(Path::new("<imported config>"), &config) {
        messages.push(format!(
            "warning: popfetch does not load the generated config as it is: {e}"
        ));
    }

    let state_dir = req
        .state_dir
        .clone()
        .or_else(crate::config::default_state_dir)
        .ok_or(ImportError::NoStateDir)?;
    messages.extend(record_state(&imported, &state_dir, req.dry_run)?);
    Ok(Outcome { config, messages })
}

/// Records each account's UIDLs as delivered. Every journal is opened (and locked) before any
/// is written, so a busy account stops the import before anything changed.
fn record_state(
    imported: &Imported,
    state_dir: &Path,
    dry_run: bool,
) -> Result<Vec<String>, ImportError> {
    let mut out = Vec::new();
    let mut work = Vec::new();
    let mut opened: Vec<crate::state::Mailbox> = Vec::new();
    let mut states: Vec<AccountState> = Vec::new();
    for (account, state) in imported.accounts.iter().zip(&imported.state) {
        let Some(uidls) = state else {
            continue;
        };
        for r in &uidls.remarks {
            out.push(format!("account {}: {r}", account.name));
        }
        if !uidls.invalid.is_empty() {
            out.push(invalid_remark(&account.name, uidls));
        }
        if dry_run {
            out.push(format!(
                "account {}: would record {} UIDL{} from {} in {} (dry run: nothing written)",
                account.name,
                uidls.valid.len(),
                plural(uidls.valid.len()),
                uidls.source.display(),
                state_dir.display()
            ));
            continue;
        }
        // The port the generated config gets when it names none (see `config::validate`).
        let port = account.port.unwrap_or(match account.tls {
            Tls::Implicit => 995,
            Tls::Starttls | Tls::None => 110,
        });
        let mailbox = crate::state::Mailbox::new(&account.host, port, &account.user);
        // State is kept per mailbox: two entries on one mailbox share one journal (and one lock,
        // so it is opened once).
        let at = match opened.iter().position(|m| *m == mailbox) {
            Some(i) => i,
            None => {
                let st =
                    AccountState::open(state_dir, &mailbox, &account.name).map_err(|source| {
                        ImportError::State {
                            account: account.name.clone(),
                            source,
                        }
                    })?;
                opened.push(mailbox);
                states.push(st);
                states.len() - 1
            }
        };
        work.push((account, uidls, at));
    }
    for (account, uidls, at) in work {
        let st = &mut states[at];
        let before = st.delivered_count();
        for u in &uidls.valid {
            match uidls.first_seen.get(u) {
                // Dated as the old tool dated it, so `delete_after` counts from then.
                Some(&at) => st.record_delivered_at(u, at),
                None => st.record_delivered(u),
            }
        }
        st.sync().map_err(|source| ImportError::State {
            account: account.name.clone(),
            source,
        })?;
        let added = st.delivered_count() - before;
        out.push(format!(
            "account {}: recorded {} UIDL{} from {} in {}{}",
            account.name,
            uidls.valid.len(),
            plural(uidls.valid.len()),
            uidls.source.display(),
            st.path().display(),
            if added == uidls.valid.len() {
                String::new()
            } else {
                format!(" ({added} new, the others were there already)")
            }
        ));
    }
    Ok(out)
}

/// The remark on the entries of a UIDLs file that are not valid unique-ids.
fn invalid_remark(name: &str, uidls: &Uidls) -> String {
    let shown: Vec<String> = uidls
        .invalid
        .iter()
        .take(INVALID_SHOWN)
        .map(|(line, why)| format!("line {line}: {why}"))
        .collect();
    format!(
        "account {}: {} entr{} of {} not recorded, not a valid unique-id ({}{}); \
         those messages will be fetched again",
        name,
        uidls.invalid.len(),
        if uidls.invalid.len() == 1 { "y" } else { "ies" },
        uidls.source.display(),
        shown.join("; "),
        if uidls.invalid.len() > INVALID_SHOWN {
            "; ..."
        } else {
            ""
        }
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Renders the config text.
pub fn render(imported: &Imported, state_dir: Option<&Path>) -> String {
    let mut s = String::new();
    toml_out::comment(
        &mut s,
        &format!(
            "popfetch configuration written by `popfetch import {}` from {}.\n\
             Check it with `popfetch check`, then run `popfetch fetch` once by hand.",
            imported.tool.map_or("", |t| t.command()),
            imported.sources.join(", ")
        ),
    );
    if imported
        .accounts
        .iter()
        .any(|a| matches!(a.password, Password::Inline(_)))
    {
        toml_out::comment(
            &mut s,
            "It holds passwords, as the rc file did: keep it mode 0600.",
        );
    }
    if !imported.notes.is_empty() {
        toml_out::comment(&mut s, "\nNot translated (popfetch has no equivalent):");
        for n in &imported.notes {
            toml_out::comment(&mut s, &format!("  {}", n.render()));
        }
    }
    s.push('\n');
    let mut globals = false;
    if let Some(d) = state_dir {
        toml_out::line(
            &mut s,
            "state_dir",
            &toml_out::string(&d.display().to_string()),
        );
        globals = true;
    }
    if let Some(i) = imported.interval_secs {
        toml_out::line(&mut s, "interval", &toml_out::string(&duration(i)));
        globals = true;
    }
    if let Some(t) = imported.log_target {
        toml_out::line(&mut s, "log_target", &toml_out::string(t));
        globals = true;
    }
    if globals {
        s.push('\n');
    }
    for a in &imported.accounts {
        match &a.inactive {
            None => render_account(&mut s, a),
            Some(why) => {
                // Commented out as a whole, so that the rest of the config still loads.
                let mut text = String::new();
                render_account(&mut text, a);
                toml_out::comment(
                    &mut s,
                    &format!("Inactive until you edit it, then remove the leading `# `: {why}"),
                );
                for l in text.trim_end().lines() {
                    match l.is_empty() {
                        true => s.push_str("#\n"),
                        false => {
                            s.push_str("# ");
                            s.push_str(l);
                            s.push('\n');
                        }
                    }
                }
                s.push('\n');
            }
        }
    }
    s
}

fn duration(secs: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn render_account(s: &mut String, a: &Account) {
    use toml_out::{array, comment, line, string};
    s.push_str("[[account]]\n");
    comment(s, &format!("from {}", a.origin));
    for c in &a.comments {
        comment(s, c);
    }
    line(s, "name", &string(&a.name));
    line(s, "host", &string(&a.host));
    if let Some(p) = a.port {
        line(s, "port", &p.to_string());
    }
    line(s, "tls", &string(a.tls.as_str()));
    if let Some(ca) = &a.ca_file {
        line(s, "ca_file", &string(ca));
    }
    if let Some(v) = a.tls_verify {
        line(s, "tls_verify", &v.to_string());
    }
    if let Some(v) = a.tls_min_version {
        line(s, "tls_min_version", &string(v));
    }
    if let Some(c) = &a.tls_client.0 {
        line(s, "tls_client_cert", &string(c));
    }
    if let Some(k) = &a.tls_client.1 {
        line(s, "tls_client_key", &string(k));
    }
    if !a.tls_fingerprint.is_empty() {
        let pins: Vec<String> = a.tls_fingerprint.iter().map(|f| string(f)).collect();
        line(s, "tls_fingerprint", &format!("[{}]", pins.join(", ")));
    }
    line(s, "user", &string(&a.user));
    match &a.password {
        Password::Certificate => {}
        Password::Inline(p) => line(s, "password", &string(p)),
        Password::Command(argv) => line(s, "password_command", &array(argv)),
        Password::Missing => {
            comment(
                s,
                "The rc file holds no password: put it in this file (mode 0600) or use\n\
                 password_command; popfetch never prompts.",
            );
            line(
                s,
                "password_file",
                &string(&format!("~/.config/popfetch/{}.password", a.name)),
            );
        }
    }
    if let Some(m) = a.auth {
        line(s, "auth", &string(m));
    }
    if a.allow_plaintext_auth {
        line(s, "allow_plaintext_auth", "true");
    }
    line(s, "keep", &a.keep.to_string());
    if let Some(r) = a.received_header {
        line(s, "received_header", &r.to_string());
    }
    if let Some(t) = a.timeout_secs {
        line(s, "timeout", &string(&duration(t)));
    }
    if let Some(m) = a.max_size {
        line(s, "max_size", &m.to_string());
    }
    if a.max_size.is_some() && a.max_size_delete {
        line(s, "max_size_action", &string("delete"));
    }
    if let Some(d) = a.delete_after_days {
        line(s, "delete_after", &string(&format!("{d}d")));
    }
    if let Some(n) = a.max_messages_per_poll {
        line(s, "max_messages_per_poll", &n.to_string());
    }
    if let Some(n) = a.max_bytes_per_poll {
        line(s, "max_bytes_per_poll", &n.to_string());
    }
    if let Some(i) = a.interval_secs {
        line(s, "interval", &string(&duration(i)));
    }
    let deliver = match &a.deliver {
        Deliver::Maildir(p) => format!("{{ maildir = {} }}", string(p)),
        Deliver::Mbox(p) => format!("{{ mbox = {} }}", string(p)),
        Deliver::Mda(argv) => format!("{{ mda = {} }}", array(argv)),
        Deliver::Smtp { host, port, to } => format!(
            "{{ smtp = {{ host = {}{}, to = {} }} }}",
            string(host),
            port.map(|p| format!(", port = {p}")).unwrap_or_default(),
            array(to)
        ),
    };
    line(s, "deliver", &deliver);
    if let Some(r) = &a.route {
        render_route(s, r);
    }
    s.push('\n');
}

fn render_route(s: &mut String, r: &Route) {
    use toml_out::{array, comment, line, string};
    s.push_str("\n[account.route]\n");
    match &r.envelope_header {
        Some(h) => line(s, "envelope_header", &string(h)),
        None => {
            comment(
                s,
                "The header your provider writes each message's envelope recipient to (look at \
                 a\nmessage: Delivered-To, X-Original-To, X-Envelope-To ...).",
            );
            line(s, "envelope_header", &string(""));
        }
    }
    if let Some(i) = r.envelope_header_index {
        line(s, "envelope_header_index", &i.to_string());
    }
    line(s, "local_domains", &array(&r.local_domains));
    s.push_str("\n[account.route.map]\n");
    for (k, v) in &r.map {
        line(s, &string(k), &string(v));
    }
}

/// Gives every account a valid, unique popfetch name (letters, digits, `.`, `_`, `-`; at
/// most 64 characters), keeping the parser's choice where it already is one.
pub fn unique_names(accounts: &mut [Account]) {
    let mut taken = HashSet::new();
    for a in accounts.iter_mut() {
        let base = sanitize_name(&a.name);
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            let suffix = format!("-{n}");
            let keep = base.len().min(64 - suffix.len());
            name = format!("{}{suffix}", &base[..keep]);
            n += 1;
        }
        a.name = name;
    }
}

/// `raw` as an account name: other characters become `-`, runs of them one `-`.
pub fn sanitize_name(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_start_matches(['.', '-']).trim_end_matches('-');
    let mut name: String = trimmed.chars().take(64).collect();
    if name.is_empty() {
        name = "imported".into();
    }
    name
}

/// Reads a whole file, at most [`MAX_FILE`] bytes.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > MAX_FILE {
        return Err(ImportError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(buf)
}

/// Reads a file that may be missing: `Ok(None)` then.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ImportError> {
    match read_file(path) {
        Ok(b) => Ok(Some(b)),
        Err(ImportError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub(crate) fn home() -> Result<PathBuf, ImportError> {
    crate::config::home().ok_or(ImportError::NoHome)
}

/// Parses a size: digits, optionally followed by `k`/`m` (KiB/MiB); `None` when not one.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1024),
        Some((i, 'm' | 'M')) => (&s[..i], 1024 * 1024),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// The sorted, distinct names a set of notes mention (for tests and summaries).
pub fn note_whats(notes: &[Note]) -> BTreeSet<String> {
    notes.iter().map(|n| n.what.clone()).collect()
}

/// Renders `s` for a message: one line, at most 200 characters.
pub fn shorten(s: &str) -> String {
    let one: String = toml_out::comment_text(s);
    if one.chars().count() > 200 {
        let mut t: String = one.chars().take(200).collect();
        t.push_str("...");
        t
    } else {
        one
    }
}

/// Appends a message to `out` (helper for the parsers).
pub fn msg(out: &mut Vec<String>, args: std::fmt::Arguments) {
    let mut s = String::new();
    let _ = s.write_fmt(args);
    out.push(s);
}

#[cfg(test)]
mod tests;
