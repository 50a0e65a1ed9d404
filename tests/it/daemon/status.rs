//! What the daemon adds to `popfetch status`: the next poll and why. An account whose MDA exits
//! 75 at every poll is failing and backs off (the reason says so, and the polls thin out); one
//! whose password the server refuses waits an hour after `[AUTH]`; a fixed account recovers
//! to its interval, its error kept as `previous_error`; held mail is a holding account; a
//! server's LOGIN-DELAY is the reason of a longer wait, `[SYS/PERM]` suspends. Scripted servers,
//! the built binary.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Env, message};
use crate::pop3_server::{Greeting, Msg, Script, Server};
use crate::support::config::Account;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// alice's MDA exits `mda_exit`; bob's password is wrong; carol's MDA refuses every message for
/// good; dave's server asks for a LOGIN-DELAY of 10 minutes; erin's greets with `[SYS/PERM]`.
fn accounts(env: &Env, servers: &[Server; 5], mda_exit: u8) -> String {
    let [alice, bob, carol, dave, erin] = servers;
    let script = format!("cat > /dev/null; exit {mda_exit}");
    let alice = Account::scripted(alice)
        .text("interval", "1s")
        .set(
            "deliver",
            format_args!("{{ mda = [\"/bin/sh\", \"-c\", {script:?}] }}"),
        )
        .to_toml();
    let bob = Account::scripted(bob)
        .name("bob")
        .password("not-the-password")
        .text("interval", "1s")
        .maildir(&env.maildir())
        .to_toml();
    // Refuses every message for good: they are held.
    let carol = Account::scripted(carol)
        .name("carol")
        .text("interval", "1s")
        .set(
            "deliver",
            "{ mda = [\"/bin/sh\", \"-c\", \"cat > /dev/null; echo unknown user >&2; exit 67\"] }",
        )
        .to_toml();
    let dave = Account::scripted(dave)
        .name("dave")
        .text("interval", "1s")
        .maildir(&env.maildir())
        .to_toml();
    let erin = Account::scripted(erin)
        .name("erin")
        .text("interval", "1s")
        .maildir(&env.maildir())
        .to_toml();
    format!("{alice}{bob}{carol}{dave}{erin}")
}

/// `status --json`'s exit status and its accounts alice, bob, carol, dave and erin.
fn status(env: &Env) -> (i32, [serde_json::Value; 5]) {
    let run = env.popfetch(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    let find = |name: &str| {
        doc["accounts"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["account"] == name))
            .cloned()
            .unwrap_or_default()
    };
    (
        run.code,
        ["alice", "bob", "carol", "dave", "erin"].map(find),
    )
}

