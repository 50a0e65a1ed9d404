//! Known answers and properties for the listing-line parsers.

use proptest::prelude::*;

use super::listing::{
    BadLine, Budget, LISTING_SLACK_LINES, LISTING_SLACK_OCTETS, MAX_MESSAGES, NumSet, list_line,
    listing_budget, stat_count, uidl_line,
};
use super::{InvalidUidl, MsgNum};

fn n(v: u32) -> MsgNum {
    MsgNum::new(v).unwrap()
}

#[test]
fn uidl_lines() {
    // RFC 1939 §7's example.
    let (num, uid) = uidl_line(b"1 whqtswO00WBw418f9t5JxYwZ").unwrap();
    assert_eq!((num, uid.as_str()), (n(1), "whqtswO00WBw418f9t5JxYwZ"));
    let (num, uid) = uidl_line(b"2 QhdPYR:00WBw1Ph7x7  ").unwrap();
    assert_eq!((num, uid.as_str()), (n(2), "QhdPYR:00WBw1Ph7x7"));
    assert_eq!(
        uidl_line(b"whqtswO00WBw418f9t5JxYwZ"),
        Err(BadLine::NoNumber)
    );
    assert_eq!(uidl_line(b"0 abc"), Err(BadLine::NoNumber));
    assert_eq!(uidl_line(b"x abc"), Err(BadLine::NoNumber));
    assert_eq!(uidl_line(b"-1 abc"), Err(BadLine::NoNumber));
    assert_eq!(uidl_line(b"4294967296 abc"), Err(BadLine::NoNumber));
    assert_eq!(uidl_line(b"1 "), Err(BadLine::Uidl(InvalidUidl::Empty)));
    assert_eq!(
        uidl_line(b"1 a b"),
        Err(BadLine::Uidl(InvalidUidl::BadByte(b' ')))
    );
    let long = [b"3 ".as_slice(), &[b'a'; 71]].concat();
    assert_eq!(
        uidl_line(&long),
        Err(BadLine::Uidl(InvalidUidl::TooLong(71)))
    );
    assert_eq!(
        BadLine::Uidl(InvalidUidl::Empty).to_string(),
        "empty unique-id"
    );
}

#[test]
fn list_lines() {
    assert_eq!(list_line(b"1 120"), Ok((n(1), 120)));
    assert_eq!(list_line(b"2 200 extra words"), Ok((n(2), 200)));
    assert_eq!(list_line(b"3 0"), Ok((n(3), 0)));
    assert_eq!(list_line(b"1"), Err(BadLine::NoNumber));
    assert_eq!(list_line(b"1 "), Err(BadLine::NoSize));
    assert_eq!(list_line(b"1 12k"), Err(BadLine::NoSize));
    assert_eq!(
        list_line(b"1 99999999999999999999999"),
        Err(BadLine::NoSize)
    );
    assert_eq!(BadLine::NoSize.to_string(), "no size");
    assert_eq!(BadLine::NoNumber.to_string(), "no message number");
}

#[test]
fn stat_answers() {
    assert_eq!(stat_count(b"2 320"), Ok(2));
    assert_eq!(stat_count(b"0 0"), Ok(0));
    assert_eq!(stat_count(b"17"), Ok(17));
    assert_eq!(stat_count(b""), Err(BadLine::NoCount));
    assert_eq!(stat_count(b"mailbox has 2"), Err(BadLine::NoCount));
    assert_eq!(stat_count(b" 2 320"), Err(BadLine::NoCount));
    assert_eq!(BadLine::NoCount.to_string(), "no message count");
}

proptest! {
    #[test]
    fn parsers_never_panic(line in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = uidl_line(&line);
        let _ = list_line(&line);
        let _ = stat_count(&line);
    }

    #[test]
    fn well_formed_lines_parse_back(
        num in 1u32..,
        size in any::<u64>(),
        uid in "[!-~]{1,70}",
    ) {
        let (m, u) = uidl_line(format!("{num} {uid}").as_bytes()).unwrap();
        prop_assert_eq!(m.get(), num);
        prop_assert_eq!(u.as_str(), uid.as_str());
        prop_assert_eq!(list_line(format!("{num} {size}").as_bytes()), Ok((m, size)));
        prop_assert_eq!(stat_count(format!("{size} {num}").as_bytes()), Ok(size));
    }
}

#[test]
fn listing_budgets_follow_the_stat_count_and_saturate() {
    assert_eq!(
        listing_budget(0),
        (LISTING_SLACK_OCTETS, LISTING_SLACK_LINES)
    );
    let (octets, lines) = listing_budget(1_000_000);
    // A million lines of the longest UIDL a server may send (RFC 1939 §7) fit.
    assert!(octets >= 1_000_000 * (10 + 1 + 70 + 2));
    assert_eq!(lines, 1_000_000 + LISTING_SLACK_LINES);
    assert_eq!(listing_budget(u64::MAX), (u64::MAX, u64::MAX));
}

#[test]
fn num_set_refuses_a_number_twice_or_beyond_the_count() {
    let mut s = NumSet::new(3);
    for v in [2, 1, 3] {
        s.insert(n(v)).unwrap();
    }
    assert!(s.insert(n(2)).unwrap_err().contains("listed twice"));
    // A sloppy server gets slack beyond STAT's count, no more.
    let slack = u32::try_from(LISTING_SLACK_LINES).unwrap();
    s.insert(n(3 + slack)).unwrap();
    assert!(
        s.insert(n(4 + slack))
            .unwrap_err()
            .contains("beyond STAT's count of 3")
    );
    assert!(s.insert(n(u32::MAX)).is_err());
    // The largest mailbox: its set is a few MiB, and its last number fits.
    let mut s = NumSet::new(MAX_MESSAGES);
    assert!(s.size() <= (MAX_MESSAGES as usize / 8) + 4096);
    s.insert(n(u32::try_from(MAX_MESSAGES).unwrap() + slack))
        .unwrap();
}

#[test]
fn a_budget_counts_each_line_with_a_crlf_and_stops_past_either_limit() {
    let mut b = Budget::new((10, 3));
    assert!(b.take(b"abc")); // 5
    assert!(b.take(b"abc")); // 10: at the limit still
    assert!(!b.take(b"")); // 12 octets
    let mut b = Budget::new((1000, 2));
    assert!(b.take(b"a") && b.take(b"b"));
    assert!(!b.take(b"c"), "a third line is past two");
}
