//! Known answers and properties for the listing-line parsers.

use proptest::prelude::*;

use super::listing::{BadLine, list_line, stat_count, uidl_line};
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
