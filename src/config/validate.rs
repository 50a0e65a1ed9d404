//! From [`RawConfig`] to [`Config`], once: defaults applied, names and paths checked, every error
//! pointing at the file, line, column and key.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::raw::{
    AuthMethod, OAuth2Flow, OAuth2Provider, PermanentFailure, RawAccount, RawConfig, RawDeliver,
    RawIncluded, RawLmtp, RawOAuth2, RawRoute, RawSmtp, Size, SizeAction, TlsMode,
};
use super::{
    Account, Config, Credentials, DEFAULT_INTERVAL, DEFAULT_MAX_PARALLEL,
    DEFAULT_MAX_PARALLEL_PER_SERVER, DEFAULT_MDA_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TIMEOUT, Deliver, Lmtp, LmtpAt, LogTarget, OAuth2Client, OAuth2Source, PasswordSource,
    Route, RouteTo, Smtp,
};
use crate::pop3::login::Method;
use crate::secret::Secret;

/// Most patterns `include` may list.
pub const MAX_PATTERNS: usize = 64;

/// FNV-1a: a digest to see whether a config text changed (the main file's or an included
/// one's), not a defence against anyone.
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A configuration error, located in the file where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub position: Option<(usize, usize)>,
    pub account: Option<String>,
    pub key: Option<String>,
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = format!("config file {}", self.path.display());
        if let Some((line, col)) = self.position {
            s.push_str(&format!(", line {line}, column {col}"));
        }
        if let Some(a) = &self.account {
            s.push_str(&format!(", account `{a}`"));
        }
        if let Some(k) = &self.key {
            s.push_str(&format!(", key `{k}`"));
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

/// The config's text and its metadata, from one open file.
pub(super) fn read(path: &Path) -> std::io::Result<(String, std::fs::Metadata)> {
    let mut f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut f, &mut text)?;
    Ok((text, meta))
}

/// The line and column where `key` of `account` (or a top-level `key`) is written, in the
/// account's table or, for a key it takes from there, in `[defaults]`.
pub(super) fn key_position(text: &str, account: Option<&str>, key: &str) -> Option<(usize, usize)> {
    let raw: RawConfig = toml::from_str(text).ok()?;
    let defaults = raw.defaults.as_ref().map(|d| table_region(text, d.span()));
    let at = match account {
        Some(name) => {
            let own = raw.account.iter().find(|a| {
                a.get_ref()
                    .name
                    .as_ref()
                    .is_some_and(|n| n.get_ref() == name)
            })?;
            key_offset(text, table_region(text, own.span()), key)
                .or_else(|| key_offset(text, defaults?, key))
        }
        None => {
            let first_table = [
                raw.defaults.as_ref().map(|d| d.span().start),
                raw.account.first().map(|a| a.span().start),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(text.len());
            key_offset(text, 0..first_table, key)
        }
    }?;
    Some(line_col(text, at))
}

/// Where the config text `text` writes `key` in its `[defaults]`, if it does: for a finding
/// about an account of an included file that takes the key from the main file.
pub(super) fn defaults_key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    let raw: RawConfig = toml::from_str(text).ok()?;
    let defaults = table_region(text, raw.defaults.as_ref()?.span());
    key_offset(text, defaults, key).map(|at| line_col(text, at))
}

/// The one trust rule ([`crate::trust::secret_file`]) for the config file, which names the
/// programs popfetch runs and may hold passwords, and for every file it names that holds a
/// secret: every file it refuses. A file that does not exist yet is left to the moment it is
/// read (and to `popfetch check`).
pub(super) fn permission_problems(
    path: &Path,
    meta: &std::fs::Metadata,
    accounts: &[Arc<Account>],
) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let err = |account: Option<&str>, key: Option<&str>, message: String| ConfigError {
        path: path.to_path_buf(),
        position: None,
        account: account.map(str::to_string),
        key: key.map(str::to_string),
        message,
    };
    // The one rule: a file that holds a secret or a command is not readable by others.
    // A command is no password, but it says which programs run with the user's rights and
    // often names where their secrets live.
    let inline = accounts.iter().find_map(|a| {
        if matches!(a.password(), Some(PasswordSource::Inline(_))) {
            return Some((a.name.as_str(), "password", true));
        }
        match &a.deliver {
            Deliver::Smtp(s) if matches!(s.credentials, Some((_, PasswordSource::Inline(_)))) => {
                Some((a.name.as_str(), "deliver.smtp.password", true))
            }
            _ => None,
        }
    });
    let command = accounts.iter().find_map(|a| {
        if matches!(a.password(), Some(PasswordSource::Command(_))) {
            return Some((a.name.as_str(), "password_command", false));
        }
        if matches!(a.oauth2(), Some(OAuth2Source::Command { .. })) {
            return Some((a.name.as_str(), "oauth2_token_command", false));
        }
        match &a.deliver {
            Deliver::Mda(_) => Some((a.name.as_str(), "deliver.mda", false)),
            Deliver::Smtp(s) if matches!(s.credentials, Some((_, PasswordSource::Command(_)))) => {
                Some((a.name.as_str(), "deliver.smtp.password_command", false))
            }
            _ => None,
        }
    });
    let sensitive = inline.or(command);
    if let Err(e) = crate::trust::secret_file("config file", path, meta, sensitive.is_some()) {
        let mut message = format!("{}; {}", e.problem, e.fix);
        let (account, key) = match sensitive {
            Some((account, key, secret)) if e.problem.contains("readable") => {
                if secret {
                    message.push_str(
                        ", or move the password to `password_file` or `password_command`",
                    );
                } else {
                    message.push_str(&format!(" (it names a command: `{key}`)"));
                }
                (Some(account), Some(key))
            }
            _ => (None, None),
        };
        problems.push(err(account, key, message));
    }
    for a in accounts {
        for (key, what, p) in secret_files(a) {
            let Ok(meta) = std::fs::metadata(p) else {
                continue;
            };
            if let Err(e) = crate::trust::secret_file(what, p, &meta, true) {
                problems.push(err(Some(&a.name), Some(key), e.to_string()));
            }
        }
    }
    problems
}

/// The files of account `a` that hold a secret: (key, what it is, path).
pub(super) fn secret_files(a: &Account) -> Vec<(&'static str, &'static str, &Path)> {
    let mut files: Vec<(&str, &'static str, &Path)> = Vec::new();
    if let Some(PasswordSource::File(p)) = a.password() {
        files.push(("password_file", "password file", p));
    }
    if let Some((_, key)) = &a.tls_client {
        files.push(("tls_client_key", "TLS client key", key));
    }
    if let Deliver::Smtp(s) = &a.deliver
        && let Some((_, key)) = &s.tls_client
    {
        files.push(("deliver.smtp.tls_client_key", "TLS client key", key));
    }
    if let Deliver::Smtp(s) = &a.deliver
        && let Some((_, PasswordSource::File(p))) = &s.credentials
    {
        files.push(("deliver.smtp.password_file", "password file", p));
    }
    if let Some(OAuth2Source::Refresh(c)) = a.oauth2() {
        if let Some(p) = &c.client_secret_file {
            files.push(("oauth2.client_secret_file", "client secret file", p));
        }
        files.push((
            "oauth2.refresh_token_file",
            "refresh token file",
            &c.refresh_token_file,
        ));
    }
    files
}

/// The state directory the config at `path` would use, read only as far as it can be: its
/// `state_dir` when the file is TOML with that key as a string, else the default. For
/// `popfetch status`, which still reads the state of the daemon's last good config when this
/// one is invalid.
pub fn state_dir_hint(path: &Path) -> Option<PathBuf> {
    let named = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("state_dir")?.as_str().map(PathBuf::from));
    match named {
        Some(d) => Some(expand(path.parent().unwrap_or(Path::new(".")), &d)),
        None => super::default_state_dir(),
    }
}

/// Parses and validates config text; `path` names the file in errors and anchors relative paths.
/// Reads no other file: the files `include` names are read by [`load`].
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_main(path, text).map(|(config, _)| config)
}

