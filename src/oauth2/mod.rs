//! OAuth2 access tokens for XOAUTH2 / OAUTHBEARER logins: where they come from, how long they
//! are reused, and the first authorization (`popfetch oauth2-authorize`).
//!
//! The login path calls two functions:
//!
//! - [`access_token`]`(account, state_dir)` before each login of an account whose
//!   [`Account::oauth2`] is set. It answers from the cache while the token has more than
//!   [`EXPIRY_MARGIN`] left, else runs `oauth2_token_command` or exchanges the refresh token at
//!   the token endpoint (RFC 6749 §6), writing a rotated refresh token back atomically.
//! - [`invalidate`]`(account, state_dir)` after the server refused a token, so the next login
//!   fetches a fresh one instead of retrying the cached one until it expires.
//!
//! Caching: in memory, keyed by account name and checked against a fingerprint of the token
//! source (a reload that changes the source never reuses a token of the old one) and of the
//! refresh token (a new authorization never reuses a token of the old grant). Tokens from the
//! built-in refresh are also kept in `STATE_DIR/ACCOUNT.oauth2-token` (mode 0600, replaced
//! atomically), so `popfetch fetch` from cron every few minutes does not refresh at each run;
//! that file holds nothing the refresh token file does not already grant. A command's tokens
//! stay in memory: a helper like `oama` keeps its own cache, and its output is its business.
//!
//! Secrets (tokens, the client secret) live in [`Secret`]s; errors and logs name the source,
//! never a value. Nothing a provider sends is trusted: answers are size-capped, parsed
//! strictly, and quoted back only clipped and stripped of control characters.

pub mod authorize;
pub mod http;

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::{Account, OAuth2Client, OAuth2Source};
use crate::secret::Secret;
use http::clip;

/// A token is not used when it has less than this left: the login that follows takes a few
/// round trips, and clocks differ.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Longest output (stdout) taken from `oauth2_token_command`.
const MAX_COMMAND_OUTPUT: usize = 64 * 1024;
/// Most stderr kept from a failing `oauth2_token_command` for the error message.
const MAX_COMMAND_STDERR: usize = 4 * 1024;
/// Longest access or refresh token accepted. Microsoft's JWTs are 2–4 KiB.
const MAX_TOKEN: usize = 16 * 1024;
/// Longest lifetime believed (a year): a bigger `expires_in` is a broken or hostile answer.
const MAX_LIFETIME: u64 = 365 * 24 * 3600;

