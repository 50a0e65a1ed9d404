//! `popfetch oauth2-authorize ACCOUNT`: the first authorization, which yields the refresh
//! token the built-in refresh then lives on.
//!
//! Two flows. The device flow (RFC 8628): popfetch shows a URL and a code to enter there from
//! any device, and polls the token endpoint until the user has agreed. The browser flow (RFC
//! 6749 §4.1 with PKCE, RFC 7636, S256): popfetch shows an authorization URL whose redirect
//! goes to a one-shot listener on `127.0.0.1` (RFC 8252 §7.3); on a machine without a browser,
//! the user opens the URL elsewhere and pastes the address the browser ended on (or just the
//! code) into popfetch. Google allows its mail scope only in the browser flow.
//!
//! Everything the provider or the browser sends is checked before use or display: the `state`
//! must match, codes and URLs must be short visible ASCII, waits are bounded.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::http::{self, clip};
use super::{Answer, Grant, OAuth2Error, checked_token, read_client_secret, token_request};
use crate::config::{Account, OAuth2Client, OAuth2Flow, OAuth2Provider, OAuth2Source};
use crate::secret::Secret;

/// Longest wait for the user in either flow (the device code's own `expires_in` may be shorter).
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// RFC 8628 §3.2: the polling interval when the provider names none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Bounds on the polling interval, whatever the provider says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Connections the redirect listener serves before it gives up (browsers also ask for icons).
const MAX_REDIRECT_CONNECTIONS: usize = 64;
/// Longest request head the redirect listener reads.
const MAX_REDIRECT_REQUEST: usize = 8 * 1024;
/// How long one browser connection may take to send its request.
const REDIRECT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the first authorization of `account` with `flow` (default: the account's), writes the
/// refresh token file and primes the token cache in `state_dir`. Talks to the user on stdout
/// and reads pasted answers from stdin.
pub async fn authorize(
    account: &Account,
    state_dir: &Path,
    flow: Option<OAuth2Flow>,
) -> Result<(), OAuth2Error> {
    let client = match account.oauth2() {
        Some(OAuth2Source::Refresh(c)) => c,
        Some(OAuth2Source::Command { .. }) => {
            return Err(OAuth2Error::Config {
                account: account.name.clone(),
                message: "its token comes from oauth2_token_command, which does its own \
                          authorization; oauth2-authorize needs an `oauth2` table"
                    .into(),
            });
        }
        None => {
            return Err(OAuth2Error::Config {
                account: account.name.clone(),
                message: "it has no `oauth2` table (see `[account.oauth2]` in the README)".into(),
            });
        }
    };
    let flow = flow.unwrap_or(client.flow);
    let started = SystemTime::now();
    let grant = match flow {
        OAuth2Flow::Device => device_flow(account, client).await?,
        OAuth2Flow::Browser => browser_flow(account, client).await?,
    };
    let Some(refresh) = &grant.refresh_token else {
        return Err(OAuth2Error::Other(format!(
            "the provider issued no refresh token{}",
            if client.provider == Some(OAuth2Provider::Microsoft) {
                " (the scope must include offline_access)"
            } else {
                ""
            }
        )));
    };
    if let Some(dir) = client.refresh_token_file.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| OAuth2Error::File {
                what: "cannot create the directory",
                path: dir.to_path_buf(),
                source,
            })?;
    }
    super::write_secret_file(&client.refresh_token_file, refresh.expose())?;
    // Prime the cache, so the first poll needs no refresh.
    let source = account.oauth2().map(super::source_fingerprint);
    let key = format!(
        "{}/{}",
        source.unwrap_or_default(),
        super::fingerprint(refresh.expose())
    );
    let token = grant.token(started, client.ttl);
    super::invalidate(account, state_dir);
    if super::write_cache_file(&super::cache_file(state_dir, &account.name), &key, &token).is_ok() {
        super::cache_put(&account.name, &key, &token);
    }
    println!(
        "popfetch: account {} authorized; refresh token written to {}",
        account.name,
        client.refresh_token_file.display()
    );
    Ok(())
}

fn url_of(
    client: &OAuth2Client,
    which: &str,
    value: &Option<String>,
) -> Result<String, OAuth2Error> {
    value.clone().ok_or_else(|| {
        OAuth2Error::Other(format!(
            "this flow needs `{which}` in the account's oauth2 table (token endpoint {})",
            client.token_url
        ))
    })
}

fn client_form<'a>(
    client: &'a OAuth2Client,
    secret: &'a Option<Secret<String>>,
    form: &mut Vec<(&'a str, &'a str)>,
) {
    form.push(("client_id", client.client_id.as_str()));
    if let Some(s) = secret {
        form.push(("client_secret", s.expose().as_str()));
    }
}

