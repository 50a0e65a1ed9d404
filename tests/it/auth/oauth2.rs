//! OAuth2 token sources against a token endpoint served by the test itself: HTTPS on loopback
//! with a throw-away CA made by the `openssl` CLI, answering what each test scripts and
//! recording every request. The library API (`popfetch::oauth2::access_token`) is called
//! directly; `popfetch oauth2-authorize` runs as the real binary.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dovecot::{make_certificates, run_bounded};
use crate::harness::Env;
use popfetch::oauth2::{OAuth2Error, access_token, invalidate};

/// Bound for each external command (`openssl`, the binary under test).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one connection to the test endpoint.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// A request the endpoint received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    form: HashMap<String, String>,
}

/// What the endpoint sends back: raw bytes, so tests can send anything.
enum Reply {
    Bytes(Vec<u8>),
    /// Accept the request and never answer.
    Silence,
}

fn json(status: u16, body: &str) -> Reply {
    let reason = if status == 200 { "OK" } else { "Bad Request" };
    Reply::Bytes(
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

type Handler = Box<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

/// An HTTPS endpoint on 127.0.0.1 with its own CA; stops when dropped.
struct Endpoint {
    port: u16,
    dir: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    /// Serves TLS with a certificate for 127.0.0.1 made in `dir` (`dir/ca.pem` is its CA);
    /// `handler` gets each request and how many came before it.
    fn start(
        dir: &Path,
        handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Endpoint {
        make_certificates(dir);
        use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_private_key_file(dir.join("server.key"), SslFiletype::PEM)
            .unwrap();
        b.set_certificate_chain_file(dir.join("server.pem"))
            .unwrap();
        Self::serve(dir, Some(b.build()), Box::new(handler))
    }

    /// The same without TLS: what an `https://` URL must never settle for.
    fn start_plain(
        dir: &Path,
        handler: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Endpoint {
        Self::serve(dir, None, Box::new(handler))
    }

    fn serve(
        dir: &Path,
        acceptor: Option<openssl::ssl::SslAcceptor>,
        handler: Handler,
    ) -> Endpoint {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let recorded = requests.clone();
        let handler = Arc::new(handler);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = acceptor.map(Arc::new);
                loop {
                    let tcp = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => match a {
                            Ok((tcp, _)) => tcp,
                            Err(_) => continue,
                        },
                    };
                    let acceptor = acceptor.clone();
                    let recorded = recorded.clone();
                    let handler = handler.clone();
                    tokio::spawn(tokio::time::timeout(CONNECTION_TIMEOUT, async move {
                        match acceptor {
                            Some(a) => {
                                let Ok(ssl) = openssl::ssl::Ssl::new(a.context()) else {
                                    return;
                                };
                                let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else {
                                    return;
                                };
                                if std::pin::Pin::new(&mut tls).accept().await.is_ok() {
                                    serve_one(tls, &recorded, &*handler).await;
                                }
                            }
                            None => serve_one(tcp, &recorded, &*handler).await,
                        }
                    }));
                }
            });
        });
        Endpoint {
            port,
            dir: dir.to_path_buf(),
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (head and `Content-Length` body, both bounded), records it, answers.
async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    recorded: &Mutex<Vec<Request>>,
    handler: &(dyn Fn(&Request, usize) -> Reply + Send + Sync),
) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
        .min(64 * 1024);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
    let form = popfetch::oauth2::http::parse_query(&body)
        .into_iter()
        .collect();
    let request = Request { path, form };
    let n = {
        let mut r = recorded.lock().unwrap();
        r.push(request.clone());
        r.len() - 1
    };
    match handler(&request, n) {
        Reply::Bytes(b) => {
            let _ = s.write_all(&b).await;
            let _ = s.shutdown().await;
        }
        Reply::Silence => tokio::time::sleep(CONNECTION_TIMEOUT).await,
    }
}

/// One test's account: a config in a temp dir whose `[account.oauth2]` points at `endpoint`.
/// Account names differ between tests: the token cache is per process and per account name.
struct Setup {
    env: Env,
    name: String,
}