/// Why no token could be had. Messages are lowercase, context first, and never hold a secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuth2Error {
    #[error("{message}")]
    Config { account: String, message: String },
    #[error("oauth2_token_command {program:?}: {why}")]
    Command { program: String, why: String },
    #[error("oauth2 token endpoint {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: http::HttpError,
    },
    /// An error answer (RFC 6749 §5.2) other than a refused grant.
    #[error(
        "oauth2 token endpoint {url} refused the request: {error}{}",
        describe(description)
    )]
    Refused {
        url: String,
        status: u16,
        error: String,
        description: Option<String>,
    },
    /// `invalid_grant`: the refresh token is expired, revoked or was issued to someone else.
    #[error(
        "oauth2 token endpoint {url} refused the refresh token of account {account} \
         (invalid_grant{}); run `popfetch oauth2-authorize {account}` to authorize popfetch again",
        describe(description)
    )]
    Revoked {
        url: String,
        account: String,
        description: Option<String>,
    },
    #[error("oauth2 token endpoint {url}: {why}")]
    BadAnswer { url: String, why: String },
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn describe(d: &Option<String>) -> String {
    match d.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

impl OAuth2Error {
    /// Whether the next poll may succeed without the user doing anything: network trouble, a
    /// provider's bad moment, a helper that failed. A refused grant or a config problem needs
    /// the user.
    pub fn is_transient(&self) -> bool {
        match self {
            OAuth2Error::Http { source, .. } => source.is_transient(),
            OAuth2Error::Refused { status, error, .. } => {
                *status >= 500 || error == "temporarily_unavailable"
            }
            OAuth2Error::BadAnswer { .. } | OAuth2Error::Command { .. } => true,
            OAuth2Error::Revoked { .. }
            | OAuth2Error::Config { .. }
            | OAuth2Error::File { .. }
            | OAuth2Error::Other(_) => false,
        }
    }
}

/// An access token and when it stops being usable (`None`: use it once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub access_token: Secret<String>,
    pub expires_at: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct Cached {
    /// [`source_fingerprint`] plus, for the built-in refresh, the refresh token's.
    key: String,
    token: Token,
}

static CACHE: Mutex<Option<HashMap<String, Cached>>> = Mutex::new(None);

/// The access token for `account`'s next login (see the module docs for where it comes from).
/// The account must have an OAuth2 token source; `state_dir` holds the token cache file.
pub async fn access_token(
    account: &Account,
    state_dir: &Path,
) -> Result<Secret<String>, OAuth2Error> {
    let Some(source) = account.oauth2() else {
        return Err(OAuth2Error::Config {
            account: account.name.clone(),
            message: "no OAuth2 token source is configured".into(),
        });
    };
    let now = SystemTime::now();
    match source {
        OAuth2Source::Command { argv, ttl } => {
            let key = source_fingerprint(source);
            if let Some(t) = cache_get(&account.name, &key, now) {
                return Ok(t);
            }
            let token = run_command(argv, *ttl, account.timeout, now).await?;
            cache_put(&account.name, &key, &token);
            Ok(token.access_token)
        }
        OAuth2Source::Refresh(client) => {
            let refresh = read_refresh_token(&account.name, client)?;
            let key = format!(
                "{}/{}",
                source_fingerprint(source),
                fingerprint(refresh.expose())
            );
            if let Some(t) = cache_get(&account.name, &key, now) {
                return Ok(t);
            }
            let file = cache_file(state_dir, &account.name);
            if let Some(token) = read_cache_file(&file, &key, now) {
                cache_put(&account.name, &key, &token);
                return Ok(token.access_token);
            }
            let answer = refresh_grant(&account.name, client, &refresh, account.timeout).await?;
            let key = match &answer.refresh_token {
                Some(new) if new.expose() != refresh.expose() => {
                    write_secret_file(&client.refresh_token_file, new.expose())?;
                    tracing::info!(account = account.name, "oauth2 refresh token rotated");
                    format!(
                        "{}/{}",
                        source_fingerprint(source),
                        fingerprint(new.expose())
                    )
                }
                _ => key,
            };
            let token = answer.token(now, client.ttl);
            cache_put(&account.name, &key, &token);
            if let Err(e) = write_cache_file(&file, &key, &token) {
                // Only a cost: the next process refreshes again.
                tracing::warn!(account = account.name, error = %e, "cannot write the oauth2 token cache: {e}");
            }
            Ok(token.access_token)
        }
    }
}

/// Forgets `account`'s cached access token (after the server refused it), in memory and in
/// `state_dir`.
pub fn invalidate(account: &Account, state_dir: &Path) {
    if let Some(map) = CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
    {
        map.remove(&account.name);
    }
    let _ = std::fs::remove_file(cache_file(state_dir, &account.name));
}

fn cache_get(account: &str, key: &str, now: SystemTime) -> Option<Secret<String>> {
    let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    match map.get(account) {
        Some(c) if c.key == key && usable(&c.token, now) => Some(c.token.access_token.clone()),
        Some(_) => {
            map.remove(account);
            None
        }
        None => None,
    }
}

fn cache_put(account: &str, key: &str, token: &Token) {
    if token.expires_at.is_none() {
        return;
    }
    CACHE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(
            account.to_string(),
            Cached {
                key: key.to_string(),
                token: token.clone(),
            },
        );
}

/// Whether `token` may still be used at `now`, with [`EXPIRY_MARGIN`] to spare.
pub fn usable(token: &Token, now: SystemTime) -> bool {
    token.expires_at.is_some_and(|at| {
        at.duration_since(now)
            .is_ok_and(|left| left > EXPIRY_MARGIN)
    })
}

/// A stable digest of what defines a token source (nothing secret is in it).
fn source_fingerprint(source: &OAuth2Source) -> String {
    let text = match source {
        OAuth2Source::Command { argv, .. } => format!("command\0{}", argv.join("\0")),
        OAuth2Source::Refresh(c) => format!(
            "refresh\0{}\0{}\0{}\0{}",
            c.token_url,
            c.client_id,
            c.scope,
            c.refresh_token_file.display()
        ),
    };
    fingerprint(&text)
}

/// Hex SHA-256, shortened: a one-way name for a value, safe to store next to the token.
fn fingerprint(text: &str) -> String {
    let d = openssl::sha::sha256(text.as_bytes());
    crate::text::hex(&d[..16])
}

/// The token cache file of an account.
pub fn cache_file(state_dir: &Path, account: &str) -> PathBuf {
    state_dir.join(format!("{account}.oauth2-token"))
}

/// The cached token in `file`, if it belongs to `key` and is still usable. Any problem with
/// the file only means a refresh.
fn read_cache_file(file: &Path, key: &str, now: SystemTime) -> Option<Token> {
    let meta = std::fs::metadata(file).ok()?;
    if meta.permissions().mode() & 0o077 != 0 || meta.len() > MAX_TOKEN as u64 * 2 {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if v.get("key")?.as_str()? != key {
        return None;
    }
    let token = Token {
        access_token: Secret::new(checked_token(v.get("access_token")?.as_str()?).ok()?),
        // Checked: `SystemTime + Duration` panics past the clock's range.
        expires_at: Some(
            UNIX_EPOCH.checked_add(Duration::from_secs(v.get("expires_at")?.as_u64()?))?,
        ),
    };
    usable(&token, now).then_some(token)
}

fn write_cache_file(file: &Path, key: &str, token: &Token) -> Result<(), OAuth2Error> {
    let Some(at) = token.expires_at else {
        return Ok(());
    };
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let v = serde_json::json!({
        "key": key,
        "access_token": token.access_token.expose(),
        "expires_at": secs,
    });
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|source| OAuth2Error::File {
            what: "cannot create the state directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write_secret_file(file, &v.to_string())
}

/// Replaces `path` with `text` (plus a newline) atomically: a 0600 temp file in the same
/// directory, fsync'd, renamed over it, and the directory fsync'd. A crash leaves the old file
/// or the new one, never a torn one.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), OAuth2Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file_err = |what, source| OAuth2Error::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    let nonce: u64 = {
        let mut b = [0u8; 8];
        openssl::rand::rand_bytes(&mut b).map_err(|e| OAuth2Error::Other(e.to_string()))?;
        u64::from_le_bytes(b)
    };
    let tmp = dir.join(format!(".{name}.{}.{nonce:016x}.tmp", std::process::id()));
    // A fresh name, created afresh and never through a symlink.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| file_err("cannot write", e))?;
    let parts: [&[u8]; 2] = [text.as_bytes(), b"\n"];
    crate::durable::replace(f, &tmp, path, &dir, &parts, crate::durable::Sync::Durable)
        .map_err(|e| file_err("cannot write", e))
}

/// The first line of a secret file (a refresh token or a client secret). Refuses a file that
/// others may read or change.
fn read_secret_file(what: &'static str, path: &Path) -> Result<Secret<String>, OAuth2Error> {
    let meta = std::fs::metadata(path).map_err(|source| OAuth2Error::File {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    crate::trust::secret_file(what, path, &meta, true)
        .map_err(|e| OAuth2Error::Other(e.to_string()))?;
    if meta.len() > MAX_TOKEN as u64 {
        return Err(OAuth2Error::Other(format!(
            "{what} {} is larger than {} KiB",
            path.display(),
            MAX_TOKEN / 1024
        )));
    }
    let text = Secret::new(std::fs::read(path).map_err(|source| OAuth2Error::File {
        what,
        path: path.to_path_buf(),
        source,
    })?);
    let line = text
        .expose()
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = std::str::from_utf8(line).unwrap_or_default().trim();
    if line.is_empty() {
        return Err(OAuth2Error::Other(format!(
            "{what} {} is empty or not text",
            path.display()
        )));
    }
    Ok(Secret::new(line.to_string()))
}

fn read_refresh_token(account: &str, client: &OAuth2Client) -> Result<Secret<String>, OAuth2Error> {
    if !client.refresh_token_file.exists() {
        return Err(OAuth2Error::Other(format!(
            "account {account} has no refresh token yet ({} does not exist); run \
             `popfetch oauth2-authorize {account}`",
            client.refresh_token_file.display()
        )));
    }
    read_secret_file("refresh token file", &client.refresh_token_file)
}

pub(crate) fn read_client_secret(
    client: &OAuth2Client,
) -> Result<Option<Secret<String>>, OAuth2Error> {
    client
        .client_secret_file
        .as_deref()
        .map(|p| read_secret_file("client secret file", p))
        .transpose()
}

/// Checks that a token can travel in a SASL exchange (RFC 6750 §2.1 `b6token` is stricter;
/// providers stay within visible ASCII) and returns it.
pub fn checked_token(t: &str) -> Result<String, &'static str> {
    let t = t.trim();
    if t.is_empty() {
        return Err("the token is empty");
    }
    if t.len() > MAX_TOKEN {
        return Err("the token is too long");
    }
    if !t.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err("the token holds characters a bearer token cannot have");
    }
    Ok(t.to_string())
}

/// A successful token answer (RFC 6749 §5.1).
#[derive(Debug)]
pub struct Grant {
    pub access_token: Secret<String>,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<Secret<String>>,
}

impl Grant {
    /// The token with its expiry: `expires_in`, else `ttl`, else none (use it once).
    pub fn token(&self, now: SystemTime, ttl: Option<Duration>) -> Token {
        Token {
            access_token: self.access_token.clone(),
            expires_at: self
                .expires_in
                .map(Duration::from_secs)
                .or(ttl)
                .map(|d| now + d),
        }
    }
}

/// What a token endpoint answered, read strictly.
pub enum Answer {
    Grant(Grant),
    /// RFC 6749 §5.2 (and RFC 8628 §3.5): `error` and an optional description, both clipped.
    Error {
        status: u16,
        error: String,
        description: Option<String>,
    },
}

/// Reads a token endpoint's answer. `url` names the endpoint in errors.
pub fn parse_answer(url: &str, r: &http::Response) -> Result<Answer, OAuth2Error> {
    let bad = |why: String| OAuth2Error::BadAnswer {
        url: url.to_string(),
        why,
    };
    let v: serde_json::Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(_) => {
            let text = String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).into_owned();
            return Err(bad(format!(
                "HTTP {} with a body that is not JSON: {:?}",
                r.status,
                clip(&text)
            )));
        }
    };
    let Some(obj) = v.as_object() else {
        return Err(bad(format!("HTTP {}: the JSON is not an object", r.status)));
    };
    if let Some(e) = obj.get("error") {
        let error = e.as_str().map(clip).unwrap_or_else(|| "?".into());
        let description = obj
            .get("error_description")
            .and_then(|d| d.as_str())
            .map(clip);
        return Ok(Answer::Error {
            status: r.status,
            error,
            description,
        });
    }
    if r.status != 200 {
        return Err(bad(format!("HTTP {} without an `error`", r.status)));
    }
    let token = obj
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("the answer has no `access_token`".into()))?;
    let access_token = Secret::new(checked_token(token).map_err(|w| bad(w.into()))?);
    if let Some(t) = obj.get("token_type").and_then(|t| t.as_str())
        && !t.eq_ignore_ascii_case("bearer")
    {
        return Err(bad(format!("token_type {:?} is not Bearer", clip(t))));
    }
    let expires_in = match obj.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        // Some providers send the number as a string.
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n <= MAX_LIFETIME)
                .ok_or_else(|| bad("`expires_in` is not a plausible number of seconds".into()))?,
        ),
    };
    let refresh_token = match obj.get("refresh_token") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            let t = v
                .as_str()
                .ok_or_else(|| bad("`refresh_token` is not a string".into()))?;
            Some(Secret::new(
                checked_token(t).map_err(|w| bad(format!("refresh token: {w}")))?,
            ))
        }
    };
    Ok(Answer::Grant(Grant {
        access_token,
        expires_in,
        refresh_token,
    }))
}

