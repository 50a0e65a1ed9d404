use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::serve::{self, Route, head_end, route};
use super::{Metrics, PollResult};
use crate::report::Report;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(name)).collect()
}

#[test]
fn a_poll_is_counted_in_every_family() {
    let m = Metrics::new();
    m.set_accounts(["home"]);
    let report = Report {
        delivered: 3,
        bytes: 4096,
        held: 1,
        newly_held: 1,
        too_large: 2,
        deferred: 5,
        ..Report::default()
    };
    m.poll_done(
        "home",
        &report,
        PollResult::Ok,
        Duration::from_millis(700),
        at(1_700_000_000),
    );
    m.next_poll("home", Some(at(1_700_000_300)));
    let text = m.encode();
    for want in [
        "# TYPE popfetch_polls_total counter",
        "popfetch_polls_total{account=\"home\",result=\"ok\"} 1",
        "popfetch_polls_total{account=\"home\",result=\"failed\"} 0",
        "# TYPE popfetch_delivered_messages_total counter",
        "popfetch_delivered_messages_total{account=\"home\"} 3",
        "popfetch_delivered_bytes_total{account=\"home\"} 4096",
        "popfetch_held_messages{account=\"home\"} 2",
        "popfetch_too_large_messages{account=\"home\"} 2",
        // held 2 + too large 2 + deferred 5
        "popfetch_waiting_messages{account=\"home\"} 9",
        "popfetch_last_success_timestamp_seconds{account=\"home\"} 1700000000",
        "popfetch_next_poll_timestamp_seconds{account=\"home\"} 1700000300",
        "# TYPE popfetch_poll_duration_seconds histogram",
        "popfetch_poll_duration_seconds_bucket{account=\"home\",le=\"0.5\"} 0",
        "popfetch_poll_duration_seconds_bucket{account=\"home\",le=\"1\"} 1",
        "popfetch_poll_duration_seconds_count{account=\"home\"} 1",
        "popfetch_accounts 1",
        "popfetch_polls_in_flight 0",
        &format!(
            "popfetch_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "no line {want:?} in:\n{text}"
        );
    }
}

#[test]
fn a_failed_poll_counts_its_deliveries_but_leaves_the_gauges() {
    let m = Metrics::new();
    m.set_accounts(["home"]);
    let ok = Report {
        deferred: 4,
        ..Report::default()
    };
    m.poll_done("home", &ok, PollResult::Ok, Duration::ZERO, at(100));
    let failed = Report {
        delivered: 2,
        bytes: 10,
        ..Report::default()
    };
    m.poll_done("home", &failed, PollResult::Failed, Duration::ZERO, at(200));
    let text = m.encode();
    for want in [
        "popfetch_polls_total{account=\"home\",result=\"failed\"} 1",
        "popfetch_delivered_messages_total{account=\"home\"} 2",
        "popfetch_delivered_bytes_total{account=\"home\"} 10",
        "popfetch_waiting_messages{account=\"home\"} 4",
        "popfetch_last_success_timestamp_seconds{account=\"home\"} 100",
    ] {
        assert!(text.lines().any(|l| l == want), "no {want:?} in:\n{text}");
    }
}