impl Setup {
    fn new(name: &str, endpoint: &Endpoint, extra: &str) -> Setup {
        let env = Env::new();
        std::fs::write(env.path().join("client.secret"), "client-s3cret\n").unwrap();
        std::fs::set_permissions(
            env.path().join("client.secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        env.write_config(&format!(
            "[[account]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nuser = \"u\"\n\
             deliver = {{ maildir = \"{maildir}\" }}\ntimeout = \"5s\"\n\n\
             [account.oauth2]\ntoken_url = \"{token}\"\nclient_id = \"popfetch-test\"\n\
             client_secret_file = \"client.secret\"\nrefresh_token_file = \"tokens/refresh\"\n\
             scope = \"mail offline\"\nca_file = \"{ca}\"\n{extra}",
            maildir = env.maildir().display(),
            token = endpoint.url("/token"),
            ca = endpoint.ca_file().display(),
        ));
        Setup {
            env,
            name: name.to_string(),
        }
    }

    fn refresh_file(&self) -> PathBuf {
        self.env.path().join("tokens/refresh")
    }

    fn write_refresh(&self, token: &str) {
        let f = self.refresh_file();
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn config(&self) -> popfetch::config::Config {
        popfetch::config::load(&self.env.config_path()).expect("config")
    }

    /// `access_token` for the account, as the login path calls it.
    fn token(&self) -> Result<String, OAuth2Error> {
        let config = self.config();
        let account = config.account(&self.name).expect("account").clone();
        runtime()
            .block_on(access_token(&account, &config.state_dir))
            .map(|t| t.expose().clone())
    }

    fn invalidate(&self) {
        let config = self.config();
        invalidate(config.account(&self.name).unwrap(), &config.state_dir);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn token_json(access: &str, expires_in: u64, refresh: Option<&str>) -> String {
    let r = refresh
        .map(|r| format!(",\"refresh_token\":\"{r}\""))
        .unwrap_or_default();
    format!(
        "{{\"access_token\":\"{access}\",\"token_type\":\"Bearer\",\"expires_in\":{expires_in}{r}}}"
    )
}

#[test]
fn refresh_exchanges_the_refresh_token_and_reuses_the_access_token() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |_, n| {
        json(200, &token_json(&format!("at-{n}"), 3600, None))
    });
    let s = Setup::new("oauth2-refresh", &ep, "");
    s.write_refresh("rt-0");

    assert_eq!(s.token().unwrap(), "at-0");
    let r = ep.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].path, "/token");
    let f = &r[0].form;
    assert_eq!(f["grant_type"], "refresh_token");
    assert_eq!(f["refresh_token"], "rt-0");
    assert_eq!(f["client_id"], "popfetch-test");
    assert_eq!(f["client_secret"], "client-s3cret");
    assert_eq!(f["scope"], "mail offline");

    // Before its expiry the token is reused: no second request.
    assert_eq!(s.token().unwrap(), "at-0");
    assert_eq!(ep.requests().len(), 1);
    // It is also on disk for the next process, private.
    let cache = s.env.path().join("state/oauth2-refresh.oauth2-token");
    assert_eq!(mode(&cache), 0o600);
    // Unchanged refresh token: the file is left alone.
    assert_eq!(std::fs::read_to_string(s.refresh_file()).unwrap(), "rt-0\n");

    // After the server refused the token, the next login gets a fresh one.
    s.invalidate();
    assert!(!cache.exists());
    assert_eq!(s.token().unwrap(), "at-1");
    assert_eq!(ep.requests().len(), 2);
}

#[test]
fn a_token_about_to_expire_is_refreshed_and_a_long_lived_one_is_not() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    // The first two tokens live 30 s, less than the safety margin; the third an hour.
    let ep = Endpoint::start(dir.path(), |_, n| {
        let life = if n < 2 { 30 } else { 3600 };
        json(200, &token_json(&format!("at-{n}"), life, None))
    });
    let s = Setup::new("oauth2-expiry", &ep, "");
    s.write_refresh("rt-0");
    assert_eq!(s.token().unwrap(), "at-0");
    assert_eq!(
        s.token().unwrap(),
        "at-1",
        "an expiring token is not reused"
    );
    assert_eq!(s.token().unwrap(), "at-2");
    assert_eq!(s.token().unwrap(), "at-2", "a valid token is reused");
    assert_eq!(ep.requests().len(), 3);
}

