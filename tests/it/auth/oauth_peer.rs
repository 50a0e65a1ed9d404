//! OAuth2 login (SASL `XOAUTH2` and `OAUTHBEARER`, RFC 7628) against the real Dovecot, driven
//! entirely on loopback: a tiny token-validation endpoint ([`TokenEndpoint`]) that a Dovecot
//! instance with an OAuth2 passdb ([`crate::dovecot::Options::oauth2`]) asks about every token,
//! helpers to start the pair ([`start_dovecot_with_oauth`], [`start_dovecot_with_validation`])
//! and to build the SASL responses, and self-tests that speak POP3 by hand to pin down what
//! Dovecot does on the wire.
//!
//! # How Dovecot 2.3.19 validates tokens here
//! The OAuth2 passdb is built into Debian's `dovecot-core` (no extra package; the sample
//! settings are `/usr/share/dovecot/dovecot-oauth2.conf.ext`). Its `args` names a settings file
//! of its own, written by the fixture from [`Validation::settings`]:
//! - `tokeninfo_url = http://127.0.0.1:PORT/tokeninfo?access_token=`: Dovecot appends the
//!   token, percent-encoded with lowercase hex (`+` → `%2b`, `/` → `%2f`, `=` → `%3d`), and
//!   sends a plain `GET` (HTTP/1.1, `User-Agent: dovecot-oauth2-passdb/2.3.19.1`, keep-alive;
//!   an answer with `Connection: close` is fine). Any non-200 answer means "invalid token"
//!   (an authentication failure); a 5xx is an internal failure.
//! - `introspection_url` with `introspection_mode = get` (token appended to the URL like
//!   tokeninfo, followed by `&client_id=&client_secret=`), `post` (form body
//!   `token=TOKEN&client_id=&client_secret=`) or `auth` (a `GET` with `Authorization: Bearer
//!   TOKEN`). Unlike tokeninfo, introspection does not treat a 401
//!   as "invalid": it parses whatever JSON comes and fails *temporarily* with "No username
//!   returned". An introspection endpoint must answer an unknown token with 200 and
//!   `{"active":false}` (RFC 7662), which is what [`TokenEndpoint`] does.
//! - `username_attribute = username` names the JSON field with the user (default `email`);
//!   Dovecot lowercases it (`username_format = %Lu`) and compares it with the user in the SASL
//!   message (`user=` of XOAUTH2, `a=` of OAUTHBEARER): a token of another user fails ("Username
//!   'bob' did not match 'alice'" in the log). `active_attribute = active` with
//!   `active_value = true` makes `"active": false` an authentication failure ("Provided token
//!   is not valid"); these checks work on the tokeninfo answer too, no `force_introspection`
//!   needed.
//! - A 5xx, an endpoint that is down, or a 200 answer without the username field (seen by
//!   hand, "No username returned") is an internal failure: `-ERR [SYS/TEMP] Temporary authentication failure. [HOST:TIME]` at once,
//!   with no challenge.
//! - There is no cache unless `auth_cache_size` is set (the fixture sets none): every login asks
//!   the endpoint again, so a token revoked at run time ([`TokenEndpoint::revoke`]) fails at the
//!   next login.
//! - Local JWT validation works too (tried by hand, not used here since minting HS256 tokens
//!   would need SHA-256 in the tests): `introspection_mode = local`,
//!   `local_validation_key_dict = fs:posix:prefix=DIR/`, `username_attribute = sub`. The sample
//!   settings say the key is looked up as `/shared/<azp:default>/<alg>/<kid:default>`, but the
//!   fs dict drops the `shared/`: the file is `DIR/default/HS256/default` and holds the base64
//!   of the HMAC secret ("HS256 key 'default' not found" otherwise). A bad signature is an
//!   ordinary refusal ("Local validation failed: Incorrect JWT signature"), the same challenge
//!   and `-ERR` as below.
//!
//! # What a client sees
//! - Before login `CAPA` lists `SASL PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER` (Dovecot's order
//!   of `auth_mechanisms`). Both mechanisms count as plaintext ones: with
//!   `disable_plaintext_auth = yes` on an insecure connection (the fixture's `insecure_host`)
//!   `CAPA` lists neither and `AUTH XOAUTH2 …` gets `-ERR [AUTH] Plaintext authentication
//!   disabled.` without asking the endpoint. `127.0.0.1` →
//!   `127.0.0.1` counts as secured, so the plain port is enough.
//! - Success: `AUTH XOAUTH2 <b64>` (or `AUTH OAUTHBEARER <b64>`) → `+OK Logged in.`. The two-step
//!   form `AUTH XOAUTH2` → `+ ` (a plus and a space) → `<b64>` → `+OK Logged in.` works too.
//! - Failure of XOAUTH2: `+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=`
//!   (base64 of `{"status":"401","schemes":"bearer","scope":"mail"}`) at once; the client sends
//!   an empty line; then `-ERR [AUTH] Authentication failed.` after up to 0.5 s.
//! - Failure of OAUTHBEARER: `+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=` (base64 of
//!   `{"status":"invalid_token"}`); the client sends `AQ==` (the single byte 0x01 of RFC 7628);
//!   then `-ERR [AUTH] Authentication failed.`. Dovecot does not check what the client sends
//!   back: any base64 line ends in the same `-ERR`, and `*` gives
//!   `-ERR Authentication aborted by client.`. The session stays open for another attempt.
//! - Length: the base64 response, in the `AUTH` line or on its own line, may have at most 8191
//!   characters (so 8188 in practice; 6141 decoded bytes, i.e. an XOAUTH2 token of about 6100
//!   bytes). From 8192 on Dovecot logs "Authentication response too large" and closes the
//!   connection without any answer. An `AUTH XOAUTH2 <b64>` line of over 8 KB is fine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::dovecot::{Dovecot, OAuth2Passdb, Options};

