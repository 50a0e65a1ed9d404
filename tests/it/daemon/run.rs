//! `popfetch daemon` driven through the real binary against private Dovecots: schedules,
//! a stalled account, SIGTERM mid-fetch, hot reload (good and broken), SIGUSR1, `status`, and
//! the systemd notifications on a NOTIFY_SOCKET the test listens on.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::{Env, delivered_in, message};
use crate::support::config::Account;

/// A running daemon whose stderr goes to a file the test can read while it runs.
pub(super) struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub(super) fn start(env: &Env, extra_env: &[(&str, &str)]) -> Daemon {
        let log = env.path().join("daemon.log");
        let mut cmd = env.command(&["daemon"]);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("POPFETCH_LOG", "popfetch=debug");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `pred` holds on the log, at most `secs`.
    #[track_caller]
    pub(super) fn wait_log(&self, secs: u64, what: &str, pred: impl Fn(&str) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if pred(&self.log()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    pub(super) fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    pub(super) fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn polls(log: &str, account: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(&format!("account {account}: poll done")))
        .count()
}

/// One account on `d` delivering into `maildir`.
fn account(d: &Dovecot, name: &str, user: &str, maildir: &std::path::Path, extra: &str) -> String {
    Account::dovecot(d)
        .name(name)
        .user(user)
        .maildir(maildir)
        .extra(extra)
        .to_toml()
}

pub(super) const GLOBAL: &str = "log_target = \"stderr\"\nshutdown_timeout = \"10s\"\n";

#[test]
fn accounts_keep_their_own_pace_and_a_stalled_one_holds_no_other() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("fast", "pw");
    d.add_user("slow", "pw");
    let env = Env::new();
    // A server that accepts and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let config = format!(
        "{GLOBAL}{}{}[[account]]\nname = \"stalled\"\nhost = \"127.0.0.1\"\nport = {silent_port}\n\
         tls = \"none\"\nuser = \"x\"\npassword = \"pw\"\ntimeout = \"30s\"\ninterval = \"1s\"\n\
         deliver = {{ maildir = \"{}\" }}\n",
        account(
            &d,
            "fast",
            "fast",
            &env.path().join("fast"),
            "interval = \"1s\""
        ),
        account(
            &d,
            "slow",
            "slow",
            &env.path().join("slow"),
            "interval = \"4s\""
        ),
        env.path().join("stalled").display()
    );
    env.write_config(&config);
    let mut daemon = Daemon::start(&env, &[]);
    daemon.wait_log(20, "5 polls of the fast account", |l| polls(l, "fast") >= 5);
    let log = daemon.log();
    assert!(polls(&log, "slow") <= 3, "slow polled too often:\n{log}");
    assert!(polls(&log, "slow") >= 1, "{log}");
    assert_eq!(polls(&log, "stalled"), 0, "{log}");
    daemon.signal("TERM");
    let st = daemon
        .wait_exit(15)
        .expect("exits within the shutdown deadline");
    assert!(st.success(), "{st:?}");
    drop(silent);
}

#[test]
fn sigterm_mid_fetch_exits_in_time_and_loses_nothing() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let total = 2000;
    d.deliver_many(
        "alice",
        (0..total).map(|i| message(i, 2048)).collect::<Vec<_>>(),
    );
    let env = Env::new();
    let maildir = env.maildir();
    env.write_config(&format!(
        "{GLOBAL}{}",
        account(&d, "alice", "alice", &maildir, "interval = \"1h\"")
    ));
    let mut daemon = Daemon::start(&env, &[]);
    let until = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(maildir.join("new")).map_or(0, |r| r.count()) < 100 {
        assert!(Instant::now() < until, "no progress:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    daemon.signal("TERM");
    let st = daemon.wait_exit(12).expect("exit within shutdown_timeout");
    assert!(st.success(), "{st:?}\n{}", daemon.log());
    assert!(t.elapsed() < Duration::from_secs(11));
    assert!(daemon.log().contains("shutting down"), "{}", daemon.log());
    let delivered = delivered_in(&maildir).len();
    let left = d.message_count("alice");
    assert!(delivered < total, "the fetch was not interrupted");
    assert_eq!(
        delivered + left,
        total,
        "every message is either delivered or still on the server"
    );
    // A later fetch completes the job, without duplicates.
    env.popfetch(&["fetch"]).assert_code(0);
    let mut subjects: Vec<Vec<u8>> = delivered_in(&maildir)
        .into_iter()
        .map(|m| m.split(|&b| b == b'\n').nth(2).unwrap().to_vec())
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), total);
    assert_eq!(delivered_in(&maildir).len(), total, "no duplicates");
    assert_eq!(d.message_count("alice"), 0);
}