/// What the main file gives the accounts of the files it includes.
pub(super) struct Main {
    pub(super) defaults: RawAccount,
    pub(super) defaults_span: Option<Range<usize>>,
    pub(super) interval: std::time::Duration,
    /// The main file's accounts, taken.
    pub(super) seen: Seen,
    /// `include`'s patterns as written, each with its line and column.
    pub(super) include: Vec<(String, (usize, usize))>,
}

/// [`parse`], and what the included files need from the main file.
pub(super) fn parse_main(path: &Path, text: &str) -> Result<(Config, Main), ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let cx = Cx {
        path,
        text,
        defaults: raw.defaults.as_ref().map(Spanned::span),
        main: None,
    };
    let base = path.parent().unwrap_or(Path::new("."));

    let state_dir = match &raw.state_dir {
        Some(d) => expand(base, d.get_ref()),
        None => super::default_state_dir().ok_or_else(|| ConfigError {
            path: path.to_path_buf(),
            position: None,
            account: None,
            key: Some("state_dir".into()),
            message: "no state directory: $HOME, $XDG_STATE_HOME and $STATE_DIRECTORY are unset \
                      or not absolute paths; set `state_dir` to an absolute path"
                .into(),
        })?,
    };
    let defaults = raw
        .defaults
        .as_ref()
        .map(|d| d.get_ref().clone())
        .unwrap_or_default();
    if let Some(d) = &raw.defaults
        && let Some(name) = &d.get_ref().name
    {
        return Err(cx.err(name.span(), None, "name", "`name` cannot be a default"));
    }

    let max_parallel = match &raw.max_parallel {
        Some(m) if *m.get_ref() == 0 => {
            return Err(cx.err(m.span(), None, "max_parallel", "must be at least 1"));
        }
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_PARALLEL,
    };
    let max_parallel_per_server = match &raw.max_parallel_per_server {
        Some(m) if *m.get_ref() == 0 => {
            return Err(cx.err(
                m.span(),
                None,
                "max_parallel_per_server",
                "must be at least 1",
            ));
        }
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_PARALLEL_PER_SERVER,
    };
    if let Some(level) = &raw.log_level
        && crate::logging::filter(level.get_ref()).is_none()
    {
        return Err(cx.err(
            level.span(),
            None,
            "log_level",
            "not a log level or filter (try \"info\", \"debug\" or \"popfetch=debug,warn\")",
        ));
    }
    let (metrics_listen, metrics_listen_public) = metrics_listen(&cx, &raw)?;
    let metrics_textfile = match &raw.metrics_textfile {
        Some(p) if p.get_ref().extension().is_none_or(|e| e != "prom") => {
            return Err(cx.err(
                p.span(),
                None,
                "metrics_textfile",
                "must end in `.prom`: node_exporter's textfile collector reads no other file",
            ));
        }
        Some(p) => Some(expand(base, p.get_ref())),
        None => None,
    };
    let global_interval = raw.interval.unwrap_or(DEFAULT_INTERVAL);

    let include = match &raw.include {
        Some(list) if list.get_ref().len() > MAX_PATTERNS => {
            return Err(cx.err(
                list.span(),
                None,
                "include",
                &format!("at most {} patterns", MAX_PATTERNS),
            ));
        }
        Some(list) => list
            .get_ref()
            .iter()
            .map(|p| (p.get_ref().clone(), line_col(text, p.span().start)))
            .collect(),
        None => Vec::new(),
    };

    let mut seen = Seen::new(path);
    let mut lines = Lines::new(text);
    let mut accounts = Vec::new();
    for acc in &raw.account {
        let a = account(&cx, base, acc, &defaults, global_interval)?;
        if a.interval < std::time::Duration::from_secs(1) {
            return Err(cx.err(acc.span(), Some(&a.name), "interval", "must be at least 1s"));
        }
        seen.admit(&cx, acc, &a)?;
        seen.insert(&a, 0, lines.line(name_offset(acc)));
        accounts.push(Arc::new(a));
    }
    let main = Main {
        defaults,
        defaults_span: cx.defaults.clone(),
        interval: global_interval,
        seen,
        include,
    };
    let config = Config {
        path: path.to_path_buf(),
        state_dir,
        interval: global_interval,
        max_parallel,
        max_parallel_per_server,
        shutdown_timeout: raw.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        start_spread: raw.start_spread,
        log_target: raw.log_target.unwrap_or(LogTarget::Auto),
        log_level: raw.log_level.as_ref().map(|l| l.get_ref().clone()),
        metrics_listen,
        metrics_listen_public,
        metrics_textfile,
        include: main
            .include
            .iter()
            .map(|(p, _)| expand(base, Path::new(p)))
            .collect(),
        accounts,
        included: Vec::new(),
        hash: hash(text.as_bytes()),
    };
    Ok((config, main))
}

/// The accounts of `file`, a file the main config at `main_path` includes, with the line of
/// each one's name. Each takes `[defaults]` and `interval` from the main file; relative paths
/// are the main file's directory's, as in the main file.
pub(super) fn parse_included(
    file: &Path,
    text: &str,
    (main_path, main_text): (&Path, &str),
    main: &Main,
) -> Result<(Vec<Arc<Account>>, Vec<usize>), ConfigError> {
    let raw: RawIncluded = toml::from_str(text).map_err(|e| {
        let mut error = toml_error(file, text, &e);
        if e.message().contains("expected `account`") {
            let key = e
                .span()
                .and_then(|s| text.get(s))
                .unwrap_or_default()
                .trim_matches(['[', ']', ' ']);
            error.message = format!(
                "an included file holds only [[account]] tables; `{key}` belongs in {}",
                main_path.display()
            );
            error.key = Some(key.to_string()).filter(|k| !k.is_empty());
        }
        error
    })?;
    let base = main_path.parent().unwrap_or(Path::new("."));
    let mut seen = Seen::new(file);
    let mut lines = Lines::new(text);
    let mut accounts = Vec::with_capacity(raw.account.len());
    let mut at = Vec::with_capacity(raw.account.len());
    for acc in &raw.account {
        let cx = Cx {
            path: file,
            text,
            defaults: main.defaults_span.clone(),
            main: Some((main_path, main_text, acc.span())),
        };
        let a = account(&cx, base, acc, &main.defaults, main.interval)?;
        if a.interval < std::time::Duration::from_secs(1) {
            return Err(cx.err(acc.span(), Some(&a.name), "interval", "must be at least 1s"));
        }
        seen.admit(&cx, acc, &a)?;
        let line = lines.line(name_offset(acc));
        seen.insert(&a, 0, line);
        accounts.push(Arc::new(a));
        at.push(line);
    }
    Ok((accounts, at))
}

/// Where an account's `name` is written, else its header.
pub(super) fn name_offset(acc: &Spanned<RawAccount>) -> usize {
    acc.get_ref()
        .name
        .as_ref()
        .map_or(acc.span().start, |n| n.span().start)
}

/// Line numbers of offsets met in increasing order, in one pass over the text.
pub(super) struct Lines<'a> {
    text: &'a str,
    at: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    pub(super) fn new(text: &'a str) -> Lines<'a> {
        Lines {
            text,
            at: 0,
            line: 1,
        }
    }

    /// The 1-based line of `offset`; an offset before the last one is counted from the start.
    pub(super) fn line(&mut self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        if offset < self.at {
            *self = Lines::new(self.text);
        }
        let between = self.text.get(self.at..offset).unwrap_or_default();
        self.line += memchr::memchr_iter(b'\n', between.as_bytes()).count();
        self.at = offset;
        self.line
    }
}

