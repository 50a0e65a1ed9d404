//! The daemon with `include = ["conf.d/*.toml"]`: a change to one file restarts only its
//! accounts (another account's next poll stays where it was); a broken file keeps its accounts
//! while the others' changes apply; a removed file takes its accounts along; a ConfigMap-style
//! `..data` swap of the directory is picked up without SIGHUP.

use std::path::Path;
use std::time::{Duration, Instant};

use super::run::Daemon;
use crate::config::include::write;
use crate::harness::Env;
use crate::pop3_server::Server;
use crate::support::config::Account;

/// The main config: the included files, and `[defaults]` with the delivery and the interval.
fn main_config(env: &Env) {
    env.write_config(&format!(
        "log_target = \"stderr\"\ninclude = [\"conf.d/*.toml\"]\n\n[defaults]\n\
         interval = \"1h\"\ndeliver = {{ maildir = \"{}\" }}\n",
        env.maildir().display()
    ));
}

/// Account `name` on `server` (mailbox `alice+NAME`); `extra` lines after its keys.
fn account(server: &Server, name: &str, extra: &str) -> String {
    Account::scripted(server)
        .name(name)
        .user(&format!("alice+{name}"))
        .extra(extra)
        .to_toml()
}

/// `status --json`'s next poll of `name` (Unix seconds), if it has one.
fn next_poll(env: &Env, name: &str) -> Option<u64> {
    let run = env.popfetch(&["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
    doc["accounts"]
        .as_array()?
        .iter()
        .find(|a| a["account"] == name)?["next_poll"]
        .as_u64()
}

#[track_caller]
fn wait(secs: u64, what: &str, mut pred: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if pred() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn changing_one_included_file_restarts_only_its_accounts() {
    let (a, b) = (Server::healthy(vec![]), Server::healthy(vec![]));
    let env = Env::new();
    main_config(&env);
    let d = env.path().join("conf.d");
    write(&d.join("alice.toml"), &account(&a, "alice", ""));
    write(&d.join("bob.toml"), &account(&b, "bob", ""));
    let daemon = Daemon::start(&env, &[("POPFETCH_LOG", "popfetch=info")]);
    wait(15, "both first polls", || {
        next_poll(&env, "alice").is_some() && next_poll(&env, "bob").is_some()
    });
    let bob_next = next_poll(&env, "bob");

    write(&d.join("alice.toml"), &account(&a, "alice", "keep = true"));
    daemon.wait_log(10, "alice's restart", |l| {
        l.contains("account alice: account changed")
    });
    wait(10, "alice's second poll", || a.log().sessions.len() == 2);
    let log = daemon.log();
    assert!(!log.contains("account bob: account changed"), "{log}");
    assert_eq!(b.log().sessions.len(), 1, "bob was not polled again");
    assert_eq!(next_poll(&env, "bob"), bob_next, "bob's schedule is kept");
}

#[test]
fn a_broken_included_file_keeps_its_accounts_and_the_others_apply() {
    let (a, b) = (Server::healthy(vec![]), Server::healthy(vec![]));
    let env = Env::new();
    main_config(&env);
    let d = env.path().join("conf.d");
    write(&d.join("alice.toml"), &account(&a, "alice", ""));
    write(&d.join("bob.toml"), &account(&b, "bob", ""));
    let daemon = Daemon::start(&env, &[("POPFETCH_LOG", "popfetch=info")]);
    daemon.wait_log(10, "the start", |l| l.contains("daemon started"));

    // alice's file breaks on its line 4; bob's gains carol at the same time.
    let broken = Account::scripted(&a)
        .name("alice")
        .user("alice+alice")
        .set("port", 0)
        .to_toml();
    assert!(broken.lines().nth(3).unwrap().starts_with("port = 0"));
    write(&d.join("alice.toml"), &broken);
    write(
        &d.join("bob.toml"),
        &(account(&b, "bob", "") + &account(&b, "carol", "")),
    );
    daemon.wait_log(10, "carol", |l| l.contains("account carol: account added"));
    let log = daemon.log();
    let place = format!("{}, line 4", d.join("alice.toml").display());
    assert!(log.contains(&place), "the error names {place}: {log}");
    assert!(!log.contains("account alice: account"), "{log}");

    // A removed file takes its accounts along; alice's stays as it was.
    std::fs::remove_file(d.join("bob.toml")).unwrap();
    daemon.wait_log(10, "bob's removal", |l| {
        l.contains("account bob: account removed") && l.contains("account carol: account removed")
    });
    assert!(!daemon.log().contains("account alice: account"));

    // Fixed, it applies.
    write(&d.join("alice.toml"), &account(&a, "alice", "keep = true"));
    daemon.wait_log(10, "alice's change", |l| {
        l.contains("account alice: account changed")
    });
}

/// Publishes `files` as version `version` of the ConfigMap volume `dir`: a new directory, then
/// `..data` swapped to it by rename, and a link `NAME -> ..data/NAME` for a new name, as the
/// kubelet does.
fn publish(dir: &Path, version: u32, files: &[(&str, String)]) {
    let v = dir.join(format!("..2026_12_03_{version}"));
    for (name, text) in files {
        write(&v.join(name), text);
    }
    std::os::unix::fs::symlink(v.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), link).unwrap();
        }
    }
}

#[test]
fn a_configmap_swap_of_the_include_directory_is_reloaded() {
    let (a, b) = (Server::healthy(vec![]), Server::healthy(vec![]));
    let env = Env::new();
    main_config(&env);
    let d = env.path().join("conf.d");
    std::fs::create_dir(&d).unwrap();
    publish(&d, 1, &[("alice.toml", account(&a, "alice", ""))]);
    let daemon = Daemon::start(&env, &[("POPFETCH_LOG", "popfetch=info")]);
    daemon.wait_log(10, "the start", |l| l.contains("daemon started"));

    publish(
        &d,
        2,
        &[("alice.toml", account(&a, "alice", "keep = true"))],
    );
    daemon.wait_log(8, "alice's change", |l| {
        l.contains("account alice: account changed")
    });
    publish(
        &d,
        3,
        &[
            ("alice.toml", account(&a, "alice", "keep = true")),
            ("bob.toml", account(&b, "bob", "")),
        ],
    );
    daemon.wait_log(8, "bob", |l| l.contains("account bob: account added"));
    assert!(
        !daemon.log().contains("account alice: account changed\n")
            || daemon
                .log()
                .matches("account alice: account changed")
                .count()
                == 1,
        "{}",
        daemon.log()
    );
}
