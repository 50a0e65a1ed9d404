//! The line-ending normaliser in front of DATA: known answers, chunk independence, and the
//! property that matters against SMTP smuggling: after it, dot-stuffing leaves exactly one
//! end-of-data sequence, at the end.

use proptest::prelude::*;

use super::read_reply;
use crate::smtp_codec::LineEnds;

/// The spool bytes `LineEnds` makes of `chunks`, and whether they end with a line end.
fn normalise(chunks: &[&[u8]]) -> (Vec<u8>, bool) {
    let mut n = LineEnds::default();
    let mut out = Vec::new();
    for c in chunks {
        n.write(c, &mut out).unwrap();
    }
    n.finish(&mut out).unwrap();
    (out, n.ends_with_line_end())
}

/// What goes on the wire after `DATA` for spool bytes `spool`: the message's own last CRLF is
/// left out (as `Sink::prepare` does) and the body is dot-stuffed as RFC 5321 §4.5.2 says
/// (lettre's `ClientCodec`: a "." that starts a line after CRLF is doubled), then CRLF "." CRLF.
fn data(spool: &[u8], ends_with_line_end: bool) -> Vec<u8> {
    let body = if ends_with_line_end {
        &spool[..spool.len() - 2]
    } else {
        spool
    };
    let mut out = Vec::new();
    let mut line_start = true;
    let mut after_cr = false;
    for &b in body {
        out.push(b);
        match b {
            b'\r' => after_cr = true,
            b'\n' if after_cr => {
                after_cr = false;
                line_start = true;
                continue;
            }
            b'.' if line_start && !after_cr => out.push(b'.'),
            _ => after_cr = false,
        }
        line_start = false;
    }
    out.extend_from_slice(b"\r\n.\r\n");
    out
}

fn only_crlf(v: &[u8]) -> bool {
    v.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => v.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && v[i - 1] == b'\r',
        _ => true,
    })
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn every_line_end_becomes_crlf() {
    let cases: [(&[u8], &[u8]); 8] = [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\n", b"a\r\nb\r\n"),
        (
            b"evil\r.\nMAIL FROM:<x>\n",
            b"evil\r\n.\r\nMAIL FROM:<x>\r\n",
        ),
        (b"a\rb", b"a\r\nb"),
        (b"a\r", b"a\r\n"),
        (b"\r\r\n", b"\r\n\r\n"),
        (b"no end", b"no end"),
        (b"", b""),
    ];
    for (input, want) in cases {
        assert_eq!(
            normalise(&[input]).0,
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    assert!(normalise(&[b"x\n"]).1);
    assert!(normalise(&[b"x\r"]).1);
    assert!(!normalise(&[b"x"]).1);
    assert!(!normalise(&[b""]).1);
}

#[test]
fn a_bare_cr_before_a_dot_is_stuffed_as_a_line_of_its_own() {
    let (spool, end) = normalise(&[b"Subject: s\n\nevil\r", b".\nMAIL FROM:<x>\n.\n"]);
    let wire = data(&spool, end);
    assert_eq!(
        count(&wire, b"\r\n.\r\n"),
        1,
        "{:?}",
        String::from_utf8_lossy(&wire)
    );
    assert!(wire.ends_with(b"MAIL FROM:<x>\r\n..\r\n.\r\n"));
    assert!(count(&wire, b"evil\r\n..\r\n") == 1);
}

proptest! {
    #[test]
    fn any_bytes_leave_only_crlf_and_one_end_of_data(
        input in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..200),
        cuts in proptest::collection::vec(0usize..200, 0..6),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut from = 0;
        for c in cuts {
            chunks.push(&input[from..c]);
            from = c;
        }
        chunks.push(&input[from..]);
        let (whole, end) = normalise(&[&input]);
        let (split, split_end) = normalise(&chunks);
        prop_assert_eq!(&whole, &split, "chunking changes nothing");
        prop_assert_eq!(end, split_end);
        prop_assert!(only_crlf(&whole));
        prop_assert_eq!(end, whole.ends_with(b"\r\n"));
        let wire = data(&whole, end);
        prop_assert!(only_crlf(&wire));
        prop_assert_eq!(count(&wire, b"\r\n.\r\n"), 1);
        prop_assert!(wire.ends_with(b"\r\n.\r\n"));
        // Nothing but the line ends was changed.
        let strip = |v: &[u8]| v.iter().copied().filter(|b| *b != b'\r' && *b != b'\n').collect::<Vec<u8>>();
        prop_assert_eq!(strip(&input), strip(&whole));
    }
}

/// Serves `data` in reads of at most `k` octets.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    k: usize,
}

impl tokio::io::AsyncRead for Chunked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.k.min(self.data.len() - self.at).min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        std::task::Poll::Ready(Ok(()))
    }
}

/// Every reply in `data`, read in chunks of `k`, then the error that ended the input.
fn replies(data: &[u8], k: usize) -> (Vec<(u16, Vec<String>)>, String) {
    let mut s = Chunked {
        data: data.to_vec(),
        at: 0,
        k,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_reply(&mut s, &mut buf, "relay.test").await {
                Ok(r) => out.push(r),
                Err(e) => return (out, e.message),
            }
        }
    })
}

/// The replies before STARTTLS, whole and in chunks of 1, 2, 4 … 512 octets: the same result.
#[test]
fn smtp_replies_are_read_the_same_in_any_split() {
    let wire = b"220 relay.test ESMTP\r\n250-relay.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n\
                 220 ready\n";
    let whole = replies(wire, wire.len());
    assert_eq!(
        whole.0,
        vec![
            (220, vec!["relay.test ESMTP".to_string()]),
            (
                250,
                vec![
                    "relay.test".to_string(),
                    "STARTTLS".to_string(),
                    "8BITMIME".to_string()
                ]
            ),
            (220, vec!["ready".to_string()]),
        ]
    );
    assert!(whole.1.contains("closed the connection"), "{}", whole.1);
    for k in (0..10).map(|i| 1 << i) {
        assert_eq!(replies(wire, k), whole, "chunks of {k}");
    }
}

#[test]
fn bad_and_endless_smtp_replies_are_refused() {
    let (got, e) = replies(b"hello\r\n", 64);
    assert!(got.is_empty());
    assert!(e.contains("bad reply line"), "{e}");
    let (got, e) = replies(b"199 too small\r\n", 64);
    assert!(got.is_empty());
    assert!(e.contains("bad reply line"), "{e}");
    // A line without end, and a reply of many short lines: both capped.
    let (got, e) = replies(&vec![b'x'; 200 * 1024], 4096);
    assert!(got.is_empty());
    assert!(e.contains("longer than"), "{e}");
    let many = b"250-x\r\n".repeat(20 * 1024);
    let (got, e) = replies(&many, 4096);
    assert!(got.is_empty());
    assert!(e.contains("longer than"), "{e}");
}
