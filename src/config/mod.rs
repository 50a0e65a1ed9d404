//! Configuration: [`raw`] mirrors the TOML file, [`validate`](mod@validate) checks it once and
//! builds the immutable [`Config`] the rest of popfetch reads. Also where the config file and the
//! state directory are looked for.

pub mod check;
mod fingerprint;
mod hint;
pub mod include;
pub mod raw;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use check::{Finding, Severity};
pub use include::{Included, Reloaded, load, load_keeping};
pub use raw::{
    AuthMethod, LogTarget, OAuth2Flow, OAuth2Provider, PermanentFailure, SizeAction, TlsMode,
    parse_size,
};
pub use validate::{ConfigError, parse, state_dir_hint};

use crate::secret::Secret;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    /// The poll interval of an account that sets none.
    pub interval: Duration,
    /// Most polls at once across accounts.
    pub max_parallel: usize,
    /// Most polls at once to one server (host and port), so that many accounts at one
    /// provider do not open a connection each at once.
    pub max_parallel_per_server: usize,
    /// How long the daemon waits for polls in flight at shutdown.
    pub shutdown_timeout: Duration,
    /// `start_spread`: the window the daemon's first polls are spread over; unset, a slot per
    /// account up to a cap (see [`crate::scheduler::start_window`]).
    pub start_spread: Option<Duration>,
    pub log_target: LogTarget,
    /// A tracing filter directive (`info`, `debug`, `popfetch=debug,warn`), if set.
    pub log_level: Option<String>,
    /// Where the daemon serves `GET /metrics`; loopback unless `metrics_listen_public`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub metrics_listen_public: bool,
    /// The `*.prom` file the daemon replaces after each poll.
    pub metrics_textfile: Option<PathBuf>,
    /// `include`'s patterns, relative ones made the main file's directory's.
    pub include: Vec<PathBuf>,
    /// Every account: the main file's, then each included file's, in `included`'s order.
    pub accounts: Vec<Arc<Account>>,
    /// The files `include` named, sorted within each pattern, with their accounts.
    pub included: Vec<include::Included>,
    /// A digest of the main file's text: an included file whose own text did not change
    /// either is not read again at a reload.
    pub hash: u64,
}

/// One POP3 account with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    /// `tls_fingerprint`: the server known by these rather than by a CA and its name.
    pub tls_fingerprint: Vec<crate::net::Fingerprint>,
    /// `tls_min_version`: the oldest TLS version accepted from the server.
    pub tls_min_version: crate::net::TlsVersion,
    /// `tls_expiry_warning`: a server certificate ending sooner is warned of, once a day.
    pub tls_expiry_warning: Duration,
    /// `tls_client_cert` and `tls_client_key`: the certificate popfetch shows a server that
    /// asks for one, and its key (a secret file).
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub user: String,
    /// How the account logs in.
    pub credentials: Credentials,
    pub auth: AuthMethod,
    pub allow_plaintext_auth: bool,
    pub keep: bool,
    pub received_header: bool,
    pub timeout: Duration,
    pub deliver: Deliver,
    /// How long an MDA may run for one message before it is killed (a transient failure).
    pub mda_timeout: Duration,
    pub on_permanent_failure: PermanentFailure,
    /// The Maildir for `on_permanent_failure = "quarantine"`.
    pub quarantine: Option<PathBuf>,
    /// How often the daemon polls this account.
    pub interval: Duration,
    /// Messages larger than this (by their LIST size) are not fetched.
    pub max_size: Option<u64>,
    /// What happens to a message over `max_size`.
    pub max_size_action: SizeAction,
    /// With `keep`: delete a message from the server this long after popfetch delivered it.
    pub delete_after: Option<Duration>,
    /// Most messages fetched in one poll; the rest wait for the next.
    pub max_messages_per_poll: Option<usize>,
    /// Most bytes fetched in one poll (at least one message is always fetched).
    pub max_bytes_per_poll: Option<u64>,
    /// Skip (record as delivered) a message whose Message-ID and size were delivered for this
    /// account within [`DEDUPE_WINDOW`].
    pub dedupe_message_id: bool,
    /// `[account.route]`: the mailbox collects mail for many local recipients.
    pub route: Option<Route>,
}

