//! Properties of the response decoder beyond those in `tests.rs`, mirroring the cargo-fuzz targets
//! in `fuzz/` so that CI checks the same invariants without a fuzzer: status lines survive
//! decode → encode → decode, and multi-line answers decode the same however the reads split.

use proptest::prelude::*;

use super::*;

/// Encodes a status as a server would send it, without the line ending, so that `Status::parse`
/// gives it back. A status without a known code whose text begins with a bracketed word (from
/// `-ERR [UNKNOWN] [AUTH] x`) gets an empty code `[]` first, else its text would be read as a code.
fn encode_status(s: &Status) -> Vec<u8> {
    let mut out = Vec::new();
    match s.kind {
        StatusKind::Continue => {
            out.extend_from_slice(b"+ ");
            out.extend_from_slice(&s.text);
            return out;
        }
        StatusKind::Ok => out.extend_from_slice(b"+OK"),
        StatusKind::Err => out.extend_from_slice(b"-ERR"),
    }
    match s.code {
        Some(code) => {
            out.extend_from_slice(format!(" [{code}]").as_bytes());
            if !s.text.is_empty() {
                out.push(b' ');
                out.extend_from_slice(&s.text);
            }
        }
        None if s.text.is_empty() => {}
        None => {
            out.push(b' ');
            if s.text.starts_with(b"[") && s.text.contains(&b']') {
                out.extend_from_slice(b"[]");
            }
            out.extend_from_slice(&s.text);
        }
    }
    out
}

/// Decodes `pieces` in order, merging consecutive `Data` events so that results do not depend on
/// where the reads split; stops at the first error and reports its kind.
fn decode_pieces<'a>(
    expects: &[Expect],
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Event>, Option<std::mem::Discriminant<DecodeError>>) {
    let mut d = Pipeline::<()>::new();
    for &e in expects {
        d.expect("test", e, ());
    }
    let mut out: Vec<Event> = Vec::new();
    for piece in pieces {
        d.feed(piece);
        loop {
            match d.next_event() {
                Ok(Some(ev)) => match (out.last_mut(), ev) {
                    (Some(Event::Data(prev)), Event::Data(more)) => prev.extend_from_slice(&more),
                    (_, ev) => out.push(ev),
                },
                Ok(None) => break,
                Err(e) => return (out, Some(std::mem::discriminant(&e))),
            }
        }
    }
    (out, None)
}

/// Splits `input` into pieces whose sizes cycle through `sizes` (each at least 1).
fn split_by<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = input;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.clamp(1, rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Status-line text: printable words, brackets (known, unknown and empty codes), spaces, tabs, a
/// trailing CR and 8-bit bytes, to reach every branch of `Status::parse`.
fn status_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"[IN-USE]".to_vec()),
        Just(b"[auth]".to_vec()),
        Just(b"[SYS/TEMP]".to_vec()),
        Just(b"[XYZZY/FOO]".to_vec()),
        Just(b"[]".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xe4\xff".to_vec()),
        "[a-zA-Z0-9 ]{1,8}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|p| p.concat())
}

/// A status line as a server might send it, without its line ending; some do not parse.
fn status_line() -> impl Strategy<Value = Vec<u8>> {
    let indicator = prop_oneof![
        Just(&b"+OK"[..]),
        Just(&b"+ok"[..]),
        Just(&b"-ERR"[..]),
        Just(&b"-Err"[..]),
        Just(&b"+"[..]),
        Just(&b"+OKAY"[..]),
    ];
    let sep = prop_oneof![Just(&b""[..]), Just(&b" "[..]), Just(&b"  "[..])];
    (indicator, sep, status_text()).prop_map(|(i, s, t)| [i, s, &t].concat())
}

/// One line of a listing (CAPA, UIDL, LIST) before stuffing: no CR or LF, may start with '.'.
fn listing_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[A-Z0-9 .:-]{0,30}".prop_map(String::into_bytes),
        proptest::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| !b"\r\n".contains(b)),
            0..40
        ),
    ]
}

