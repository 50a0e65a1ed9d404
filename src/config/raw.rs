//! The serde mirror of the TOML file. Everything optional, unknown keys refused; meaning and
//! defaults are applied in [`super::validate`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use crate::logging::LogTarget;
use crate::pop3::login::{CONFIG_NAMES, Method};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub state_dir: Option<Spanned<PathBuf>>,
    /// Default poll interval of every account.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    pub max_parallel: Option<Spanned<usize>>,
    /// Most polls at once to one server (host and port).
    pub max_parallel_per_server: Option<Spanned<usize>>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    /// The window the daemon spreads its first polls over after a start.
    #[serde(default, with = "humantime_serde")]
    pub start_spread: Option<Duration>,
    pub log_target: Option<LogTarget>,
    pub log_level: Option<Spanned<String>>,
    /// The daemon's Prometheus endpoint, `IP:port`.
    pub metrics_listen: Option<Spanned<String>>,
    /// Allows `metrics_listen` on an address other than loopback.
    pub metrics_listen_public: Option<Spanned<bool>>,
    /// The file the daemon writes its metrics to for node_exporter's textfile collector.
    pub metrics_textfile: Option<Spanned<PathBuf>>,
    /// Files of more `[[account]]` tables: paths or patterns (`conf.d/*.toml`).
    pub include: Option<Spanned<Vec<Spanned<String>>>>,
    pub defaults: Option<Spanned<RawAccount>>,
    #[serde(default)]
    pub account: Vec<Spanned<RawAccount>>,
}

/// A file `include` names: accounts only; the rest of the settings are the main file's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncluded {
    #[serde(default)]
    pub account: Vec<Spanned<RawAccount>>,
}

/// One `[[account]]` table; `[defaults]` has the same keys.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<u16>,
    pub tls: Option<TlsMode>,
    pub ca_file: Option<PathBuf>,
    pub tls_verify: Option<bool>,
    /// The server's certificate or public key fingerprints, `sha256:…` / `spki-sha256:…`.
    pub tls_fingerprint: Option<Vec<String>>,
    /// The oldest TLS version accepted: "1.2" (the default) or "1.3".
    pub tls_min_version: Option<crate::net::TlsVersion>,
    /// How long before the server certificate's end a warning is logged (once a day).
    #[serde(default, with = "humantime_serde")]
    pub tls_expiry_warning: Option<Duration>,
    /// A client certificate (PEM) for servers that ask for one, and its key.
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Spanned<String>>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<Vec<String>>,
    /// A program whose output is the OAuth2 access token; an argument list, run without a shell.
    pub oauth2_token_command: Option<Vec<String>>,
    /// How long a token is reused when its source reports no lifetime.
    #[serde(default, with = "humantime_serde")]
    pub oauth2_token_ttl: Option<Duration>,
    /// Built-in OAuth2 refresh: `oauth2 = { ... }` or `[account.oauth2]`.
    pub oauth2: Option<Spanned<RawOAuth2>>,
    pub auth: Option<AuthMethod>,
    pub allow_plaintext_auth: Option<bool>,
    pub keep: Option<bool>,
    pub received_header: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub deliver: Option<Spanned<RawDeliver>>,
    #[serde(default, with = "humantime_serde")]
    pub mda_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    pub on_permanent_failure: Option<PermanentFailure>,
    pub quarantine: Option<PathBuf>,
    pub max_size: Option<Spanned<Size>>,
    pub max_size_action: Option<SizeAction>,
    #[serde(default, with = "humantime_serde")]
    pub delete_after: Option<Duration>,
    pub max_messages_per_poll: Option<Spanned<usize>>,
    pub max_bytes_per_poll: Option<Spanned<Size>>,
    pub dedupe_message_id: Option<bool>,
    /// `[account.route]`: one mailbox for many local recipients.
    pub route: Option<Spanned<RawRoute>>,
}

/// `[account.route]`: route each message of a shared mailbox by a trusted envelope header.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub envelope_header: Option<String>,
    /// Which occurrence to trust, counted from the top (1 is the topmost); every one if unset.
    pub envelope_header_index: Option<usize>,
    #[serde(default)]
    pub local_domains: Vec<String>,
    pub recipient_delimiter: Option<String>,
    /// Address pattern (`local@domain`, `*@domain`, `*`) to recipient or `"hold"`.
    #[serde(default)]
    pub map: std::collections::BTreeMap<String, String>,
}