/// POSTs a token request and reads the answer.
pub(crate) async fn token_request(
    client: &OAuth2Client,
    form: &[(&str, &str)],
    timeout: Duration,
) -> Result<Answer, OAuth2Error> {
    let url = http::Url::parse(&client.token_url).map_err(|e| OAuth2Error::Http {
        url: client.token_url.clone(),
        source: e.into(),
    })?;
    let r = http::post_form(
        &url,
        &http::form_encode(form),
        client.ca_file.as_deref(),
        timeout,
    )
    .await
    .map_err(|source| OAuth2Error::Http {
        url: client.token_url.clone(),
        source,
    })?;
    parse_answer(&client.token_url, &r)
}

/// The refresh token grant (RFC 6749 §6).
async fn refresh_grant(
    account: &str,
    client: &OAuth2Client,
    refresh: &Secret<String>,
    timeout: Duration,
) -> Result<Grant, OAuth2Error> {
    let secret = read_client_secret(client)?;
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.expose().as_str()),
        ("client_id", client.client_id.as_str()),
    ];
    if let Some(s) = &secret {
        form.push(("client_secret", s.expose().as_str()));
    }
    if !client.scope.is_empty() {
        form.push(("scope", client.scope.as_str()));
    }
    tracing::debug!(account, url = client.token_url, "oauth2 refresh");
    match token_request(client, &form, timeout).await? {
        Answer::Grant(g) => Ok(g),
        Answer::Error {
            error, description, ..
        } if error == "invalid_grant" => Err(OAuth2Error::Revoked {
            url: client.token_url.clone(),
            account: account.to_string(),
            description,
        }),
        Answer::Error {
            status,
            error,
            description,
        } => Err(OAuth2Error::Refused {
            url: client.token_url.clone(),
            status,
            error,
            description,
        }),
    }
}