/// `[account.route]`, checked: which envelope header to trust and where each address goes. The
/// decision itself is [`crate::route`]'s.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The header field's name, lower case.
    pub envelope_header: String,
    /// Which occurrence is trusted, counted from the top (1 is the topmost); every one if unset.
    pub envelope_header_index: Option<usize>,
    /// Lower case; addresses in other domains are not routed.
    pub local_domains: Vec<String>,
    /// `alice+tag@…` is looked up as `alice@…` when `alice+tag@…` has no entry.
    pub recipient_delimiter: Option<char>,
    /// `local@domain` (lower case) to its recipient.
    pub addresses: std::collections::BTreeMap<String, RouteTo>,
    /// `*@domain`: the domain (lower case) to its recipient.
    pub domains: std::collections::BTreeMap<String, RouteTo>,
    /// `*`: any other local address, and a message without one.
    pub any: Option<RouteTo>,
}

impl Route {
    /// Whether `r` may name a routed recipient: it goes into paths, an MDA's arguments, RCPT
    /// commands and the state journal, so only letters, digits and `.`, `_`, `+`, `-`, `=`, `@`
    /// are allowed, it starts with a letter or digit (never `-` or `.`), has no `..` and is at most
    /// 128 characters. A local part taken from a message (`{local}`) must pass it too.
    pub fn usable_recipient(r: &str) -> bool {
        r.len() <= 128
            && r.starts_with(|c: char| c.is_ascii_alphanumeric())
            && !r.contains("..")
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-=@".contains(c))
    }
}

/// Where a routed address goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTo {
    /// A recipient name; `{local}` stands for the address's local part.
    Recipient(String),
    /// Leave the message on the server, held and reported.
    Hold,
}

/// How long a delivered message's Message-ID digest is remembered for `dedupe_message_id`.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// How an account logs in: with a password, with an OAuth2 access token, or with its TLS
/// client certificate alone (SASL EXTERNAL), always exactly one.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    Password(PasswordSource),
    /// Where the access token comes from (see [`crate::oauth2`]).
    OAuth2(OAuth2Source),
    /// `tls_client_cert` and no password or token: the certificate is the credential, and
    /// `auth` is `external` or `auto` (which then means EXTERNAL).
    Certificate,
}

impl Account {
    /// Where the password comes from, when the account logs in with one.
    pub fn password(&self) -> Option<&PasswordSource> {
        match &self.credentials {
            Credentials::Password(p) => Some(p),
            Credentials::OAuth2(_) | Credentials::Certificate => None,
        }
    }

    /// Where the OAuth2 access token comes from, when the account logs in with one.
    pub fn oauth2(&self) -> Option<&OAuth2Source> {
        match &self.credentials {
            Credentials::OAuth2(o) => Some(o),
            Credentials::Password(_) | Credentials::Certificate => None,
        }
    }
}

/// Where the password comes from; read at each login, never stored elsewhere.
#[derive(Debug, Clone, PartialEq)]
pub enum PasswordSource {
    Inline(Secret<String>),
    /// The first line of this file.
    File(PathBuf),
    /// The first line of this program's output; an argv list, run without a shell.
    Command(Vec<String>),
}

/// Where an account's OAuth2 access token comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum OAuth2Source {
    /// `oauth2_token_command`: its output is the token (an argument list, run without a shell).
    /// `ttl` is how long a token is reused when the output names no lifetime; without it the
    /// command runs before every login.
    Command {
        argv: Vec<String>,
        ttl: Option<Duration>,
    },
    /// `[account.oauth2]`: popfetch refreshes the token itself.
    Refresh(Box<OAuth2Client>),
}

/// The built-in refresh: an OAuth2 client registration and where its refresh token lives.
/// Holds no secret itself: the client secret and the refresh token are read from their files.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Client {
    pub provider: Option<OAuth2Provider>,
    /// An `https://` URL (RFC 6749 §3.2).
    pub token_url: String,
    /// RFC 8628 §3.1, for `popfetch oauth2-authorize` with the device flow.
    pub device_authorization_url: Option<String>,
    /// RFC 6749 §3.1, for `popfetch oauth2-authorize` with the browser flow.
    pub authorization_url: Option<String>,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub refresh_token_file: PathBuf,
    /// Space-separated scopes (RFC 6749 §3.3).
    pub scope: String,
    pub ca_file: Option<PathBuf>,
    /// The flow `oauth2-authorize` uses unless told otherwise.
    pub flow: OAuth2Flow,
    /// How long an access token is reused when the provider names no lifetime.
    pub ttl: Option<Duration>,
}

/// The delivery target of an account.
#[derive(Debug, Clone, PartialEq)]
pub enum Deliver {
    Maildir(PathBuf),
    /// An mboxrd file.
    Mbox(PathBuf),
    /// An MDA's argument list; `{from}`, `{account}` and `{user}` are replaced when they make up
    /// a whole argument.
    Mda(Vec<String>),
    Smtp(Box<Smtp>),
    Lmtp(Lmtp),
}