impl RawAccount {
    /// This account's table with every key it leaves out taken from `[defaults]`, in one step.
    /// A value keeps its place in the file (its span), so an error about it points where it was
    /// written. The login credential is the exception: the account's choice (any of `password`,
    /// `password_file`, `password_command`, `oauth2_token_command`, `oauth2`) wins over the
    /// defaults' as a whole, and only its `oauth2` table is completed key by key from the
    /// defaults' one, so that a client registration can be shared. An account's own
    /// `auth = "external"` is such a choice too: the certificate, and no password of the
    /// defaults'.
    pub fn merged_with(&self, d: &RawAccount) -> RawAccount {
        fn or<T: Clone>(own: &Option<T>, default: &Option<T>) -> Option<T> {
            own.as_ref().or(default.as_ref()).cloned()
        }
        let own_login = self.password.is_some()
            || self.password_file.is_some()
            || self.password_command.is_some()
            || self.oauth2_token_command.is_some()
            || self.oauth2.is_some()
            || self.auth == Some(AuthMethod::Only(Method::External));
        let login = if own_login { self } else { d };
        let oauth2 = match &self.oauth2 {
            Some(t) => Some(Spanned::new(
                t.span(),
                t.get_ref()
                    .merged_with(d.oauth2.as_ref().map(Spanned::get_ref)),
            )),
            None => login.oauth2.clone(),
        };
        RawAccount {
            name: self.name.clone(),
            host: or(&self.host, &d.host),
            port: self.port.or(d.port),
            tls: self.tls.or(d.tls),
            ca_file: or(&self.ca_file, &d.ca_file),
            tls_verify: self.tls_verify.or(d.tls_verify),
            tls_fingerprint: or(&self.tls_fingerprint, &d.tls_fingerprint),
            tls_min_version: self.tls_min_version.or(d.tls_min_version),
            tls_expiry_warning: self.tls_expiry_warning.or(d.tls_expiry_warning),
            tls_client_cert: or(&self.tls_client_cert, &d.tls_client_cert),
            tls_client_key: or(&self.tls_client_key, &d.tls_client_key),
            user: or(&self.user, &d.user),
            password: login.password.clone(),
            password_file: login.password_file.clone(),
            password_command: login.password_command.clone(),
            oauth2_token_command: login.oauth2_token_command.clone(),
            oauth2_token_ttl: self.oauth2_token_ttl.or(d.oauth2_token_ttl),
            oauth2,
            auth: self.auth.or(d.auth),
            allow_plaintext_auth: self.allow_plaintext_auth.or(d.allow_plaintext_auth),
            keep: self.keep.or(d.keep),
            received_header: self.received_header.or(d.received_header),
            timeout: self.timeout.or(d.timeout),
            deliver: or(&self.deliver, &d.deliver),
            mda_timeout: self.mda_timeout.or(d.mda_timeout),
            interval: self.interval.or(d.interval),
            on_permanent_failure: self.on_permanent_failure.or(d.on_permanent_failure),
            quarantine: or(&self.quarantine, &d.quarantine),
            max_size: or(&self.max_size, &d.max_size),
            max_size_action: self.max_size_action.or(d.max_size_action),
            delete_after: self.delete_after.or(d.delete_after),
            max_messages_per_poll: or(&self.max_messages_per_poll, &d.max_messages_per_poll),
            max_bytes_per_poll: or(&self.max_bytes_per_poll, &d.max_bytes_per_poll),
            dedupe_message_id: self.dedupe_message_id.or(d.dedupe_message_id),
            route: or(&self.route, &d.route),
        }
    }
}

impl RawOAuth2 {
    /// This table with every key it leaves out taken from `defaults`.
    pub fn merged_with(&self, defaults: Option<&RawOAuth2>) -> RawOAuth2 {
        let Some(d) = defaults else {
            return self.clone();
        };
        let d = d.clone();
        RawOAuth2 {
            provider: self.provider.or(d.provider),
            tenant: self.tenant.clone().or(d.tenant),
            token_url: self.token_url.clone().or(d.token_url),
            device_authorization_url: self
                .device_authorization_url
                .clone()
                .or(d.device_authorization_url),
            authorization_url: self.authorization_url.clone().or(d.authorization_url),
            client_id: self.client_id.clone().or(d.client_id),
            client_secret_file: self.client_secret_file.clone().or(d.client_secret_file),
            refresh_token_file: self.refresh_token_file.clone().or(d.refresh_token_file),
            scope: self.scope.clone().or(d.scope),
            ca_file: self.ca_file.clone().or(d.ca_file),
            flow: self.flow.or(d.flow),
        }
    }
}

