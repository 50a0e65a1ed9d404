//! The pipeline: commands queued, answers matched to them in order, with known answers and
//! every way the reads can split them.

use proptest::prelude::*;

use super::*;
use crate::secret::Secret;

fn msg(n: u32) -> MsgNum {
    MsgNum::new(n).unwrap()
}

/// Every event with the tag and command of the answer it belongs to, consecutive `Data` merged.
fn drain(p: &mut Pipeline<u32>, out: &mut Vec<(u32, &'static str, Event)>) {
    while let Some(ev) = p.next_event().unwrap() {
        let (tag, what) = p.current().expect("an event belongs to an answer");
        match (out.last_mut(), ev) {
            (Some((t, _, Event::Data(prev))), Event::Data(more)) if *t == tag => {
                prev.extend_from_slice(&more);
            }
            (_, ev) => out.push((tag, what, ev)),
        }
    }
}

fn ok(text: &str) -> Event {
    Event::Status(Status::parse(format!("+OK {text}").as_bytes()).unwrap())
}

#[test]
fn pipelined_answers_come_back_with_their_tags_in_order() {
    let mut p = Pipeline::new();
    p.queue(&Command::Retr(msg(1)), 1);
    p.queue(&Command::Dele(msg(1)), 2);
    p.queue(&Command::Retr(msg(2)), 3);
    assert_eq!(p.output(), b"RETR 1\r\nDELE 1\r\nRETR 2\r\n");
    assert_eq!(p.in_flight(), 3);
    p.written();
    assert!(p.output().is_empty());
    p.feed(b"+OK 5\r\nab\r\n..c\r\n.\r\n+OK gone\r\n+OK 2\r\nd\r\n.\r\n");
    let mut got = Vec::new();
    drain(&mut p, &mut got);
    assert_eq!(
        got,
        [
            (1, "RETR", ok("5")),
            (1, "RETR", Event::Data(b"ab\n.c\n".to_vec())),
            (1, "RETR", Event::End),
            (2, "DELE", ok("gone")),
            (3, "RETR", ok("2")),
            (3, "RETR", Event::Data(b"d\n".to_vec())),
            (3, "RETR", Event::End),
        ]
    );
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn an_err_to_retr_has_no_body_and_the_next_answer_is_the_next_command() {
    let mut p = Pipeline::new();
    p.queue(&Command::Retr(msg(7)), 7);
    p.queue(&Command::Noop, 8);
    p.feed(b"-ERR no such message\r\n+OK\r\n");
    let mut got = Vec::new();
    drain(&mut p, &mut got);
    let tags: Vec<_> = got.iter().map(|(t, w, _)| (*t, *w)).collect();
    assert_eq!(tags, [(7, "RETR"), (8, "NOOP")]);
    assert!(!p.in_body());
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn a_sasl_continuation_keeps_the_same_answer_owed() {
    let mut p = Pipeline::new();
    p.queue(
        &Command::Auth {
            mechanism: "PLAIN",
            initial: None,
        },
        1,
    );
    p.written();
    p.feed(b"+ \r\n");
    let mut got = Vec::new();
    drain(&mut p, &mut got);
    assert_eq!(got.len(), 1);
    assert_eq!(p.in_flight(), 1, "a continuation is not the answer");
    assert_eq!(p.waiting_for(), Some("AUTH"));
    p.continue_with(&Command::SaslResponse(Secret::new("AGEAYg==".to_string())));
    assert_eq!(p.output(), b"AGEAYg==\r\n");
    p.written();
    p.feed(b"+OK logged in\r\n");
    drain(&mut p, &mut got);
    assert_eq!(got.last(), Some(&(1, "AUTH", ok("logged in"))));
    assert_eq!(p.in_flight(), 0);
}

#[test]
fn the_greeting_is_expected_without_a_command_and_named_while_awaited() {
    let mut p = Pipeline::new();
    p.expect("greeting", Expect::Single, 0);
    assert_eq!(p.waiting_for(), Some("greeting"));
    assert!(p.output().is_empty());
    p.feed(b"+OK ready <1.2@host>\r\n");
    let mut got = Vec::new();
    drain(&mut p, &mut got);
    assert_eq!(got, [(0, "greeting", ok("ready <1.2@host>"))]);
    assert_eq!(p.waiting_for(), None);
}

#[test]
fn bytes_nobody_asked_for_are_an_error() {
    let mut p = Pipeline::new();
    p.queue(&Command::Noop, 1);
    p.feed(b"+OK\r\n+OK injected\r\n");
    assert!(matches!(p.next_event(), Ok(Some(Event::Status(_)))));
    assert!(matches!(p.next_event(), Err(DecodeError::Unexpected(_))));
}

#[test]
fn the_output_is_wiped_once_written() {
    let mut p = Pipeline::<()>::new();
    p.queue(&Command::Pass(Secret::new("hunter2".to_string())), ());
    let (ptr, len) = (p.output().as_ptr(), p.output().len());
    p.written();
    // The buffer keeps its allocation: what it held is zeros now.
    // SAFETY: `written` clears the Vec without freeing it, so its first `len` bytes are still
    // allocated and were zeroed before the clear.
    let held = unsafe { std::slice::from_raw_parts(ptr, len) };
    assert!(held.iter().all(|&b| b == 0), "{held:?}");
}

/// `+OK`, the lines dot-stuffed with CRLF, and the terminating `.`.
fn multiline(lines: Vec<Vec<u8>>) -> Vec<u8> {
    let mut w = b"+OK\r\n".to_vec();
    for l in lines {
        if l.first() == Some(&b'.') {
            w.push(b'.');
        }
        w.extend_from_slice(&l);
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b".\r\n");
    w
}

/// One answer of a random script: its shape and its wire bytes.
fn answer() -> impl Strategy<Value = (Expect, Vec<u8>)> {
    let line = proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'.'), Just(b' ')], 0..6);
    let lines = proptest::collection::vec(line, 0..4);
    prop_oneof![
        Just((Expect::Single, b"+OK\r\n".to_vec())),
        Just((Expect::Single, b"-ERR no\r\n".to_vec())),
        Just((Expect::Body, b"-ERR gone\r\n".to_vec())),
        lines.clone().prop_map(|l| (Expect::Lines, multiline(l))),
        lines.prop_map(|l| (Expect::Body, multiline(l))),
    ]
}

