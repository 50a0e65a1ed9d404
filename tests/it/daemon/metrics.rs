//! The daemon's Prometheus metrics through the real binary: `/metrics` scraped over loopback
//! after polls of a private Dovecot and checked by `promtool check metrics`, the textfile the
//! same, a real Prometheus server scraping the daemon and typing its metrics, requests too
//! large or too slow cut off, the endpoint moved by a reload, and a public address refused by
//! `popfetch check` without its opt-in.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::run::{Daemon, GLOBAL};
use crate::dovecot::Dovecot;
use crate::harness::{Env, message};
use crate::support::config::Account;

/// A loopback address with a port free a moment ago.
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// An account for a config that is about the metrics alone (popfetch runs no config without
/// one): it polls a closed port on loopback, once an hour.
fn idle(env: &Env) -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    Account::new("127.0.0.1", port)
        .name("idle")
        .user("x")
        .password("pw")
        .maildir(&env.path().join("idle"))
        .extra("interval = \"1h\"")
        .to_toml()
}

/// Sends `request` and reads the answer to its end, within 20 s.
fn ask(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET /metrics`: the status line and the body.
fn scrape(addr: SocketAddr) -> std::io::Result<(String, String)> {
    let answer = ask(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
    )?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Ok((head.to_string(), body.to_string()))
}

/// Scrapes until every line of `want` is in the body, at most `secs`; returns the body.
#[track_caller]
fn scrape_until(daemon: &Daemon, addr: SocketAddr, secs: u64, want: &[&str]) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < until {
        if let Ok((head, body)) = scrape(addr) {
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
            if want.iter().all(|w| body.lines().any(|l| l == *w)) {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {want:?}; last scrape:\n{last}\nlog:\n{}",
        daemon.log()
    );
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (i32, String) {
    let mut child = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), said)
}

#[track_caller]
fn assert_promtool_passes(what: &str, text: &str) {
    let (code, said) = promtool(text);
    assert_eq!(code, 0, "promtool check metrics on {what}: {said}\n{text}");
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_after_polls_pass_promtool_on_the_endpoint_and_the_textfile() {
    crate::peers::require_peers!("dovecot", "promtool");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let sizes = [1000, 2000, 3000];
    d.deliver_many(
        "alice",
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| message(i, *n))
            .collect::<Vec<_>>(),
    );
    let env = Env::new();
    let addr = free_addr();
    let textfile = env.path().join("node").join("popfetch.prom");
    std::fs::create_dir(textfile.parent().unwrap()).unwrap();
    // A server that closes every connection at once: its account's polls fail.
    let refused = free_addr();
    let config = format!(
        "{GLOBAL}metrics_listen = \"{addr}\"\nmetrics_textfile = \"{}\"\n{}{}",
        textfile.display(),
        Account::dovecot(&d)
            .name("alice")
            .user("alice")
            .maildir(&env.maildir())
            .extra("interval = \"1h\"")
            .to_toml(),
        Account::new("127.0.0.1", refused.port())
            .name("broken")
            .user("x")
            .password("pw")
            .maildir(&env.path().join("broken"))
            .extra("interval = \"1h\"\ntimeout = \"2s\"")
            .to_toml(),
    );
    env.write_config(&config);
    let daemon = Daemon::start(&env, &[]);
    let body = scrape_until(
        &daemon,
        addr,
        30,
        &[
            "popfetch_polls_total{account=\"alice\",result=\"ok\"} 1",
            "popfetch_delivered_messages_total{account=\"alice\"} 3",
            "popfetch_polls_total{account=\"broken\",result=\"failed\"} 1",
        ],
    );
    let bytes = value(&body, "popfetch_delivered_bytes_total{account=\"alice\"}").unwrap();
    assert!(bytes >= 6000.0, "{bytes}\n{body}");
    for series in [
        "popfetch_waiting_messages{account=\"alice\"}",
        "popfetch_held_messages{account=\"alice\"}",
        "popfetch_too_large_messages{account=\"alice\"}",
        "popfetch_polls_total{account=\"alice\",result=\"failed\"}",
        "popfetch_delivered_messages_total{account=\"broken\"}",
        "popfetch_polls_in_flight",
    ] {
        assert_eq!(value(&body, series), Some(0.0), "{series}\n{body}");
    }
    assert_eq!(value(&body, "popfetch_accounts"), Some(2.0), "{body}");
    assert_eq!(
        value(
            &body,
            "popfetch_poll_duration_seconds_count{account=\"alice\"}"
        ),
        Some(1.0),
        "{body}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let success = value(
        &body,
        "popfetch_last_success_timestamp_seconds{account=\"alice\"}",
    )
    .expect("a last success");
    assert!((now - 60.0..=now).contains(&success), "{success} vs {now}");
    let next = value(
        &body,
        "popfetch_next_poll_timestamp_seconds{account=\"alice\"}",
    )
    .expect("a next poll");
    assert!(next > now + 3000.0, "interval 1h: {next} vs {now}");
    assert!(
        value(
            &body,
            "popfetch_last_success_timestamp_seconds{account=\"broken\"}"
        )
        .is_none(),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "popfetch_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    assert_promtool_passes("the endpoint", &body);

    // The textfile has the same numbers once the next polls are scheduled, and is readable
    // by node_exporter's user.
    let until = Instant::now() + Duration::from_secs(10);
    let file = loop {
        let text = std::fs::read_to_string(&textfile).unwrap_or_default();
        if text.contains("popfetch_delivered_messages_total{account=\"alice\"} 3")
            && text.contains("result=\"failed\"} 1")
        {
            break text;
        }
        assert!(
            Instant::now() < until,
            "textfile:\n{text}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_promtool_passes("the textfile", &file);
    let leftovers: Vec<_> = std::fs::read_dir(textfile.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["popfetch.prom"], "no temp file left");
}

#[test]
fn requests_too_large_too_slow_or_not_for_metrics_are_cut_off() {
    crate::peers::require_peers!("promtool");
    let env = Env::new();
    let addr = free_addr();
    env.write_config(&format!(
        "{GLOBAL}metrics_listen = \"{addr}\"\n{}",
        idle(&env)
    ));
    let daemon = Daemon::start(&env, &[]);
    daemon.wait_log(10, "the endpoint", |l| {
        l.contains("metrics endpoint listening")
    });

    // A client that sends half a request line and waits: answered 408 and closed after the
    // read timeout (5 s), while others are still served.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /met").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t = Instant::now();
    let (head, body) = scrape(addr).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_promtool_passes("the endpoint without accounts", &body);
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let waited = t.elapsed();
    assert!(
        (Duration::from_secs(4)..Duration::from_secs(9)).contains(&waited),
        "cut off after {waited:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");

    // A head past 8 KiB: refused (431) or the connection closed, never read on.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for _ in 0..4096 {
        big.extend_from_slice(b"X-Padding: 0123456789abcdef\r\n");
    }
    let t = Instant::now();
    match ask(addr, &big) {
        Ok(answer) => assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
            "{answer}"
        ),
        // Reset because the rest of the request was never read: cut off all the same.
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        ),
    }
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    let post = ask(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
    let other = ask(addr, b"GET /admin HTTP/1.1\r\n\r\n").unwrap();
    assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    let garbage = ask(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    )
    .unwrap();
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
}

#[test]
fn a_reload_moves_the_endpoint_and_a_taken_address_fails_the_start() {
    let env = Env::new();
    let first = free_addr();
    let account = idle(&env);
    env.write_config(&format!("{GLOBAL}metrics_listen = \"{first}\"\n{account}"));
    let mut daemon = Daemon::start(&env, &[]);
    daemon.wait_log(10, "the endpoint", |l| {
        l.contains(&format!("listening on http://{first}/metrics"))
    });
    assert!(scrape(first).unwrap().0.starts_with("HTTP/1.1 200 OK"));

    // The reload also names a textfile: written at once, before the account's next poll.
    let second = free_addr();
    env.write_config(&format!(
        "{GLOBAL}metrics_listen = \"{second}\"\nmetrics_textfile = \"m.prom\"\n{account}"
    ));
    daemon.signal("HUP");
    daemon.wait_log(10, "the endpoint moved", |l| {
        l.contains(&format!("listening on http://{second}/metrics"))
    });
    assert!(scrape(second).unwrap().0.starts_with("HTTP/1.1 200 OK"));
    assert!(
        TcpStream::connect(first).is_err(),
        "the old address is closed"
    );
    let textfile = std::fs::read_to_string(env.path().join("m.prom")).unwrap();
    assert!(
        textfile.lines().any(|l| l == "popfetch_accounts 1"),
        "{textfile}"
    );

    // A second daemon on the address the first holds does not start.
    let other = Env::new();
    other.write_config(&format!(
        "{GLOBAL}metrics_listen = \"{second}\"\n{}",
        idle(&other)
    ));
    let mut second_daemon = Daemon::start(&other, &[]);
    let st = second_daemon.wait_exit(10).expect("exits");
    assert!(!st.success(), "{st:?}");
    assert!(
        second_daemon
            .log()
            .contains(&format!("cannot listen on metrics_listen = \"{second}\"")),
        "{}",
        second_daemon.log()
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(15).expect("exits").success());
}

#[test]
fn check_refuses_a_public_metrics_address_without_the_opt_in() {
    let env = Env::new();
    let account = idle(&env);
    env.write_config(&format!("metrics_listen = \"0.0.0.0:9469\"\n{account}"));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("metrics_listen")
            && run.stderr.contains("metrics_listen_public = true"),
        "{}",
        run.stderr
    );
    env.write_config(&format!(
        "metrics_listen = \"0.0.0.0:9469\"\nmetrics_listen_public = true\n\
         metrics_textfile = \"popfetch.prom\"\n{account}"
    ));
    let run = env.popfetch(&["check"]);
    run.assert_code(0);
    let textfile = env.path().join("popfetch.prom");
    for want in [
        "metrics_listen = \"0.0.0.0:9469\"".to_string(),
        "metrics_listen_public = true".to_string(),
        format!("metrics_textfile = {:?}", textfile.display().to_string()),
    ] {
        assert!(
            run.stdout.lines().any(|l| l == want),
            "{want}\n{}",
            run.stdout
        );
    }
    env.write_config(&format!("metrics_textfile = \"popfetch.txt\"\n{account}"));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(run.stderr.contains(".prom"), "{}", run.stderr);
    assert!(!Path::new(&textfile).exists());
}

/// A private Prometheus server on loopback, scraping `target` every second; killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
                 - job_name: popfetch\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let child = std::process::Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("run prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// `GET path` on its HTTP API, as JSON (HTTP/1.0: no chunked answer to decode).
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let answer = ask(
            self.addr,
            format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let (_, body) = answer.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// The value of the one series `query` (URL-encoded PromQL) selects, once there is one.
    fn query(&self, query: &str) -> Option<f64> {
        let v = self.api(&format!("/api/v1/query?query={query}"))?;
        let result = v["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_types_its_metrics() {
    crate::peers::require_peers!("dovecot", "prometheus");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.deliver_many(
        "alice",
        (0..2).map(|i| message(i, 1500)).collect::<Vec<_>>(),
    );
    let env = Env::new();
    let addr = free_addr();
    env.write_config(&format!(
        "{GLOBAL}metrics_listen = \"{addr}\"\n{}",
        Account::dovecot(&d)
            .maildir(&env.maildir())
            .extra("interval = \"1h\"")
            .to_toml()
    ));
    let daemon = Daemon::start(&env, &[]);
    scrape_until(
        &daemon,
        addr,
        30,
        &["popfetch_delivered_messages_total{account=\"alice\"} 2"],
    );
    let prometheus = Prometheus::start(addr);
    let until = Instant::now() + Duration::from_secs(60);
    let delivered = "popfetch_delivered_messages_total%7Baccount%3D%22alice%22%7D";
    while prometheus.query(delivered) != Some(2.0) {
        assert!(
            Instant::now() < until,
            "prometheus never saw the deliveries; its log:\n{}\nup: {:?}",
            prometheus.log(),
            prometheus.api("/api/v1/targets")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(prometheus.query("up%7Bjob%3D%22popfetch%22%7D"), Some(1.0));
    // The types arrived with the samples (an untyped family would say "unknown").
    for (name, kind) in [
        ("popfetch_polls_total", "counter"),
        ("popfetch_delivered_bytes_total", "counter"),
        ("popfetch_waiting_messages", "gauge"),
        ("popfetch_poll_duration_seconds", "histogram"),
    ] {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let meta = prometheus.api(&format!("/api/v1/metadata?metric={name}"));
            let got = meta
                .as_ref()
                .and_then(|m| m["data"][name][0]["type"].as_str());
            if got == Some(kind) {
                break;
            }
            assert!(Instant::now() < until, "{name}: {meta:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
