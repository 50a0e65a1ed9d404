//! Issue 13, the edges: durations from server input (LOGIN-DELAY), a `ca_file` that cannot be
//! read, the SMTP relay's DATA phase (progress timeouts, line endings) and a new mbox's
//! directory entry. Everything through the built binary against the scripted POP3 server and a
//! small scripted SMTP relay defined here.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Env;
use crate::hostile_server::{Msg, PASSWORD, Script, Server, USER};

/// One `[[account]]` named `alice` on the scripted server, delivering as `deliver` says.
fn account(server: &Server, deliver: &str, extra: &str) -> String {
    format!(
        "[[account]]\nname = \"alice\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         user = \"{USER}\"\npassword = \"{PASSWORD}\"\nauth = \"user\"\n\
         allow_plaintext_auth = true\ndeliver = {deliver}\n{extra}\n",
        server.port(),
    )
}

fn maildir(env: &Env) -> String {
    format!("{{ maildir = \"{}\" }}", env.maildir().display())
}

/// A running daemon whose stderr goes to a file the test reads while it runs.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        let log = env.path().join("daemon.log");
        let child = env
            .command(&["daemon"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("POPFETCH_LOG", "popfetch=debug")
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `pred` holds, at most `secs`; false when it never did.
fn wait_for(secs: u64, mut pred: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred()
}

fn polls_done(log: &str) -> usize {
    log.lines().filter(|l| l.contains("poll done")).count()
}

#[test]
fn issue13_10_login_delay_u64_max_neither_panics_nor_stops_the_account() {
    let server = Server::start(
        vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")],
        Script {
            login_delay: Some(u64::MAX),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&format!(
        "log_target = \"stderr\"\n{}",
        account(&server, &maildir(&env), "interval = \"1s\"")
    ));
    let daemon = Daemon::start(&env);
    assert!(
        wait_for(20, || polls_done(&daemon.log()) >= 1),
        "first poll; log:\n{}",
        daemon.log()
    );
    // The server asked for more than anyone waits: the account is still scheduled, and a poke
    // polls it at once.
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal("USR1");
    let polled_again = wait_for(20, || server.log().sessions.len() >= 2);
    let log = daemon.log();
    assert!(
        polled_again,
        "the account was never polled again; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("LOGIN-DELAY") && log.contains("capped"),
        "the cap is logged:\n{log}"
    );
    assert_eq!(env.delivered().len(), 1);
}

#[test]
fn issue13_17_advertised_login_delay_raises_the_interval_with_one_log_line() {
    let server = Server::start(
        vec![Msg::new(b"Subject: one\n\nbody\n".to_vec(), "u1")],
        Script {
            login_delay: Some(3),
            ..Script::default()
        },
    );
    let env = Env::new();
    env.write_config(&format!(
        "log_target = \"stderr\"\n{}",
        account(&server, &maildir(&env), "interval = \"1s\"")
    ));
    let daemon = Daemon::start(&env);
    let three = wait_for(30, || server.log().connected.len() >= 3);
    let log = daemon.log();
    assert!(three, "three polls; log:\n{log}");
    let at = server.log().connected;
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_secs(3),
            "polls closer than the advertised LOGIN-DELAY 3: {:?}",
            at.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
        );
    }
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("LOGIN-DELAY") && l.contains("interval"))
        .collect();
    assert_eq!(said.len(), 1, "one line about the raised interval:\n{log}");
    assert!(said[0].contains("alice"), "{}", said[0]);
}

#[test]
fn issue13_17_an_empty_or_unreadable_ca_file_is_refused_by_check() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    let dir = env.path().to_path_buf();
    let smtp = "{ smtp = { host = \"127.0.0.1\", port = 25, to = [\"a@example.org\"], ca_file = \"CA\" } }";
    let oauth2 = "[account.oauth2]\ntoken_url = \"https://127.0.0.1:1/token\"\nclient_id = \"c\"\n\
                  refresh_token_file = \"r\"\nca_file = \"CA\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            account(&server, &maildir(&env), "ca_file = \"\""),
            "ca_file",
        ),
        (
            account(&server, &maildir(&env), "ca_file = \"missing.pem\""),
            "missing.pem",
        ),
        (
            account(
                &server,
                &maildir(&env),
                &format!("ca_file = \"{}\"", dir.display()),
            ),
            "not a regular file",
        ),
        (
            account(&server, &smtp.replace("CA", ""), ""),
            "deliver.smtp.ca_file",
        ),
        (
            account(&server, &smtp.replace("CA", "missing.pem"), ""),
            "deliver.smtp.ca_file",
        ),
        (
            account(&server, &maildir(&env), "")
                .replace(&format!("password = \"{PASSWORD}\"\nauth = \"user\"\n"), "")
                + &oauth2.replace("CA", ""),
            "oauth2.ca_file",
        ),
        (
            account(&server, &maildir(&env), "")
                .replace(&format!("password = \"{PASSWORD}\"\nauth = \"user\"\n"), "")
                + &oauth2.replace("CA", "missing.pem"),
            "oauth2.ca_file",
        ),
    ];
    for (config, expect) in cases {
        env.write_config(&config);
        let run = env.popfetch(&["check"]);
        assert_eq!(run.code, 2, "check accepted:\n{config}\n{}", run.stderr);
        assert!(
            run.stderr.contains(expect) && run.stderr.contains("ca_file"),
            "{config}\n--- stderr\n{}",
            run.stderr
        );
        let run = env.popfetch(&["fetch"]);
        assert_eq!(run.code, 2, "fetch accepted:\n{config}\n{}", run.stderr);
    }
    // A readable one passes.
    std::fs::write(dir.join("ca.pem"), "not checked here\n").unwrap();
    env.write_config(&account(&server, &maildir(&env), "ca_file = \"ca.pem\""));
    env.popfetch(&["check"]).assert_code(0);
    assert!(server.log().sessions.is_empty(), "check connects nowhere");
}