proptest! {
    /// However the reads split a run of pipelined answers, every event comes out with the tag
    /// of the command it answers, the same as when everything arrives at once, and nothing is
    /// owed at the end.
    #[test]
    fn tags_and_events_do_not_depend_on_how_reads_split(
        script in proptest::collection::vec(answer(), 1..8),
        sizes in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let run = |pieces: Vec<&[u8]>| {
            let mut p = Pipeline::new();
            for (i, (e, _)) in script.iter().enumerate() {
                p.expect("test", *e, u32::try_from(i).unwrap());
            }
            let mut got = Vec::new();
            for piece in pieces {
                p.feed(piece);
                drain(&mut p, &mut got);
            }
            (got, p.in_flight(), p.buffered())
        };
        let wire: Vec<u8> = script.iter().flat_map(|(_, w)| w.clone()).collect();
        let whole = run(vec![&wire]);
        let mut pieces = Vec::new();
        let mut rest = &wire[..];
        for &n in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at(n.min(rest.len()));
            pieces.push(a);
            rest = b;
        }
        let split = run(pieces);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!((whole.1, whole.2), (0, 0));
        // Every answer's status line came out, in order.
        let statuses: Vec<u32> = whole.0.iter()
            .filter(|(_, _, ev)| matches!(ev, Event::Status(_)))
            .map(|(t, _, _)| *t)
            .collect();
        prop_assert_eq!(statuses, (0..u32::try_from(script.len()).unwrap()).collect::<Vec<_>>());
    }
}