/// `metrics_listen` as an address, and whether it may be other than loopback. The metrics name
/// the accounts and say when they are polled: not for the network unless asked for.
fn metrics_listen(
    cx: &Cx,
    raw: &RawConfig,
) -> Result<(Option<std::net::SocketAddr>, bool), ConfigError> {
    let public = raw
        .metrics_listen_public
        .as_ref()
        .map(|p| (*p.get_ref(), p.span()));
    let Some(listen) = &raw.metrics_listen else {
        if let Some((true, span)) = public {
            return Err(cx.err(
                span,
                None,
                "metrics_listen_public",
                "has no effect without `metrics_listen`",
            ));
        }
        return Ok((None, false));
    };
    let addr: std::net::SocketAddr = listen.get_ref().parse().map_err(|_| {
        cx.err(
            listen.span(),
            None,
            "metrics_listen",
            "not an IP address and port, such as \"127.0.0.1:9469\" or \"[::1]:9469\"",
        )
    })?;
    let public = public.is_some_and(|(p, _)| p);
    if !addr.ip().to_canonical().is_loopback() && !public {
        return Err(cx.err(
            listen.span(),
            None,
            "metrics_listen",
            &format!(
                "{} is not a loopback address: the metrics (account names, poll times) would be \
                 open to the network; use 127.0.0.1 or [::1], or set \
                 `metrics_listen_public = true` to allow it",
                addr.ip()
            ),
        ));
    }
    Ok((Some(addr), public))
}

/// What the accounts so far took that no other account may share, and where each was written
/// (a file of `files` and a line), so that an error about two files names both.
#[derive(Clone)]
pub(super) struct Seen {
    files: Vec<PathBuf>,
    names: HashMap<String, (usize, usize)>,
    mailboxes: HashMap<crate::mailbox::Mailbox, String>,
    refresh_files: HashMap<PathBuf, String>,
}

impl Seen {
    fn new(main: &Path) -> Seen {
        Seen {
            files: vec![main.to_path_buf()],
            names: HashMap::new(),
            mailboxes: HashMap::new(),
            refresh_files: HashMap::new(),
        }
    }

    /// The index by which `path` is named from now on.
    pub(super) fn file(&mut self, path: &Path) -> usize {
        self.files.push(path.to_path_buf());
        self.files.len() - 1
    }

    /// Refuses account `a` (written as `acc`) when it has a name, a mailbox or a refresh token
    /// file that an earlier account of the same file has.
    fn admit(&self, cx: &Cx, acc: &Spanned<RawAccount>, a: &Account) -> Result<(), ConfigError> {
        match self.conflict(a, None) {
            None => Ok(()),
            Some(("name", message)) => Err(cx.err(
                acc.get_ref().name.as_ref().map_or(acc.span(), |n| n.span()),
                Some(&a.name),
                "name",
                &message,
            )),
            Some((key, message)) => Err(cx.err(acc.span(), Some(&a.name), key, &message)),
        }
    }

    /// What account `a` shares with an earlier one: the key and what to say. `file` is where
    /// `a` is written, when that is not where the earlier one is said to be.
    pub(super) fn conflict(
        &self,
        a: &Account,
        file: Option<usize>,
    ) -> Option<(&'static str, String)> {
        let elsewhere = |other: &str| {
            let (f, line) = self.names.get(other).copied()?;
            (Some(f) != file && file.is_some())
                .then(|| format!(" in {}, line {line}", self.files[f].display()))
        };
        if self.names.contains_key(&a.name) {
            let place = elsewhere(&a.name).unwrap_or_default();
            return Some(("name", format!("another account has the same name{place}")));
        }
        // State and lock follow the mailbox: a second account on it would find every message
        // delivered by the first, and wait for its lock.
        let mailbox = crate::mailbox::Mailbox::new(&a.host, a.port, &a.user);
        if let Some(first) = self.mailboxes.get(&mailbox) {
            let place = elsewhere(first).unwrap_or_default();
            return Some((
                "user",
                format!(
                    "account `{first}`{place} polls the same mailbox ({mailbox}); remove one of \
                     them (popfetch keeps one state per mailbox, so a renamed account keeps its \
                     state)"
                ),
            ));
        }
        if let Some(OAuth2Source::Refresh(c)) = a.oauth2()
            && let Some(first) = self.refresh_files.get(&c.refresh_token_file)
        {
            let place = elsewhere(first).unwrap_or_default();
            return Some((
                "oauth2.refresh_token_file",
                format!(
                    "account `{first}`{place} uses the same file; each grant needs its own, \
                     since a provider may replace the token at any refresh"
                ),
            ));
        }
        None
    }

    /// Takes what account `a`, written in file `file` at `line`, has.
    pub(super) fn insert(&mut self, a: &Account, file: usize, line: usize) {
        self.names.insert(a.name.clone(), (file, line));
        let mailbox = crate::mailbox::Mailbox::new(&a.host, a.port, &a.user);
        self.mailboxes.insert(mailbox, a.name.clone());
        if let Some(OAuth2Source::Refresh(c)) = a.oauth2() {
            self.refresh_files
                .insert(c.refresh_token_file.clone(), a.name.clone());
        }
    }
}

pub(super) struct Cx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    /// Where `[defaults]` is, for a key an account takes from there.
    pub(super) defaults: Option<Range<usize>>,
    /// For an included file: the main file, which holds `[defaults]`, and the account's own
    /// table in this file. A value taken from `[defaults]` has its span in the main file.
    pub(super) main: Option<(&'a Path, &'a str, Range<usize>)>,
}

impl Cx<'_> {
    /// An error about `key`, at the line it is written on: within `span` (a value, an inline
    /// table or an account's table), else in `[defaults]` when `span` is an account's table,
    /// else (a key that is missing) at the start of `span`.
    fn err(&self, span: Range<usize>, account: Option<&str>, key: &str, msg: &str) -> ConfigError {
        if let Some((main_path, main_text, own)) = &self.main {
            return self.err_included(span, (main_path, main_text, own.clone()), account, key, msg);
        }
        // The span of a table is its header alone.
        let table = self
            .text
            .get(span.start..)
            .is_some_and(|t| t.starts_with("[["));
        let region = |span: Range<usize>| match self.text.get(span.start..) {
            Some(t) if t.starts_with('[') => table_region(self.text, span),
            _ => span,
        };
        let at = key_offset(self.text, region(span.clone()), key)
            .or_else(|| {
                let defaults = self.defaults.clone().filter(|_| table)?;
                key_offset(self.text, region(defaults), key)
            })
            .unwrap_or(span.start);
        ConfigError {
            path: self.path.to_path_buf(),
            position: Some(line_col(self.text, at)),
            account: account.map(str::to_string),
            key: Some(key.to_string()),
            message: msg.to_string(),
        }
    }
}

impl Cx<'_> {
    /// [`Cx::err`] in an included file: the key where the account writes it; else where
    /// `[defaults]` of the main file writes it, naming the main file; else the account's header.
    fn err_included(
        &self,
        span: Range<usize>,
        (main_path, main_text, own): (&Path, &str, Range<usize>),
        account: Option<&str>,
        key: &str,
        msg: &str,
    ) -> ConfigError {
        let error = |path: &Path, text: &str, at: usize| ConfigError {
            path: path.to_path_buf(),
            position: Some(line_col(text, at)),
            account: account.map(str::to_string),
            key: Some(key.to_string()),
            message: msg.to_string(),
        };
        let own_region = table_region(self.text, own.clone());
        if let Some(at) = key_offset(self.text, own_region.clone(), key) {
            // The value is the account's own: its span is in this file.
            let at = match self.text.get(span.start..) {
                Some(t) if !t.starts_with('[') && own_region.contains(&span.start) => {
                    key_offset(self.text, span.clone(), key).unwrap_or(span.start)
                }
                _ => at,
            };
            return error(self.path, self.text, at);
        }
        if let Some(defaults) = self.defaults.clone()
            && let Some(at) = key_offset(main_text, table_region(main_text, defaults), key)
        {
            return error(main_path, main_text, at);
        }
        error(self.path, self.text, own.start)
    }
}

