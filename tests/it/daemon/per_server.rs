//! `max_parallel_per_server`: many accounts at one provider never hold more connections to it
//! than the limit, in the daemon and in `fetch`, and every account is still polled.

use std::time::Duration;

use crate::harness::{Env, delivered_in};
use crate::pop3_server::{Fault, Log, Msg, Server};
use crate::support::config::Account;

/// The most sessions open at once, from the server's `open N` / `end N` events.
fn most_at_once(log: &Log) -> usize {
    let (mut open, mut most) = (0usize, 0usize);
    for e in &log.events {
        if e.starts_with("open ") {
            open += 1;
            most = most.max(open);
        } else if e.starts_with("end ") {
            open = open.saturating_sub(1);
        }
    }
    most
}

/// Six accounts (mailboxes `alice+0` to `alice+5`) on one server whose message trickles for
/// about a second, so that sessions overlap unless something keeps them apart.
fn setup(extra: &str) -> (Server, Env) {
    let slow = Msg::new(b"Subject: slow\n\nhello\n".to_vec(), "uidl-slow")
        .fault(Fault::Trickle(Duration::from_millis(35)));
    let server = Server::healthy(vec![slow]);
    let env = Env::new();
    let mut text = format!("{extra}\n");
    for i in 0..6 {
        text.push_str(
            &Account::scripted(&server)
                .name(&format!("a{i}"))
                .user(&format!("alice+{i}"))
                .set("keep", true)
                .maildir(&env.path().join(format!("M{i}")))
                .to_toml(),
        );
    }
    env.write_config(&text);
    (server, env)
}

#[test]
fn fetch_keeps_to_max_parallel_per_server() {
    let (server, env) = setup("max_parallel = 8\nmax_parallel_per_server = 2");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    for i in 0..6 {
        assert_eq!(
            delivered_in(&env.path().join(format!("M{i}"))).len(),
            1,
            "a{i}"
        );
    }
    let log = server.log();
    assert_eq!(log.sessions.len(), 6);
    assert_eq!(most_at_once(&log), 2, "{:?}", log.events);
}

#[test]
fn the_default_is_four_per_server() {
    let (server, env) = setup("max_parallel = 8");
    env.popfetch(&["fetch"]).assert_code(0);
    let most = most_at_once(&server.log());
    assert!((2..=4).contains(&most), "{most}");
}

#[test]
fn zero_per_server_is_a_config_error() {
    let (_server, env) = setup("max_parallel_per_server = 0");
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("max_parallel_per_server") && run.stderr.contains("at least 1"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_daemon_keeps_to_max_parallel_per_server() {
    let (server, env) =
        setup("max_parallel = 8\nmax_parallel_per_server = 2\nlog_target = \"stderr\"");
    let mut child = env
        .command(&["daemon"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let all = || (0..6).all(|i| delivered_in(&env.path().join(format!("M{i}"))).len() == 1);
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !all() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(all(), "not every account was polled");
    let log = server.log();
    assert_eq!(most_at_once(&log), 2, "{:?}", log.events);
}
