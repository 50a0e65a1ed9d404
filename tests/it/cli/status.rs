//! `popfetch status` through the built binary: mail left for now by a failing MDA is a failing
//! account with the MDA's error, held mail a holding one, both a non-zero exit; a success moves
//! the last error to `previous_error`; a broken config still shows the state and says so; the
//! JSON carries its schema number. One-shot `fetch` against the scripted server; the daemon's
//! next poll and backoff are in `tests/it/daemon/status.rs`.

use crate::harness::{Env, Run, message};
use crate::pop3_server::{Msg, Server};
use crate::support::config::Account;

const TEMPFAIL: &str = "cat > /dev/null; echo 'mailbox locked' >&2; exit 75";
const PERMFAIL: &str = "cat > /dev/null; echo 'no such user' >&2; exit 1";

fn msgs(n: usize) -> Vec<Msg> {
    (1..=n)
        .map(|i| Msg::new(message(i, 500), &format!("uidl-{i}")))
        .collect()
}

/// Account `alice` on `server`, delivering through `sh -c SCRIPT`, or into the Maildir.
fn config(env: &Env, server: &Server, mda: Option<&str>) {
    let a = Account::scripted(server).text("timeout", "5s");
    let a = match mda {
        Some(script) => a.set(
            "deliver",
            format_args!("{{ mda = [\"/bin/sh\", \"-c\", {script:?}] }}"),
        ),
        None => a.maildir(&env.maildir()),
    };
    env.write_config(&a.to_toml());
}