/// What Dovecot sends (after `+ `) when an XOAUTH2 token is refused: base64 of
/// `{"status":"401","schemes":"bearer","scope":"mail"}`. The client must answer with an empty
/// line.
pub(crate) const XOAUTH2_FAILURE_CHALLENGE: &str =
    "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";
/// What Dovecot sends (after `+ `) when an OAUTHBEARER token is refused: base64 of
/// `{"status":"invalid_token"}`. The client must answer with `AQ==` (0x01, RFC 7628).
pub(crate) const OAUTHBEARER_FAILURE_CHALLENGE: &str = "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=";
/// The final answer to a refused token, after the client's reply to the challenge.
pub(crate) const AUTH_FAILED: &str = "-ERR [AUTH] Authentication failed.";
/// The longest base64 SASL response (initial or continued) Dovecot's pop3-login accepts; a
/// longer one makes it close the connection without an answer.
pub(crate) const MAX_SASL_RESPONSE: usize = 8191;

/// Bound for reading one HTTP request from Dovecot.
const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head or body the endpoint reads (tokens of the long-token tests fit).
const HTTP_MAX_PART: usize = 64 * 1024;
/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(5);
/// Bound for every read of the POP3 client in the self-tests.
const POP3_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint says about one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Valid for this user: 200 `{"active":true,"username":USER}`.
    Active(String),
    /// Known but no longer valid: 200 `{"active":false,"username":USER}`. Dovecot refuses it
    /// like an unknown token ("Provided token is not valid").
    Inactive(String),
    /// The endpoint fails with this HTTP status (e.g. 500): Dovecot answers `-ERR [SYS/TEMP]`.
    HttpError(u16),
}

/// One HTTP request the endpoint received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The request target as sent (path and query, still percent-encoded).
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body (form data for `introspection_mode = post`), lossily as text.
    pub body: String,
    /// The token found in the query (`access_token=`), the `Authorization: Bearer` header or
    /// the form body (`token=`), percent-decoded.
    pub token: Option<String>,
}

/// How Dovecot's OAuth2 passdb asks the endpoint; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Validation {
    /// `tokeninfo_url = …/tokeninfo?access_token=` (a `GET` with the token in the query).
    TokenInfo,
    /// `introspection_url = …/introspect?access_token=`, `introspection_mode = get`.
    IntrospectGet,
    /// `introspection_url = …/introspect`, `introspection_mode = post` (form body).
    IntrospectPost,
    /// `introspection_url = …/introspect`, `introspection_mode = auth` (bearer header).
    IntrospectAuth,
}

impl Validation {
    /// The passdb's settings file (`dovecot-oauth2.conf.ext`) for an endpoint on `port`.
    pub(crate) fn settings(self, port: u16) -> String {
        let base = format!("http://127.0.0.1:{port}");
        let url = match self {
            Validation::TokenInfo => format!("tokeninfo_url = {base}/tokeninfo?access_token=\n"),
            Validation::IntrospectGet => format!(
                "introspection_url = {base}/introspect?access_token=\nintrospection_mode = get\n"
            ),
            Validation::IntrospectPost => {
                format!("introspection_url = {base}/introspect\nintrospection_mode = post\n")
            }
            Validation::IntrospectAuth => {
                format!("introspection_url = {base}/introspect\nintrospection_mode = auth\n")
            }
        };
        format!(
            "# Generated by tests/it/auth/oauth_peer.rs.\n{url}username_attribute = username\n\
             active_attribute = active\nactive_value = true\ntimeout_msecs = 5000\n"
        )
    }
}

