//! From [`RawConfig`] to [`Config`], once: defaults applied, names and paths checked, every error
//! pointing at the file, line, column and key.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use super::raw::{
    AuthMethod, PermanentFailure, RawAccount, RawConfig, RawDeliver, RawSmtp, SizeAction, TlsMode,
};
use super::{
    Account, Config, DEFAULT_INTERVAL, DEFAULT_MAX_PARALLEL, DEFAULT_MDA_TIMEOUT,
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TIMEOUT, Deliver, LogTarget, PasswordSource, Smtp,
};
use crate::secret::Secret;

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

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        position: None,
        account: None,
        key: None,
        message: format!("cannot read it: {e}"),
    })?;
    let config = parse(path, &text)?;
    check_permissions(path, &text)?;
    Ok(config)
}

/// Refuses a config that others may change (it names the programs popfetch runs and where mail
/// goes), and one that holds a password and that group or others can read.
fn check_permissions(path: &Path, text: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o002 != 0 {
        return Err(ConfigError {
            path: path.to_path_buf(),
            position: None,
            account: None,
            key: None,
            message: format!(
                "the file is writable by others (mode {:04o}), who could make popfetch run any \
                 program; run `chmod o-w {}`",
                mode & 0o7777,
                path.display()
            ),
        });
    }
    let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let with_password = raw
        .defaults
        .iter()
        .chain(raw.account.iter())
        .find_map(|a| a.get_ref().password.as_ref());
    let Some(pw) = with_password else {
        return Ok(());
    };
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Err(ConfigError {
            path: path.to_path_buf(),
            position: Some(line_col(text, pw.span().start)),
            account: None,
            key: Some("password".into()),
            message: format!(
                "the file holds a password but is readable by group or others (mode {:04o}); \
                 run `chmod 600 {}`, or move the password to `password_file` or \
                 `password_command`",
                mode & 0o7777,
                path.display()
            ),
        });
    }
    Ok(())
}

/// Parses and validates config text; `path` names the file in errors and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
    let cx = Cx { path, text };
    let base = path.parent().unwrap_or(Path::new("."));

    let state_dir = match &raw.state_dir {
        Some(d) => expand(base, d.get_ref()),
        None => super::default_state_dir(),
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
    if let Some(level) = &raw.log_level
        && crate::cli::log_filter(level.get_ref()).is_none()
    {
        return Err(cx.err(
            level.span(),
            None,
            "log_level",
            "not a log level or filter (try \"info\", \"debug\" or \"popfetch=debug,warn\")",
        ));
    }
    let global_interval = raw.interval.unwrap_or(DEFAULT_INTERVAL);

    let mut names = HashSet::new();
    let mut accounts = Vec::new();
    for acc in &raw.account {
        let mut a = account(&cx, base, acc, &defaults)?;
        a.interval = acc
            .get_ref()
            .interval
            .or(defaults.interval)
            .unwrap_or(global_interval);
        if a.interval < std::time::Duration::from_secs(1) {
            return Err(cx.err(acc.span(), Some(&a.name), "interval", "must be at least 1s"));
        }
        if !names.insert(a.name.clone()) {
            return Err(cx.err(
                acc.get_ref().name.as_ref().map_or(acc.span(), |n| n.span()),
                Some(&a.name),
                "name",
                "another account has the same name",
            ));
        }
        accounts.push(Arc::new(a));
    }
    Ok(Config {
        path: path.to_path_buf(),
        state_dir,
        max_parallel,
        shutdown_timeout: raw.shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        log_target: raw.log_target.unwrap_or(LogTarget::Auto),
        log_level: raw.log_level.as_ref().map(|l| l.get_ref().clone()),
        accounts,
    })
}

struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn err(&self, span: Range<usize>, account: Option<&str>, key: &str, msg: &str) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            position: Some(line_col(self.text, span.start)),
            account: account.map(str::to_string),
            key: Some(key.to_string()),
            message: msg.to_string(),
        }
    }
}

