//! A new user's first steps: the README's Quick start, run as written, and what popfetch says
//! when it finds no config.

use std::path::Path;
use std::process::Command;

const SYSTEM_CONFIG: &str = "/etc/popfetch/config.toml";

/// The built binary with a fresh `HOME` and nothing else that points at a config.
fn popfetch_at_home(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_popfetch"));
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("POPFETCH_CONFIG")
        .env_remove("POPFETCH_LOG");
    c
}

#[test]
fn without_a_config_every_place_looked_at_is_named() {
    if Path::new(SYSTEM_CONFIG).exists() {
        eprintln!("skipped: {SYSTEM_CONFIG} exists on this machine");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let out = popfetch_at_home(home.path()).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let user = home.path().join(".config/popfetch/config.toml");
    assert!(
        stderr.contains(&user.display().to_string()),
        "names {}: {stderr}",
        user.display()
    );
    assert!(stderr.contains(SYSTEM_CONFIG), "{stderr}");
    assert!(stderr.contains("-c PATH"), "{stderr}");

    // XDG_CONFIG_HOME moves the user's file; the message follows it.
    let xdg = home.path().join("xdg");
    let out = popfetch_at_home(home.path())
        .env("XDG_CONFIG_HOME", &xdg)
        .arg("check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&xdg.join("popfetch/config.toml").display().to_string()),
        "{stderr}"
    );
}