fn account(
    cx: &Cx,
    base: &Path,
    spanned: &Spanned<RawAccount>,
    defaults: &RawAccount,
    interval: std::time::Duration,
) -> Result<Account, ConfigError> {
    let raw = spanned.get_ref().merged_with(defaults);
    let span = spanned.span();
    let name_str = account_name(cx, &raw, span.clone())?;
    let err = |key: &str, msg: &str| cx.err(span.clone(), Some(name_str), key, msg);

    let Some(host) = &raw.host else {
        return Err(err("host", "required but missing"));
    };
    let host_str = host.get_ref().trim();
    if host_str.is_empty() || host_str.contains(char::is_whitespace) {
        let why = "must be a host name or address";
        return Err(cx.err(host.span(), Some(name_str), "host", why));
    }
    let tls = raw.tls.unwrap_or(TlsMode::Implicit);
    let port = raw.port.unwrap_or(match tls {
        TlsMode::Implicit => 995,
        TlsMode::Starttls | TlsMode::None => 110,
    });
    if port == 0 {
        return Err(err("port", "must be between 1 and 65535"));
    }
    let Some(user) = raw.user.clone() else {
        return Err(err("user", "required but missing"));
    };
    if user.is_empty() || user.contains(['\r', '\n', '\0']) {
        return Err(err("user", "must be a non-empty single line"));
    }

    let credentials = credentials(cx, base, &raw, name_str, span.clone())?;
    let auth = raw.auth.unwrap_or(AuthMethod::Auto);
    let allow_plaintext_auth = raw.allow_plaintext_auth.unwrap_or(false);
    let has_client_cert = raw.tls_client_cert.is_some();
    check_login(
        &credentials,
        auth,
        tls,
        allow_plaintext_auth,
        has_client_cert,
    )
    .map_err(|(k, why)| err(k, why))?;
    let longer_than_zero = |key, t: std::time::Duration| match t.is_zero() {
        true => Err(err(key, "must be longer than zero")),
        false => Ok(t),
    };
    let timeout = longer_than_zero("timeout", raw.timeout.unwrap_or(DEFAULT_TIMEOUT))?;
    let deliver = deliver(cx, base, &raw, name_str, span.clone())?;
    let mda_timeout = raw.mda_timeout.unwrap_or(DEFAULT_MDA_TIMEOUT);
    let mda_timeout = longer_than_zero("mda_timeout", mda_timeout)?;
    let on_permanent_failure = raw.on_permanent_failure.unwrap_or(PermanentFailure::Keep);
    let quarantine = raw.quarantine.as_ref().map(|p| expand(base, p));
    if on_permanent_failure == PermanentFailure::Quarantine && quarantine.is_none() {
        return Err(err(
            "quarantine",
            "on_permanent_failure = \"quarantine\" needs `quarantine`, the Maildir to store refused messages in",
        ));
    }
    let ca_file = raw
        .ca_file
        .as_ref()
        .map(|p| ca_path(base, p).map_err(|why| err("ca_file", why)))
        .transpose()?;
    let tls_fingerprint = fingerprints(raw.tls_fingerprint.as_deref(), tls)
        .map_err(|why| err("tls_fingerprint", &why))?;
    let tls_client = match (&raw.tls_client_cert, &raw.tls_client_key) {
        (Some(c), Some(k)) => Some((expand(base, c), expand(base, k))),
        (None, None) => None,
        (Some(_), None) => return Err(err("tls_client_key", "tls_client_cert needs its key")),
        (None, Some(_)) => {
            return Err(err(
                "tls_client_cert",
                "tls_client_key needs its certificate",
            ));
        }
    };
    let keep = raw.keep.unwrap_or(false);
    if raw.delete_after.is_some() && !keep {
        return Err(err(
            "delete_after",
            "only has a meaning with `keep = true` (without keep, messages are deleted as soon \
             as they are delivered)",
        ));
    }
    let limits = limits(cx, &raw, name_str)?;
    let route = match &raw.route {
        Some(r) => {
            let route_err = |key: &str, msg: &str| cx.err(r.span(), Some(name_str), key, msg);
            Some(route(r.get_ref()).map_err(|(k, why)| route_err(k, &why))?)
        }
        None => None,
    };
    recipient_placeholder(&deliver, route.is_some()).map_err(|(k, why)| err(k, &why))?;

    Ok(Account {
        name: name_str.to_string(),
        host: host_str.to_string(),
        port,
        tls,
        ca_file,
        tls_verify: raw.tls_verify.unwrap_or(true),
        tls_fingerprint,
        tls_min_version: raw.tls_min_version.unwrap_or_default(),
        tls_expiry_warning: raw
            .tls_expiry_warning
            .unwrap_or(super::DEFAULT_TLS_EXPIRY_WARNING),
        tls_client,
        user,
        credentials,
        auth,
        allow_plaintext_auth,
        keep,
        received_header: raw.received_header.unwrap_or(true),
        timeout,
        deliver,
        mda_timeout,
        on_permanent_failure,
        quarantine,
        interval: raw.interval.unwrap_or(interval),
        max_size: limits.max_size,
        max_size_action: raw.max_size_action.unwrap_or(SizeAction::Keep),
        delete_after: raw.delete_after,
        max_messages_per_poll: limits.max_messages_per_poll,
        max_bytes_per_poll: limits.max_bytes_per_poll,
        dedupe_message_id: raw.dedupe_message_id.unwrap_or(false),
        route,
    })
}

/// `[account.route]`, checked. The error names the key to change.
fn route(raw: &RawRoute) -> Result<Route, (&'static str, String)> {
    let Some(header) = raw.envelope_header.as_deref() else {
        return Err((
            "route.envelope_header",
            "required: the header your provider writes each message's envelope recipient to, \
             e.g. \"Delivered-To\" or \"X-Original-To\""
                .into(),
        ));
    };
    // RFC 5322 §3.6.8: a field name is printable ASCII without the colon.
    if header.is_empty() || !header.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err((
            "route.envelope_header",
            format!("{header:?} is not a header field name (no spaces, no colon)"),
        ));
    }
    if raw.envelope_header_index == Some(0) {
        return Err((
            "route.envelope_header_index",
            "counts from 1, the topmost occurrence (the one your provider added last)".into(),
        ));
    }
    if raw.local_domains.is_empty() {
        return Err((
            "route.local_domains",
            "required: the domains this mailbox collects mail for, e.g. [\"example.org\"]".into(),
        ));
    }
    let mut local_domains = Vec::new();
    for d in &raw.local_domains {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        if d.is_empty() || d.contains(['@', '*']) || d.contains(char::is_whitespace) {
            return Err((
                "route.local_domains",
                format!("{d:?} is not a domain name (write \"example.org\", without `@` or `*`)"),
            ));
        }
        local_domains.push(d);
    }
    let recipient_delimiter = match raw.recipient_delimiter.as_deref() {
        None => None,
        Some(d) => {
            let mut chars = d.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_punctuation() && c != '@' => Some(c),
                _ => {
                    return Err((
                        "route.recipient_delimiter",
                        format!("{d:?}: must be one punctuation character such as \"+\" or \"-\""),
                    ));
                }
            }
        }
    };
    let mut addresses = std::collections::BTreeMap::new();
    let mut domains = std::collections::BTreeMap::new();
    let mut any = None;
    for (pattern, to) in &raw.map {
        let key = pattern.trim().to_ascii_lowercase();
        let wildcard = key == "*" || key.starts_with("*@");
        let to = if to == "hold" {
            RouteTo::Hold
        } else {
            // `{local}` is a local part from a message: checked again when it is known.
            let sample = to.replace("{local}", "x");
            if !Route::usable_recipient(&sample) || (to.contains("{local}") && !wildcard) {
                return Err((
                    "route.map",
                    format!(
                        "{pattern:?} = {to:?}: a recipient is letters, digits and `._+-=@`, \
                         starting with a letter or digit, or \"hold\"; `{{local}}` (the address's \
                         local part) only in a wildcard entry"
                    ),
                ));
            }
            RouteTo::Recipient(to.clone())
        };
        if key == "*" {
            any = Some(to);
            continue;
        }
        let Some((local, domain)) = key.rsplit_once('@') else {
            return Err((
                "route.map",
                format!("{pattern:?}: write \"alice@example.org\", \"*@example.org\" or \"*\""),
            ));
        };
        if !local_domains.iter().any(|d| d == domain) {
            return Err((
                "route.map",
                format!(
                    "{pattern:?} can never match: {domain:?} is not in `local_domains` ({})",
                    local_domains.join(", ")
                ),
            ));
        }
        if local == "*" {
            domains.insert(domain.to_string(), to);
        } else if local.is_empty() || local.contains(['*', ' ']) {
            return Err((
                "route.map",
                format!("{pattern:?}: a wildcard is the whole local part (\"*@{domain}\")"),
            ));
        } else {
            addresses.insert(key.clone(), to);
        }
    }
    if addresses.is_empty() && domains.is_empty() && any.is_none() {
        return Err((
            "route.map",
            "empty: map addresses to local recipients, e.g. \
             map = { \"alice@example.org\" = \"alice\", \"*\" = \"postmaster\" }"
                .into(),
        ));
    }
    Ok(Route {
        envelope_header: header.to_ascii_lowercase(),
        envelope_header_index: raw.envelope_header_index,
        local_domains,
        recipient_delimiter,
        addresses,
        domains,
        any,
    })
}

