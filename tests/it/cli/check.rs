//! `popfetch check` and the config's errors through the built binary: every error says what to
//! write instead and points at the line of the key it is about; `check` finds what would fail at
//! the first fetch without touching the network.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{Env, Run};

/// An account that parses; the harness puts `state_dir` and a blank line first, so `[[account]]`
/// is line 3 and `name` line 4.
const ACCOUNT: &str = r#"[[account]]
name = "home"
host = "pop.example.org"
user = "alice"
password = "hunter2"
"#;

/// `check` on `text` (after the harness's two lines), which must fail with exit status 2.
fn refused(env: &Env, text: &str) -> Run {
    env.write_config(text);
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    run
}

#[track_caller]
fn assert_at(run: &Run, line: usize, hint: &str) {
    assert!(
        run.stderr.contains(&format!(", line {line}, ")),
        "line {line}:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains(hint), "{hint}:\n{}", run.stderr);
}

#[test]
fn a_single_account_table_is_told_to_use_two_brackets() {
    let env = Env::new();
    let run = refused(&env, &ACCOUNT.replace("[[account]]", "[account]"));
    assert_at(
        &run,
        3,
        "write [[account]] (two brackets): each account is one table in a list",
    );
}

#[test]
fn a_list_of_defaults_is_told_to_use_one_bracket() {
    let env = Env::new();
    let run = refused(&env, &format!("[[defaults]]\nkeep = true\n\n{ACCOUNT}"));
    assert_at(&run, 3, "write [defaults] (one bracket)");
}

#[test]
fn a_string_mda_is_answered_with_its_argv() {
    let env = Env::new();
    let text = format!("{ACCOUNT}deliver = {{ mda = \"/usr/bin/procmail -d %T\" }}\n");
    let run = refused(&env, &text);
    assert_at(
        &run,
        8,
        r#"a command is a list of arguments, run without a shell: mda = ["/usr/bin/procmail", "-d", "{user}"]"#,
    );
}

#[test]
fn a_string_mda_that_needs_the_shell_is_answered_with_sh_c() {
    let env = Env::new();
    let text = format!("{ACCOUNT}deliver = {{ mda = \"procmail -d %T >> /tmp/log\" }}\n");
    let run = refused(&env, &text);
    assert_at(
        &run,
        8,
        // The recipient reaches the shell as "$1", never as code.
        r#"mda = ["/bin/sh", "-c", 'procmail -d "$1" >> /tmp/log', "sh", "{user}"]"#,
    );
}

#[test]
fn a_string_password_command_is_answered_with_its_argv() {
    let env = Env::new();
    let text = ACCOUNT.replace(
        "password = \"hunter2\"",
        "password_command = \"pass show 'pop/alice'\"",
    );
    let run = refused(&env, &text);
    assert_at(
        &run,
        7,
        r#"password_command = ["pass", "show", "pop/alice"]"#,
    );
}

#[test]
fn a_quoted_port_gets_a_number_example() {
    let env = Env::new();
    let run = refused(&env, &format!("{ACCOUNT}port = \"995\"\n"));
    assert_at(&run, 8, "expected u16; for example port = 995");
}

#[test]
fn a_bare_number_interval_gets_a_duration_example() {
    let env = Env::new();
    let run = refused(&env, &format!("interval = 300\n{ACCOUNT}"));
    assert_at(
        &run,
        3,
        "expected a duration; for example interval = \"5m\"",
    );
}

#[test]
fn a_quoted_boolean_gets_a_boolean_example() {
    let env = Env::new();
    let run = refused(&env, &format!("{ACCOUNT}keep = \"yes\"\n"));
    assert_at(&run, 8, "for example keep = true");
}

#[test]
fn a_misspelt_key_gets_the_closest_known_key() {
    let env = Env::new();
    let run = refused(&env, &ACCOUNT.replace("password =", "pasword ="));
    assert_at(&run, 7, "unknown key `pasword`: did you mean `password`?");
    assert!(!run.stderr.contains("dedupe_message_id"), "{}", run.stderr);

    let run = refused(&env, &format!("{ACCOUNT}delete_afer = \"1d\"\n"));
    assert_at(&run, 8, "did you mean `delete_after`?");
}

#[test]
fn a_misspelt_delivery_kind_gets_the_closest_one() {
    let env = Env::new();
    let run = refused(
        &env,
        &format!("{ACCOUNT}deliver = {{ maildri = \"~/Maildir\" }}\n"),
    );
    assert_at(&run, 8, "unknown value `maildri`: did you mean `maildir`?");
}

#[test]
fn an_unknown_key_far_from_any_lists_the_tables_keys() {
    let env = Env::new();
    let run = refused(&env, &format!("{ACCOUNT}folder = \"INBOX\"\n"));
    assert_at(
        &run,
        8,
        "unknown key `folder`; this table's keys are: `name`, `host`",
    );
}

#[test]
fn a_semantic_error_points_at_the_line_of_its_key() {
    let env = Env::new();
    let text = format!("{ACCOUNT}deliver = {{ maildir = \"Maildir\" }}\nmda_timeout = \"0s\"\n");
    let run = refused(&env, &text);
    assert_at(&run, 9, "key `mda_timeout`: must be longer than zero");

    let text = format!("{ACCOUNT}deliver = {{ maildir = \"Maildir\" }}\ndelete_after = \"1d\"\n");
    let run = refused(&env, &text);
    assert_at(
        &run,
        9,
        "key `delete_after`: only has a meaning with `keep = true`",
    );

    let text = format!("{ACCOUNT}\ndeliver = {{ mda = [] }}\n");
    let run = refused(&env, &text);
    assert_at(&run, 9, "key `deliver.mda`: must name a program");

    let text = format!("{ACCOUNT}deliver = {{ smtp = {{ host = \"localhost\",\n  to = [] }} }}\n");
    let run = refused(&env, &text);
    assert_at(
        &run,
        9,
        "key `deliver.smtp.to`: needs at least one recipient",
    );
}

#[test]
fn a_key_taken_from_defaults_is_pointed_at_there() {
    let env = Env::new();
    let text = format!(
        "[defaults]\nkeep = false\ntimeout = \"0s\"\n\n{ACCOUNT}deliver = {{ maildir = \"Maildir\" }}\n"
    );
    let run = refused(&env, &text);
    assert_at(
        &run,
        5,
        "account `home`, key `timeout`: must be longer than zero",
    );
}

#[test]
fn a_missing_key_points_at_its_account() {
    let env = Env::new();
    let run = refused(&env, ACCOUNT);
    assert_at(
        &run,
        3,
        "key `deliver`: required but missing, e.g. `deliver = {",
    );
}

// `popfetch check`'s findings: each an error (exit status 2) or a warning (0), at its key's line.

/// `ACCOUNT` with the password in a file and delivery into the Env's Maildir, which exists.
fn checked(env: &Env) -> String {
    let pw = env.path().join("home.pass");
    std::fs::write(&pw, "hunter2\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(env.maildir()).unwrap();
    std::fs::create_dir_all(env.path().join("state")).unwrap();
    std::fs::set_permissions(
        env.path().join("state"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    ACCOUNT.replace(
        "password = \"hunter2\"\n",
        &format!(
            "password_file = \"{}\"\ndeliver = {{ maildir = \"{}\" }}\n",
            pw.display(),
            env.maildir().display()
        ),
    )
}

fn check(env: &Env, text: &str) -> Run {
    env.write_config(text);
    env.popfetch(&["check"])
}

#[track_caller]
fn assert_finding(run: &Run, severity: &str, line: usize, text: &str) {
    let found = run.stderr.lines().any(|l| {
        l.starts_with(&format!("popfetch: {severity}: "))
            && l.contains(&format!(", line {line}, "))
            && l.contains(text)
    });
    assert!(
        found,
        "{severity} at line {line}: {text}\n--- stderr\n{}",
        run.stderr
    );
}

#[test]
fn a_sound_config_is_valid_and_shows_the_global_settings() {
    let env = Env::new();
    let text = format!(
        "interval = \"10m\"\nmax_parallel = 3\nlog_target = \"stderr\"\n{}",
        checked(&env)
    );
    let run = check(&env, &text);
    run.assert_code(0);
    assert_eq!(run.stderr, "", "no findings");
    assert!(
        run.stdout.contains(": valid, 1 account(s)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "interval = \"10m\"\nmax_parallel = 3\nmax_parallel_per_server = 4\n\
             shutdown_timeout = \"30s\"\nlog_target = \"stderr\"\n"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn an_empty_config_is_an_error_for_check_fetch_daemon_and_status() {
    let env = Env::new();
    let run = check(&env, "");
    run.assert_code(2);
    assert!(
        run.stdout.contains(": invalid, 0 account(s), 1 error"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("key `account`: no accounts: add an [[account]] table"),
        "{}",
        run.stderr
    );
    for cmd in [&["fetch"][..], &["daemon"], &["status"]] {
        let run = env.popfetch(cmd);
        run.assert_code(2);
        assert!(
            run.stderr.contains(&format!(
                "no accounts in {}: add an [[account]] table (see popfetch.toml(5))",
                env.config_path().display()
            )),
            "{cmd:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_missing_password_file_is_an_error() {
    let env = Env::new();
    let text = checked(&env);
    std::fs::remove_file(env.path().join("home.pass")).unwrap();
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        7,
        "home.pass does not exist; write the secret on its first line",
    );
}

#[test]
fn a_password_file_others_may_read_is_an_error() {
    let env = Env::new();
    let text = checked(&env);
    let pw = env.path().join("home.pass");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        7,
        "readable by others (owner root (uid 0), mode 0644); run `chmod o-r",
    );
}

#[test]
fn a_missing_ca_file_is_an_error() {
    let env = Env::new();
    let text = format!(
        "{}ca_file = \"{}/nothere.pem\"\n",
        checked(&env),
        env.path().display()
    );
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(&run, "error", 9, "nothere.pem: No such file or directory");
}

#[test]
fn an_empty_ca_file_key_is_an_error_at_its_line() {
    let env = Env::new();
    let run = check(&env, &format!("{}ca_file = \"\"\n", checked(&env)));
    run.assert_code(2);
    assert!(run.stderr.contains(", line 9, "), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("key `ca_file`: is empty; name a PEM file"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_ca_file_without_a_certificate_is_an_error() {
    let env = Env::new();
    let ca = env.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let run = check(
        &env,
        &format!("{}ca_file = \"{}\"\n", checked(&env), ca.display()),
    );
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        9,
        "holds no certificate: it must be a PEM file",
    );
}

#[test]
fn a_maildir_that_is_a_regular_file_is_an_error() {
    let env = Env::new();
    let text = checked(&env);
    std::fs::remove_dir(env.maildir()).unwrap();
    std::fs::write(env.maildir(), "").unwrap();
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        8,
        "Maildir is not a directory: a Maildir is a directory holding tmp/, new/ and cur/",
    );
}

#[test]
fn a_maildir_not_there_yet_is_a_warning_it_will_be_created() {
    let env = Env::new();
    let text = checked(&env).replace("/Maildir\"", "/mail/Maildir\"");
    let run = check(&env, &text);
    run.assert_code(0);
    assert!(
        run.stdout.contains(": valid, 1 account(s), 1 warning"),
        "{}",
        run.stdout
    );
    assert_finding(
        &run,
        "warning",
        8,
        "mail/Maildir does not exist yet; the first delivery creates it",
    );
}

#[test]
fn a_maildir_that_cannot_be_created_is_an_error() {
    let env = Env::new();
    let text = checked(&env).replace(
        &format!("maildir = \"{}\"", env.maildir().display()),
        &format!(
            "maildir = \"{}/Maildir\"",
            env.path().join("home.pass").display()
        ),
    );
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        8,
        "home.pass is not a directory the user running popfetch (root) may write, so it cannot be created",
    );
}

#[test]
fn an_mbox_whose_directory_is_missing_is_an_error() {
    let env = Env::new();
    let text = checked(&env).replace(
        &format!("maildir = \"{}\"", env.maildir().display()),
        &format!("mbox = \"{}/nodir/inbox\"", env.path().display()),
    );
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        8,
        "nodir/inbox does not exist and its directory",
    );
}

#[test]
fn an_mbox_that_is_a_directory_is_an_error() {
    let env = Env::new();
    let text = checked(&env).replace("maildir = ", "mbox = ");
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(&run, "error", 8, "is a directory; an mbox is one file");
}

#[test]
fn an_mda_that_does_not_exist_is_an_error() {
    let env = Env::new();
    let text = checked(&env).replace(
        &format!("maildir = \"{}\"", env.maildir().display()),
        "mda = [\"/usr/bin/popfetch-no-such-mda\", \"-d\", \"{user}\"]",
    );
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        8,
        "/usr/bin/popfetch-no-such-mda does not exist; install it or fix the path",
    );
}

#[test]
fn an_mda_that_is_not_executable_is_an_error() {
    let env = Env::new();
    let mda = env.path().join("mda");
    std::fs::write(&mda, "#!/bin/sh\ncat >/dev/null\n").unwrap();
    std::fs::set_permissions(&mda, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = checked(&env).replace(
        &format!("maildir = \"{}\"", env.maildir().display()),
        &format!("mda = [\"{}\"]", mda.display()),
    );
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        8,
        "is not executable by the user running popfetch (root); run `chmod +x",
    );
}

#[test]
fn a_password_command_not_on_path_is_an_error() {
    let env = Env::new();
    let text = checked(&env).replace(
        &format!(
            "password_file = \"{}\"",
            env.path().join("home.pass").display()
        ),
        "password_command = [\"popfetch-no-such-pass\", \"show\", \"pop\"]",
    );
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        7,
        "`popfetch-no-such-pass` is not found in any directory of PATH",
    );
}

#[test]
fn a_state_dir_of_another_user_is_an_error() {
    let env = Env::new();
    let text = checked(&env);
    std::os::unix::fs::chown(env.path().join("state"), Some(65534), Some(65534)).unwrap();
    let run = check(&env, &text);
    run.assert_code(2);
    assert_finding(&run, "error", 1, "state directory");
    assert_finding(
        &run,
        "error",
        1,
        "not owned by the user running popfetch (root)",
    );
}

#[test]
fn a_state_dir_not_there_yet_is_a_warning() {
    let env = Env::new();
    let text = checked(&env);
    std::fs::remove_dir(env.path().join("state")).unwrap();
    let run = check(&env, &text);
    run.assert_code(0);
    assert_finding(
        &run,
        "warning",
        1,
        "state does not exist yet; the first fetch creates it",
    );
}

#[test]
fn a_maildir_the_user_cannot_write_is_an_error() {
    // As root every directory is writable: run as nobody, whose Maildir belongs to root.
    let dir = tempfile::Builder::new()
        .prefix("popfetch-check-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let maildir = dir.path().join("Maildir");
    std::fs::create_dir(&maildir).unwrap();
    std::fs::set_permissions(&maildir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n\n{}deliver = {{ maildir = \"{}\" }}\n",
            state.display(),
            ACCOUNT,
            maildir.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&config, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let bin = dir.path().join("popfetch");
    std::fs::copy(env!("CARGO_BIN_EXE_popfetch"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&bin)
        .arg("-c")
        .arg(&config)
        .arg("check")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir(dir.path())
        .output()
        .expect("run setpriv");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.assert_code(2);
    assert_finding(
        &run,
        "error",
        8,
        "Maildir is not writable by the user running popfetch (nobody)",
    );
}

#[test]
fn every_finding_is_reported_not_just_the_first() {
    let env = Env::new();
    let text = format!(
        "{}\n[[account]]\nname = \"work\"\nhost = \"pop.example.net\"\nuser = \"bob\"\n\
         password_file = \"{dir}/work.pass\"\ndeliver = {{ mda = [\"{dir}/no-mda\"] }}\n",
        checked(&env),
        dir = env.path().display()
    );
    let run = check(&env, &text);
    run.assert_code(2);
    assert!(
        run.stdout.contains(": invalid, 2 account(s), 2 errors"),
        "{}",
        run.stdout
    );
    assert_finding(&run, "error", 14, "work.pass does not exist");
    assert_finding(&run, "error", 15, "no-mda does not exist");
}
