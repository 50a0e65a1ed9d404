//! A daemon that starts with many accounts spreads their first connections over a window (a
//! quarter second per account, or `start_spread`; at most the interval), each account at a
//! point fixed by its name, so a restart keeps it; `fetch` still connects to all at once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::Env;
use crate::pop3_server::Server;
use crate::support::config::Account;

const ACCOUNTS: usize = 16;

/// Sixteen accounts on one server, nothing limiting how many connect at once; `global` adds
/// global settings.
fn setup(global: &str) -> (Server, Env) {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    let mut text = format!(
        "log_target = \"stderr\"\nmax_parallel = 16\nmax_parallel_per_server = 16\n{global}"
    );
    for i in 0..ACCOUNTS {
        text.push_str(
            &Account::scripted(&server)
                .name(&format!("a{i}"))
                .user(&format!("alice+{i}"))
                .text("interval", "1h")
                .maildir(&env.maildir())
                .to_toml(),
        );
    }
    env.write_config(&text);
    (server, env)
}

/// Runs the daemon until the server saw every account's first login (at most 20 s); returns
/// when each came, from the daemon's start, and the users in the order they logged in.
fn first_sessions(server: &Server, env: &Env, before: usize) -> (Vec<Duration>, Vec<String>) {
    let started = Instant::now();
    let mut child = env
        .command(&["daemon"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = started + Duration::from_secs(20);
    // Until every account logged in, not merely connected: killed between a connection and its
    // USER, the run would be one user short, and the next run's users read from the wrong place.
    while server.log().commands("USER").len() < before + ACCOUNTS && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = server.log();
    let at = log.connected[before..]
        .iter()
        .map(|t| t.saturating_duration_since(started))
        .collect();
    let users = log.commands("USER")[before..]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (at, users)
}

#[test]
fn first_polls_are_spread_over_the_start_window_in_a_fixed_order() {
    let (server, env) = setup("");
    let (at, users) = first_sessions(&server, &env, 0);
    assert_eq!(at.len(), ACCOUNTS, "every account polled: {at:?}");
    let (first, last) = (at[0], at[ACCOUNTS - 1]);
    // 16 accounts: a window of 4 s, with room for a slow start of the binary.
    assert!(last - first >= Duration::from_secs(2), "{at:?}");
    assert!(last < Duration::from_secs(10), "{at:?}");
    let in_first_second = at
        .iter()
        .filter(|t| **t < first + Duration::from_secs(1))
        .count();
    assert!(in_first_second <= ACCOUNTS / 2, "{at:?}");

    // A restart keeps each account's phase: each connects at about the same time again.
    let (again, users_again) = first_sessions(&server, &env, ACCOUNTS);
    assert_eq!(again.len(), ACCOUNTS, "{again:?}");
    for (user, t) in users.iter().zip(&at) {
        let i = users_again.iter().position(|u| u == user).unwrap();
        let drift = again[i].abs_diff(*t);
        assert!(
            drift < Duration::from_secs(1),
            "{user}: {t:?} then {:?}",
            again[i]
        );
    }
}

#[test]
fn fetch_is_not_spread() {
    let (server, env) = setup("");
    let started = Instant::now();
    env.popfetch(&["fetch"]).assert_code(0);
    let log = server.log();
    assert_eq!(log.connected.len(), ACCOUNTS);
    let last = log.connected[ACCOUNTS - 1].saturating_duration_since(started);
    assert!(last < Duration::from_secs(2), "{last:?}");
}

#[test]
fn a_start_spread_is_the_window_whatever_the_number_of_accounts() {
    // Sixteen accounts would take 4 s by default; "9s" spreads them over 9 s.
    let (server, env) = setup("start_spread = \"9s\"\n");
    let (at, _) = first_sessions(&server, &env, 0);
    assert_eq!(at.len(), ACCOUNTS, "every account polled: {at:?}");
    assert!(at[ACCOUNTS - 1] - at[0] > Duration::from_secs(5), "{at:?}");
    assert!(at[ACCOUNTS - 1] < Duration::from_secs(15), "{at:?}");

    // "0s": all at once.
    let (server, env) = setup("start_spread = \"0s\"\n");
    let (at, _) = first_sessions(&server, &env, 0);
    assert_eq!(at.len(), ACCOUNTS, "every account polled: {at:?}");
    assert!(at[ACCOUNTS - 1] - at[0] < Duration::from_secs(1), "{at:?}");
}
