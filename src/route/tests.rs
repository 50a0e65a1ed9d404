use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn route(map: &[(&str, RouteTo)]) -> Route {
    let mut addresses = BTreeMap::new();
    let mut domains = BTreeMap::new();
    let mut any = None;
    for (k, v) in map {
        match k.strip_prefix("*@") {
            Some(d) => {
                domains.insert(d.to_string(), v.clone());
            }
            None if *k == "*" => any = Some(v.clone()),
            None => {
                addresses.insert(k.to_string(), v.clone());
            }
        }
    }
    Route {
        envelope_header: "delivered-to".into(),
        envelope_header_index: None,
        local_domains: vec!["example.org".into(), "example.net".into()],
        recipient_delimiter: Some('+'),
        addresses,
        domains,
        any,
    }
}

fn to(r: &str) -> RouteTo {
    RouteTo::Recipient(r.into())
}

const MAILBOX: &str = "catchall@pop.example.com";

fn family() -> Route {
    route(&[
        ("alice@example.org", to("alice")),
        ("bob@example.org", to("bob")),
        ("*@example.net", to("{local}")),
        ("*", to("postmaster")),
    ])
}

#[test]
fn one_header_one_recipient() {
    let head = b"Delivered-To: alice@example.org\nTo: someone@else.example\nSubject: x\n\nbody";
    assert_eq!(
        decide(&family(), head, MAILBOX),
        Decision::To(vec!["alice".into()])
    );
}

#[test]
fn two_headers_two_recipients_once_each_and_foreign_ones_left_out() {
    let head = b"Delivered-To: <Alice@Example.ORG>\nDelivered-To: bob@example.org\n\
                 Delivered-To: alice+lists@example.org\nDelivered-To: list@lists.example\n\n";
    assert_eq!(
        decide(&family(), head, MAILBOX),
        Decision::To(vec!["alice".into(), "bob".into()])
    );
}

#[test]
fn the_index_trusts_only_that_occurrence_from_the_top() {
    let mut r = family();
    r.envelope_header_index = Some(1);
    let head = b"Delivered-To: bob@example.org\nReceived: x\nDelivered-To: alice@example.org\n\n";
    assert_eq!(decide(&r, head, MAILBOX), Decision::To(vec!["bob".into()]));
    r.envelope_header_index = Some(3);
    assert!(matches!(decide(&r, head, MAILBOX), Decision::To(v) if v == ["postmaster"]));
}

#[test]
fn a_domain_wildcard_gives_the_local_part_without_its_tag() {
    let head = b"Delivered-To: carol+shop@example.net\n\n";
    assert_eq!(
        decide(&family(), head, MAILBOX),
        Decision::To(vec!["carol".into()])
    );
    let head = b"Delivered-To: ../etc@example.net\n\n";
    assert!(matches!(
        decide(&family(), head, MAILBOX),
        Decision::Hold(_)
    ));
    let head = b"Delivered-To: -fevil@example.net\n\n";
    assert!(matches!(
        decide(&family(), head, MAILBOX),
        Decision::Hold(_)
    ));
}

#[test]
fn no_header_goes_to_star_or_is_held() {
    let head = b"To: alice@example.org\nCc: bob@example.org\n\n";
    assert_eq!(
        decide(&family(), head, MAILBOX),
        Decision::To(vec!["postmaster".into()])
    );
    let strict = route(&[("alice@example.org", to("alice"))]);
    match decide(&strict, head, MAILBOX) {
        Decision::Hold(why) => assert!(why.contains("no delivered-to header"), "{why}"),
        d => panic!("{d:?}"),
    }
}

#[test]
fn an_unknown_local_address_holds_the_whole_message() {
    let strict = route(&[("alice@example.org", to("alice"))]);
    let head = b"Delivered-To: alice@example.org\nDelivered-To: mallory@example.org\n\n";
    match decide(&strict, head, MAILBOX) {
        Decision::Hold(why) => assert!(why.starts_with("mallory@example.org"), "{why}"),
        d => panic!("{d:?}"),
    }
    let hold = route(&[("alice@example.org", to("alice")), ("*", RouteTo::Hold)]);
    assert!(matches!(decide(&hold, head, MAILBOX), Decision::Hold(_)));
}

#[test]
fn a_message_popfetch_delivered_from_this_mailbox_is_a_loop() {
    let head =
        b"X-Popfetch-Delivered-To: CATCHALL@pop.example.com\nDelivered-To: alice@example.org\n\n";
    match decide(&family(), head, MAILBOX) {
        Decision::Hold(why) => assert!(why.starts_with("mail loop"), "{why}"),
        d => panic!("{d:?}"),
    }
    let other =
        b"X-Popfetch-Delivered-To: other@pop.example.com\nDelivered-To: alice@example.org\n\n";
    assert!(matches!(decide(&family(), other, MAILBOX), Decision::To(_)));
}

#[test]
fn folded_fields_and_crlf_are_read_and_the_body_is_not() {
    let head = b"Subject: a\r\nDelivered-To:\r\n  bob@example.org\r\n\r\nDelivered-To: alice@example.org\r\n";
    assert_eq!(
        decide(&family(), head, MAILBOX),
        Decision::To(vec!["bob".into()])
    );
}

#[test]
fn addresses_in_the_forms_providers_write() {
    assert_eq!(
        addresses("\"Alice\" <A@Example.org>, b@example.org (comment), nonsense, <>"),
        ["a@example.org", "b@example.org"]
    );
}

proptest! {
    /// Whatever a message's header says, every recipient is one the config allows to name a
    /// path or an argument, none twice, and at most MAX_RECIPIENTS.
    #[test]
    fn any_header_routes_to_usable_distinct_recipients(
        locals in proptest::collection::vec("[a-zA-Z0-9.+/_-]{0,12}", 0..80),
        domains in proptest::collection::vec(0usize..3, 0..80),
    ) {
        let mut head = String::new();
        for (l, d) in locals.iter().zip(domains.iter().cycle()) {
            let d = ["example.org", "example.net", "elsewhere.example"][*d];
            head.push_str(&format!("Delivered-To: {l}@{d}\n"));
        }
        head.push('\n');
        match decide(&family(), head.as_bytes(), MAILBOX) {
            Decision::To(rs) => {
                prop_assert!(!rs.is_empty() && rs.len() <= MAX_RECIPIENTS);
                for (i, r) in rs.iter().enumerate() {
                    prop_assert!(Route::usable_recipient(r), "{r:?}");
                    prop_assert!(!rs[..i].contains(r));
                }
            }
            Decision::Hold(why) => prop_assert!(!why.is_empty()),
        }
    }
}