#[derive(Default)]
struct EndpointState {
    grants: HashMap<String, Grant>,
    requests: Vec<TokenRequest>,
}

/// A token-validation endpoint on `127.0.0.1` (free high port), served by a thread: it answers
/// `GET /tokeninfo?access_token=T` (unknown token: 401 `{"error":"invalid_token"}`) and
/// `GET /introspect?access_token=T`, `GET /introspect` with `Authorization: Bearer T`, `POST
/// /introspect` with `token=T` (unknown token: 200 `{"active":false}`) from a map token →
/// [`Grant`] that tests change at run time, and records every request. One connection per
/// request (`Connection: close`), each read bounded. Stopped on drop.
pub(crate) struct TokenEndpoint {
    port: u16,
    state: Arc<Mutex<EndpointState>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TokenEndpoint {
    /// Starts an endpoint that knows no token yet.
    pub(crate) fn start() -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("token endpoint: cannot bind 127.0.0.1:0: {e}"));
        listener
            .set_nonblocking(true)
            .expect("token endpoint: set_nonblocking");
        let port = listener.local_addr().expect("bound listener").port();
        let state = Arc::new(Mutex::new(EndpointState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name(format!("token-endpoint-{port}"))
                .spawn(move || accept_loop(&listener, &state, &stop))
                .expect("spawn token endpoint thread")
        };
        TokenEndpoint {
            port,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// The port on `127.0.0.1`.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The passdb settings that make Dovecot ask this endpoint the given way.
    pub(crate) fn passdb(&self, validation: Validation) -> OAuth2Passdb {
        OAuth2Passdb {
            settings: validation.settings(self.port),
        }
    }

    /// Makes `token` valid for `user` (replacing whatever the endpoint said about it).
    pub(crate) fn grant(&self, token: &str, user: &str) {
        self.set(token, Grant::Active(user.to_owned()));
    }

    /// Sets what the endpoint says about `token`.
    pub(crate) fn set(&self, token: &str, grant: Grant) {
        lock(&self.state).grants.insert(token.to_owned(), grant);
    }

    /// Forgets `token`: from now on it is unknown (invalid).
    pub(crate) fn revoke(&self, token: &str) {
        lock(&self.state).grants.remove(token);
    }

    /// Every request received so far, oldest first.
    pub(crate) fn requests(&self) -> Vec<TokenRequest> {
        lock(&self.state).requests.clone()
    }

    /// The tokens Dovecot asked about so far, oldest first (one per login attempt).
    pub(crate) fn tokens_seen(&self) -> Vec<String> {
        lock(&self.state)
            .requests
            .iter()
            .filter_map(|r| r.token.clone())
            .collect()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // The loop polls the flag every few milliseconds; connection threads end on their
            // own within their timeouts.
            let _ = acceptor.join();
        }
    }
}

/// Starts a [`TokenEndpoint`] knowing `tokens` (pairs of token and user) and a Dovecot whose
/// OAuth2 passdb asks it by `tokeninfo_url`, with a Maildir for each of those users. Ordinary
/// passwd-file users ([`Dovecot::add_user`]) work on the same instance as usual.
pub(crate) fn start_dovecot_with_oauth(tokens: &[(&str, &str)]) -> (Dovecot, TokenEndpoint) {
    start_dovecot_with_validation(Validation::TokenInfo, Options::default(), tokens)
}

/// Like [`start_dovecot_with_oauth`] with a chosen [`Validation`] and further [`Options`]
/// (their `oauth2` is replaced).
pub(crate) fn start_dovecot_with_validation(
    validation: Validation,
    opts: Options,
    tokens: &[(&str, &str)],
) -> (Dovecot, TokenEndpoint) {
    let endpoint = TokenEndpoint::start();
    for (token, user) in tokens {
        endpoint.grant(token, user);
    }
    let dovecot = Dovecot::start_with(Options {
        oauth2: Some(endpoint.passdb(validation)),
        ..opts
    });
    for (_, user) in tokens {
        dovecot.add_mailbox(user);
    }
    (dovecot, endpoint)
}

/// The base64 XOAUTH2 initial response: `user=USER ^A auth=Bearer TOKEN ^A ^A`.
pub(crate) fn xoauth2_response(user: &str, token: &str) -> String {
    B64.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The base64 OAUTHBEARER (RFC 7628) initial response:
/// `n,a=USER, ^A host=HOST ^A port=PORT ^A auth=Bearer TOKEN ^A ^A` (`,` and `=` in the user
/// escaped as RFC 5801 says).
pub(crate) fn oauthbearer_response(user: &str, host: &str, port: u16, token: &str) -> String {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    B64.encode(format!(
        "n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    ))
}

fn accept_loop(listener: &TcpListener, state: &Arc<Mutex<EndpointState>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = Arc::clone(state);
                let spawned = thread::Builder::new()
                    .name("token-endpoint-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_one(stream, &state) {
                            eprintln!("token endpoint: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    eprintln!("token endpoint: cannot spawn a connection thread: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("token endpoint: accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

/// Reads one request, records it and answers it; the connection is closed afterwards.
fn serve_one(stream: TcpStream, state: &Mutex<EndpointState>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(HTTP_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_IO_TIMEOUT))?;
    let mut reader = BufReader::new(&stream);
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = (&mut reader)
            .take((HTTP_MAX_PART - before) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            // Closed before a complete head (or the head is too large): nothing to answer.
            return Ok(());
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut content_length = 0usize;
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0).min(HTTP_MAX_PART);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.to_owned());
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();

    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let token = form_value(query, "access_token")
        .or_else(|| {
            authorization.as_deref().and_then(|a| {
                let (scheme, rest) = a.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            })
        })
        .or_else(|| form_value(&body, "token"));

    let (status, json) = {
        let mut st = lock(state);
        let grant = token.as_ref().and_then(|t| st.grants.get(t).cloned());
        st.requests.push(TokenRequest {
            method: method.clone(),
            target: target.clone(),
            authorization: authorization.clone(),
            body: body.clone(),
            token: token.clone(),
        });
        answer(path, grant)
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let body = json.to_string();
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    (&stream).write_all(response.as_bytes())?;
    (&stream).flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// The status and JSON body for a request to `path` about a token with `grant` (`None`:
/// unknown token or none given).
fn answer(path: &str, grant: Option<Grant>) -> (u16, serde_json::Value) {
    use serde_json::json;
    let tokeninfo = match path {
        "/tokeninfo" => true,
        "/introspect" => false,
        _ => return (404, json!({ "error": "not_found" })),
    };
    match grant {
        Some(Grant::Active(user)) => (200, json!({ "active": true, "username": user })),
        Some(Grant::Inactive(user)) => (200, json!({ "active": false, "username": user })),
        Some(Grant::HttpError(status)) => (status, json!({ "error": "server_error" })),
        // tokeninfo style (Google-like): refuse with 401; introspection (RFC 7662): 200 with
        // active false, since Dovecot reads a 401 from an introspection URL as a temporary error.
        None if tokeninfo => (401, json!({ "error": "invalid_token" })),
        None => (200, json!({ "active": false })),
    }
}

/// The percent-decoded value of `key` in `a=b&c=d` form data.
fn form_value(form: &str, key: &str) -> Option<String> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A raw POP3 client for the self-tests: one line at a time, every read bounded.
struct Pop3 {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Pop3 {
    fn connect(port: u16) -> Pop3 {
        Pop3::connect_to(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn connect_to(addr: SocketAddr) -> Pop3 {
        let stream = TcpStream::connect_timeout(&addr, POP3_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(POP3_TIMEOUT))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(POP3_TIMEOUT))
            .expect("set write timeout");
        let writer = stream.try_clone().expect("clone stream");
        let mut client = Pop3 {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.line();
        assert!(
            greeting.as_deref().is_some_and(|g| g.starts_with("+OK")),
            "greeting {greeting:?}"
        );
        client
    }

    /// The next line without CRLF; `None` when the server closed (or reset) the connection.
    /// A timeout panics.
    fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                assert!(
                    buf.ends_with(b"\r\n"),
                    "line not ended by CRLF: {:?}",
                    String::from_utf8_lossy(&buf)
                );
                buf.truncate(buf.len() - 2);
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading from the server: {e}"),
        }
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("writing {} bytes to the server: {e}", line.len()));
    }

    /// Sends a line and returns the answer line (which must come).
    fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
            .unwrap_or_else(|| panic!("connection closed after {:.40}", line))
    }

    /// `CAPA` before login: the capability lines.
    fn capa(&mut self) -> Vec<String> {
        let status = self.cmd("CAPA");
        assert!(status.starts_with("+OK"), "CAPA: {status}");
        let mut caps = Vec::new();
        loop {
            let line = self.line().expect("CAPA list ended early");
            if line == "." {
                return caps;
            }
            caps.push(line);
        }
    }

    /// `STAT` after login: (count, size).
    fn stat(&mut self) -> (usize, usize) {
        let answer = self.cmd("STAT");
        let mut fields = answer.split_whitespace();
        assert_eq!(fields.next(), Some("+OK"), "STAT: {answer}");
        let mut num = || {
            fields
                .next()
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("STAT: {answer}"))
        };
        (num(), num())
    }

    fn quit(mut self) {
        let answer = self.cmd("QUIT");
        assert!(answer.starts_with("+OK"), "QUIT: {answer}");
    }
}

const MESSAGE: &[u8] = b"From: a@example.org\nSubject: hello\n\nbody\n";

/// The size of [`MESSAGE`] as `STAT` counts it (LF as CRLF).
fn message_size() -> usize {
    MESSAGE.len() + MESSAGE.iter().filter(|&&b| b == b'\n').count()
}

/// Sends `AUTH mech initial`, expects the failure challenge, answers it with `reply` and
/// returns the final line together with how long it took.
fn refused(pop: &mut Pop3, mech: &str, initial: &str, challenge: &str, reply: &str) -> String {
    let first = pop.cmd(&format!("AUTH {mech} {initial}"));
    assert_eq!(
        first,
        format!("+ {challenge}"),
        "first answer to AUTH {mech}"
    );
    pop.cmd(reply)
}

#[test]
fn capa_lists_oauth_mechanisms_and_passwd_users_still_log_in() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_oauth(&[("tok-alice", "alice")]);
    dovecot.add_user("carol", "pw");
    dovecot.deliver("carol", MESSAGE);
    let mut pop = Pop3::connect(dovecot.pop3_port());
    let caps = pop.capa();
    let sasl = caps
        .iter()
        .find(|c| c.starts_with("SASL "))
        .unwrap_or_else(|| panic!("no SASL in {caps:?}"));
    assert_eq!(sasl, "SASL PLAIN LOGIN CRAM-MD5 XOAUTH2 OAUTHBEARER");
    // USER/PASS still go to the passwd-file.
    assert_eq!(pop.cmd("USER carol"), "+OK");
    assert!(pop.cmd("PASS pw").starts_with("+OK"), "{}", dovecot.log());
    assert_eq!(pop.stat(), (1, message_size()));
    pop.quit();
    // AUTH PLAIN as well.
    let mut pop = Pop3::connect(dovecot.pop3_port());
    let plain = B64.encode("\0carol\0pw");
    assert!(pop.cmd(&format!("AUTH PLAIN {plain}")).starts_with("+OK"));
    pop.quit();
    // A passwd-file password is not a token, and the endpoint heard nothing of PLAIN.
    let mut pop = Pop3::connect(dovecot.pop3_port());
    let last = refused(
        &mut pop,
        "XOAUTH2",
        &xoauth2_response("carol", "pw"),
        XOAUTH2_FAILURE_CHALLENGE,
        "",
    );
    assert_eq!(last, AUTH_FAILED);
    pop.quit();
    assert_eq!(endpoint.tokens_seen(), ["pw"]);
}

#[test]
fn tokens_are_plaintext_credentials_for_disable_plaintext_auth() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_validation(
        Validation::TokenInfo,
        Options {
            plaintext: false,
            ..Options::default()
        },
        &[("tok-alice", "alice")],
    );
    let port = dovecot.pop3_port();
    let addr = SocketAddr::new(dovecot.insecure_host().parse().expect("IP"), port);
    let mut pop = Pop3::connect_to(addr);
    let caps = pop.capa();
    assert!(
        !caps
            .iter()
            .any(|c| c.contains("XOAUTH2") || c.contains("OAUTHBEARER")),
        "{caps:?}"
    );
    for initial in [
        format!("XOAUTH2 {}", xoauth2_response("alice", "tok-alice")),
        format!(
            "OAUTHBEARER {}",
            oauthbearer_response("alice", "127.0.0.2", port, "tok-alice")
        ),
    ] {
        assert_eq!(
            pop.cmd(&format!("AUTH {initial}")),
            "-ERR [AUTH] Plaintext authentication disabled."
        );
    }
    pop.quit();
    assert_eq!(endpoint.tokens_seen(), Vec::<String>::new());
    // The same instance on 127.0.0.1 (secured) takes the token.
    let mut pop = Pop3::connect(port);
    let answer = pop.cmd(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2_response("alice", "tok-alice")
    ));
    assert_eq!(answer, "+OK Logged in.");
    pop.quit();
}

#[test]
fn xoauth2_with_a_valid_token_logs_in() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_oauth(&[("tok-alice", "alice")]);
    dovecot.deliver("alice", MESSAGE);
    let mut pop = Pop3::connect(dovecot.pop3_port());
    let answer = pop.cmd(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2_response("alice", "tok-alice")
    ));
    assert_eq!(answer, "+OK Logged in.", "log:\n{}", dovecot.log());
    assert_eq!(pop.stat(), (1, message_size()));
    pop.quit();
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].target, "/tokeninfo?access_token=tok-alice");
    assert!(
        dovecot.log().contains("method=XOAUTH2"),
        "{}",
        dovecot.log()
    );
}