/// What the device authorization endpoint answered (RFC 8628 §3.2), checked.
#[derive(Debug)]
pub struct DeviceCode {
    pub device_code: Secret<String>,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    pub interval: Duration,
}

/// Reads a device authorization answer; every shown string must be short visible ASCII, the
/// URIs `https://`.
pub fn parse_device_answer(url: &str, r: &http::Response) -> Result<DeviceCode, OAuth2Error> {
    let bad = |why: String| OAuth2Error::BadAnswer {
        url: url.to_string(),
        why,
    };
    let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|_| {
        bad(format!(
            "HTTP {} with a body that is not JSON: {:?}",
            r.status,
            clip(&String::from_utf8_lossy(&r.body[..r.body.len().min(200)]))
        ))
    })?;
    if let Some(e) = v.get("error") {
        return Err(OAuth2Error::Refused {
            url: url.to_string(),
            status: r.status,
            error: e.as_str().map(clip).unwrap_or_else(|| "?".into()),
            description: v
                .get("error_description")
                .and_then(|d| d.as_str())
                .map(clip),
        });
    }
    let s = |k: &str| v.get(k).and_then(|x| x.as_str());
    let device_code = s("device_code")
        .ok_or_else(|| bad("no `device_code`".into()))
        .and_then(|c| checked_token(c).map_err(|w| bad(format!("device_code: {w}"))))?;
    let user_code = s("user_code")
        .filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| bad("no plausible `user_code`".into()))?;
    // Google says `verification_url`.
    let shown_url = |u: &str| http::Url::parse(u).is_ok() && u.len() <= 512;
    let verification_uri = s("verification_uri")
        .or_else(|| s("verification_url"))
        .filter(|u| shown_url(u))
        .ok_or_else(|| bad("no https `verification_uri`".into()))?;
    let verification_uri_complete = s("verification_uri_complete")
        .filter(|u| shown_url(u))
        .map(str::to_string);
    let expires_in = v
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .ok_or_else(|| bad("no `expires_in`".into()))?;
    let interval = v
        .get("interval")
        .and_then(|i| i.as_u64())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_INTERVAL)
        .clamp(MIN_INTERVAL, MAX_INTERVAL);
    Ok(DeviceCode {
        device_code: Secret::new(device_code),
        user_code: user_code.to_string(),
        verification_uri: verification_uri.to_string(),
        verification_uri_complete,
        expires_in: Duration::from_secs(expires_in).min(MAX_WAIT),
        interval,
    })
}

/// What to do after one poll of the token endpoint in the device flow (RFC 8628 §3.5).
#[derive(Debug)]
pub enum Poll {
    Done(Grant),
    /// Ask again after the (possibly longer) interval.
    Wait(Duration),
    Fail(OAuth2Error),
}

/// Decides the next step of the device flow from one token answer.
pub fn poll_step(url: &str, answer: Answer, interval: Duration) -> Poll {
    match answer {
        Answer::Grant(g) => Poll::Done(g),
        Answer::Error { error, .. } if error == "authorization_pending" => Poll::Wait(interval),
        // §3.5: "the interval MUST be increased by 5 seconds for this and all subsequent
        // requests".
        Answer::Error { error, .. } if error == "slow_down" => {
            Poll::Wait((interval + Duration::from_secs(5)).min(MAX_INTERVAL))
        }
        Answer::Error { error, .. } if error == "access_denied" => {
            Poll::Fail(OAuth2Error::Other("the authorization was declined".into()))
        }
        Answer::Error { error, .. } if error == "expired_token" => Poll::Fail(OAuth2Error::Other(
            "the code expired before the authorization was given; run oauth2-authorize again"
                .into(),
        )),
        Answer::Error {
            status,
            error,
            description,
        } => Poll::Fail(OAuth2Error::Refused {
            url: url.to_string(),
            status,
            error,
            description,
        }),
    }
}