#[test]
fn reload_adds_accounts_keeps_old_config_on_errors_and_sigusr1_polls() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    d.add_user("bob", "pw");
    let env = Env::new();
    let a = account(
        &d,
        "alice",
        "alice",
        &env.path().join("A"),
        "interval = \"1h\"",
    );
    env.write_config(&format!("{GLOBAL}{a}"));
    let mut daemon = Daemon::start(&env, &[]);
    daemon.wait_log(10, "the first poll", |l| polls(l, "alice") == 1);

    // A new account is picked up within 2 s of the write.
    d.deliver("bob", &message(1, 300));
    let b = account(&d, "bob", "bob", &env.path().join("B"), "interval = \"1h\"");
    let t = Instant::now();
    env.write_config(&format!("{GLOBAL}{a}{b}"));
    daemon.wait_log(5, "bob's first poll", |l| polls(l, "bob") == 1);
    assert!(
        t.elapsed() < Duration::from_secs(2) + Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(daemon.log().contains("account added"), "{}", daemon.log());
    assert_eq!(delivered_in(&env.path().join("B")).len(), 1);
    // alice was not restarted by the reload.
    assert_eq!(polls(&daemon.log(), "alice"), 1);

    // A broken edit: logged with file and line; the old config keeps running.
    env.write_config(&format!("{GLOBAL}{a}{b}bogus_key = 1\n"));
    daemon.wait_log(5, "the reload error", |l| {
        l.contains("config reload failed")
    });
    let log = daemon.log();
    assert!(log.contains("unknown key `bogus_key`"), "{log}");
    assert!(log.contains("line "), "{log}");

    // SIGUSR1 polls every account now.
    d.deliver("alice", &message(2, 300));
    daemon.signal("USR1");
    daemon.wait_log(5, "a poll after SIGUSR1", |l| {
        polls(l, "alice") == 2 && polls(l, "bob") == 2
    });
    assert_eq!(delivered_in(&env.path().join("A")).len(), 1);

    daemon.signal("TERM");
    assert!(daemon.wait_exit(15).expect("exits").success());

    // `status` tells what happened, without the daemon.
    env.write_config(&format!("{GLOBAL}{a}{b}"));
    let run = env.popfetch(&["status"]);
    run.assert_code(0);
    assert!(run.stdout.contains("alice: ok\n"), "{}", run.stdout);
    assert!(run.stdout.contains(", ok in "), "{}", run.stdout);
    assert!(
        run.stdout.contains("(1 delivered in total)")
            && run.stdout.contains("0 waiting on the server"),
        "{}",
        run.stdout
    );
    let run = env.popfetch(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["accounts"][1]["account"], "bob");
    assert_eq!(v["accounts"][1]["delivered_total"], 1);
    assert_eq!(v["accounts"][1]["last_result"], "ok");
    assert_eq!(v["accounts"][1]["next_reason"], "interval");
}

#[test]
fn readiness_reload_and_stopping_reach_notify_socket() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("alice", "pw");
    let env = Env::new();
    let sock_path = env.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    env.write_config(&format!(
        "{GLOBAL}{}",
        account(&d, "alice", "alice", &env.maildir(), "interval = \"1h\"")
    ));
    let mut daemon = Daemon::start(&env, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    let mut buf = [0u8; 4096];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains("STATUS=1 accounts"), "{first}");
    daemon.signal("HUP");
    // STATUS= updates may come at any time; the reload is RELOADING=1, then READY=1.
    let mut seen: Vec<String> = Vec::new();
    while !seen.iter().any(|m| m.contains("READY=1")) {
        let m = next();
        if !m.starts_with("STATUS=") {
            seen.push(m);
        }
    }
    assert!(seen[0].contains("RELOADING=1"), "{seen:?}");
    assert!(seen[0].contains("MONOTONIC_USEC="), "{seen:?}");
    daemon.signal("TERM");
    let mut stop = next();
    while !stop.contains("STOPPING=1") {
        stop = next();
    }
    assert!(daemon.wait_exit(15).expect("exits").success());
}