#[test]
fn oauthbearer_with_a_valid_token_logs_in() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_oauth(&[("tok-bob", "bob")]);
    dovecot.deliver("bob", MESSAGE);
    dovecot.deliver("bob", MESSAGE);
    let port = dovecot.pop3_port();
    let mut pop = Pop3::connect(port);
    let answer = pop.cmd(&format!(
        "AUTH OAUTHBEARER {}",
        oauthbearer_response("bob", "127.0.0.1", port, "tok-bob")
    ));
    assert_eq!(answer, "+OK Logged in.", "log:\n{}", dovecot.log());
    assert_eq!(pop.stat(), (2, 2 * message_size()));
    pop.quit();
    assert_eq!(endpoint.tokens_seen(), ["tok-bob"]);
    assert!(
        dovecot.log().contains("method=OAUTHBEARER"),
        "{}",
        dovecot.log()
    );
}

#[test]
fn two_step_forms_get_an_empty_challenge_first() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, _endpoint) = start_dovecot_with_oauth(&[("tok-alice", "alice")]);
    let port = dovecot.pop3_port();

    let mut pop = Pop3::connect(port);
    assert_eq!(pop.cmd("AUTH XOAUTH2"), "+ ");
    assert_eq!(
        pop.cmd(&xoauth2_response("alice", "tok-alice")),
        "+OK Logged in."
    );
    assert_eq!(pop.stat(), (0, 0));
    pop.quit();

    let mut pop = Pop3::connect(port);
    assert_eq!(pop.cmd("AUTH OAUTHBEARER"), "+ ");
    assert_eq!(
        pop.cmd(&oauthbearer_response(
            "alice",
            "127.0.0.1",
            port,
            "tok-alice"
        )),
        "+OK Logged in."
    );
    assert_eq!(pop.stat(), (0, 0));
    pop.quit();
}