/// An LMTP server (RFC 2033) on a Unix socket or over TCP.
#[derive(Debug, Clone, PartialEq)]
pub struct Lmtp {
    pub at: LmtpAt,
    /// The recipients, `{user}` already replaced by the account's user.
    pub to: Vec<String>,
    /// Overrides the envelope sender taken from the message.
    pub from: Option<String>,
    /// The name LHLO gives; the host name when unset.
    pub lhlo: Option<String>,
}

/// Where the LMTP server listens.
#[derive(Debug, Clone, PartialEq)]
pub enum LmtpAt {
    Socket(PathBuf),
    Tcp {
        host: String,
        port: u16,
        tls: TlsMode,
        ca_file: Option<PathBuf>,
    },
}

/// An SMTP relay target.
#[derive(Debug, Clone, PartialEq)]
pub struct Smtp {
    /// The relay's Unix socket. When set, nothing of TCP applies: `host` is `localhost` (for
    /// messages only), `tls` is `None`, and no TLS setting is given.
    pub socket: Option<PathBuf>,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// The relay's own `tls_fingerprint`, `tls_min_version` and client certificate.
    pub tls_fingerprint: Vec<crate::net::Fingerprint>,
    pub tls_min_version: crate::net::TlsVersion,
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub to: Vec<String>,
    /// Overrides the envelope sender taken from the message.
    pub from: Option<String>,
    pub helo: Option<String>,
    pub credentials: Option<(String, PasswordSource)>,
}

/// Default poll interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Default for `max_parallel`.
pub const DEFAULT_MAX_PARALLEL: usize = 8;
/// Default for `max_parallel_per_server`: what providers commonly allow one client address.
pub const DEFAULT_MAX_PARALLEL_PER_SERVER: usize = 4;
/// Default for `tls_expiry_warning`.
pub const DEFAULT_TLS_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// Default for `shutdown_timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for `mda_timeout`.
pub const DEFAULT_MDA_TIMEOUT: Duration = Duration::from_secs(300);

/// Default for `timeout`: how long any single network wait may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl Config {
    pub fn account(&self, name: &str) -> Option<&Arc<Account>> {
        self.accounts.iter().find(|a| a.name == name)
    }
}

/// The config file to read: `-c`, else `$POPFETCH_CONFIG`, else
/// `$XDG_CONFIG_HOME/popfetch/config.toml` (or `~/.config/...`) when it exists, else
/// `/etc/popfetch/config.toml`.
pub fn default_path(cli: Option<&Path>) -> PathBuf {
    find(cli).unwrap_or_else(|_| PathBuf::from(SYSTEM_CONFIG))
}

/// The config file of the system, read when the user has none.
pub const SYSTEM_CONFIG: &str = "/etc/popfetch/config.toml";

/// As [`default_path`], but when nothing names a file and none of the usual places has one,
/// `Err` with every place looked at, so that the error can name them all.
pub fn find(cli: Option<&Path>) -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = cli {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("POPFETCH_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let user_config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
        .map(|d| d.join("popfetch/config.toml"));
    let tried: Vec<PathBuf> = user_config
        .into_iter()
        .chain([PathBuf::from(SYSTEM_CONFIG)])
        .collect();
    match tried.iter().find(|p| p.exists()) {
        Some(p) => Ok(p.clone()),
        None => Err(tried),
    }
}

/// The default state directory: `$STATE_DIRECTORY` (set by systemd), else `/var/lib/popfetch`
/// for root, else `$XDG_STATE_HOME/popfetch` (or `~/.local/state/popfetch`). `None` when none of
/// these gives an absolute path: the state is never put relative to the working directory,
/// where another run would not find it.
pub fn default_state_dir() -> Option<PathBuf> {
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    if let Some(dirs) = std::env::var_os("STATE_DIRECTORY").filter(|p| !p.is_empty()) {
        // systemd passes a colon-separated list when several directories are configured.
        let dirs = dirs.to_string_lossy().into_owned();
        let first = dirs.split(':').next().unwrap_or_default();
        if let Some(p) = absolute(PathBuf::from(first)) {
            return Some(p);
        }
    }
    if is_root() {
        return Some(PathBuf::from("/var/lib/popfetch"));
    }
    // The XDG base directory spec: a relative XDG_STATE_HOME is invalid and ignored.
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .and_then(absolute)
        .or_else(|| home().and_then(absolute).map(|h| h.join(".local/state")))
        .map(|d| d.join("popfetch"))
}

pub(crate) fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the effective uid, without unsafe code or a libc binding.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
