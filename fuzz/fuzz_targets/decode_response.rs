//! The response decoder on arbitrary server bytes.
//!
//! Input: a script line `<shapes> <chunk sizes>` (see the crate docs), `\n`, then the bytes the
//! "server" sends. Checked:
//! - the decoder never panics, and its buffer never holds more than `MAX_LINE` plus one read;
//! - the events (consecutive `Data` merged) and the kind of error, if any, do not depend on how
//!   the reads split the bytes: the chunked run equals a run fed everything at once;
//! - every status line it yields is stable under decode → encode → decode, through
//!   `Status::parse` and through a fresh decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popfetch::pop3::{DecodeError, Decoder, Event, Expect, MAX_LINE, Pipeline, Status};
use popfetch_fuzz::{chunk_sizes, chunks, encode_status, shapes, split_script};

fuzz_target!(|data: &[u8]| {
    let (script, wire) = split_script(data);
    let (shape_word, sizes) = match script.iter().position(|&b| b == b' ') {
        Some(i) => (&script[..i], &script[i + 1..]),
        None => (script, &[][..]),
    };
    let expects = shapes(shape_word);
    let sizes = chunk_sizes(sizes);

    let chunked = decode(&expects, &chunks(wire, &sizes));
    let whole = decode(&expects, &[wire]);
    assert_eq!(chunked, whole, "result depends on how the reads split");

    for ev in &chunked.0 {
        if let Event::Status(s) = ev {
            check_status_round_trip(s);
        }
    }
});

/// Events with consecutive `Data` merged, and the error that ended decoding (its kind only: an
/// `Unexpected` error quotes what happened to be buffered, which depends on the reads).
type Outcome = (Vec<Event>, Option<std::mem::Discriminant<DecodeError>>);

fn decode(expects: &[Expect], pieces: &[&[u8]]) -> Outcome {
    let mut d = Pipeline::<()>::new();
    for &e in expects {
        d.expect("test", e, ());
    }
    let mut events: Vec<Event> = Vec::new();
    for piece in pieces {
        d.feed(piece);
        assert!(
            d.buffered() <= MAX_LINE + piece.len(),
            "buffer grew to {} after a read of {}",
            d.buffered(),
            piece.len()
        );
        loop {
            match d.next_event() {
                Ok(Some(ev)) => match (events.last_mut(), ev) {
                    (Some(Event::Data(prev)), Event::Data(more)) => {
                        assert!(!more.is_empty(), "empty Data event");
                        prev.extend_from_slice(&more);
                    }
                    (_, ev) => {
                        if let Event::Data(d) = &ev {
                            assert!(!d.is_empty(), "empty Data event");
                        }
                        events.push(ev);
                    }
                },
                Ok(None) => break,
                Err(e) => return (events, Some(std::mem::discriminant(&e))),
            }
        }
    }
    (events, None)
}

fn check_status_round_trip(s: &Status) {
    let line = encode_status(s);
    assert_eq!(
        Status::parse(&line).as_ref(),
        Some(s),
        "re-encoded as {:?}",
        String::from_utf8_lossy(&line)
    );

    let mut wire = line;
    wire.extend_from_slice(b"\r\n");
    let mut d = Decoder::new();
    d.begin(Expect::Single);
    d.feed(&wire);
    match d.next_event() {
        Ok(Some(Event::Status(again))) => assert_eq!(&again, s),
        // The encoding may be a byte or two longer than what the server sent (CRLF for a bare
        // LF), so at the very limit the decoder may now refuse it, correctly.
        Err(DecodeError::LineTooLong) if wire.len() > MAX_LINE => {}
        other => panic!(
            "re-decoding {:?} gave {other:?}",
            String::from_utf8_lossy(&wire)
        ),
    }
}
