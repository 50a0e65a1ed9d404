use super::*;

#[test]
fn a_string_command_is_answered_with_its_argv() {
    let text = "mda = \"/usr/bin/procmail -d %T\"\n";
    let m = toml_message(
        text,
        Some(6..31),
        "invalid type: string, expected a sequence",
    );
    assert!(
        m.ends_with(r#"mda = ["/usr/bin/procmail", "-d", "{user}"]"#),
        "{m}"
    );
    let text = "password_command = 'pass show pop/alice | head -1'\n";
    let m = toml_message(
        text,
        Some(19..51),
        "invalid type: string, expected a sequence",
    );
    assert!(
        m.ends_with(r#"password_command = ["/bin/sh", "-c", "pass show pop/alice | head -1"]"#),
        "{m}"
    );
}

#[test]
fn keys_are_found_before_values_and_in_headers() {
    assert_eq!(key_at("port = \"995\"", 7).as_deref(), Some("port"));
    assert_eq!(
        key_at("deliver = { mda = 'x' }", 18).as_deref(),
        Some("mda")
    );
    assert_eq!(key_at("a = 1\n[account]\n", 6).as_deref(), Some("account"));
    assert_eq!(key_at("[[account.oauth2]]", 0).as_deref(), Some("oauth2"));
    assert_eq!(key_at("pasword = 'x'", 0).as_deref(), Some("pasword"));
}

#[test]
fn every_example_parses_as_toml_of_its_key() {
    for (key, example) in EXAMPLES {
        if example.starts_with('[') {
            continue;
        }
        let toml_part = example.split(" (").next().unwrap();
        let t: toml::Table = toml::from_str(toml_part).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(
            t.contains_key(*key) || t.contains_key("deliver"),
            "{example}"
        );
    }
}