/// What to do with a message larger than `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeAction {
    /// Leave it on the server, unread; it is reported once.
    Keep,
    /// Delete it from the server unread.
    Delete,
}

/// A byte count: an integer, or a string with a unit (`"50MiB"`, `"10 MB"`, `"512k"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size: a number of bytes, or a string such as \"50MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"50MiB"`, `"10 MB"`, `"512k"`, `"1000"`: decimal (k, M, G = 1000^n) and binary
/// (KiB, MiB, GiB = 1024^n) units, case-insensitive, optional `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as \"50MiB\" or \"10MB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "ti" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit; use B, KB, KiB, MB, MiB, GB, GiB, TB or TiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// `oauth2 = { ... }`: where popfetch exchanges a refresh token for access tokens. In
/// `[defaults]` it is merged key by key under each account's own table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    pub provider: Option<OAuth2Provider>,
    /// Microsoft's directory (tenant) for the preset URLs; `common` by default.
    pub tenant: Option<String>,
    pub token_url: Option<Spanned<String>>,
    pub device_authorization_url: Option<Spanned<String>>,
    pub authorization_url: Option<Spanned<String>>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub refresh_token_file: Option<PathBuf>,
    pub scope: Option<String>,
    /// Extra trust anchors for the provider's HTTPS endpoints (tests, private providers).
    pub ca_file: Option<PathBuf>,
    /// How `popfetch oauth2-authorize` obtains the first refresh token.
    pub flow: Option<OAuth2Flow>,
}

/// A provider whose endpoints and scope popfetch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OAuth2Provider {
    Google,
    Microsoft,
}

/// The first authorization's flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OAuth2Flow {
    /// RFC 8628 device authorization: a code to enter on any device with a browser.
    Device,
    /// Authorization code with PKCE: a URL to open, the answer caught on a loopback port or
    /// pasted back.
    Browser,
}

/// What to do with a message a backend refuses for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PermanentFailure {
    /// Leave it on the server; do not try it again until its delivery settings change or
    /// `popfetch retry ACCOUNT` runs.
    Keep,
    /// Store it in the `quarantine` Maildir; it then counts as delivered.
    Quarantine,
}

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (POP3S, port 995).
    Implicit,
    /// Clear text, then `STLS` (RFC 2595); the session fails if the upgrade does not happen.
    Starttls,
    /// No encryption at all.
    None,
}

/// Which login method to use: `auto`, or one method by the name [`Method::config_name`] gives
/// it (the method names live in one place, [`crate::pop3::login`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// The strongest method the server offers.
    Auto,
    /// This method and no other.
    Only(Method),
}

impl AuthMethod {
    /// The name the configuration uses.
    pub fn config_name(self) -> &'static str {
        match self {
            AuthMethod::Auto => "auto",
            AuthMethod::Only(m) => m.config_name(),
        }
    }

    /// The method asked for; `None` for `auto`.
    pub fn only(self) -> Option<Method> {
        match self {
            AuthMethod::Auto => None,
            AuthMethod::Only(m) => Some(m),
        }
    }
}

impl<'de> Deserialize<'de> for AuthMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == "auto" {
            return Ok(AuthMethod::Auto);
        }
        Method::from_config_name(&name)
            .map(AuthMethod::Only)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, CONFIG_NAMES))
    }
}

/// Where messages go; one key per backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RawDeliver {
    Maildir(PathBuf),
    Mbox(PathBuf),
    /// An argument list, run without a shell.
    Mda(Vec<String>),
    Smtp(Box<RawSmtp>),
    Lmtp(Box<RawLmtp>),
}

/// `deliver = { lmtp = { socket = ... } }` or `{ lmtp = { host = ... } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLmtp {
    pub socket: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<TlsMode>,
    pub ca_file: Option<PathBuf>,
    pub to: Vec<String>,
    pub from: Option<String>,
    pub lhlo: Option<String>,
}

/// `deliver = { smtp = { host = ... } }` or `{ smtp = { socket = ... } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub host: Option<String>,
    pub socket: Option<PathBuf>,
    pub port: Option<u16>,
    pub tls: Option<TlsMode>,
    pub ca_file: Option<PathBuf>,
    /// As the account's keys of the same names, for the relay's TLS.
    pub tls_fingerprint: Option<Vec<String>>,
    pub tls_min_version: Option<crate::net::TlsVersion>,
    pub tls_client_cert: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    pub to: Vec<String>,
    pub from: Option<String>,
    pub helo: Option<String>,
    pub user: Option<String>,
    pub password: Option<Spanned<String>>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<Vec<String>>,
}