/// Runs `oauth2_token_command` (no shell, stdin closed, output capped, under `timeout`) and
/// reads its token: a JSON object with `access_token` (and `expires_in`), or the first line.
async fn run_command(
    argv: &[String],
    ttl: Option<Duration>,
    timeout: Duration,
    now: SystemTime,
) -> Result<Token, OAuth2Error> {
    let err = |why: String| OAuth2Error::Command {
        program: argv[0].clone(),
        why,
    };
    // Its own process group, ended whole on timeout (see `crate::child`). One byte past the
    // cap is kept, so that too long an output is told from one that just fits.
    let caps = crate::child::Caps {
        stdout: MAX_COMMAND_OUTPUT + 1,
        stderr: Some(MAX_COMMAND_STDERR),
    };
    let ran = crate::child::run_capture(argv, timeout, caps)
        .await
        .map_err(|e| err(e.to_string()))?;
    command_token(ran.stdout.expose(), &ran.stderr, ran.status, ttl, now).map_err(err)
}

/// Reads a token command's result; the error says why without quoting stdout (it may hold a
/// token), and quotes stderr clipped.
pub fn command_token(
    out: &[u8],
    errout: &[u8],
    status: std::process::ExitStatus,
    ttl: Option<Duration>,
    now: SystemTime,
) -> Result<Token, String> {
    let stderr_note = || {
        let text = String::from_utf8_lossy(errout);
        let last = text.lines().rev().find(|l| !l.trim().is_empty());
        last.map(|l| format!(": {}", clip(l.trim())))
            .unwrap_or_default()
    };
    if !status.success() {
        return Err(format!("it failed ({status}){}", stderr_note()));
    }
    if out.len() > MAX_COMMAND_OUTPUT {
        return Err(format!(
            "it printed more than {} KiB",
            MAX_COMMAND_OUTPUT / 1024
        ));
    }
    let text = std::str::from_utf8(out).map_err(|_| "its output is not UTF-8 text".to_string())?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("it printed no token{}", stderr_note()));
    }
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|_| "its output starts with '{' but is not JSON".to_string())?;
        let t = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| "its JSON output has no `access_token` string".to_string())?;
        let access_token = Secret::new(checked_token(t).map_err(str::to_string)?);
        let expires_in = match v.get("expires_in") {
            None | Some(serde_json::Value::Null) => None,
            Some(e) => Some(
                e.as_u64()
                    .filter(|n| *n <= MAX_LIFETIME)
                    .ok_or_else(|| "its `expires_in` is not a number of seconds".to_string())?,
            ),
        };
        return Ok(Token {
            access_token,
            expires_at: expires_in.map(Duration::from_secs).or(ttl).map(|d| now + d),
        });
    }
    let first = trimmed.lines().next().unwrap_or_default();
    Ok(Token {
        access_token: Secret::new(checked_token(first).map_err(str::to_string)?),
        expires_at: ttl.map(|d| now + d),
    })
}

#[cfg(test)]
mod tests;
