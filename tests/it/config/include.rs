//! `include = ["conf.d/*.toml"]`: accounts in files of their own, read in a fixed order, each
//! taking the main file's `[defaults]`; every error names its file and line, an account in two
//! files names both; a pattern that matches nothing is fine, a missing file is not.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::harness::{Env, delivered_in, message};
use crate::pop3_server::{Msg, Server};
use crate::support::config::Account;

/// Writes `text` at `path` with mode 0600 (it holds a password).
pub(crate) fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The main config: `include`, and `[defaults]` delivering into `env`'s Maildir.
fn main_config(env: &Env, include: &str) {
    env.write_config(&format!(
        "include = [{include}]\n\n[defaults]\ndeliver = {{ maildir = \"{}\" }}\n",
        env.maildir().display()
    ));
}

/// An account on `server` as mailbox `alice+NAME`, with no delivery of its own. It keeps what
/// it fetches: the scripted server shows every user the same mailbox, and two accounts polled
/// at once must both find its message, whichever QUITs first.
fn account(server: &Server, name: &str) -> String {
    Account::scripted(server)
        .name(name)
        .set("keep", true)
        .user(&format!("alice+{name}"))
        .to_toml()
}

#[test]
fn included_accounts_are_fetched_with_the_main_files_defaults() {
    let server = Server::healthy(vec![Msg::new(message(1, 100), "u1")]);
    let env = Env::new();
    main_config(&env, "\"conf.d/*.toml\"");
    let d = env.path().join("conf.d");
    write(&d.join("alice.toml"), &account(&server, "alice"));
    write(&d.join("bob.toml"), &account(&server, "bob"));
    // Neither matches: not `*.toml`, and a wildcard skips a leading dot.
    write(&d.join("carol.toml.bak"), "not toml at all [");
    write(&d.join(".dave.toml"), "not toml at all [");
    // Relative to the main file's directory, not to where popfetch runs.
    let mut cmd = env.command(&["fetch"]);
    cmd.current_dir("/");
    let run = crate::harness::run_bounded(cmd, std::time::Duration::from_secs(30));
    run.assert_code(0);
    assert!(
        run.stdout.contains("alice") && run.stdout.contains("bob"),
        "{}",
        run.stdout
    );
    // One message each: the scripted server shows both mailboxes the same message.
    assert_eq!(delivered_in(&env.maildir()).len(), 2);
    let log = server.log();
    let mut users = log.commands("USER");
    users.sort();
    assert_eq!(users, ["USER alice+alice", "USER alice+bob"]);
    // In the files' order, as `check` lists them.
    let run = env.popfetch(&["check"]);
    let (a, b) = (
        run.stdout.find("name = \"alice\""),
        run.stdout.find("name = \"bob\""),
    );
    assert!(a.is_some() && a < b, "{}", run.stdout);
}