#[test]
fn a_new_authorization_is_not_served_a_token_of_the_old_grant() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |r, _| {
        json(
            200,
            &token_json(&format!("for-{}", r.form["refresh_token"]), 3600, None),
        )
    });
    let s = Setup::new("oauth2-regrant", &ep, "");
    s.write_refresh("rt-a");
    assert_eq!(s.token().unwrap(), "for-rt-a");
    s.write_refresh("rt-b");
    assert_eq!(s.token().unwrap(), "for-rt-b");
}

#[test]
fn a_rotated_refresh_token_is_written_back_atomically() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |r, n| {
        let next = format!("rt-{}", n + 1);
        assert_eq!(
            r.form["refresh_token"],
            format!("rt-{n}"),
            "the newest refresh token is used"
        );
        json(200, &token_json(&format!("at-{n}"), 3600, Some(&next)))
    });
    let s = Setup::new("oauth2-rotation", &ep, "");
    s.write_refresh("rt-0");
    std::fs::set_permissions(s.refresh_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(s.token().unwrap(), "at-0");
    assert_eq!(std::fs::read_to_string(s.refresh_file()).unwrap(), "rt-1\n");
    assert_eq!(mode(&s.refresh_file()), 0o600);
    let left: Vec<_> = std::fs::read_dir(s.refresh_file().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["refresh"], "no temporary file is left");
    s.invalidate();
    assert_eq!(s.token().unwrap(), "at-1");
    assert_eq!(std::fs::read_to_string(s.refresh_file()).unwrap(), "rt-2\n");
    assert_eq!(ep.requests().len(), 2);
}

#[test]
fn a_revoked_refresh_token_says_to_run_oauth2_authorize() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |_, _| {
        json(
            400,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
    });
    let s = Setup::new("oauth2-revoked", &ep, "");
    s.write_refresh("rt-revoked");
    let e = s.token().unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("run `popfetch oauth2-authorize oauth2-revoked`"),
        "{msg}"
    );
    assert!(msg.contains("Token has been expired or revoked."), "{msg}");
    assert!(
        !msg.contains("rt-revoked") && !msg.contains("client-s3cret"),
        "{msg}"
    );
    assert!(!e.is_transient(), "retrying cannot help");
    assert_eq!(
        std::fs::read_to_string(s.refresh_file()).unwrap(),
        "rt-revoked\n"
    );
}

#[test]
fn no_refresh_token_yet_says_to_run_oauth2_authorize() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |_, _| json(200, &token_json("x", 3600, None)));
    let s = Setup::new("oauth2-unauthorized", &ep, "");
    let e = s.token().unwrap_err().to_string();
    assert!(
        e.contains("run `popfetch oauth2-authorize oauth2-unauthorized`"),
        "{e}"
    );
    assert!(ep.requests().is_empty());
}

#[test]
fn hostile_endpoint_answers_give_clear_bounded_errors() {
    crate::peers::require_peers!("openssl");
    let huge = {
        let mut b =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"access_token\":\""
                .to_vec();
        b.resize(4 * 1024 * 1024, b'a');
        b
    };
    let endless_chunk =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffff\r\naaaa".to_vec();
    let cases: Vec<(&str, Reply, &str)> = vec![
        ("hostile-huge", Reply::Bytes(huge), "larger than"),
        ("hostile-chunk", Reply::Bytes(endless_chunk), "larger than"),
        (
            "hostile-html",
            json(200, "<html>maintenance</html>"),
            "not JSON",
        ),
        ("hostile-array", json(200, "[]"), "not an object"),
        (
            "hostile-token",
            json(200, r#"{"access_token":"a\r\nb"}"#),
            "cannot have",
        ),
        (
            "hostile-truncated",
            Reply::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"access".to_vec()),
            "ended in the middle",
        ),
        ("hostile-silent", Reply::Silence, "no complete answer"),
    ];
    for (name, reply, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let reply = Mutex::new(Some(reply));
        let ep = Endpoint::start(dir.path(), move |_, _| {
            reply.lock().unwrap().take().unwrap_or(Reply::Silence)
        });
        let s = Setup::new(name, &ep, "");
        s.write_refresh("rt-0");
        let e = s.token().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(msg.len() < 400, "{name}: the message is bounded: {msg}");
        assert!(e.is_transient(), "{name}: a broken answer may be momentary");
    }
}