/// Waits until `pred` holds on the accounts' status, at most `secs`.
#[track_caller]
fn wait_status(
    env: &Env,
    secs: u64,
    what: &str,
    pred: impl Fn(&[serde_json::Value; 5]) -> bool,
) -> (i32, [serde_json::Value; 5]) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let (code, rows) = status(env);
        if pred(&rows) {
            return (code, rows);
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}:\n{rows:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_tells_when_and_why_the_daemon_polls_next() {
    let msgs: Vec<Msg> = (1..=2)
        .map(|i| Msg::new(message(i, 400), &format!("uidl-{i}")))
        .collect();
    let slow = Script {
        login_delay: Some(600),
        ..Script::default()
    };
    let disabled = Script {
        greeting: Greeting::Raw(b"-ERR [SYS/PERM] account disabled\r\n".to_vec()),
        ..Script::default()
    };
    let servers = [
        Server::healthy(msgs.clone()),
        Server::healthy(Vec::new()),
        Server::healthy(msgs),
        Server::start(Vec::new(), slow),
        Server::start(Vec::new(), disabled),
    ];
    let alice = &servers[0];
    let env = Env::new();
    env.write_config(&accounts(&env, &servers, 75));
    let log = env.path().join("daemon.log");
    let started = Instant::now();
    let _daemon = Daemon(
        env.command(&["daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    // interval 1 s: without backoff alice would be polled about every second; with it the
    // waits are 2 s, 4 s, 8 s...
    let (code, [a, b, c, d, e]) = wait_status(
        &env,
        20,
        "alice's second failure, bob's [AUTH], carol's held mail, dave's and erin's servers",
        |[a, b, c, d, e]| {
            a["consecutive_failures"].as_u64() >= Some(2)
                && a["next_reason"] == "backoff"
                && b["next_reason"] == "auth"
                && c["next_reason"] == "interval"
                && d["next_reason"] == "login-delay"
                && e["next_reason"] == "suspended"
        },
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(code, 1, "{a}\n{b}\n{c}");
    assert_eq!(a["health"], "failing");
    assert_eq!(a["last_result"], "partial");
    assert_eq!(a["waiting"], 2);
    assert!(
        a["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with 75")),
        "{a}"
    );
    let (last, next) = (
        a["last_poll"].as_u64().unwrap(),
        a["next_poll"].as_u64().unwrap(),
    );
    assert!(
        next >= last + 3,
        "backoff of 4 s or more: {a}\n{}",
        log_text()
    );
    assert_eq!(b["health"], "failing");
    let wait = b["next_poll"].as_u64().unwrap() - b["last_poll"].as_u64().unwrap();
    assert!(wait >= 3500, "[AUTH] waits an hour: {b}");
    assert_eq!(c["health"], "holding");
    assert_eq!(c["held"], 2);
    assert!(c["last_error"].is_null(), "{c}");
    assert_eq!(d["health"], "ok");
    let wait = d["next_poll"].as_u64().unwrap() - d["last_poll"].as_u64().unwrap();
    assert!(wait >= 590, "LOGIN-DELAY's 10 minutes: {d}");
    assert_eq!(e["health"], "failing");
    assert!(e["next_poll"].is_null(), "{e}");

    let run = env.popfetch(&["status"]);
    run.assert_code(1);
    eprintln!("{}", run.stdout);
    for want in [
        "alice: failing\n",
        "2 waiting on the server",
        "(backoff after ",
        "bob: failing\n",
        "([AUTH]: the credentials were refused; waiting an hour)",
        "carol: holding\n",
        "2 held, 0 too large, 2 waiting on the server",
        "`popfetch retry carol`",
        "dave: ok\n",
        "(the server's LOGIN-DELAY)",
        "erin: failing\n",
        "none: suspended after the server's [SYS/PERM] until the account's config changes",
        "held because:   delivery of message 2 (uidl uidl-2) failed: the MDA \"/bin/sh\" failed (exit status: 67)",
    ] {
        assert!(run.stdout.contains(want), "no {want:?} in\n{}", run.stdout);
    }
    // Polls thin out: within 7 s of the start alice is polled at most 4 times (at about 0-2 s,
    // then 2 s and 4 s later); 1 s apart would be 6 or more.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(started.elapsed()));
    let polls = alice.log().sessions.len();
    assert!(polls <= 4, "{polls} polls in 7 s\n{}", log_text());

    // Fixed: the reload restarts alice, who delivers, and is back on her interval.
    env.write_config(&accounts(&env, &servers, 0));
    let (_, [a, ..]) = wait_status(&env, 20, "alice's recovery", |[a, ..]| {
        a["last_result"] == "ok"
    });
    assert_eq!(a["health"], "ok");
    assert!(a["last_error"].is_null(), "{a}");
    assert!(
        a["previous_error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with 75")),
        "{a}"
    );
    let (_, [a, ..]) = wait_status(&env, 10, "alice's next poll by interval", |[a, ..]| {
        a["next_reason"] == "interval"
    });
    assert_eq!(a["consecutive_failures"], 0);
    assert!(alice.remaining().is_empty());
}
