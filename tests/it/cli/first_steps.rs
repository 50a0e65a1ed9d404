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

/// The `sh` blocks of the README's Quick start, in order.
fn quick_start_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("\n## Quick start\n")
        .expect("the README has a Quick start");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let close = body.find("\n```").expect("a closed code block");
        blocks.push(body[..=close].to_string());
        rest = &body[close + 4..];
    }
    blocks
}

/// `script` run by bash as a shell pasted into would run it, stopping at the first failure,
/// with `home` as `HOME` and the built binary first on `PATH`.
fn run_pasted(home: &Path, script: &str) -> crate::harness::Run {
    let bin = Path::new(env!("CARGO_BIN_EXE_popfetch")).parent().unwrap();
    // The user's own programs (a password manager) in ~/bin, then popfetch, then the rest.
    let path = format!(
        "{}:{}:{}",
        home.join("bin").display(),
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.arg("-euc")
        .arg(script)
        .current_dir(home)
        .env("HOME", home)
        .env("PATH", path)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("POPFETCH_CONFIG")
        .env_remove("POPFETCH_LOG")
        // The tests run as root, whose default state directory is /var/lib/popfetch: keep the
        // state in the temp dir, where an ordinary user's ~/.local/state would be.
        .env("STATE_DIRECTORY", home.join(".local/state/popfetch"));
    crate::harness::run_bounded(c, std::time::Duration::from_secs(60))
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the Quick start has `{from}` once:\n{text}"
    );
    text.replace(from, to)
}

#[test]
fn the_quick_start_setup_runs_as_written_in_a_fresh_home() {
    let blocks = quick_start_blocks();
    assert_eq!(blocks.len(), 2, "setup, then fetch: {blocks:?}");
    let home = tempfile::tempdir().unwrap();
    // The password manager the example names; `check` looks for it on PATH.
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("pass"), "#!/bin/sh\necho secret\n").unwrap();
    std::fs::set_permissions(
        bin.join("pass"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // No ~/.config yet: the block makes it.
    let run = run_pasted(home.path(), &blocks[0]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("valid, 1 account"),
        "check validated the config:\n{}",
        run.stdout
    );
    let config = home.path().join(".config/popfetch/config.toml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner reads the config");
}

#[test]
fn the_quick_start_fetches_from_a_real_server_with_the_example_values_replaced() {
    crate::peers::require_peers!("dovecot");
    let d = crate::dovecot::Dovecot::start();
    d.add_user("alice", "correct horse");
    d.deliver("alice", &crate::harness::message(1, 500));
    let home = tempfile::tempdir().unwrap();
    let pw = home.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    // What the user writes instead of the examples: the server, the user, the password.
    let script = quick_start_blocks().join("");
    let script = substitute(
        &script,
        "host = \"pop.example.org\"\n",
        &format!(
            "host = \"localhost\"\nport = {}\nca_file = \"{}\"\n",
            d.pop3s_port(),
            d.ca_file().display()
        ),
    );
    let script = substitute(
        &script,
        "user = \"alice@example.org\"\n",
        "user = \"alice\"\n",
    );
    let script = substitute(
        &script,
        "password_command = [\"pass\", \"show\", \"mail/pop\"]\n",
        &format!("password_command = [\"cat\", \"{}\"]\n", pw.display()),
    );
    let run = run_pasted(home.path(), &script);
    run.assert_code(0);
    assert!(
        run.stdout.contains("1 on the server (") && run.stdout.contains("1 new for popfetch"),
        "check --connect looked first: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("home: 1 new message delivered"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("home: 0 held messages"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("home: ok\n  last poll: "),
        "{}",
        run.stdout
    );
    let delivered = crate::harness::delivered_in(&home.path().join("Maildir"));
    assert_eq!(delivered.len(), 1);
}
