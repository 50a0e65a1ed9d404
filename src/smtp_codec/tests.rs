//! Known answers for the reply decoder, the command encoder, the extension list and the DATA
//! rules.

use super::*;

fn replies(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
    let mut d = Decoder::new();
    d.feed(input);
    let mut out = Vec::new();
    while let Some(r) = d.next_reply()? {
        out.push(r);
    }
    Ok(out)
}

#[test]
fn single_line_reply_keeps_its_enhanced_code() {
    let r = replies(b"550 5.1.1 <nobody@x>: User doesn't exist\r\n").unwrap();
    assert_eq!(
        r,
        vec![Reply {
            code: 550,
            enhanced: Some(Enhanced(5, 1, 1)),
            lines: vec!["<nobody@x>: User doesn't exist".into()],
        }]
    );
    assert_eq!(r[0].class(), Class::Permanent);
    assert_eq!(r[0].summary(), "550 5.1.1 <nobody@x>: User doesn't exist");
}

#[test]
fn enhanced_code_of_another_class_stays_text() {
    let r = replies(b"250 5.1.1 odd\r\n452 4.2.2 Mailbox is full\r\n354 go ahead\r\n").unwrap();
    assert_eq!(r[0].enhanced, None);
    assert_eq!(r[0].lines, vec!["5.1.1 odd"]);
    assert_eq!(r[1].enhanced, Some(Enhanced(4, 2, 2)));
    assert_eq!(r[1].class(), Class::Transient);
    assert_eq!(r[2].class(), Class::Intermediate);
}

#[test]
fn multi_line_lhlo_answer_gives_the_extensions() {
    let input = b"250-host.example\r\n250-8BITMIME\r\n250-SIZE 1000\r\n250-ENHANCEDSTATUSCODES\r\n250-pipelining\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n";
    let r = replies(input).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].lines.len(), 7);
    let x = Extensions::from_reply(&r[0]);
    assert_eq!(
        x,
        Extensions {
            pipelining: true,
            eight_bit_mime: true,
            smtputf8: true,
            enhanced_status_codes: true,
            starttls: true,
            size: Some(1000),
        }
    );
    // The greeting line's text is the host name, never a keyword.
    let only = replies(b"250 STARTTLS\r\n").unwrap();
    assert!(!Extensions::from_reply(&only[0]).starttls);
}

#[test]
fn bare_lf_and_code_alone_are_accepted() {
    let r = replies(b"250\n221 bye\n").unwrap();
    assert_eq!(r[0].lines, vec![""]);
    assert_eq!(r[1].code, 221);
}

#[test]
fn bad_lines_are_errors() {
    assert!(matches!(replies(b"25 x\r\n"), Err(ReplyError::BadLine(_))));
    assert!(matches!(replies(b"250x\r\n"), Err(ReplyError::BadLine(_))));
    assert!(matches!(replies(b"199 x\r\n"), Err(ReplyError::BadLine(_))));
    assert!(matches!(replies(b"+OK\r\n"), Err(ReplyError::BadLine(_))));
    assert_eq!(
        replies(b"250-a\r\n550 b\r\n"),
        Err(ReplyError::CodeChanged {
            first: 250,
            got: 550
        })
    );
}

#[test]
fn caps_hold() {
    let long = [b"250 ".as_slice(), &[b'x'; MAX_LINE], b"\r\n"].concat();
    assert_eq!(replies(&long), Err(ReplyError::LineTooLong));
    // Without a line end at all, as soon as the cap is passed.
    let mut d = Decoder::new();
    d.feed(&[b'2'; MAX_LINE + 1]);
    assert_eq!(d.next_reply(), Err(ReplyError::LineTooLong));
    let many: Vec<u8> = (0..=MAX_LINES)
        .flat_map(|_| b"250-x\r\n".iter().copied())
        .collect();
    assert_eq!(replies(&many), Err(ReplyError::TooManyLines));
    // A line just under the cap is fine.
    let ok = [b"250 ".as_slice(), &[b'x'; MAX_LINE - 6], b"\r\n"].concat();
    assert_eq!(replies(&ok).unwrap()[0].lines[0].len(), MAX_LINE - 6);
}

#[test]
fn partial_input_waits() {
    let mut d = Decoder::new();
    d.feed(b"250-first\r\n250 sec");
    assert_eq!(d.next_reply(), Ok(None));
    d.feed(b"ond\r\n");
    assert_eq!(
        d.next_reply().unwrap().unwrap().lines,
        vec!["first", "second"]
    );
    assert_eq!(d.buffered(), 0);
}

#[test]
fn commands_encode() {
    let enc = |c: Command<'_>| {
        let mut v = Vec::new();
        c.encode(&mut v);
        String::from_utf8(v).unwrap()
    };
    assert_eq!(enc(Command::Lhlo("mx.example")), "LHLO mx.example\r\n");
    assert_eq!(enc(Command::Ehlo("mx.example")), "EHLO mx.example\r\n");
    assert_eq!(enc(Command::Starttls), "STARTTLS\r\n");
    assert_eq!(
        enc(Command::Mail {
            from: None,
            body_8bit: false,
            smtputf8: false
        }),
        "MAIL FROM:<>\r\n"
    );
    assert_eq!(
        enc(Command::Mail {
            from: Some("a@b"),
            body_8bit: true,
            smtputf8: true
        }),
        "MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8\r\n"
    );
    assert_eq!(enc(Command::Rcpt("u@x")), "RCPT TO:<u@x>\r\n");
    assert_eq!(enc(Command::Data), "DATA\r\n");
    assert_eq!(enc(Command::Rset), "RSET\r\n");
    assert_eq!(enc(Command::Quit), "QUIT\r\n");
    assert!(Command::safe_argument("user@example.org"));
    for bad in ["a\r\nRSET", "a>b", "a b", "a\nb"] {
        assert!(!Command::safe_argument(bad), "{bad:?}");
    }
}

/// `LineEnds` then `DotStuff` over `chunks`, ended.
fn data(chunks: &[&[u8]]) -> Vec<u8> {
    let mut crlf = Vec::new();
    let mut le = LineEnds::default();
    for c in chunks {
        le.write(c, &mut crlf).unwrap();
    }
    le.finish(&mut crlf).unwrap();
    let mut out = Vec::new();
    let mut ds = DotStuff::new();
    for b in &crlf {
        ds.write(std::slice::from_ref(b), &mut out);
    }
    ds.finish(&mut out);
    out
}

#[test]
fn data_known_answers() {
    assert_eq!(data(&[b"a\nb\n"]), b"a\r\nb\r\n.\r\n");
    assert_eq!(data(&[b".a\n..b\n.\n"]), b"..a\r\n...b\r\n..\r\n.\r\n");
    assert_eq!(data(&[b"no end"]), b"no end\r\n.\r\n");
    assert_eq!(data(&[b"x\r.y\n"]), b"x\r\n..y\r\n.\r\n");
    assert_eq!(data(&[b"x\r", b"\n.y"]), b"x\r\n..y\r\n.\r\n");
    assert_eq!(data(&[b"a.b\n x.\n"]), b"a.b\r\n x.\r\n.\r\n");
    assert_eq!(data(&[]), b".\r\n");
}