#[test]
fn long_tokens_work_up_to_dovecots_sasl_limit() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_oauth(&[]);
    dovecot.add_mailbox("alice");
    let port = dovecot.pop3_port();
    let token_5k = "k".repeat(5 * 1024);
    endpoint.grant(&token_5k, "alice");
    // The longest XOAUTH2 token whose response fits: 8188 base64 characters are 6141 bytes,
    // of which `user=alice^Aauth=Bearer ` and `^A^A` take 25.
    let token_max = "m".repeat(6141 - 25);
    assert_eq!(xoauth2_response("alice", &token_max).len(), 8188);
    endpoint.grant(&token_max, "alice");
    let token_over = "o".repeat(token_max.len() + 1);
    assert_eq!(xoauth2_response("alice", &token_over).len(), 8192);
    endpoint.grant(&token_over, "alice");

    for token in [&token_5k, &token_max] {
        // Two steps, then in the AUTH line itself (whose 8 KB exceed the 4 KB limit of
        // other command lines, which AUTH does not have).
        let mut pop = Pop3::connect(port);
        assert_eq!(pop.cmd("AUTH XOAUTH2"), "+ ");
        assert_eq!(
            pop.cmd(&xoauth2_response("alice", token)),
            "+OK Logged in.",
            "token of {} bytes; log:\n{}",
            token.len(),
            dovecot.log()
        );
        pop.quit();
        let mut pop = Pop3::connect(port);
        let line = format!("AUTH XOAUTH2 {}", xoauth2_response("alice", token));
        assert_eq!(pop.cmd(&line), "+OK Logged in.");
        pop.quit();
    }
    let mut pop = Pop3::connect(port);
    assert_eq!(pop.cmd("AUTH OAUTHBEARER"), "+ ");
    assert_eq!(
        pop.cmd(&oauthbearer_response("alice", "127.0.0.1", port, &token_5k)),
        "+OK Logged in."
    );
    pop.quit();

    // One character more than MAX_SASL_RESPONSE: no answer, the connection is closed.
    let mut pop = Pop3::connect(port);
    assert_eq!(pop.cmd("AUTH XOAUTH2"), "+ ");
    pop.send(&xoauth2_response("alice", &token_over));
    assert_eq!(pop.line(), None, "expected the connection to be closed");
    let mut pop = Pop3::connect(port);
    pop.send(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2_response("alice", &token_over)
    ));
    assert_eq!(pop.line(), None, "expected the connection to be closed");
    // Up to MAX_SASL_RESPONSE characters are read (and here fail as bad base64).
    let mut pop = Pop3::connect(port);
    assert_eq!(pop.cmd("AUTH XOAUTH2"), "+ ");
    assert_eq!(
        pop.cmd(&"A".repeat(MAX_SASL_RESPONSE)),
        "-ERR [AUTH] Invalid base64 data in continued response"
    );
    pop.quit();
    wait_for_log(&dovecot, "Authentication response too large");
    // The over-long token never reached the endpoint.
    assert!(!endpoint.tokens_seen().contains(&token_over));
    assert_eq!(
        endpoint
            .tokens_seen()
            .iter()
            .filter(|t| **t == token_5k)
            .count(),
        3
    );
}