async fn device_flow(account: &Account, client: &OAuth2Client) -> Result<Grant, OAuth2Error> {
    let device_url = url_of(
        client,
        "device_authorization_url",
        &client.device_authorization_url,
    )?;
    let secret = read_client_secret(client)?;
    let mut form = Vec::new();
    client_form(client, &secret, &mut form);
    if !client.scope.is_empty() {
        form.push(("scope", client.scope.as_str()));
    }
    let parsed = http::Url::parse(&device_url).map_err(|e| OAuth2Error::Http {
        url: device_url.clone(),
        source: e.into(),
    })?;
    let r = http::post_form(
        &parsed,
        &http::form_encode(&form),
        client.ca_file.as_deref(),
        account.timeout,
    )
    .await
    .map_err(|source| OAuth2Error::Http {
        url: device_url.clone(),
        source,
    })?;
    let code = parse_device_answer(&device_url, &r)?;
    println!(
        "To authorize popfetch to read the mail of account {}:",
        account.name
    );
    println!("  open   {}", code.verification_uri);
    println!("  enter  {}", code.user_code);
    if let Some(c) = &code.verification_uri_complete {
        println!("  (or open {c}, which carries the code)");
    }
    println!(
        "Waiting up to {} minutes for the authorization...",
        code.expires_in.as_secs().div_ceil(60)
    );

    let deadline = tokio::time::Instant::now() + code.expires_in;
    let mut interval = code.interval;
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", code.device_code.expose().as_str()),
    ];
    client_form(client, &secret, &mut form);
    // Bounded by the deadline; the count bounds it too should the clock misbehave.
    let most_polls = code.expires_in.as_secs() / MIN_INTERVAL.as_secs() + 1;
    for _ in 0..most_polls {
        if tokio::time::Instant::now() + interval > deadline {
            break;
        }
        tokio::time::sleep(interval).await;
        let answer = token_request(client, &form, account.timeout).await?;
        match poll_step(&client.token_url, answer, interval) {
            Poll::Done(g) => return Ok(g),
            Poll::Wait(next) => interval = next,
            Poll::Fail(e) => return Err(e),
        }
    }
    Err(OAuth2Error::Other(
        "the code expired before the authorization was given; run oauth2-authorize again".into(),
    ))
}

/// A PKCE pair (RFC 7636 §4.1–4.2): a 43-character verifier and its S256 challenge.
pub fn pkce() -> Result<(Secret<String>, String), OAuth2Error> {
    let verifier = URL_SAFE_NO_PAD.encode(random::<32>()?);
    let challenge = s256(&verifier);
    Ok((Secret::new(verifier), challenge))
}

/// `BASE64URL(SHA256(verifier))`, RFC 7636 §4.2.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(openssl::sha::sha256(verifier.as_bytes()))
}

fn random<const N: usize>() -> Result<[u8; N], OAuth2Error> {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b)
        .map_err(|e| OAuth2Error::Other(format!("no random numbers: {e}")))?;
    Ok(b)
}

