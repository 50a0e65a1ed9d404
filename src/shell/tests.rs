use super::*;

#[test]
fn shell_words_split_like_sh_or_refuse() {
    assert_eq!(
        shell_words(r#"/usr/bin/procmail -f '%F' -d "a b" c\ d"#),
        Some(vec![
            "/usr/bin/procmail".into(),
            "-f".into(),
            "%F".into(),
            "-d".into(),
            "a b".into(),
            "c d".into()
        ])
    );
    for needs_shell in [
        "a | b",
        "a > f",
        "a $USER",
        "a \"$HOME\"",
        "a `b`",
        "a; b",
        "a && b",
        "FOO=1 a",
        "a ~/x",
        "a *.txt",
        "a 'unterminated",
    ] {
        assert_eq!(shell_words(needs_shell), None, "{needs_shell}");
    }
}

#[test]
fn commands_become_argv_with_whole_placeholders_or_go_through_sh() {
    let ph = [
        ("%F", Placeholder::Popfetch("{from}")),
        ("%T", Placeholder::Constant("bob smith".into())),
    ];
    let c = translate_command("/usr/bin/procmail -f %F -d %T", &ph);
    assert_eq!(
        c.argv,
        ["/usr/bin/procmail", "-f", "{from}", "-d", "bob smith"]
    );
    assert_eq!(c.shell_reason, None);
    // Embedded sender: the shell gets it as "$1", never as code.
    let c = translate_command("/usr/bin/deliver -f'%F' --to=%T | logger", &ph);
    assert_eq!(c.argv[..2], ["/bin/sh", "-c"]);
    assert_eq!(
        c.argv[2],
        r#"/usr/bin/deliver -f"$1" --to='bob smith' | logger"#
    );
    assert_eq!(c.argv[3..], ["sh", "{from}"]);
    assert!(c.shell_reason.is_some());
    let c = translate_command(r#"x "-f%F""#, &ph);
    assert_eq!(c.argv[2], r#"x "-f$1""#);
}
