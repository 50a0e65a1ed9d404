//! The decoder and the DATA rules give the same answer however the input is split.

use proptest::prelude::*;

use super::*;

fn decode_split(input: &[u8], sizes: &[usize]) -> (Vec<Reply>, Option<ReplyError>) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut rest = input;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.clamp(1, rest.len()));
        rest = tail;
        d.feed(piece);
        loop {
            match d.next_reply() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn reply_line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![220u16, 250, 354, 452, 550]),
        any::<bool>(),
        "[ -~]{0,40}",
        any::<bool>(),
    )
        .prop_map(|(code, more, text, lf_only)| {
            let mut v = format!("{code}{}{text}", if more { '-' } else { ' ' }).into_bytes();
            v.extend_from_slice(if lf_only { b"\n" } else { b"\r\n" });
            v
        })
}

proptest! {
    #[test]
    fn replies_do_not_depend_on_read_splits(
        lines in prop::collection::vec(reply_line(), 0..20),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let input = lines.concat();
        let whole = decode_split(&input, &[input.len().max(1)]);
        let split = decode_split(&input, &sizes);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn data_does_not_depend_on_splits_and_unstuffs_back(
        body in prop::collection::vec(prop::sample::select(vec![b'a', b'.', b'\r', b'\n', b' ']), 0..200),
        sizes in prop::collection::vec(1usize..16, 1..6),
    ) {
        let run = |sizes: &[usize]| {
            let mut crlf = Vec::new();
            let mut le = LineEnds::default();
            let mut rest = body.as_slice();
            for &n in sizes.iter().cycle() {
                if rest.is_empty() { break; }
                let (p, t) = rest.split_at(n.clamp(1, rest.len()));
                le.write(p, &mut crlf).unwrap();
                rest = t;
            }
            le.finish(&mut crlf).unwrap();
            let mut out = Vec::new();
            let mut ds = DotStuff::new();
            let mut rest = crlf.as_slice();
            for &n in sizes.iter().rev().cycle() {
                if rest.is_empty() { break; }
                let (p, t) = rest.split_at(n.clamp(1, rest.len()));
                ds.write(p, &mut out);
                rest = t;
            }
            ds.finish(&mut out);
            (crlf, out)
        };
        let (crlf, whole) = run(&[body.len().max(1)]);
        let (_, split) = run(&sizes);
        prop_assert_eq!(&whole, &split);
        // No bare CR or LF is left, the end marker appears only at the end, and unstuffing
        // the lines gives the CRLF text back (with a final CRLF added when it lacked one).
        prop_assert!(whole.ends_with(b".\r\n"));
        let text = &whole[..whole.len() - 3];
        let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        let mut back = Vec::new();
        for l in &lines {
            prop_assert!(l.ends_with(b"\r\n"));
            prop_assert!(!l[..l.len() - 2].contains(&b'\r') && !l[..l.len() - 2].contains(&b'\n'));
            prop_assert!(*l != b".\r\n");
            back.extend_from_slice(l.strip_prefix(b".").unwrap_or(l));
        }
        let mut want = crlf.clone();
        if !want.is_empty() && !want.ends_with(b"\r\n") { want.extend_from_slice(b"\r\n"); }
        prop_assert_eq!(back, want);
    }
}