#[test]
fn shutdown_deadline_holds_and_a_second_signal_exits_at_once() {
    // A poll stuck in the middle of a message (its timeout is a minute): a stop ends a poll
    // only after the message in flight, so only the shutdown deadline ends this one. (A wait
    // before the transfer, for a greeting say, ends at the stop itself.)
    use crate::pop3_server::{Fault, Msg, PASSWORD, Server, USER};
    let server = Server::healthy(vec![
        Msg::new(message(1, 1000), "uidl-1").fault(Fault::StallAfterStatus),
    ]);
    let env = Env::new();
    env.write_config(&format!(
        "log_target = \"stderr\"\nshutdown_timeout = \"2s\"\n[[account]]\nname = \"stuck\"\n\
         host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nuser = \"{USER}\"\n\
         password = \"{PASSWORD}\"\nauth = \"user\"\nallow_plaintext_auth = true\n\
         timeout = \"60s\"\ndeliver = {{ maildir = \"{}\" }}\n",
        server.port(),
        env.maildir().display()
    ));
    for second_signal in [false, true] {
        let retrs = server.log().commands("RETR").len();
        let mut daemon = Daemon::start(&env, &[]);
        // Wait until the poll is in flight: the server has a RETR and stalls after its status.
        let until = Instant::now() + Duration::from_secs(20);
        while server.log().commands("RETR").len() == retrs && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        daemon.signal("TERM");
        if second_signal {
            std::thread::sleep(Duration::from_millis(300));
            daemon.signal("INT");
            let st = daemon.wait_exit(2).expect("a second signal exits at once");
            assert_eq!(st.code(), Some(130), "{}", daemon.log());
            assert!(t.elapsed() < Duration::from_millis(1500));
        } else {
            let st = daemon.wait_exit(6).expect("exit at the shutdown deadline");
            assert!(st.success(), "{st:?}");
            assert!(
                t.elapsed() >= Duration::from_millis(1900),
                "{:?}",
                t.elapsed()
            );
            assert!(
                daemon
                    .log()
                    .contains("polls still running at the shutdown deadline"),
                "{}",
                daemon.log()
            );
        }
    }
}

/// The daemon's repeated polls of one server resume the TLS session of the one before (a
/// ticket from the server): the certificate chain is not sent and checked again each time.
/// Dovecot's login processes are made long-lived here: by default each connection gets a new
/// one, with new ticket keys, and nothing can be resumed.
#[test]
fn repeated_polls_resume_the_tls_session() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start_with_extra(
        crate::dovecot::Options::default(),
        "service pop3-login {\n  service_count = 0\n}\n",
    );
    d.add_user("alice", "pw");
    d.deliver("alice", &message(1, 500));
    let env = Env::new();
    env.write_config(&format!(
        "{GLOBAL}{}",
        account(&d, "alice", "alice", &env.maildir(), "interval = \"1s\"")
    ));
    let daemon = Daemon::start(&env, &[]);
    daemon.wait_log(30, "three polls", |l| polls(l, "alice") >= 3);
    let log = daemon.log();
    let handshakes: Vec<&str> = log.lines().filter(|l| l.contains("TLS session")).collect();
    assert!(
        handshakes.iter().any(|l| l.contains("TLS session resumed")),
        "no resumed session:\n{log}"
    );
    assert_eq!(delivered_in(&env.maildir()).len(), 1);
    // The first poll has nothing to resume.
    assert!(
        handshakes
            .first()
            .is_some_and(|l| l.contains("TLS session new")),
        "{log}"
    );
}