/// The authorization request URL (RFC 6749 §4.1.1, RFC 7636 §4.3).
pub fn authorization_request(
    client: &OAuth2Client,
    authorization_url: &str,
    redirect_uri: &str,
    state: &str,
    challenge: &str,
) -> String {
    let mut q = vec![
        ("response_type", "code"),
        ("client_id", client.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    if !client.scope.is_empty() {
        q.push(("scope", client.scope.as_str()));
    }
    if client.provider == Some(OAuth2Provider::Google) {
        // Google issues a refresh token only for offline access, and again only on consent.
        q.push(("access_type", "offline"));
        q.push(("prompt", "consent"));
    }
    let sep = if authorization_url.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{authorization_url}{sep}{}", http::form_encode(&q))
}

/// What came back from the browser: a code, or the provider's refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Redirect {
    Code(String),
    Denied(String),
    /// Not an answer to this request (another path, a missing or wrong `state`).
    Unrelated,
}

/// Reads the query of a redirect (RFC 6749 §4.1.2): the `state` must be ours.
pub fn parse_redirect(query: &str, state: &str) -> Redirect {
    let pairs = http::parse_query(query);
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("state") != Some(state) {
        return Redirect::Unrelated;
    }
    if let Some(e) = get("error") {
        let d = get("error_description").map(|d| format!(": {}", clip(d)));
        return Redirect::Denied(format!("{}{}", clip(e), d.unwrap_or_default()));
    }
    match get("code").map(checked_token) {
        Some(Ok(c)) => Redirect::Code(c),
        _ => Redirect::Unrelated,
    }
}

/// Reads a line the user pasted: the address the browser ended on, or the bare code.
pub fn parse_pasted(line: &str, state: &str) -> Redirect {
    let line = line.trim();
    if line.is_empty() {
        return Redirect::Unrelated;
    }
    if let Some((_, query)) = line.split_once('?') {
        return parse_redirect(query.split('#').next().unwrap_or_default(), state);
    }
    if line.contains('=') {
        return parse_redirect(line, state);
    }
    match checked_token(line) {
        Ok(c) => Redirect::Code(c),
        Err(_) => Redirect::Unrelated,
    }
}

async fn browser_flow(account: &Account, client: &OAuth2Client) -> Result<Grant, OAuth2Error> {
    let authorization_url = url_of(client, "authorization_url", &client.authorization_url)?;
    let secret = read_client_secret(client)?;
    let (verifier, challenge) = pkce()?;
    let state = URL_SAFE_NO_PAD.encode(random::<16>()?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| OAuth2Error::Other(format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| OAuth2Error::Other(e.to_string()))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let url = authorization_request(
        client,
        &authorization_url,
        &redirect_uri,
        &state,
        &challenge,
    );
    println!(
        "To authorize popfetch to read the mail of account {}, open this URL in a browser:",
        account.name
    );
    println!();
    println!("{url}");
    println!();
    println!(
        "popfetch waits for the browser on {redirect_uri}. If the browser runs on another \
         machine, paste here the address it ends on (or the code), then press Enter:"
    );

    let pasted = paste_channel();
    let wait = async {
        tokio::select! {
            r = listen(&listener, &state) => r,
            r = read_pasted(pasted, &state) => r,
        }
    };
    let code = match tokio::time::timeout(MAX_WAIT, wait).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(OAuth2Error::Other(format!(
                "no authorization within {} minutes",
                MAX_WAIT.as_secs() / 60
            )));
        }
    };
    drop(listener);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.expose().as_str()),
    ];
    client_form(client, &secret, &mut form);
    match token_request(client, &form, account.timeout).await? {
        Answer::Grant(g) => Ok(g),
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

/// Lines from stdin, read on a thread of their own (a blocking read cannot be cancelled; the
/// thread ends with the process).
fn paste_channel() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut line = String::new();
        // Bounded by the process: it exits once the authorization ends.
        loop {
            line.clear();
            match std::io::BufRead::read_line(&mut stdin.lock(), &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if line.len() > MAX_REDIRECT_REQUEST || tx.blocking_send(line.clone()).is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    rx
}

async fn read_pasted(
    mut rx: tokio::sync::mpsc::Receiver<String>,
    state: &str,
) -> Result<String, OAuth2Error> {
    while let Some(line) = rx.recv().await {
        match parse_pasted(&line, state) {
            Redirect::Code(c) => return Ok(c),
            Redirect::Denied(why) => {
                return Err(OAuth2Error::Other(format!(
                    "the authorization was declined: {why}"
                )));
            }
            Redirect::Unrelated if line.trim().is_empty() => {}
            Redirect::Unrelated => println!(
                "popfetch: that is neither the address the browser ended on (with this \
                 request's state) nor a code; try again"
            ),
        }
    }
    // Stdin closed: only the listener can answer now.
    std::future::pending().await
}

/// Serves the redirect listener until a connection brings this request's answer.
async fn listen(listener: &tokio::net::TcpListener, state: &str) -> Result<String, OAuth2Error> {
    for _ in 0..MAX_REDIRECT_CONNECTIONS {
        let (mut conn, _) = listener
            .accept()
            .await
            .map_err(|e| OAuth2Error::Other(format!("redirect listener: {e}")))?;
        let target = match tokio::time::timeout(REDIRECT_READ_TIMEOUT, read_target(&mut conn)).await
        {
            Ok(Some(t)) => t,
            _ => {
                let _ = respond(&mut conn, "400 Bad Request", "popfetch: bad request").await;
                continue;
            }
        };
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
        match parse_redirect(query, state) {
            Redirect::Code(c) => {
                let _ = respond(
                    &mut conn,
                    "200 OK",
                    "popfetch: authorization received; you can close this page.",
                )
                .await;
                return Ok(c);
            }
            Redirect::Denied(why) => {
                let _ = respond(&mut conn, "200 OK", "popfetch: authorization declined.").await;
                return Err(OAuth2Error::Other(format!(
                    "the authorization was declined: {why}"
                )));
            }
            Redirect::Unrelated => {
                let _ = respond(&mut conn, "404 Not Found", "popfetch: not found").await;
            }
        }
    }
    Err(OAuth2Error::Other(format!(
        "the redirect listener gave up after {MAX_REDIRECT_CONNECTIONS} unrelated requests"
    )))
}

/// The request target of a `GET`, from a head of at most [`MAX_REDIRECT_REQUEST`] bytes.
async fn read_target(conn: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    // The whole head: closing with unread bytes would reset the connection under the answer.
    while memchr::memmem::find(&buf, b"\r\n\r\n").is_none() {
        if buf.len() > MAX_REDIRECT_REQUEST {
            return None;
        }
        let mut chunk = [0u8; 1024];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    (method == "GET" && target.starts_with('/')).then(|| target.to_string())
}

async fn respond(
    conn: &mut tokio::net::TcpStream,
    status: &str,
    text: &str,
) -> std::io::Result<()> {
    let r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    );
    tokio::time::timeout(REDIRECT_READ_TIMEOUT, async {
        conn.write_all(r.as_bytes()).await?;
        conn.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}
