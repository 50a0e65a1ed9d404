//! Dot-unstuffing of message bodies, byte-exact.
//!
//! Input: a script line of chunk sizes (see the crate docs), `\n`, then a message body of any
//! bytes. The body is normalised to lines ending in `\n` without `\r` (what the decoder gives
//! back), dot-stuffed as a server sends it, followed by the next pipelined answer, and fed in
//! chunks. Checked: `+OK`, the body's `Data` concatenated equal to the body byte for byte, `End`,
//! then the next answer's status: the decoder stops exactly at the terminator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popfetch::pop3::{Event, Expect, MAX_LINE, Pipeline, Status};
use popfetch_fuzz::{chunk_sizes, chunks, normalise_body, split_script, stuff};

fuzz_target!(|data: &[u8]| {
    let (script, raw) = split_script(data);
    let sizes = chunk_sizes(script);
    let body = normalise_body(raw);

    let mut wire = b"+OK message follows\r\n".to_vec();
    wire.extend_from_slice(&stuff(&body));
    wire.extend_from_slice(b"+OK next\r\n");

    let mut d = Pipeline::<()>::new();
    d.expect("RETR", Expect::Body, ());
    d.expect("NOOP", Expect::Single, ());
    let mut statuses = Vec::new();
    let mut got = Vec::new();
    let mut ends = 0;
    for piece in chunks(&wire, &sizes) {
        d.feed(piece);
        assert!(d.buffered() <= MAX_LINE + piece.len());
        while let Some(ev) = d
            .next_event()
            .expect("a well-formed answer failed to decode")
        {
            match ev {
                Event::Status(s) => {
                    assert_eq!(ends, statuses.len(), "status inside the body");
                    statuses.push(s);
                }
                Event::Data(chunk) => {
                    assert!(!chunk.is_empty(), "empty Data event");
                    assert_eq!((statuses.len(), ends), (1, 0), "data outside the body");
                    got.extend_from_slice(&chunk);
                }
                Event::Line(l) => panic!("a body gave a Line: {l:?}"),
                Event::End => ends += 1,
            }
        }
    }
    assert!(got == body, "body changed:\n want {body:?}\n  got {got:?}");
    assert_eq!(ends, 1);
    assert_eq!(
        statuses,
        [
            Status::parse(b"+OK message follows").unwrap(),
            Status::parse(b"+OK next").unwrap()
        ]
    );
    assert_eq!((d.buffered(), d.in_flight()), (0, 0));
});
