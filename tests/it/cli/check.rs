//! `popfetch check` and the config's errors through the built binary: every error says what to
//! write instead and points at the line of the key it is about; `check` finds what would fail at
//! the first fetch without touching the network.

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