#[test]
fn an_error_in_an_included_file_names_the_file_and_line() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    main_config(&env, "\"conf.d/*.toml\"");
    let d = env.path().join("conf.d");
    write(&d.join("alice.toml"), &account(&server, "alice"));
    write(
        &d.join("bob.toml"),
        &format!("# bob\n{}timeout = \"0s\"\n", account(&server, "bob")),
    );
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    let line = 1 + account(&server, "bob").lines().count() + 1;
    let want = format!("{}, line {line}", d.join("bob.toml").display());
    assert!(
        run.stderr.contains(&want) && run.stderr.contains("key `timeout`"),
        "want {want}: {}",
        run.stderr
    );

    // A TOML error, and a setting that belongs in the main file.
    write(&d.join("bob.toml"), "[[account]\nname = \"bob\"\n");
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    let want = format!("{}, line 1", d.join("bob.toml").display());
    assert!(run.stderr.contains(&want), "want {want}: {}", run.stderr);
    write(
        &d.join("bob.toml"),
        &format!("interval = \"5m\"\n{}", account(&server, "bob")),
    );
    let run = env.popfetch(&["fetch"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains(&d.join("bob.toml").display().to_string())
            && run.stderr.contains("holds only [[account]] tables"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_value_from_the_main_files_defaults_is_placed_there() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    env.write_config(
        "include = [\"conf.d/*.toml\"]\n\n[defaults]\ndeliver = { maildir = \"/tmp/x\" }\n\
         max_messages_per_poll = 0\n",
    );
    write(
        &env.path().join("conf.d/alice.toml"),
        &account(&server, "alice"),
    );
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    // write_config puts `state_dir` and a blank line first: the key is on line 7.
    let want = format!("{}, line 7", env.config_path().display());
    assert!(
        run.stderr.contains(&want) && run.stderr.contains("account `alice`"),
        "want {want}: {}",
        run.stderr
    );
}

#[test]
fn an_account_name_in_two_files_names_both() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    main_config(&env, "\"conf.d/*.toml\"");
    let d = env.path().join("conf.d");
    write(&d.join("a.toml"), &account(&server, "alice"));
    write(
        &d.join("b.toml"),
        &format!(
            "{}{}",
            account(&server, "bob"),
            Account::scripted(&server)
                .name("alice")
                .user("alice+other")
                .to_toml()
        ),
    );
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    let (a, b) = (d.join("a.toml"), d.join("b.toml"));
    assert!(
        run.stderr.contains(&format!("{}, line ", b.display()))
            && run.stderr.contains(&format!("in {}, line 2", a.display()))
            && run.stderr.contains("same name"),
        "{}",
        run.stderr
    );
    // The main file's own account and an included one: both named too.
    write(&d.join("b.toml"), &account(&server, "bob"));
    env.write_config(&format!(
        "include = [\"conf.d/*.toml\"]\n[defaults]\ndeliver = {{ maildir = \"{}\" }}\n{}",
        env.maildir().display(),
        Account::scripted(&server)
            .name("bob")
            .user("alice+main")
            .to_toml()
    ));
    let run = env.popfetch(&["check"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(&b.display().to_string())
            && run
                .stderr
                .contains(&format!("in {}", env.config_path().display())),
        "{}",
        run.stderr
    );
}

#[test]
fn an_empty_directory_is_fine_and_a_missing_file_is_not() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    std::fs::create_dir(env.path().join("conf.d")).unwrap();
    env.write_config(&format!(
        "include = [\"conf.d/*.toml\"]\n{}",
        Account::scripted(&server).maildir(&env.maildir()).to_toml()
    ));
    env.popfetch(&["fetch"]).assert_code(0);

    env.write_config(&format!(
        "include = [\"conf.d/*.toml\", \"users.toml\"]\n{}",
        Account::scripted(&server).maildir(&env.maildir()).to_toml()
    ));
    let run = env.popfetch(&["fetch"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("key `include`")
            && run
                .stderr
                .contains(&env.path().join("users.toml").display().to_string()),
        "{}",
        run.stderr
    );
}

#[test]
fn an_included_file_others_may_write_is_refused() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    main_config(&env, "\"conf.d/*.toml\"");
    let file = env.path().join("conf.d/alice.toml");
    write(&file, &account(&server, "alice"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = env.popfetch(&["fetch"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains(&file.display().to_string()) && run.stderr.contains("readable"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_check_finding_on_a_value_from_the_main_files_defaults_is_placed_there() {
    let server = Server::healthy(vec![]);
    let env = Env::new();
    // A Maildir that does not exist yet: a warning, about a key alice takes from [defaults].
    let maildir = env.path().join("not-yet/Maildir");
    env.write_config(&format!(
        "include = [\"conf.d/*.toml\"]\n\n[defaults]\ndeliver = {{ maildir = \"{}\" }}\n",
        maildir.display()
    ));
    write(
        &env.path().join("conf.d/alice.toml"),
        &account(&server, "alice"),
    );
    let run = env.popfetch(&["check"]);
    run.assert_code(0);
    // write_config puts `state_dir` and a blank line first: `deliver` is on line 6.
    let want = format!("{}, line 6", env.config_path().display());
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("warning") && l.contains("account `alice`"))
        .unwrap_or_else(|| panic!("no warning about alice: {}", run.stderr));
    assert!(line.contains(&want), "want {want}: {line}");
}