#[test]
fn a_refused_token_gets_a_json_challenge_then_err() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_oauth(&[("tok-alice", "alice")]);
    endpoint.set("tok-old", Grant::Inactive("alice".into()));
    endpoint.grant("tok-bob", "bob");
    let port = dovecot.pop3_port();
    assert_eq!(
        String::from_utf8(B64.decode(XOAUTH2_FAILURE_CHALLENGE).unwrap()).unwrap(),
        r#"{"status":"401","schemes":"bearer","scope":"mail"}"#
    );
    assert_eq!(
        String::from_utf8(B64.decode(OAUTHBEARER_FAILURE_CHALLENGE).unwrap()).unwrap(),
        r#"{"status":"invalid_token"}"#
    );

    // Unknown, inactive, and another user's token: all the same on the wire.
    for token in ["tok-nobody", "tok-old", "tok-bob"] {
        let mut pop = Pop3::connect(port);
        let started = Instant::now();
        let last = refused(
            &mut pop,
            "XOAUTH2",
            &xoauth2_response("alice", token),
            XOAUTH2_FAILURE_CHALLENGE,
            "",
        );
        assert_eq!(last, AUTH_FAILED, "XOAUTH2 with {token}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // The session survives and may try again, here with a good token.
        let again = pop.cmd(&format!(
            "AUTH XOAUTH2 {}",
            xoauth2_response("alice", "tok-alice")
        ));
        assert_eq!(again, "+OK Logged in.");
        pop.quit();

        let mut pop = Pop3::connect(port);
        let initial = oauthbearer_response("alice", "127.0.0.1", port, token);
        let last = refused(
            &mut pop,
            "OAUTHBEARER",
            &initial,
            OAUTHBEARER_FAILURE_CHALLENGE,
            "AQ==",
        );
        assert_eq!(last, AUTH_FAILED, "OAUTHBEARER with {token}");
        pop.quit();
    }
    let log = dovecot.log();
    for reason in [
        "Token validation failed: Invalid token",
        "Token validation failed: Provided token is not valid",
        "Username 'alice' did not match 'bob'",
    ] {
        assert!(log.contains(reason), "no {reason:?} in the log:\n{log}");
    }

    // Dovecot does not look at the answer to the challenge.
    let mut pop = Pop3::connect(port);
    let last = refused(
        &mut pop,
        "XOAUTH2",
        &xoauth2_response("alice", "tok-nobody"),
        XOAUTH2_FAILURE_CHALLENGE,
        "AQ==",
    );
    assert_eq!(last, AUTH_FAILED);
    pop.quit();

    // Cancelling instead of answering the challenge.
    let mut pop = Pop3::connect(port);
    let first = pop.cmd(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2_response("alice", "tok-nobody")
    ));
    assert_eq!(first, format!("+ {XOAUTH2_FAILURE_CHALLENGE}"));
    assert_eq!(pop.cmd("*"), "-ERR Authentication aborted by client.");
    pop.quit();
}

