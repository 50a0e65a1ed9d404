use super::*;

#[test]
fn an_ipv6_host_is_bracketed_before_its_port() {
    assert_eq!(host_port("::1", 995), "[::1]:995");
    assert_eq!(host_port("fe80::1%eth0", 110), "[fe80::1%eth0]:110");
    assert_eq!(host_port("127.0.0.1", 110), "127.0.0.1:110");
    assert_eq!(host_port("pop.example.org", 995), "pop.example.org:995");
    assert_eq!(host_literal("::1"), "[::1]");
    assert_eq!(host_literal("localhost"), "localhost");
}

#[test]
fn an_empty_reason_says_none_was_given() {
    assert_eq!(reason(""), "(no reason given)");
    assert_eq!(reason("  "), "(no reason given)");
    assert_eq!(reason(" invalid login "), "invalid login");
}

#[test]
fn bytes_read_as_people_count_them() {
    assert_eq!(human_bytes(0), "0 B");
    assert_eq!(human_bytes(1023), "1023 B");
    assert_eq!(human_bytes(1024), "1.0 KiB");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
}

#[test]
fn an_error_chain_says_each_cause_once() {
    #[derive(Debug, thiserror::Error)]
    #[error("reading the journal: {0}")]
    struct Outer(#[source] std::io::Error);
    #[derive(Debug, thiserror::Error)]
    #[error("poll failed")]
    struct Top(#[source] Outer);
    let e = Top(Outer(std::io::Error::other("disk full")));
    assert_eq!(
        error_chain(&e),
        "poll failed: reading the journal: disk full"
    );
}

#[test]
fn hex_is_lower_case_two_digits_a_byte() {
    assert_eq!(hex(&[]), "");
    assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
}

#[test]
fn edit_distance_counts_insertions_deletions_substitutions_and_swaps() {
    assert_eq!(edit_distance("", ""), 0);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("abc", ""), 3);
    assert_eq!(edit_distance("pasword", "password"), 1);
    assert_eq!(edit_distance("passwrod", "password"), 1);
    assert_eq!(edit_distance("ab", "ba"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("ü", "u"), 1);
}

#[test]
fn closest_suggests_only_near_keys() {
    let keys = ["password", "password_file", "port", "host", "user"];
    assert_eq!(closest("pasword", keys), Some("password"));
    assert_eq!(closest("passwd_file", keys), Some("password_file"));
    assert_eq!(closest("usr", keys), Some("user"));
    assert_eq!(closest("prot", keys), Some("port"));
    assert_eq!(closest("mailbox", keys), None);
    assert_eq!(closest("x", keys), None);
}