/// A well-formed answer of the given shape, with the events it must decode to.
fn answer(shape: Expect) -> BoxedStrategy<(Vec<u8>, Vec<Event>)> {
    let ok = |text: &[u8]| Event::Status(Status::parse(&[b"+OK ", text].concat()).unwrap());
    match shape {
        Expect::Single => prop_oneof![
            Just((b"+OK done\r\n".to_vec(), vec![ok(b"done")])),
            Just((
                b"-ERR [IN-USE] busy\r\n".to_vec(),
                vec![Event::Status(Status::parse(b"-ERR [IN-USE] busy").unwrap())]
            )),
        ]
        .boxed(),
        Expect::Lines => (
            proptest::collection::vec(listing_line(), 0..8),
            any::<bool>(),
        )
            .prop_map(move |(lines, bare_lf)| {
                let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
                let mut wire = b"+OK list follows\r\n".to_vec();
                let mut events = vec![ok(b"list follows")];
                for l in lines {
                    if l.first() == Some(&b'.') {
                        wire.push(b'.');
                    }
                    wire.extend_from_slice(&l);
                    wire.extend_from_slice(eol);
                    events.push(Event::Line(l));
                }
                wire.extend_from_slice(b".\r\n");
                events.push(Event::End);
                (wire, events)
            })
            .boxed(),
        Expect::Body => proptest::collection::vec(listing_line(), 0..8)
            .prop_map(move |lines| {
                let mut wire = b"+OK message follows\r\n".to_vec();
                let mut body = Vec::new();
                for l in &lines {
                    if l.first() == Some(&b'.') {
                        wire.push(b'.');
                    }
                    wire.extend_from_slice(l);
                    wire.extend_from_slice(b"\r\n");
                    body.extend_from_slice(l);
                    body.push(b'\n');
                }
                wire.extend_from_slice(b".\r\n");
                let mut events = vec![ok(b"message follows")];
                if !body.is_empty() {
                    events.push(Event::Data(body));
                }
                events.push(Event::End);
                (wire, events)
            })
            .boxed(),
    }
}

fn shape() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Single),
        Just(Expect::Lines),
        Just(Expect::Body)
    ]
}

/// A pipelined run of well-formed answers: their shapes, the bytes, and the events they must give.
fn session() -> impl Strategy<Value = (Vec<Expect>, Vec<u8>, Vec<Event>)> {
    proptest::collection::vec(shape(), 1..6)
        .prop_flat_map(|shapes| {
            let answers: Vec<_> = shapes.iter().map(|&s| answer(s)).collect();
            (Just(shapes), answers)
        })
        .prop_map(|(shapes, answers)| {
            let mut wire = Vec::new();
            let mut events = Vec::new();
            for (w, e) in answers {
                wire.extend_from_slice(&w);
                events.extend(e);
            }
            (shapes, wire, events)
        })
}