#[test]
fn accounts_not_in_force_have_no_series() {
    let m = Metrics::new();
    m.set_accounts(["a", "b"]);
    m.poll_done(
        "a",
        &Report::default(),
        PollResult::Ok,
        Duration::ZERO,
        at(1),
    );
    m.next_poll("b", Some(at(5)));
    m.set_accounts(["b", "c"]);
    // A removed account's task finishing its last poll.
    m.poll_done(
        "a",
        &Report::default(),
        PollResult::Ok,
        Duration::ZERO,
        at(2),
    );
    m.next_poll("a", Some(at(9)));
    let text = m.encode();
    assert!(!text.contains("account=\"a\""), "{text}");
    assert!(text.contains("popfetch_polls_total{account=\"c\",result=\"ok\"} 0"));
    assert!(text.contains("popfetch_next_poll_timestamp_seconds{account=\"b\"} 5"));
    assert!(text.lines().any(|l| l == "popfetch_accounts 2"), "{text}");
    m.next_poll("b", None);
    assert!(!m.encode().contains("popfetch_next_poll_timestamp_seconds{"));
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new();
    let name = "quote\" back\\slash\nnewline";
    m.set_accounts([name]);
    let text = m.encode();
    assert!(
        text.contains(r#"account="quote\" back\\slash\nnewline""#),
        "{text}"
    );
}

#[test]
fn polls_in_flight_follow_the_guard() {
    let m = Metrics::new();
    let one = m.poll_started();
    let two = m.poll_started();
    assert_eq!(
        lines_of(&m.encode(), "popfetch_polls_in_flight "),
        ["popfetch_polls_in_flight 2"]
    );
    drop(one);
    drop(two);
    assert_eq!(
        lines_of(&m.encode(), "popfetch_polls_in_flight "),
        ["popfetch_polls_in_flight 0"]
    );
}

#[test]
fn every_family_has_help_and_type_before_its_samples() {
    let m = Metrics::new();
    m.set_accounts(["x"]);
    m.poll_done(
        "x",
        &Report::default(),
        PollResult::Ok,
        Duration::ZERO,
        at(1),
    );
    m.next_poll("x", Some(at(2)));
    let text = m.encode();
    let mut typed = std::collections::HashSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_string());
        } else if !l.starts_with('#') {
            let name = l.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no # TYPE:\n{text}");
            assert!(name.starts_with("popfetch_"), "{name}");
        }
    }
}

#[test]
fn the_textfile_is_replaced_whole_with_mode_0644() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("popfetch.prom");
    // A temp file a crash left behind does not stop the next write.
    std::fs::write(dir.path().join("popfetch.prom.tmp"), "torn").unwrap();
    let m = Metrics::new();
    m.set_accounts(["a"]);
    m.set_textfile(Some(path.clone()));
    m.write_textfile();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, m.encode());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert!(!dir.path().join("popfetch.prom.tmp").exists());
    // No path: nothing is written.
    m.set_textfile(None);
    std::fs::remove_file(&path).unwrap();
    m.write_textfile();
    assert!(!path.exists());
}

#[test]
fn the_textfile_is_not_written_through_a_symlink_at_its_temp_name() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    let path = dir.path().join("m.prom");
    std::os::unix::fs::symlink(&victim, dir.path().join("m.prom.tmp")).unwrap();
    let m = Metrics::new();
    m.set_textfile(Some(path.clone()));
    m.write_textfile();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
}

#[test]
fn request_heads_route_by_method_and_path() {
    let r = |s: &str| route(s.as_bytes());
    assert_eq!(
        r("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        Route::Metrics { body: true }
    );
    assert_eq!(
        r("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
        Route::Metrics { body: true }
    );
    assert_eq!(
        r("HEAD /metrics HTTP/1.1\n\n"),
        Route::Metrics { body: false }
    );
    assert_eq!(r("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
    assert_eq!(r("GET /metrics/x HTTP/1.1\r\n\r\n"), Route::NotFound);
    assert_eq!(r("POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
    assert_eq!(r("DELETE / HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
    assert_eq!(r("GET /metrics HTTP/2\r\n\r\n"), Route::BadRequest);
    assert_eq!(r("GET  /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
    assert_eq!(r("GET metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
    assert_eq!(r("G\u{e9}T /metrics HTTP/1.1\r\n\r\n"), Route::BadRequest);
    assert_eq!(route(b"GET /\xff HTTP/1.1\r\n\r\n"), Route::BadRequest);
    assert_eq!(r(""), Route::BadRequest);
}

#[test]
fn the_head_ends_at_the_first_blank_line() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
    assert_eq!(head_end(b"a\n\nb\r\n\r\n"), Some(3));
}

async fn ask(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before a long request is written whole.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_endpoint_answers_once_and_closes() {
    let m = Arc::new(Metrics::new());
    m.set_accounts(["a"]);
    let server = serve::Server::bind("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
    let addr = server.addr();
    let ok = ask(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = ok.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(head.contains("Connection: close"));
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert_eq!(body, m.encode());
    let head_only = ask(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n").await;
    assert!(head_only.ends_with("\r\n\r\n"), "{head_only}");
    assert!(
        ask(addr, b"GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404 ")
    );
    let post = ask(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET, HEAD\r\n"));
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b"X-Pad: aaaaaaaa\r\n", 1024).flatten());
    let answer = ask(addr, &big).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    drop(server);
    // Stopped: the port no longer answers.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