#[test]
fn the_endpoint_certificate_is_verified() {
    crate::peers::require_peers!("openssl");
    // No ca_file: the test CA is not trusted.
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |_, _| json(200, &token_json("x", 3600, None)));
    let s = Setup::new("oauth2-untrusted", &ep, "");
    let text = std::fs::read_to_string(s.env.config_path()).unwrap();
    let ca_line = format!("ca_file = \"{}\"\n", ep.ca_file().display());
    s.env
        .write_config(&text.split_once("\n\n").unwrap().1.replace(&ca_line, ""));
    s.write_refresh("rt-0");
    let e = s.token().unwrap_err().to_string();
    assert!(e.contains("certificate") || e.contains("TLS"), "{e}");
    assert!(ep.requests().is_empty(), "nothing was sent");

    // Clear text behind an https:// URL: refused, the refresh token never sent.
    let dir = tempfile::tempdir().unwrap();
    let plain = Endpoint::start_plain(dir.path(), |_, _| json(200, &token_json("x", 3600, None)));
    make_certificates(dir.path());
    let s = Setup::new("oauth2-plain", &plain, "");
    s.write_refresh("rt-0");
    let e = s.token().unwrap_err().to_string();
    assert!(e.contains("oauth2 token endpoint"), "{e}");
    assert!(
        plain.requests().is_empty(),
        "nothing was sent: {:?}",
        plain.requests()
    );
}

/// Issue 14 item 2: the token endpoint trusts every certificate of a `ca_file` bundle.
#[test]
fn issue14_2_the_endpoint_is_trusted_by_a_ca_second_in_ca_file() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |_, _| {
        json(200, &token_json("at-1", 3600, None))
    });
    let s = Setup::new("oauth2-bundle", &ep, "");
    let bundle = crate::deliver::issue13_edge::bundle_with_ca_second(dir.path(), &ep.ca_file());
    let text = std::fs::read_to_string(s.env.config_path()).unwrap();
    let text = text.split_once("\n\n").unwrap().1.replace(
        &format!("ca_file = \"{}\"", ep.ca_file().display()),
        &format!("ca_file = \"{}\"", bundle.display()),
    );
    assert!(text.contains("bundle.pem"), "{text}");
    s.env.write_config(&text);
    s.write_refresh("rt-0");
    assert_eq!(s.token().unwrap(), "at-1");
    assert_eq!(ep.requests().len(), 1);
}

/// An account whose token comes from `argv` (`{dir}` is replaced by the test's directory).
fn command_account(
    name: &str,
    argv: &[&str],
    ttl: Option<&str>,
) -> (Env, popfetch::config::Config) {
    let env = Env::new();
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{dir}", &env.path().display().to_string()))
        .collect();
    env.write_config(&format!(
        "[[account]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nuser = \"u\"\n\
         deliver = {{ maildir = \"{}\" }}\ntimeout = \"10s\"\noauth2_token_command = {argv:?}\n{}",
        env.maildir().display(),
        ttl.map(|t| format!("oauth2_token_ttl = \"{t}\"\n"))
            .unwrap_or_default(),
    ));
    let config = popfetch::config::load(&env.config_path()).unwrap();
    (env, config)
}

fn command_token(config: &popfetch::config::Config) -> Result<String, OAuth2Error> {
    let account = config.accounts[0].clone();
    runtime()
        .block_on(access_token(&account, &config.state_dir))
        .map(|t| t.expose().clone())
}

#[test]
fn a_failing_token_command_gives_a_clear_error_and_no_token() {
    let (_env, c) = command_account(
        "cmd-fails",
        &[
            "sh",
            "-c",
            "echo leaked-token; echo 'helper: cannot reach the provider' >&2; exit 3",
        ],
        None,
    );
    let e = command_token(&c).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("oauth2_token_command \"sh\": it failed"),
        "{msg}"
    );
    assert!(msg.contains("helper: cannot reach the provider"), "{msg}");
    assert!(
        !msg.contains("leaked-token"),
        "stdout is never quoted: {msg}"
    );

    let (_env, c) = command_account("cmd-empty", &["true"], None);
    let msg = command_token(&c).unwrap_err().to_string();
    assert_eq!(msg, "oauth2_token_command \"true\": it printed no token");

    let (_env, c) = command_account("cmd-missing", &["/nonexistent/token-helper"], None);
    let msg = command_token(&c).unwrap_err().to_string();
    assert!(msg.contains("cannot run it"), "{msg}");

    let (_env, c) = command_account("cmd-slow", &["sleep", "30"], None);
    let c = {
        let mut c = c;
        let mut a = (*c.accounts[0]).clone();
        a.timeout = Duration::from_millis(300);
        c.accounts[0] = Arc::new(a);
        c
    };
    let msg = command_token(&c).unwrap_err().to_string();
    assert!(msg.contains("no answer within"), "{msg}");
}