proptest! {
    /// A status line that parses, re-encoded, parses to the same status, both with
    /// `Status::parse` and through a fresh decoder.
    #[test]
    fn status_decode_encode_decode_is_stable(line in status_line()) {
        let Some(status) = Status::parse(&line) else {
            return Ok(());
        };
        let again = encode_status(&status);
        prop_assert_eq!(Status::parse(&again), Some(status.clone()), "re-encoded as {:?}", again);

        let mut d = Decoder::new();
        d.begin(Expect::Single);
        d.feed(&line);
        d.feed(b"\r\n");
        let decoded = d.next_event().unwrap();
        prop_assert_eq!(decoded, Some(Event::Status(status.clone())));
        let mut d = Decoder::new();
        d.begin(Expect::Single);
        d.feed(&again);
        d.feed(b"\r\n");
        prop_assert_eq!(d.next_event().unwrap(), Some(Event::Status(status)));
    }

    /// The same holds for any bytes at all after the indicator.
    #[test]
    fn status_round_trip_with_arbitrary_text(
        indicator in prop_oneof![Just(&b"+OK "[..]), Just(&b"-ERR "[..]), Just(&b"+ "[..])],
        text in proptest::collection::vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..60),
    ) {
        let line = [indicator, &text].concat();
        let status = Status::parse(&line).expect("an indicator and a space always parse");
        prop_assert_eq!(Status::parse(&encode_status(&status)), Some(status));
    }

    /// Well-formed pipelined answers of every shape decode to exactly their events, and the
    /// result is the same whole and in pieces of any sizes.
    #[test]
    fn pipelined_answers_decode_the_same_in_any_pieces(
        (shapes, wire, want) in session(),
        sizes in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let whole = decode_pieces(&shapes, [&wire[..]]);
        prop_assert_eq!(&whole, &(want, None));
        let pieces = decode_pieces(&shapes, split_by(&wire, &sizes));
        prop_assert_eq!(pieces, whole);
    }

    /// A Lines answer (CAPA, UIDL, LIST) gives its lines back unstuffed, and reads of any one
    /// size, down to a byte at a time, give the same events as one read.
    #[test]
    fn lines_answer_is_chunking_invariant(
        lines in proptest::collection::vec(listing_line(), 0..12),
        size in 1usize..16,
    ) {
        let mut wire = b"+OK\r\n".to_vec();
        for l in &lines {
            if l.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(l);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        let whole = decode_pieces(&[Expect::Lines], [&wire[..]]);
        let got: Vec<&[u8]> = whole.0.iter().filter_map(|e| match e {
            Event::Line(l) => Some(l.as_slice()),
            _ => None,
        }).collect();
        let want: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(whole.0.last(), Some(&Event::End));
        prop_assert_eq!(decode_pieces(&[Expect::Lines], wire.chunks(size)), whole.clone());
        prop_assert_eq!(decode_pieces(&[Expect::Lines], wire.chunks(1)), whole);
    }

    /// The terminator is decided per answer (RFC 1939 §3): in an answer that used CRLF, a "."
    /// line ending in a bare LF is content, wherever it falls and however the reads split; an
    /// answer bare-LF throughout ends at its bare-LF ".".
    #[test]
    fn only_the_answers_own_terminator_ends_it(
        lines in proptest::collection::vec(
            prop_oneof![listing_line().prop_map(Some), Just(None)], 0..10),
        bare_lf in any::<bool>(),
        sizes in proptest::collection::vec(1usize..40, 1..8),
    ) {
        // `None` is a line holding only ".", sent with a bare LF.
        let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
        let mut wire = [b"+OK go".as_slice(), eol].concat();
        let mut body = Vec::new();
        let mut cut = false;
        for l in &lines {
            match l {
                Some(l) => {
                    if l.first() == Some(&b'.') {
                        wire.push(b'.');
                    }
                    wire.extend_from_slice(l);
                    wire.extend_from_slice(eol);
                    body.extend_from_slice(l);
                }
                None => {
                    wire.extend_from_slice(b".\n");
                    if bare_lf {
                        cut = true;
                        break;
                    }
                    body.push(b'.');
                }
            }
            body.push(b'\n');
        }
        if !cut {
            wire.extend_from_slice(&[b".".as_slice(), eol].concat());
        }
        let mut want = vec![Event::Status(Status::parse(b"+OK go").unwrap())];
        if !body.is_empty() {
            want.push(Event::Data(body));
        }
        want.push(Event::End);
        let whole = decode_pieces(&[Expect::Body], [&wire[..]]);
        prop_assert_eq!(&whole, &(want, None));
        prop_assert_eq!(decode_pieces(&[Expect::Body], split_by(&wire, &sizes)), whole);
    }

    /// Arbitrary bytes give the same events and the same kind of error whole and in pieces.
    #[test]
    fn arbitrary_input_decodes_the_same_in_any_pieces(
        shapes in proptest::collection::vec(shape(), 0..6),
        // A quarter of the bytes are the ones the decoder looks at: LF, CR, '.', '+'.
        input in proptest::collection::vec(any::<u8>(), 0..400).prop_map(|v| {
            v.into_iter()
                .map(|b| if b < 64 { b"\n\r.+"[usize::from(b % 4)] } else { b })
                .collect::<Vec<u8>>()
        }),
        sizes in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let whole = decode_pieces(&shapes, [&input[..]]);
        prop_assert_eq!(decode_pieces(&shapes, split_by(&input, &sizes)), whole);
    }
}

#[test]
fn encoder_keeps_a_bracketed_text_after_an_unknown_code() {
    let s = Status::parse(b"-ERR [XYZZY] [AUTH] not a code").unwrap();
    assert_eq!(
        (s.code, s.text.as_slice()),
        (None, &b"[AUTH] not a code"[..])
    );
    assert_eq!(encode_status(&s), b"-ERR [][AUTH] not a code");
    assert_eq!(Status::parse(&encode_status(&s)), Some(s));
}
