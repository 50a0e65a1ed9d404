//! Reload follows a config reached through symlinks: a Kubernetes ConfigMap volume publishes a
//! new version by swapping its `..data` symlink, a release directory by swapping `current`
//! (`ln -sfn`); neither touches the config's own name.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::Env;
use crate::pop3_server::Server;
use crate::support::config::Account;

fn config_text(env: &Env, accounts: &[(&str, &Server)]) -> String {
    let mut text = format!(
        "state_dir = \"{}\"\nlog_target = \"stderr\"\n",
        env.path().join("state").display()
    );
    for (name, server) in accounts {
        text.push_str(
            &Account::scripted(server)
                .name(name)
                .text("interval", "1h")
                .maildir(&env.path().join(name))
                .to_toml(),
        );
    }
    text
}

/// Publishes `text` as a new version of the ConfigMap volume `dir`: a new timestamped
/// directory, then `..data` swapped to it by rename, as the kubelet does.
fn publish(dir: &Path, version: u32, text: &str) {
    let v = dir.join(format!("..2026_12_03_{version}"));
    std::fs::create_dir(&v).unwrap();
    std::fs::write(v.join("config.toml"), text).unwrap();
    // A Secret volume with `defaultMode: 0600`: the config holds a password.
    std::fs::set_permissions(
        v.join("config.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink(v.file_name().unwrap(), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

#[test]
fn a_configmap_style_symlink_swap_is_reloaded_without_sighup() {
    let (server, other) = (Server::healthy(vec![]), Server::healthy(vec![]));
    let env = Env::new();
    let volume = env.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    publish(&volume, 1, &config_text(&env, &[("one", &server)]));
    std::os::unix::fs::symlink("..data/config.toml", volume.join("config.toml")).unwrap();
    let log = env.path().join("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_popfetch"))
        .arg("-c")
        .arg(volume.join("config.toml"))
        .arg("daemon")
        .env("POPFETCH_LOG", "popfetch=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            if pred(&read()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("timed out waiting for {what}:\n{}", read());
        false
    };
    let started = wait("the start", &|l| l.contains("daemon started"));
    publish(
        &volume,
        2,
        &config_text(&env, &[("one", &server), ("two", &other)]),
    );
    let reloaded = started && wait("the reload", &|l| l.contains("account two: account added"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(reloaded, "{}", read());
    assert!(read().contains("config reloaded"), "{}", read());
}

#[test]
fn a_reload_onto_a_config_without_accounts_keeps_the_previous_one() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    let path = env.path().join("config.toml");
    let write = |text: &str| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write(&config_text(&env, &[("one", &server)]));
    let log = env.path().join("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_popfetch"))
        .arg("-c")
        .arg(&path)
        .arg("daemon")
        .env("POPFETCH_LOG", "popfetch=info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |pred: &dyn Fn(&str) -> bool| {
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until && !pred(&read()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        pred(&read())
    };
    let started = wait(&|l| l.contains("daemon started"));
    write(&config_text(&env, &[]));
    let refused = started && wait(&|l| l.contains("config reload failed: no accounts in"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(refused, "{}", read());
    assert!(!read().contains("account removed"), "{}", read());
}