#[test]
fn a_token_revoked_at_run_time_fails_at_the_next_login() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_oauth(&[("tok-alice", "alice")]);
    let port = dovecot.pop3_port();
    let login = |pop: &mut Pop3| {
        pop.cmd(&format!(
            "AUTH XOAUTH2 {}",
            xoauth2_response("alice", "tok-alice")
        ))
    };
    let mut pop = Pop3::connect(port);
    assert_eq!(login(&mut pop), "+OK Logged in.");
    pop.quit();
    endpoint.revoke("tok-alice");
    let mut pop = Pop3::connect(port);
    assert_eq!(login(&mut pop), format!("+ {XOAUTH2_FAILURE_CHALLENGE}"));
    assert_eq!(pop.cmd(""), AUTH_FAILED);
    pop.quit();
    // Granted again (a new token for the same user would do as well).
    endpoint.grant("tok-alice", "alice");
    let mut pop = Pop3::connect(port);
    assert_eq!(login(&mut pop), "+OK Logged in.");
    pop.quit();
    // No cache: every login asked the endpoint.
    assert_eq!(endpoint.tokens_seen().len(), 3);
}

#[test]
fn an_endpoint_error_is_a_temporary_failure_without_challenge() {
    crate::peers::require_peers!("dovecot");
    let (dovecot, endpoint) = start_dovecot_with_oauth(&[]);
    dovecot.add_mailbox("alice");
    endpoint.set("tok-500", Grant::HttpError(500));
    let port = dovecot.pop3_port();
    let mut pop = Pop3::connect(port);
    let answer = pop.cmd(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2_response("alice", "tok-500")
    ));
    assert!(
        answer.starts_with("-ERR [SYS/TEMP] Temporary authentication failure."),
        "{answer}"
    );
    let answer = pop.cmd(&format!(
        "AUTH OAUTHBEARER {}",
        oauthbearer_response("alice", "127.0.0.1", port, "tok-500")
    ));
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    pop.quit();
    assert!(
        dovecot
            .log()
            .contains("Token validation failed: 500 Internal Server Error"),
        "{}",
        dovecot.log()
    );

    // The same when nothing listens on the endpoint's port any more.
    drop(endpoint);
    let mut pop = Pop3::connect(port);
    let started = Instant::now();
    let answer = pop.cmd(&format!(
        "AUTH XOAUTH2 {}",
        xoauth2_response("alice", "tok-any")
    ));
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(6));
    pop.quit();
}