/// `status --json`'s document, and alice's object in it.
fn json(env: &Env, code: i32) -> (serde_json::Value, serde_json::Value) {
    let run = env.popfetch(&["status", "--json"]);
    run.assert_code(code);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let alice = doc["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["account"] == "alice"))
        .cloned()
        .unwrap_or_else(|| panic!("no alice in {}", run.stdout));
    (doc, alice)
}

#[track_caller]
fn contains(run: &Run, what: &str) {
    assert!(
        run.stdout.contains(what),
        "no {what:?} in\n{}\n--- stderr\n{}",
        run.stdout,
        run.stderr
    );
}

#[test]
fn mail_left_by_an_mda_exiting_75_is_a_failing_account_with_its_error() {
    let server = Server::healthy(msgs(3));
    let env = Env::new();
    config(&env, &server, Some(TEMPFAIL));
    env.popfetch(&["fetch"]).assert_code(1);
    assert_eq!(server.remaining().len(), 3);

    let run = env.popfetch(&["status"]);
    run.assert_code(1);
    eprintln!("{}", run.stdout);
    contains(&run, "alice: failing\n");
    contains(&run, ", partial in ");
    contains(&run, "failures:       1 in a row");
    contains(&run, "3 messages left on the server for now");
    contains(&run, "exited with 75");
    contains(
        &run,
        "3 failed for now, 0 held, 0 too large, 3 waiting on the server",
    );
    // `fetch` is one-shot: no next poll.
    contains(&run, "next poll:      not scheduled");

    let (doc, alice) = json(&env, 1);
    assert_eq!(doc["schema"], 2);
    assert_eq!(alice["schema"], 2);
    assert_eq!(alice["health"], "failing");
    assert_eq!(alice["last_result"], "partial");
    assert_eq!(alice["waiting"], 3);
    assert_eq!(alice["failed"], 3);
    assert_eq!(alice["consecutive_failures"], 1);
    assert!(alice["last_error_at"].is_u64(), "{alice}");
    assert!(alice["last_duration_ms"].is_u64(), "{alice}");
    assert!(alice["last_success"].is_null(), "{alice}");
    assert!(alice["next_poll"].is_null(), "{alice}");

    env.popfetch(&["fetch"]).assert_code(1);
    let (_, alice) = json(&env, 1);
    assert_eq!(alice["consecutive_failures"], 2);
}

#[test]
fn held_mail_is_a_holding_account_with_a_nonzero_exit() {
    let server = Server::healthy(msgs(5));
    let env = Env::new();
    config(&env, &server, Some(PERMFAIL));
    env.popfetch(&["fetch"]).assert_code(1);

    let (_, alice) = json(&env, 1);
    assert_eq!(alice["last_result"], "held");
    assert_eq!(alice["health"], "holding");
    assert_eq!(alice["held"], 5);
    assert_eq!(alice["waiting"], 5);
    assert!(alice["last_error"].is_null(), "{alice}");

    // The next poll skips them: it is fine, the account still holds mail.
    env.popfetch(&["fetch"]).assert_code(0);
    let run = env.popfetch(&["status"]);
    run.assert_code(1);
    eprintln!("{}", run.stdout);
    contains(&run, "alice: holding\n");
    contains(&run, ", ok in ");
    contains(
        &run,
        "0 failed for now, 5 held, 0 too large, 5 waiting on the server",
    );
    contains(&run, "`popfetch retry alice`");
    assert!(!run.stdout.contains("failures:"), "{}", run.stdout);
}

#[test]
fn a_success_moves_the_last_error_to_previous_error() {
    let server = Server::healthy(msgs(2));
    let env = Env::new();
    config(&env, &server, Some(TEMPFAIL));
    env.popfetch(&["fetch"]).assert_code(1);
    config(&env, &server, None);
    env.popfetch(&["fetch"]).assert_code(0);

    let (_, alice) = json(&env, 0);
    assert_eq!(alice["health"], "ok");
    assert_eq!(alice["last_result"], "ok");
    assert!(alice["last_error"].is_null(), "{alice}");
    assert!(alice["last_error_at"].is_null(), "{alice}");
    let previous = alice["previous_error"].as_str().unwrap_or_default();
    assert!(previous.contains("exited with 75"), "{alice}");
    assert!(alice["previous_error_at"].is_u64(), "{alice}");
    assert_eq!(alice["consecutive_failures"], 0);
    assert_eq!(alice["delivered"], 2);
    assert_eq!(alice["delivered_total"], 2);
    assert_eq!(alice["waiting"], 0);

    let run = env.popfetch(&["status"]);
    run.assert_code(0);
    contains(&run, "alice: ok\n");
    contains(&run, "previous error: ");
    assert!(!run.stdout.contains("last error:"), "{}", run.stdout);
}

#[test]
fn status_reads_the_state_when_the_config_is_broken_and_says_so() {
    let server = Server::healthy(msgs(1));
    let env = Env::new();
    config(&env, &server, Some(TEMPFAIL));
    env.popfetch(&["fetch"]).assert_code(1);

    // The daemon would go on with its last good config; `status` still sees its state, in the
    // state directory the broken file names.
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    let broken = format!("{good}bogus_key = 1\n");
    std::fs::write(env.config_path(), &broken).unwrap();
    let run = env.popfetch(&["status"]);
    run.assert_code(1);
    contains(&run, "alice: failing\n");
    let config = env.config_path().display().to_string();
    assert!(
        run.stderr.contains("warning: the config")
            && run.stderr.contains(&config)
            && run.stderr.contains("bogus_key")
            && run
                .stderr
                .contains(&env.path().join("state").display().to_string()),
        "{}",
        run.stderr
    );
    let (doc, alice) = json(&env, 1);
    assert_eq!(doc["config"], config.as_str());
    assert!(
        doc["config_error"]
            .as_str()
            .is_some_and(|e| e.contains("bogus_key")),
        "{doc}"
    );
    assert_eq!(alice["health"], "failing");

    // A healthy state under a broken config exits 0: the accounts decide.
    config_ok_then_break(&env, &server, &broken);
    env.popfetch(&["status"]).assert_code(0);

    // Nothing to read at all: the config error, exit 2.
    std::fs::remove_dir_all(env.path().join("state")).unwrap();
    let run = env.popfetch(&["status"]);
    run.assert_code(2);
    assert!(run.stderr.contains("bogus_key"), "{}", run.stderr);
}

/// Makes alice healthy with a good config, then writes `broken` back.
fn config_ok_then_break(env: &Env, server: &Server, broken: &str) {
    config(env, server, None);
    env.popfetch(&["fetch"]).assert_code(0);
    std::fs::write(env.config_path(), broken).unwrap();
}

#[test]
fn a_poll_kept_out_by_another_runs_lock_leaves_the_status_alone() {
    let server = Server::healthy(msgs(1));
    let env = Env::new();
    config(&env, &server, None);
    env.popfetch(&["fetch"]).assert_code(0);
    // Another run (the daemon, say) holds the mailbox: this fetch does nothing, and says so,
    // but the account's health is the other run's to record.
    let lock = env
        .path()
        .join(format!("state/alice@127.0.0.1:{}.lock", server.port()));
    let held = std::fs::File::open(&lock).unwrap();
    held.lock().unwrap();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(run.stderr.contains("lock"), "{}", run.stderr);
    let (_, alice) = json(&env, 0);
    assert_eq!(alice["last_result"], "ok", "{alice}");
    assert!(alice["last_error"].is_null(), "{alice}");
}

#[test]
fn status_without_any_config_reads_the_default_state_directory() {
    if std::path::Path::new("/etc/popfetch/config.toml").exists() {
        eprintln!("skipped: /etc/popfetch/config.toml exists on this machine");
        return;
    }
    let server = Server::healthy(msgs(1));
    let env = Env::new();
    config(&env, &server, Some(TEMPFAIL));
    env.popfetch(&["fetch"]).assert_code(1);
    let home = tempfile::tempdir().unwrap();
    // No -c, no config in HOME or /etc; the state directory systemd would name.
    let status = |state: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_popfetch"))
            .args(args)
            .env("HOME", home.path())
            .env("STATE_DIRECTORY", state)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("POPFETCH_CONFIG")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, stdout, stderr) = status(&env.path().join("state"), &["status"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("alice: failing\n"), "{stdout}");
    assert!(
        stderr.contains("warning: no config file") && stderr.contains("showing every status file"),
        "{stderr}"
    );
    let (_, stdout, _) = status(&env.path().join("state"), &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(doc["config"].is_null(), "{doc}");
    assert!(
        doc["config_error"]
            .as_str()
            .is_some_and(|e| e.contains("no config file")),
        "{doc}"
    );
    // Nothing there either: the config error alone, exit 2.
    let (code, _, stderr) = status(home.path(), &["status"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no config file"), "{stderr}");
}