#[test]
fn a_token_command_runs_without_a_shell_and_its_token_is_cached_as_it_says() {
    // Each run appends to a counter file; the output names its lifetime.
    let script =
        "echo run >> \"$0/runs\"; echo '{\"access_token\":\"cmd-tok\",\"expires_in\":3600}'";
    let (env, c) = command_account("cmd-json", &["sh", "-c", script, "{dir}"], None);
    assert_eq!(command_token(&c).unwrap(), "cmd-tok");
    assert_eq!(command_token(&c).unwrap(), "cmd-tok");
    let runs = std::fs::read_to_string(env.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "reused until it expires");

    // A bare token with no ttl: the command runs before every login.
    let script = "echo run >> \"$0/runs\"; printf 'bare-tok\\n'";
    let (env, c) = command_account("cmd-bare", &["sh", "-c", script, "{dir}"], None);
    assert_eq!(command_token(&c).unwrap(), "bare-tok");
    assert_eq!(command_token(&c).unwrap(), "bare-tok");
    let runs = std::fs::read_to_string(env.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 2);

    // With oauth2_token_ttl it is reused.
    let (env, c) = command_account("cmd-ttl", &["sh", "-c", script, "{dir}"], Some("50m"));
    assert_eq!(command_token(&c).unwrap(), "bare-tok");
    assert_eq!(command_token(&c).unwrap(), "bare-tok");
    let runs = std::fs::read_to_string(env.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1);

    // Arguments reach the program as they are: no shell expands them.
    let (env, c) = command_account(
        "cmd-argv",
        &[
            "sh",
            "-c",
            "printf '%s' \"$1\" > \"$0/arg\"; echo t",
            "{dir}",
            "$HOME;`id`",
        ],
        None,
    );
    command_token(&c).unwrap();
    assert_eq!(
        std::fs::read_to_string(env.path().join("arg")).unwrap(),
        "$HOME;`id`"
    );
}

/// Runs `popfetch -c CONFIG oauth2-authorize NAME` with stdin closed.
fn authorize(s: &Setup, args: &[&str]) -> std::process::Output {
    let mut cmd = s.env.command(&["oauth2-authorize", &s.name]);
    cmd.args(args);
    run_bounded(&mut cmd, b"", COMMAND_TIMEOUT).expect("popfetch oauth2-authorize")
}