/// `{recipient}` in the delivery target: required with a route (each recipient's copy must go
/// somewhere of its own), meaningless without one.
fn recipient_placeholder(deliver: &Deliver, routed: bool) -> Result<(), (&'static str, String)> {
    const P: &str = "{recipient}";
    let (key, used, whole) = match deliver {
        Deliver::Maildir(p) => ("deliver.maildir", p.to_string_lossy().contains(P), true),
        Deliver::Mbox(p) => ("deliver.mbox", p.to_string_lossy().contains(P), true),
        Deliver::Mda(argv) => (
            "deliver.mda",
            argv.iter().any(|a| a.contains(P)),
            argv.iter().all(|a| !a.contains(P) || a == P),
        ),
        Deliver::Smtp(s) => ("deliver.smtp.to", s.to.iter().any(|t| t.contains(P)), true),
        Deliver::Lmtp(l) => ("deliver.lmtp.to", l.to.iter().any(|t| t.contains(P)), true),
    };
    if !whole {
        return Err((
            key,
            "`{recipient}` must be a whole argument, like [\"/usr/bin/procmail\", \"-d\", \
             \"{recipient}\"]"
                .into(),
        ));
    }
    match (routed, used) {
        (true, false) => Err((
            key,
            "with [account.route], say where each recipient's copy goes with `{recipient}`, e.g. \
             deliver = { lmtp = { socket = \"/run/dovecot/lmtp\", to = [\"{recipient}\"] } } or \
             { maildir = \"/var/mail/{recipient}/Maildir\" }"
                .into(),
        )),
        (false, true) => Err((
            key,
            "`{recipient}` is the recipient [account.route] chose; this account has no route"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The account's `name`, checked.
fn account_name<'a>(
    cx: &Cx,
    raw: &'a RawAccount,
    span: Range<usize>,
) -> Result<&'a str, ConfigError> {
    let Some(name) = &raw.name else {
        return Err(cx.err(span, None, "name", "every account needs a `name`"));
    };
    let name_str = name.get_ref().as_str();
    if let Err(why) = check_name(name_str) {
        return Err(cx.err(name.span(), Some(name_str), "name", &why));
    }
    Ok(name_str)
}

/// `max_size`, `max_messages_per_poll` and `max_bytes_per_poll`, none of them zero.
struct Limits {
    max_size: Option<u64>,
    max_messages_per_poll: Option<usize>,
    max_bytes_per_poll: Option<u64>,
}

/// Each error points where the value was written, in the account's table or in `[defaults]`.
fn limits(cx: &Cx, raw: &RawAccount, account: &str) -> Result<Limits, ConfigError> {
    let refuse = |key, span, why| cx.err(span, Some(account), key, why);
    let size = |key, v: &Option<Spanned<Size>>| match v {
        Some(s) if s.get_ref().0 == 0 => Err(refuse(key, s.span(), "must be more than 0")),
        s => Ok(s.as_ref().map(|s| s.get_ref().0)),
    };
    let max_messages_per_poll = match &raw.max_messages_per_poll {
        Some(n) if *n.get_ref() == 0 => {
            let key = "max_messages_per_poll";
            return Err(refuse(key, n.span(), "must be at least 1"));
        }
        n => n.as_ref().map(|n| *n.get_ref()),
    };
    Ok(Limits {
        max_size: size("max_size", &raw.max_size)?,
        max_messages_per_poll,
        max_bytes_per_poll: size("max_bytes_per_poll", &raw.max_bytes_per_poll)?,
    })
}

/// The rules on how a credential may travel: an OAuth2 token only with a method that sends
/// one, nothing readable on the way without `allow_plaintext_auth`, and a certificate only
/// over TLS. The error names the key to change.
fn check_login(
    credentials: &Credentials,
    auth: AuthMethod,
    tls: TlsMode,
    allow_plaintext_auth: bool,
    has_client_cert: bool,
) -> Result<(), (&'static str, &'static str)> {
    if matches!(credentials, Credentials::Certificate) {
        // Only `auto` and `external` make a certificate credential (see `credentials`).
        if !has_client_cert {
            return Err((
                "tls_client_cert",
                "auth = \"external\" logs in with the TLS client certificate: set \
                 `tls_client_cert` and `tls_client_key`",
            ));
        }
        if tls == TlsMode::None {
            return Err((
                "tls",
                "auth = \"external\" logs in with the TLS client certificate, which only a TLS \
                 connection carries; use `tls = \"implicit\"` or `\"starttls\"`",
            ));
        }
    }
    if matches!(credentials, Credentials::OAuth2(_)) {
        if auth.only().is_some_and(|m| !m.needs_token()) {
            return Err((
                "auth",
                "this method logs in with a password, but the account has an OAuth2 token \
                 source; leave `auth` at \"auto\"",
            ));
        }
        if tls == TlsMode::None && !allow_plaintext_auth {
            return Err((
                "tls",
                "an OAuth2 token over an unencrypted connection can be read and reused by anyone \
                 on the way; use `tls = \"implicit\"` or `\"starttls\"`, or set \
                 `allow_plaintext_auth = true`",
            ));
        }
    }
    if tls == TlsMode::None
        && !allow_plaintext_auth
        && auth.only().is_some_and(|m| m.sends_secret_in_clear())
    {
        return Err((
            "auth",
            "this method sends the password in clear text over an unencrypted connection; \
             use `tls = \"implicit\"` or `\"starttls\"`, or set `allow_plaintext_auth = true`",
        ));
    }
    Ok(())
}

/// The account's delivery target (`raw` merged with the defaults).
fn deliver(
    cx: &Cx,
    base: &Path,
    raw: &RawAccount,
    account: &str,
    span: Range<usize>,
) -> Result<Deliver, ConfigError> {
    let deliver = raw.deliver.as_ref().ok_or_else(|| {
        cx.err(
            span,
            Some(account),
            "deliver",
            "required but missing, e.g. `deliver = { maildir = \"~/Maildir\" }`",
        )
    })?;
    let deliver_span = deliver.span();
    let user = raw_user(raw);
    Ok(match deliver.get_ref() {
        RawDeliver::Maildir(p) => Deliver::Maildir(expand(base, p)),
        RawDeliver::Mbox(p) => Deliver::Mbox(expand(base, p)),
        RawDeliver::Mda(argv) => {
            if argv.first().is_none_or(|a| a.is_empty()) {
                return Err(cx.err(
                    deliver_span,
                    Some(account),
                    "deliver.mda",
                    "must name a program: an argument list like [\"/usr/bin/procmail\", \"-d\", \"{user}\"]",
                ));
            }
            Deliver::Mda(argv.clone())
        }
        RawDeliver::Smtp(raw) => {
            Deliver::Smtp(Box::new(smtp(cx, base, raw, account, deliver_span)?))
        }
        RawDeliver::Lmtp(raw) => Deliver::Lmtp(lmtp(cx, base, raw, user, account, deliver_span)?),
    })
}

fn raw_user(raw: &RawAccount) -> &str {
    raw.user.as_deref().unwrap_or("")
}

/// Default port of LMTP over TCP: 24, "any private mail system", where servers put it.
const LMTP_PORT: u16 = 24;

fn lmtp(
    cx: &Cx,
    base: &Path,
    raw: &RawLmtp,
    user: &str,
    account: &str,
    span: Range<usize>,
) -> Result<Lmtp, ConfigError> {
    use crate::smtp_codec::Command;
    let err = |key: &str, msg: &str| cx.err(span.clone(), Some(account), key, msg);
    let at = match (&raw.socket, &raw.host) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(err(
                "deliver.lmtp",
                "set exactly one of `socket` (a Unix socket path) and `host` (TCP)",
            ));
        }
        (Some(socket), None) => {
            if raw.port.is_some() || raw.tls.is_some() || raw.ca_file.is_some() {
                return Err(err(
                    "deliver.lmtp.socket",
                    "`port`, `tls` and `ca_file` are for TCP (`host`), not a Unix socket",
                ));
            }
            LmtpAt::Socket(expand(base, socket))
        }
        (None, Some(host)) => {
            let host = host.trim();
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(err("deliver.lmtp.host", "must be a host name or address"));
            }
            // Mail to a server on this machine never leaves it; anywhere else, STARTTLS.
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            let tls = raw.tls.unwrap_or(if loopback {
                TlsMode::None
            } else {
                TlsMode::Starttls
            });
            LmtpAt::Tcp {
                host: host.to_string(),
                port: raw.port.unwrap_or(LMTP_PORT),
                tls,
                ca_file: raw
                    .ca_file
                    .as_ref()
                    .map(|p| ca_path(base, p).map_err(|why| err("deliver.lmtp.ca_file", why)))
                    .transpose()?,
            }
        }
    };
    if raw.to.is_empty() {
        return Err(err(
            "deliver.lmtp.to",
            "needs at least one recipient, e.g. [\"{user}\"]",
        ));
    }
    let to: Vec<String> = raw.to.iter().map(|t| t.replace("{user}", user)).collect();
    for a in to.iter().chain(raw.from.iter()) {
        if a.is_empty() || !Command::safe_argument(a) {
            return Err(err(
                "deliver.lmtp",
                &format!(
                    "{a:?} is not a usable address (empty, or with a space, `<`, `>` or a line break)"
                ),
            ));
        }
    }
    if let Some(l) = &raw.lhlo
        && (l.is_empty() || !Command::safe_argument(l))
    {
        return Err(err("deliver.lmtp.lhlo", "must be one word: a host name"));
    }
    Ok(Lmtp {
        at,
        to,
        from: raw.from.clone(),
        lhlo: raw.lhlo.clone(),
    })
}