#[test]
fn introspection_modes_work_too() {
    crate::peers::require_peers!("dovecot");
    for validation in [
        Validation::IntrospectGet,
        Validation::IntrospectPost,
        Validation::IntrospectAuth,
    ] {
        let (dovecot, endpoint) = start_dovecot_with_validation(
            validation,
            Options::default(),
            &[("tok+/=alice", "alice")],
        );
        let port = dovecot.pop3_port();
        let mut pop = Pop3::connect(port);
        let answer = pop.cmd(&format!(
            "AUTH XOAUTH2 {}",
            xoauth2_response("alice", "tok+/=alice")
        ));
        assert_eq!(
            answer,
            "+OK Logged in.",
            "{validation:?}: {}",
            dovecot.log()
        );
        pop.quit();
        // An unknown token is refused, not a temporary failure.
        let mut pop = Pop3::connect(port);
        let last = refused(
            &mut pop,
            "XOAUTH2",
            &xoauth2_response("alice", "tok-nobody"),
            XOAUTH2_FAILURE_CHALLENGE,
            "",
        );
        assert_eq!(last, AUTH_FAILED, "{validation:?}");
        pop.quit();

        let requests = endpoint.requests();
        assert_eq!(requests.len(), 2, "{validation:?}: {requests:?}");
        let r = &requests[0];
        assert_eq!(r.token.as_deref(), Some("tok+/=alice"), "{r:?}");
        match validation {
            Validation::IntrospectGet => {
                assert_eq!(r.method, "GET");
                // Unlike tokeninfo, the introspection GET carries the client fields too.
                assert_eq!(
                    r.target,
                    "/introspect?access_token=tok%2b%2f%3dalice&client_id=&client_secret="
                );
            }
            Validation::IntrospectPost => {
                assert_eq!(r.method, "POST");
                assert_eq!(r.target, "/introspect");
                assert_eq!(r.body, "token=tok%2b%2f%3dalice&client_id=&client_secret=");
            }
            Validation::IntrospectAuth => {
                assert_eq!(r.method, "GET");
                assert_eq!(r.target, "/introspect");
                assert_eq!(r.authorization.as_deref(), Some("Bearer tok+/=alice"));
            }
            Validation::TokenInfo => unreachable!(),
        }
    }
}

#[test]
fn the_endpoint_answers_by_itself() {
    let endpoint = TokenEndpoint::start();
    endpoint.grant("a%b", "alice");
    let get = |target: &str| -> String {
        let mut s = TcpStream::connect(("127.0.0.1", endpoint.port())).expect("connect");
        s.set_read_timeout(Some(HTTP_IO_TIMEOUT)).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read answer");
        out
    };
    let ok = get("/tokeninfo?access_token=a%25b");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.ends_with(r#"{"active":true,"username":"alice"}"#),
        "{ok}"
    );
    let unknown = get("/tokeninfo?access_token=zzz");
    assert!(unknown.starts_with("HTTP/1.1 401 "), "{unknown}");
    let unknown = get("/introspect?access_token=zzz");
    assert!(unknown.ends_with(r#"{"active":false}"#), "{unknown}");
    assert_eq!(get("/other").split(' ').nth(1), Some("404"));
    assert_eq!(endpoint.tokens_seen(), ["a%b", "zzz", "zzz"]);
    assert_eq!(percent_decode("%41%4a%zz%4"), "AJ%zz%4");
}

/// Waits (bounded) until the instance's log contains `needle`: Dovecot logs asynchronously.
fn wait_for_log(dovecot: &Dovecot, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dovecot.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            dovecot.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