#[test]
fn device_flow_end_to_end() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let polls = Arc::new(Mutex::new(0));
    let p = polls.clone();
    let ep = Endpoint::start(dir.path(), move |r, _| match r.path.as_str() {
        "/device" => json(
            200,
            r#"{"device_code":"dc-1","user_code":"WDJB-MJHT","verification_uri":"https://127.0.0.1/activate","expires_in":120,"interval":1}"#,
        ),
        "/token" => {
            let mut n = p.lock().unwrap();
            *n += 1;
            if *n == 1 {
                json(400, r#"{"error":"authorization_pending"}"#)
            } else {
                json(200, &token_json("at-dev", 3600, Some("rt-dev")))
            }
        }
        _ => json(404, r#"{"error":"not_found"}"#),
    });
    let s = Setup::new(
        "oauth2-device",
        &ep,
        &format!("device_authorization_url = \"{}\"\n", ep.url("/device")),
    );
    let out = authorize(&s, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("https://127.0.0.1/activate"), "{stdout}");
    assert!(stdout.contains("WDJB-MJHT"), "{stdout}");
    assert!(
        stdout.contains("authorized; refresh token written to"),
        "{stdout}"
    );
    assert!(!stdout.contains("rt-dev") && !stdout.contains("at-dev") && !stdout.contains("dc-1"));

    assert_eq!(
        std::fs::read_to_string(s.refresh_file()).unwrap(),
        "rt-dev\n"
    );
    assert_eq!(mode(&s.refresh_file()), 0o600);
    let r = ep.requests();
    assert_eq!(r[0].path, "/device");
    assert_eq!(r[0].form["client_id"], "popfetch-test");
    assert_eq!(r[0].form["scope"], "mail offline");
    let polls: Vec<_> = r.iter().filter(|r| r.path == "/token").collect();
    assert_eq!(polls.len(), 2, "one pending answer, then the grant");
    for p in polls {
        assert_eq!(
            p.form["grant_type"],
            "urn:ietf:params:oauth:grant-type:device_code"
        );
        assert_eq!(p.form["device_code"], "dc-1");
        assert_eq!(p.form["client_secret"], "client-s3cret");
    }
    // The access token from the authorization is cached for the first poll.
    let cache = s.env.path().join("state/oauth2-device.oauth2-token");
    assert_eq!(mode(&cache), 0o600);
    assert_eq!(s.token().unwrap(), "at-dev");
    assert_eq!(ep.requests().len(), 3, "no refresh needed");
}

#[test]
fn device_flow_declined_is_a_clear_failure() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::start(dir.path(), |r, _| match r.path.as_str() {
        "/device" => json(
            200,
            r#"{"device_code":"dc-1","user_code":"C","verification_uri":"https://127.0.0.1/a","expires_in":60,"interval":1}"#,
        ),
        _ => json(400, r#"{"error":"access_denied"}"#),
    });
    let s = Setup::new(
        "oauth2-declined",
        &ep,
        &format!("device_authorization_url = \"{}\"\n", ep.url("/device")),
    );
    let out = authorize(&s, &["--flow", "device"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the authorization was declined"),
        "{stderr}"
    );
    assert!(!s.refresh_file().exists());
}

/// Starts `oauth2-authorize --flow browser`; returns the child and the authorization URL it
/// printed.
fn start_browser_flow(s: &Setup) -> (std::process::Child, String) {
    let mut child = s
        .env
        .command(&["oauth2-authorize", &s.name, "--flow", "browser"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads to the end even after the URL was found, so the child never writes into a closed
    // pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("https://") => return (child, line),
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("no authorization URL printed: {e}");
            }
        }
    }
}

/// Waits for the child to end (bounded), returning its status and stderr.
fn finish(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("oauth2-authorize did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

fn query_of(url: &str) -> HashMap<String, String> {
    popfetch::oauth2::http::parse_query(url.split_once('?').unwrap().1)
        .into_iter()
        .collect()
}

/// A plain HTTP GET to the loopback redirect listener; returns the status line.
fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(CONNECTION_TIMEOUT)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

fn browser_endpoint(dir: &Path) -> Endpoint {
    Endpoint::start(dir, |r, _| {
        if r.form.get("grant_type").map(String::as_str) == Some("authorization_code") {
            json(200, &token_json("at-web", 3600, Some("rt-web")))
        } else {
            json(400, r#"{"error":"unsupported_grant_type"}"#)
        }
    })
}

#[test]
fn browser_flow_with_the_loopback_redirect() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = browser_endpoint(dir.path());
    let s = Setup::new(
        "oauth2-browser",
        &ep,
        &format!("authorization_url = \"{}\"\n", ep.url("/authorize")),
    );
    let (child, url) = start_browser_flow(&s);
    assert!(url.starts_with(&ep.url("/authorize?")), "{url}");
    let q = query_of(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "popfetch-test");
    assert_eq!(q["scope"], "mail offline");
    assert_eq!(q["code_challenge_method"], "S256");
    let redirect = q["redirect_uri"].clone();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");

    // A request without this flow's state is not taken for the answer.
    assert!(get(&format!("{redirect}?code=forged&state=wrong")).contains("404"));
    assert!(get(&format!("{redirect}favicon.ico")).contains("404"));
    let status = get(&format!("{redirect}?code=code-1&state={}", q["state"]));
    assert!(status.contains("200"), "{status}");
    let (st, stderr) = finish(child);
    assert!(st.success(), "{st}: {stderr}");

    let r = ep.requests();
    assert_eq!(r.len(), 1, "{r:?}");
    let f = &r[0].form;
    assert_eq!(f["code"], "code-1");
    assert_eq!(f["redirect_uri"], redirect);
    assert_eq!(f["client_id"], "popfetch-test");
    assert_eq!(f["client_secret"], "client-s3cret");
    assert_eq!(
        popfetch::oauth2::authorize::s256(&f["code_verifier"]),
        q["code_challenge"],
        "the verifier matches the challenge"
    );
    assert_eq!(
        std::fs::read_to_string(s.refresh_file()).unwrap(),
        "rt-web\n"
    );
    assert_eq!(mode(&s.refresh_file()), 0o600);
}

#[test]
fn browser_flow_with_the_address_pasted() {
    crate::peers::require_peers!("openssl");
    let dir = tempfile::tempdir().unwrap();
    let ep = browser_endpoint(dir.path());
    let s = Setup::new(
        "oauth2-paste",
        &ep,
        &format!("authorization_url = \"{}\"\n", ep.url("/authorize")),
    );
    let (mut child, url) = start_browser_flow(&s);
    let q = query_of(&url);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "nonsense that is not a code").unwrap();
    writeln!(
        stdin,
        "{}?state={}&code=pasted-2&scope=x",
        q["redirect_uri"], q["state"]
    )
    .unwrap();
    drop(stdin);
    let (st, stderr) = finish(child);
    assert!(st.success(), "{st}: {stderr}");
    assert_eq!(ep.requests()[0].form["code"], "pasted-2");
    assert_eq!(
        std::fs::read_to_string(s.refresh_file()).unwrap(),
        "rt-web\n"
    );
}

/// The whole chain through the real binary: the built-in refresh gets an access token from the
/// HTTPS endpoint, Dovecot (OAuth2 passdb) accepts it, mail is delivered. When Dovecot stops
/// accepting the cached token, the failed login drops it, and the next poll refreshes and
/// gets in.
#[test]
fn fetch_refreshes_logs_in_to_dovecot_and_drops_a_refused_token() {
    crate::peers::require_peers!("dovecot");
    use crate::harness::{expected, message};
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::start(dir.path(), |_, n| {
        json(
            200,
            &token_json(
                &format!("acc-{}", n + 1),
                3600,
                Some(&format!("rt-{}", n + 1)),
            ),
        )
    });
    let (d, peer) = crate::auth::oauth_peer::start_dovecot_with_oauth(&[("acc-1", "alice")]);
    d.add_mailbox("alice");
    d.deliver("alice", &message(1, 1500));
    let env = Env::new();
    env.write_config(&format!(
        "[[account]]\nname = \"alice\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"\n\
         user = \"alice\"\nauth = \"xoauth2\"\ndeliver = {{ maildir = \"{}\" }}\n\n\
         [account.oauth2]\ntoken_url = \"{}\"\nclient_id = \"popfetch-test\"\n\
         refresh_token_file = \"refresh\"\nca_file = \"{}\"\n",
        d.pop3s_port(),
        d.ca_file().display(),
        env.maildir().display(),
        endpoint.url("/token"),
        endpoint.ca_file().display(),
    ));
    let refresh = env.path().join("refresh");
    std::fs::write(&refresh, "rt-0\n").unwrap();
    std::fs::set_permissions(&refresh, std::fs::Permissions::from_mode(0o600)).unwrap();

    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(env.delivered(), vec![expected(&message(1, 1500))]);
    assert_eq!(std::fs::read_to_string(&refresh).unwrap().trim(), "rt-1");
    assert_eq!(endpoint.requests().len(), 1);

    // The cached token is reused while Dovecot takes it.
    d.deliver("alice", &message(2, 1500));
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(
        endpoint.requests().len(),
        1,
        "no refresh while the token is good"
    );
    assert_eq!(env.delivered().len(), 2);

    // Dovecot stops taking it: that poll fails, nothing is lost, the token is dropped.
    peer.revoke("acc-1");
    peer.grant("acc-2", "alice");
    d.deliver("alice", &message(3, 1500));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("token rejected"), "{}", run.stderr);
    assert!(!run.stderr.contains("acc-1"), "{}", run.stderr);
    assert_eq!(d.message_count("alice"), 1);
    // The next poll refreshes and gets in.
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert_eq!(endpoint.requests().len(), 2);
    assert_eq!(env.delivered().len(), 3);
    assert_eq!(std::fs::read_to_string(&refresh).unwrap().trim(), "rt-2");
    assert_eq!(d.message_count("alice"), 0);
}