fn smtp(
    cx: &Cx,
    base: &Path,
    raw: &RawSmtp,
    account: &str,
    span: Range<usize>,
) -> Result<Smtp, ConfigError> {
    let err = |key: &str, msg: &str| cx.err(span.clone(), Some(account), key, msg);
    let (host, socket) = match (&raw.host, &raw.socket) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(err(
                "deliver.smtp",
                "set exactly one of `host` (TCP) and `socket` (a Unix socket path)",
            ));
        }
        (None, Some(socket)) => {
            // A Unix socket never leaves the machine: there is nothing for TLS to protect.
            let tcp_only = [
                ("port", raw.port.is_some()),
                ("tls", raw.tls.is_some()),
                ("ca_file", raw.ca_file.is_some()),
                ("tls_fingerprint", raw.tls_fingerprint.is_some()),
                ("tls_min_version", raw.tls_min_version.is_some()),
                ("tls_client_cert", raw.tls_client_cert.is_some()),
                ("tls_client_key", raw.tls_client_key.is_some()),
            ];
            if let Some((key, _)) = tcp_only.iter().find(|(_, set)| *set) {
                return Err(err(
                    &format!("deliver.smtp.{key}"),
                    &format!(
                        "`{key}` is for a relay over TCP (`host`); a Unix socket (`socket`) \
                         is local and has no port or TLS: remove it"
                    ),
                ));
            }
            ("localhost", Some(expand(base, socket)))
        }
        (Some(host), None) => (host.trim(), None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(err("deliver.smtp.host", "must be a host name or address"));
    }
    // Mail to a relay on this machine never leaves it; anywhere else, STARTTLS by default.
    let loopback = socket.is_some()
        || host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let tls = raw.tls.unwrap_or(if loopback {
        TlsMode::None
    } else {
        TlsMode::Starttls
    });
    let port = raw.port.unwrap_or(match tls {
        TlsMode::Implicit => 465,
        TlsMode::Starttls | TlsMode::None => 25,
    });
    if raw.to.is_empty() {
        return Err(err(
            "deliver.smtp.to",
            "needs at least one recipient address",
        ));
    }
    for a in raw.to.iter().chain(raw.from.iter()) {
        // A routed recipient is checked when it is known (see `Route::usable_recipient`).
        if a.replace("{recipient}", "x")
            .parse::<lettre::Address>()
            .is_err()
        {
            return Err(err(
                "deliver.smtp",
                &format!("{a:?} is not a valid mail address"),
            ));
        }
    }
    let pw_raw = RawAccount {
        password: raw.password.clone(),
        password_file: raw.password_file.clone(),
        password_command: raw.password_command.clone(),
        ..RawAccount::default()
    };
    let password = password_source(cx, base, &pw_raw, account, span.clone())?;
    let credentials = match (&raw.user, password) {
        (Some(u), Some(p)) => Some((u.clone(), p)),
        (None, None) => None,
        _ => {
            return Err(err(
                "deliver.smtp.user",
                "SMTP login needs both `user` and one of `password`, `password_file`, `password_command`",
            ));
        }
    };
    if credentials.is_some() && tls == TlsMode::None && socket.is_none() {
        return Err(err(
            "deliver.smtp.tls",
            "an SMTP login over an unencrypted connection would send the password in clear text; use tls = \"starttls\" or \"implicit\"",
        ));
    }
    let tls_fingerprint = fingerprints(raw.tls_fingerprint.as_deref(), tls)
        .map_err(|why| err("deliver.smtp.tls_fingerprint", &why))?;
    let tls_client = match (&raw.tls_client_cert, &raw.tls_client_key) {
        (Some(c), Some(k)) => Some((expand(base, c), expand(base, k))),
        (None, None) => None,
        _ => {
            return Err(err(
                "deliver.smtp.tls_client_cert",
                "tls_client_cert and tls_client_key go together",
            ));
        }
    };
    Ok(Smtp {
        socket,
        host: host.to_string(),
        port,
        tls,
        tls_fingerprint,
        tls_min_version: raw.tls_min_version.unwrap_or_default(),
        tls_client,
        ca_file: raw
            .ca_file
            .as_ref()
            .map(|p| ca_path(base, p).map_err(|why| err("deliver.smtp.ca_file", why)))
            .transpose()?,
        to: raw.to.clone(),
        from: raw.from.clone(),
        helo: raw.helo.clone(),
        credentials,
    })
}