fn account(
    cx: &Cx,
    base: &Path,
    spanned: &Spanned<RawAccount>,
    defaults: &RawAccount,
) -> Result<Account, ConfigError> {
    let raw = spanned.get_ref();
    let span = spanned.span();
    let Some(name) = &raw.name else {
        return Err(cx.err(span, None, "name", "every account needs a `name`"));
    };
    let name_str = name.get_ref().as_str();
    if let Err(why) = check_name(name_str) {
        return Err(cx.err(name.span(), Some(name_str), "name", &why));
    }
    let err = |key: &str, msg: &str| cx.err(span.clone(), Some(name_str), key, msg);

    let host = raw
        .host
        .as_ref()
        .or(defaults.host.as_ref())
        .ok_or_else(|| err("host", "required but missing"))?;
    let host_str = host.get_ref().trim();
    if host_str.is_empty() || host_str.contains(char::is_whitespace) {
        return Err(cx.err(
            host.span(),
            Some(name_str),
            "host",
            "must be a host name or address",
        ));
    }
    let tls = raw.tls.or(defaults.tls).unwrap_or(TlsMode::Implicit);
    let port = raw.port.or(defaults.port).unwrap_or(match tls {
        TlsMode::Implicit => 995,
        TlsMode::Starttls | TlsMode::None => 110,
    });
    if port == 0 {
        return Err(err("port", "must be between 1 and 65535"));
    }
    let user = raw
        .user
        .clone()
        .or_else(|| defaults.user.clone())
        .ok_or_else(|| err("user", "required but missing"))?;
    if user.is_empty() || user.contains(['\r', '\n', '\0']) {
        return Err(err("user", "must be a non-empty single line"));
    }

    // The account's own password source wins over the defaults' as a whole.
    let own = password_source(cx, base, raw, name_str, span.clone())?;
    let password = match own {
        Some(p) => p,
        None => password_source(cx, base, defaults, name_str, span.clone())?.ok_or_else(|| {
            err(
                "password",
                "no password: set one of `password`, `password_file` or `password_command`",
            )
        })?,
    };

    let auth = raw.auth.or(defaults.auth).unwrap_or(AuthMethod::Auto);
    let allow_plaintext_auth = raw
        .allow_plaintext_auth
        .or(defaults.allow_plaintext_auth)
        .unwrap_or(false);
    if tls == TlsMode::None
        && !allow_plaintext_auth
        && matches!(
            auth,
            AuthMethod::User
                | AuthMethod::Plain
                | AuthMethod::Login
                | AuthMethod::Xoauth2
                | AuthMethod::Oauthbearer
        )
    {
        return Err(err(
            "auth",
            "this method sends the password in clear text over an unencrypted connection; \
             use `tls = \"implicit\"` or `\"starttls\"`, or set `allow_plaintext_auth = true`",
        ));
    }
    let timeout = raw.timeout.or(defaults.timeout).unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        return Err(err("timeout", "must be longer than zero"));
    }
    let deliver = raw
        .deliver
        .as_ref()
        .or(defaults.deliver.as_ref())
        .ok_or_else(|| {
            err(
                "deliver",
                "required but missing, e.g. `deliver = { maildir = \"~/Maildir\" }`",
            )
        })?;
    let deliver_span = deliver.span();
    let deliver = match deliver.get_ref() {
        RawDeliver::Maildir(p) => Deliver::Maildir(expand(base, p)),
        RawDeliver::Mbox(p) => Deliver::Mbox(expand(base, p)),
        RawDeliver::Mda(argv) => {
            if argv.first().is_none_or(|a| a.is_empty()) {
                return Err(cx.err(
                    deliver_span,
                    Some(name_str),
                    "deliver.mda",
                    "must name a program: an argument list like [\"/usr/bin/procmail\", \"-d\", \"{user}\"]",
                ));
            }
            Deliver::Mda(argv.clone())
        }
        RawDeliver::Smtp(raw) => Deliver::Smtp(smtp(cx, base, raw, name_str, deliver_span)?),
    };
    let mda_timeout = raw
        .mda_timeout
        .or(defaults.mda_timeout)
        .unwrap_or(DEFAULT_MDA_TIMEOUT);
    if mda_timeout.is_zero() {
        return Err(err("mda_timeout", "must be longer than zero"));
    }
    let on_permanent_failure = raw
        .on_permanent_failure
        .or(defaults.on_permanent_failure)
        .unwrap_or(PermanentFailure::Keep);
    let quarantine = raw
        .quarantine
        .as_ref()
        .or(defaults.quarantine.as_ref())
        .map(|p| expand(base, p));
    if on_permanent_failure == PermanentFailure::Quarantine && quarantine.is_none() {
        return Err(err(
            "quarantine",
            "on_permanent_failure = \"quarantine\" needs `quarantine`, the Maildir to store refused messages in",
        ));
    }
    let ca_file = raw
        .ca_file
        .as_ref()
        .or(defaults.ca_file.as_ref())
        .map(|p| expand(base, p));
    let keep = raw.keep.or(defaults.keep).unwrap_or(false);

    let max_size = raw.max_size.as_ref().or(defaults.max_size.as_ref());
    if let Some(m) = max_size
        && m.get_ref().0 == 0
    {
        return Err(cx.err(m.span(), Some(name_str), "max_size", "must be more than 0"));
    }
    let max_size_action = raw
        .max_size_action
        .or(defaults.max_size_action)
        .unwrap_or(SizeAction::Keep);
    let delete_after = raw.delete_after.or(defaults.delete_after);
    if delete_after.is_some() && !keep {
        return Err(err(
            "delete_after",
            "only has a meaning with `keep = true` (without keep, messages are deleted as soon \
             as they are delivered)",
        ));
    }
    let max_messages_per_poll = raw
        .max_messages_per_poll
        .as_ref()
        .or(defaults.max_messages_per_poll.as_ref());
    if let Some(m) = max_messages_per_poll
        && *m.get_ref() == 0
    {
        return Err(cx.err(
            m.span(),
            Some(name_str),
            "max_messages_per_poll",
            "must be at least 1",
        ));
    }
    let max_bytes_per_poll = raw
        .max_bytes_per_poll
        .as_ref()
        .or(defaults.max_bytes_per_poll.as_ref());
    if let Some(m) = max_bytes_per_poll
        && m.get_ref().0 == 0
    {
        return Err(cx.err(
            m.span(),
            Some(name_str),
            "max_bytes_per_poll",
            "must be more than 0",
        ));
    }

    Ok(Account {
        name: name_str.to_string(),
        host: host_str.to_string(),
        port,
        tls,
        ca_file,
        tls_verify: raw.tls_verify.or(defaults.tls_verify).unwrap_or(true),
        user,
        password,
        auth,
        allow_plaintext_auth,
        keep,
        received_header: raw
            .received_header
            .or(defaults.received_header)
            .unwrap_or(true),
        timeout,
        deliver,
        mda_timeout,
        on_permanent_failure,
        quarantine,
        interval: DEFAULT_INTERVAL,
        max_size: max_size.map(|m| m.get_ref().0),
        max_size_action,
        delete_after,
        max_messages_per_poll: max_messages_per_poll.map(|m| *m.get_ref()),
        max_bytes_per_poll: max_bytes_per_poll.map(|m| m.get_ref().0),
        dedupe_message_id: raw
            .dedupe_message_id
            .or(defaults.dedupe_message_id)
            .unwrap_or(false),
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
    let host = raw.host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(err("deliver.smtp.host", "must be a host name or address"));
    }
    // Mail to a relay on this machine never leaves it; anywhere else, STARTTLS by default.
    let loopback = host == "localhost"
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
        if a.parse::<lettre::Address>().is_err() {
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
    if credentials.is_some() && tls == TlsMode::None {
        return Err(err(
            "deliver.smtp.tls",
            "an SMTP login over an unencrypted connection would send the password in clear text; use tls = \"starttls\" or \"implicit\"",
        ));
    }
    Ok(Smtp {
        host: host.to_string(),
        port,
        tls,
        ca_file: raw.ca_file.as_ref().map(|p| expand(base, p)),
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
fn expand(base: &Path, p: &Path) -> PathBuf {
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

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let position = e.span().map(|s| line_col(text, s.start));
    let mut message = e.message().trim().to_string();
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

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
