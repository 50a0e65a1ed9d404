//! The `metrics_listen` endpoint: `GET /metrics` over HTTP/1.x, one request per connection.
//!
//! A scrape is one small GET, so this is a few dozen lines on tokio rather than an HTTP server
//! crate: the request head is read up to [`MAX_HEAD`] within [`READ_TIMEOUT`], answered once
//! with `Connection: close`, and the connection closed. At most [`MAX_CONNECTIONS`] are served
//! at once; more are closed unanswered. `HEAD` is answered too; other methods get 405, other
//! paths 404. What a request head means is decided by [`route`], without a socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, Metrics};

/// The most a request head may take, request line and header fields together; a scraper sends
/// a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its whole request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; a scraper needs one.
pub const MAX_CONNECTIONS: usize = 8;
/// After the answer, unread input is read and dropped for this long at most, so that closing
/// the socket does not reset the connection before the client has read the answer.
const LINGER: Duration = Duration::from_millis(500);

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`, or `HEAD /metrics` (`body` false).
    Metrics {
        body: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// The length of the request head at the start of `buf`, blank line included, once it has
/// arrived whole.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    // RFC 9112 §2.2: a bare LF may end a line.
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the request line of `head` asks for (RFC 9112 §3: method SP target SP version).
pub fn route(head: &[u8]) -> Route {
    let line_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let Ok(line) = std::str::from_utf8(line) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method) || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return Route::MethodNotAllowed,
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path == "/metrics" {
        Route::Metrics { body }
    } else {
        Route::NotFound
    }
}

/// A running endpoint; dropping it stops it (connections being answered end at once).
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Server {
    /// Binds `addr` and serves `metrics` there until dropped. Must run inside the runtime.
    pub fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<Server> {
        // Bound synchronously so a reload (not async) can rebind and say at once if it cannot.
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, metrics, stop.clone()));
        Ok(Server { addr, stop })
    }

    /// The address it listens on (the port filled in when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // Dropped unanswered: too many at once.
        };
        let (metrics, stop) = (metrics.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = answer(stream, &metrics) => {}
            }
            drop(slot);
        });
    }
}

/// How reading a request head ended.
enum Head {
    Whole(Vec<u8>),
    TooLarge,
    /// The client closed (or failed) before the head was whole.
    Gone,
}

async fn read_head(stream: &mut TcpStream) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Head::Gone,
            Ok(n) => n,
        };
        // Search from a little before the new bytes: the blank line may straddle two reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]) {
            buf.truncate(from + end);
            return Head::Whole(buf);
        }
        if buf.len() > MAX_HEAD {
            return Head::TooLarge;
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_nodelay(true);
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Head::Whole(head)) => match route(&head) {
            Route::Metrics { body } => {
                let text = metrics.encode();
                response("200 OK", CONTENT_TYPE, "", text.as_bytes(), body)
            }
            Route::NotFound => plain("404 Not Found", "", "not found; try /metrics\n"),
            Route::MethodNotAllowed => plain(
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "only GET and HEAD\n",
            ),
            Route::BadRequest => plain("400 Bad Request", "", "bad request\n"),
        },
        Ok(Head::TooLarge) => plain(
            "431 Request Header Fields Too Large",
            "",
            "request head too large\n",
        ),
        Ok(Head::Gone) => return,
        Err(_) => plain("408 Request Timeout", "", "request timeout\n"),
    };
    let sent = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(sent, Ok(Ok(()))) {
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

fn plain(status: &str, extra: &str, body: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        extra,
        body.as_bytes(),
        true,
    )
}

/// An HTTP/1.1 answer that closes the connection; `send_body` false for HEAD (the length is
/// still the body's).
fn response(
    status: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
    send_body: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body);
    }
    out
}