fn password_source(
    cx: &Cx,
    base: &Path,
    raw: &RawAccount,
    account: &str,
    span: Range<usize>,
) -> Result<Option<PasswordSource>, ConfigError> {
    let given = [
        raw.password.is_some(),
        raw.password_file.is_some(),
        raw.password_command.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(cx.err(
            span,
            Some(account),
            "password",
            "set only one of `password`, `password_file` and `password_command`",
        ));
    }
    if let Some(p) = &raw.password {
        return Ok(Some(PasswordSource::Inline(Secret::new(
            p.get_ref().clone(),
        ))));
    }
    if let Some(p) = &raw.password_file {
        return Ok(Some(PasswordSource::File(expand(base, p))));
    }
    if let Some(argv) = &raw.password_command {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(cx.err(
                span,
                Some(account),
                "password_command",
                "must name a program: an argument list like [\"pass\", \"show\", \"pop/alice\"]",
            ));
        }
        return Ok(Some(PasswordSource::Command(argv.clone())));
    }
    Ok(None)
}

/// The account's login credential (`raw` merged with the defaults, where the credential is
/// taken as a whole from one level: see [`RawAccount::merged_with`]): a password source or an
/// OAuth2 token source, never both, never neither.
fn credentials(
    cx: &Cx,
    base: &Path,
    raw: &RawAccount,
    account: &str,
    span: Range<usize>,
) -> Result<Credentials, ConfigError> {
    let ttl = raw.oauth2_token_ttl;
    if ttl.is_some_and(|t| t.is_zero()) {
        return Err(cx.err(
            span,
            Some(account),
            "oauth2_token_ttl",
            "must be longer than zero",
        ));
    }
    let password = password_source(cx, base, raw, account, span.clone())?;
    let token = token_source(cx, base, raw, ttl, account, span.clone())?;
    let external = raw.auth == Some(AuthMethod::Only(Method::External));
    if external && (password.is_some() || token.is_some()) {
        return Err(cx.err(
            span,
            Some(account),
            "auth",
            "auth = \"external\" logs in with the TLS client certificate alone; remove the \
             password or token source, or choose another method",
        ));
    }
    if password.is_none() && token.is_none() {
        // A certificate and nothing else: EXTERNAL, asked for or the one way `auto` has.
        let auto = raw.auth.is_none_or(|a| a == AuthMethod::Auto);
        if external || (auto && raw.tls_client_cert.is_some()) {
            return Ok(Credentials::Certificate);
        }
    }
    match (password, token) {
        (Some(_), Some(_)) => Err(cx.err(
            span,
            Some(account),
            "oauth2",
            "set either a password (`password`, `password_file`, `password_command`) or an \
             OAuth2 token source (`oauth2_token_command`, `oauth2`), not both",
        )),
        (Some(p), None) => Ok(Credentials::Password(p)),
        (None, Some(t)) => Ok(Credentials::OAuth2(t)),
        (None, None) => Err(cx.err(
            span,
            Some(account),
            "password",
            "no password: set one of `password`, `password_file` or `password_command`, or an \
             OAuth2 token source (`oauth2_token_command` or `oauth2`), or log in with a TLS \
             client certificate alone (`tls_client_cert`, `tls_client_key` and \
             `auth = \"external\"`)",
        )),
    }
}

/// `oauth2_token_command` or `oauth2 = { ... }`.
fn token_source(
    cx: &Cx,
    base: &Path,
    raw: &RawAccount,
    ttl: Option<std::time::Duration>,
    account: &str,
    span: Range<usize>,
) -> Result<Option<OAuth2Source>, ConfigError> {
    match (&raw.oauth2_token_command, &raw.oauth2) {
        (Some(_), Some(_)) => Err(cx.err(
            span,
            Some(account),
            "oauth2_token_command",
            "set only one of `oauth2_token_command` and `oauth2`",
        )),
        (Some(argv), None) => {
            if argv.first().is_none_or(|a| a.is_empty()) {
                return Err(cx.err(
                    span,
                    Some(account),
                    "oauth2_token_command",
                    "must name a program: an argument list like [\"oama\", \"access\", \"alice@example.org\"]",
                ));
            }
            Ok(Some(OAuth2Source::Command {
                argv: argv.clone(),
                ttl,
            }))
        }
        (None, Some(table)) => {
            let client = oauth2_client(cx, base, table.get_ref(), table.span(), account, ttl)?;
            Ok(Some(OAuth2Source::Refresh(Box::new(client))))
        }
        (None, None) => Ok(None),
    }
}

/// Google's endpoints (its device flow does not allow the mail scope: browser flow).
const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_AUTHORIZATION_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const GOOGLE_SCOPE: &str = "https://mail.google.com/";
/// Microsoft's identity platform (v2.0 endpoints), `{tenant}` filled in.
const MICROSOFT_BASE: &str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/";
const MICROSOFT_SCOPE: &str = "https://outlook.office.com/POP.AccessAsUser.All offline_access";

/// What a `provider` fills in: the endpoints, the scope and the flow.
struct Preset {
    token_url: Option<String>,
    device_authorization_url: Option<String>,
    authorization_url: Option<String>,
    scope: &'static str,
    flow: Option<OAuth2Flow>,
}

impl Preset {
    /// The preset of `t.provider`, checking `tenant` against it; an error names its key.
    fn of(t: &RawOAuth2) -> Result<Preset, (&'static str, &'static str)> {
        const NO_TENANTS: (&str, &str) =
            ("oauth2.tenant", "only provider = \"microsoft\" has tenants");
        match t.provider {
            Some(OAuth2Provider::Google) => {
                if t.tenant.is_some() {
                    return Err(NO_TENANTS);
                }
                Ok(Preset {
                    token_url: Some(GOOGLE_TOKEN_URL.into()),
                    device_authorization_url: None,
                    authorization_url: Some(GOOGLE_AUTHORIZATION_URL.into()),
                    scope: GOOGLE_SCOPE,
                    flow: Some(OAuth2Flow::Browser),
                })
            }
            Some(OAuth2Provider::Microsoft) => {
                let tenant = t.tenant.as_deref().unwrap_or("common");
                if tenant.is_empty()
                    || tenant.len() > 64
                    || !tenant
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                {
                    return Err((
                        "oauth2.tenant",
                        "must be a tenant ID or domain (letters, digits, '-', '.', '_'), or \
                         \"common\", \"organizations\" or \"consumers\"",
                    ));
                }
                let b = MICROSOFT_BASE.replace("{tenant}", tenant);
                Ok(Preset {
                    token_url: Some(format!("{b}token")),
                    device_authorization_url: Some(format!("{b}devicecode")),
                    authorization_url: Some(format!("{b}authorize")),
                    scope: MICROSOFT_SCOPE,
                    flow: Some(OAuth2Flow::Device),
                })
            }
            None => {
                if t.tenant.is_some() {
                    return Err(NO_TENANTS);
                }
                Ok(Preset {
                    token_url: None,
                    device_authorization_url: None,
                    authorization_url: None,
                    scope: "",
                    flow: None,
                })
            }
        }
    }
}

/// The authorization flow: the one asked for, if its endpoint is there; else the browser flow
/// when only its endpoint is known, the device flow otherwise.
fn flow(
    asked: Option<OAuth2Flow>,
    device_endpoint: bool,
    browser_endpoint: bool,
) -> Result<OAuth2Flow, &'static str> {
    match asked {
        Some(OAuth2Flow::Device) if !device_endpoint => {
            Err("the device flow needs `device_authorization_url`")
        }
        Some(OAuth2Flow::Browser) if !browser_endpoint => {
            Err("the browser flow needs `authorization_url`")
        }
        Some(f) => Ok(f),
        None if browser_endpoint && !device_endpoint => Ok(OAuth2Flow::Browser),
        None => Ok(OAuth2Flow::Device),
    }
}

