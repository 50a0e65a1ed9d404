//! The command line: `check`, config errors and exit statuses without a server; `fetch`'s
//! progress display against the scripted one.

use std::os::unix::fs::PermissionsExt;

use crate::harness::Env;
use crate::pop3_server::{Msg, Server};
use crate::support::config::Account;

const GOOD: &str = r#"[[account]]
name = "alice"
host = "pop.example.org"
user = "alice"
password = "hunter2-secret"
deliver = { maildir = "~/Maildir" }

[[account]]
name = "bob"
host = "mail.example.net"
tls = "starttls"
user = "bob"
password_command = ["cat", "/run/secrets/pop-bob"]
keep = true
deliver = { maildir = "/srv/mail/bob" }
"#;

#[test]
fn check_prints_effective_settings_with_secrets_redacted() {
    let env = Env::new();
    env.write_config(GOOD);
    let run = env.popfetch(&["check"]);
    run.assert_code(0);
    let out = &run.stdout;
    assert!(out.contains("valid, 2 account(s)"), "{out}");
    assert!(
        out.contains(
            "name = \"alice\"\nhost = \"pop.example.org\"\nport = 995\ntls = \"implicit\""
        ),
        "{out}"
    );
    assert!(out.contains("password = \"<redacted>\""), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("port = 110\ntls = \"starttls\""), "{out}");
    assert!(
        out.contains("password_command = [\"cat\", \"/run/secrets/pop-bob\"]"),
        "{out}"
    );
    assert!(out.contains("keep = true"), "{out}");
    assert!(out.contains("timeout = \"1m\""), "{out}");
    assert!(
        out.contains("deliver = { maildir = \"/srv/mail/bob\" }"),
        "{out}"
    );
}

#[test]
fn config_errors_exit_2_naming_file_line_column_and_key() {
    let env = Env::new();
    // Line numbers count the state_dir line and blank line the harness puts first.
    env.write_config(&GOOD.replace("user = \"bob\"", "usr = \"bob\""));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    let path = env.config_path().display().to_string();
    assert!(
        run.stderr
            .contains(&format!("config file {path}, line 14, column 1")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("unknown key `usr`: did you mean `user`?"),
        "{}",
        run.stderr
    );

    env.write_config(&GOOD.replace("host = \"mail.example.net\"\n", ""));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("account `bob`, key `host`: required but missing"),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_account_and_missing_config_exit_2() {
    let env = Env::new();
    env.write_config(GOOD);
    let run = env.popfetch(&["fetch", "carol"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("no account named `carol`"),
        "{}",
        run.stderr
    );
    std::fs::remove_file(env.config_path()).unwrap();
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(run.stderr.contains("cannot read it"), "{}", run.stderr);
    // A usage error is exit 2 as well.
    env.popfetch(&["fetch", "--no-such-flag"]).assert_code(2);
}

#[test]
fn readable_config_holding_a_password_is_refused() {
    let env = Env::new();
    env.write_config(GOOD);
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(run.stderr.contains("readable by others"), "{}", run.stderr);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
}

#[test]
fn config_path_comes_from_the_environment() {
    let env = Env::new();
    env.write_config(GOOD);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_popfetch"))
        .arg("check")
        .env("POPFETCH_CONFIG", env.config_path())
        .output()
        .unwrap();
    assert!(run.status.success());
    assert!(String::from_utf8_lossy(&run.stdout).contains("name = \"bob\""));
    // XDG_CONFIG_HOME/popfetch/config.toml when POPFETCH_CONFIG is unset.
    let xdg = env.path().join("xdg");
    std::fs::create_dir_all(xdg.join("popfetch")).unwrap();
    std::fs::copy(env.config_path(), xdg.join("popfetch/config.toml")).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_popfetch"))
        .arg("check")
        .env_remove("POPFETCH_CONFIG")
        .env("XDG_CONFIG_HOME", &xdg)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains(&xdg.display().to_string()));
}

#[test]
fn state_dir_defaults_to_state_directory_then_xdg_state_home() {
    let env = Env::new();
    // No state_dir key: the default applies.
    std::fs::write(env.path().join("p"), "secret\n").unwrap();
    std::fs::set_permissions(env.path().join("p"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        env.config_path(),
        GOOD.replace("password = \"hunter2-secret\"", "password_file = \"p\""),
    )
    .unwrap();
    // It names a password_command: only its owner may read it.
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = |envs: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_popfetch"));
        c.arg("-c").arg(env.config_path()).arg("check");
        c.env_remove("STATE_DIRECTORY").env_remove("XDG_STATE_HOME");
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = check(&[("STATE_DIRECTORY", "/var/lib/popfetch-test:/other")]);
    assert!(
        out.contains("state_dir = \"/var/lib/popfetch-test\""),
        "{out}"
    );
    // The tests run as root, whose default is /var/lib/popfetch whatever XDG_STATE_HOME says.
    let out = check(&[("XDG_STATE_HOME", "/nonexistent/xdg")]);
    assert!(out.contains("state_dir = \"/var/lib/popfetch\""), "{out}");
}

#[test]
fn fetch_shows_live_progress_at_a_terminal_and_none_otherwise() {
    let server = Server::healthy(
        (0..50)
            .map(|i| Msg::new(crate::harness::message(i, 3000), &format!("uidl-{i}")))
            .collect(),
    );
    let env = Env::new();
    env.write_config(
        &Account::scripted(&server)
            .name("demo")
            .set("keep", true)
            .maildir(&env.maildir())
            .to_toml(),
    );
    // Under a pseudo-terminal (script(1)), the progress line is drawn.
    let cmd = format!(
        "{} -c {} fetch",
        env!("CARGO_BIN_EXE_popfetch"),
        env.config_path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    // A progress line was drawn (and cleared again before the summary).
    assert!(
        tty.contains("\x1b[2Kdemo: ") && tty.contains(" messages, "),
        "{tty}"
    );
    assert!(tty.contains("demo: 50 new messages delivered"), "{tty}");
    // Without a terminal: the summary only; with --quiet: nothing.
    std::fs::remove_dir_all(env.path().join("state")).unwrap();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(0);
    assert!(!run.stderr.contains("messages,"), "{}", run.stderr);
    assert!(
        run.stdout.contains("demo: 50 new messages delivered"),
        "{}",
        run.stdout
    );
    std::fs::remove_dir_all(env.path().join("state")).unwrap();
    let run = env.popfetch(&["--quiet", "fetch"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "");
}

#[test]
fn a_reader_that_went_away_is_no_reason_to_panic() {
    let env = Env::new();
    env.write_config(GOOD);
    for args in [&["check"][..], &["status"], &["status", "--json"]] {
        // The read end is closed before popfetch writes: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .command(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