fn oauth2_client(
    cx: &Cx,
    base: &Path,
    t: &RawOAuth2,
    span: Range<usize>,
    account: &str,
    ttl: Option<std::time::Duration>,
) -> Result<OAuth2Client, ConfigError> {
    let err = |key: &str, msg: &str| cx.err(span.clone(), Some(account), key, msg);
    let preset = Preset::of(t).map_err(|(key, msg)| err(key, msg))?;
    let url = |key: &str, given: &Option<Spanned<String>>, preset: Option<String>| {
        let Some(given) = given else {
            return Ok(preset);
        };
        let u = given.get_ref().trim();
        match crate::url::Url::parse(u) {
            Ok(_) => Ok(Some(u.to_string())),
            Err(why) => Err(cx.err(given.span(), Some(account), key, &why.to_string())),
        }
    };
    let token_url = url("oauth2.token_url", &t.token_url, preset.token_url)?.ok_or_else(|| {
        err(
            "oauth2.token_url",
            "required but missing (or set `provider = \"google\"` or `\"microsoft\"`)",
        )
    })?;
    let device_authorization_url = url(
        "oauth2.device_authorization_url",
        &t.device_authorization_url,
        preset.device_authorization_url,
    )?;
    let authorization_url = url(
        "oauth2.authorization_url",
        &t.authorization_url,
        preset.authorization_url,
    )?;
    let client_id = t.client_id.clone().unwrap_or_default();
    if client_id.trim().is_empty() || client_id.chars().any(char::is_control) {
        return Err(err(
            "oauth2.client_id",
            "required: the client ID of the OAuth2 app registered with the provider",
        ));
    }
    let refresh_token_file = t.refresh_token_file.as_ref().ok_or_else(|| {
        err(
            "oauth2.refresh_token_file",
            "required: where popfetch keeps the refresh token (`popfetch oauth2-authorize` \
             writes it)",
        )
    })?;
    let scope = t.scope.clone().unwrap_or_else(|| preset.scope.to_string());
    if scope.chars().any(char::is_control) {
        return Err(err("oauth2.scope", "must be a single line"));
    }
    let flow = flow(
        t.flow.or(preset.flow),
        device_authorization_url.is_some(),
        authorization_url.is_some(),
    )
    .map_err(|msg| err("oauth2.flow", msg))?;
    Ok(OAuth2Client {
        provider: t.provider,
        token_url,
        device_authorization_url,
        authorization_url,
        client_id: client_id.trim().to_string(),
        client_secret_file: t.client_secret_file.as_ref().map(|p| expand(base, p)),
        refresh_token_file: expand(base, refresh_token_file),
        scope: scope.split_whitespace().collect::<Vec<_>>().join(" "),
        ca_file: t
            .ca_file
            .as_ref()
            .map(|p| ca_path(base, p).map_err(|why| err("oauth2.ca_file", why)))
            .transpose()?,
        flow,
        ttl,
    })
}

/// Account names become file names in the state directory: keep them plain.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters long".into());
    }
    if name.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "may hold only letters, digits, '.', '_' and '-', not {c:?}"
        ));
    }
    Ok(())
}

/// `~/x` → `$HOME/x`; a relative path is taken relative to the config file's directory.
/// `tls_fingerprint`'s entries, each as `net::Fingerprint` reads it; why not, with the entry.
fn fingerprints(
    raw: Option<&[String]>,
    tls: TlsMode,
) -> Result<Vec<crate::net::Fingerprint>, String> {
    let raw = raw.unwrap_or_default();
    if !raw.is_empty() && tls == TlsMode::None {
        return Err(
            "pins a TLS certificate, but tls = \"none\": use tls = \"implicit\" or \"starttls\""
                .into(),
        );
    }
    if raw.len() > 16 {
        return Err(
            "at most 16 fingerprints (one or two are usual: the current and the next)".into(),
        );
    }
    raw.iter()
        .map(|f| f.parse().map_err(|e| format!("{f:?}: {e}")))
        .collect()
}

/// A `ca_file` as configured: an empty one would name the config's own directory, fail only at
/// the first connection, and read as "use the default" to a reader; it is refused here.
fn ca_path(base: &Path, p: &Path) -> Result<PathBuf, &'static str> {
    if p.as_os_str().is_empty() {
        return Err(
            "is empty; name a PEM file of trusted certificates, or remove the key to \
             use the system's trust store",
        );
    }
    Ok(expand(base, p))
}

/// Every `ca_file` must be a readable file when the config is loaded (by `check`, `fetch` and
/// the daemon), not found missing at the first connection. Kept out of [`parse`], which reads
/// no other file.
pub(super) fn ca_file_problems(path: &Path, accounts: &[Arc<Account>]) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    for (account, key, file) in ca_files(accounts) {
        let readable = std::fs::metadata(file).and_then(|m| {
            if m.is_file() {
                std::fs::File::open(file).map(drop)
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
        if let Err(e) = readable {
            problems.push(ConfigError {
                path: path.to_path_buf(),
                position: None,
                account: Some(account.to_string()),
                key: Some(key.into()),
                message: format!("cannot read {}: {e}", file.display()),
            });
        }
    }
    problems
}

/// Every `ca_file` of every account: (account, key, file).
pub(super) fn ca_files(accounts: &[Arc<Account>]) -> Vec<(&str, &'static str, &Path)> {
    let mut files = Vec::new();
    for a in accounts {
        let smtp = match &a.deliver {
            super::Deliver::Smtp(s) => s.ca_file.as_deref(),
            _ => None,
        };
        let oauth2 = match a.oauth2() {
            Some(super::OAuth2Source::Refresh(c)) => c.ca_file.as_deref(),
            _ => None,
        };
        for (key, file) in [
            ("ca_file", a.ca_file.as_deref()),
            ("deliver.smtp.ca_file", smtp),
            ("oauth2.ca_file", oauth2),
        ] {
            if let Some(file) = file {
                files.push((a.name.as_str(), key, file));
            }
        }
    }
    files
}

pub(super) fn expand(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = super::home()
    {
        return home.join(rest);
    }
    if p.is_relative() {
        base.join(p)
    } else {
        p.to_path_buf()
    }
}

pub(super) fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let position = e.span().map(|s| line_col(text, s.start));
    let mut message = super::hint::toml_message(text, e.span(), e.message());
    if let Some((line, _)) = position
        && let Some(src) = text.lines().nth(line - 1)
    {
        message.push_str(&format!(" (in `{}`)", src.trim()));
    }
    ConfigError {
        path: path.to_path_buf(),
        position,
        account: None,
        key: None,
        message,
    }
}

/// Where `key` (dotted: `deliver.smtp.to`) is written within `within` of `text`: each part is
/// looked for after the one before it, as `part =` at the start of a line or after `{` or `,`,
/// or as `.part]` in a table header. `None` when its last part is not there.
pub(super) fn key_offset(text: &str, within: Range<usize>, key: &str) -> Option<usize> {
    let region = text.get(within.clone())?;
    let mut from = 0;
    let mut found = None;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match find_key(&region[from..], part) {
            Some(at) => {
                from += at;
                found = Some(within.start + from);
            }
            None if last => return None,
            None => {}
        }
    }
    found
}

/// The text of the table whose header is at `header`: up to the next header that is not one
/// of its subtables (`[account.oauth2]` belongs to the `[[account]]` above it).
pub(super) fn table_region(text: &str, header: Range<usize>) -> Range<usize> {
    let name = text
        .get(header.clone())
        .unwrap_or_default()
        .trim_matches(['[', ']', ' ']);
    let sub = format!("{name}.");
    let mut at = header.end;
    for line in text
        .get(header.end..)
        .unwrap_or_default()
        .split_inclusive('\n')
    {
        let l = line.trim_start().trim_start_matches('[');
        let is_header =
            line.trim_start().starts_with('[') && l.starts_with(|c: char| c.is_ascii_alphabetic());
        if is_header && !l.starts_with(&sub) {
            break;
        }
        at += line.len();
    }
    header.start..at
}

/// The offset of `key` written as a key in `text`.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut searched = 0;
    while let Some(i) = text[searched..].find(key) {
        let at = searched + i;
        searched = at + key.len();
        let before = text[..at].trim_end_matches([' ', '\t']);
        let after = text[searched..].trim_start_matches([' ', '\t']);
        let starts = before.is_empty() || before.ends_with(['\n', '{', ',']);
        if (starts && after.starts_with('=')) || (before.ends_with('.') && after.starts_with(']')) {
            return Some(at);
        }
    }
    None
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
