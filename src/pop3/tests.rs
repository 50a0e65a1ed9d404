use proptest::prelude::*;

use super::*;
use crate::secret::Secret;

fn n(i: u32) -> MsgNum {
    MsgNum::new(i).unwrap()
}

fn enc(c: &Command) -> Vec<u8> {
    let mut v = Vec::new();
    c.encode(&mut v);
    v
}

#[test]
fn commands_encode_to_known_bytes() {
    let cases: Vec<(Command, &[u8])> = vec![
        (Command::Capa, b"CAPA\r\n"),
        (Command::Stls, b"STLS\r\n"),
        (Command::User("alice".into()), b"USER alice\r\n"),
        (
            Command::Pass(Secret::new("s3cret".into())),
            b"PASS s3cret\r\n",
        ),
        (Command::Stat, b"STAT\r\n"),
        (Command::List(None), b"LIST\r\n"),
        (Command::List(Some(n(2))), b"LIST 2\r\n"),
        (Command::Uidl(None), b"UIDL\r\n"),
        (Command::Uidl(Some(n(7))), b"UIDL 7\r\n"),
        (Command::Retr(n(1)), b"RETR 1\r\n"),
        (Command::Top(n(3), 0), b"TOP 3 0\r\n"),
        (Command::Dele(n(42)), b"DELE 42\r\n"),
        (Command::Noop, b"NOOP\r\n"),
        (Command::Rset, b"RSET\r\n"),
        (Command::Quit, b"QUIT\r\n"),
        (
            Command::Auth {
                mechanism: "PLAIN",
                initial: Some(Secret::new(String::new())),
            },
            b"AUTH PLAIN =\r\n",
        ),
        (
            Command::Auth {
                mechanism: "CRAM-MD5",
                initial: None,
            },
            b"AUTH CRAM-MD5\r\n",
        ),
        (Command::SaslResponse(Secret::new("*".into())), b"*\r\n"),
    ];
    for (cmd, want) in cases {
        assert_eq!(enc(&cmd), want, "{cmd:?}");
    }
}

#[test]
fn command_debug_redacts_credentials() {
    let shown = format!(
        "{:?} {:?} {:?} {:?}",
        Command::Pass(Secret::new("hunter2".into())),
        Command::Apop {
            user: "bob".into(),
            digest: Secret::new("c4c9334bac560ecc979e58001b3e22fb".into())
        },
        Command::Auth {
            mechanism: "PLAIN",
            initial: Some(Secret::new("AGJvYgBodW50ZXIy".into()))
        },
        Command::SaslResponse(Secret::new("Ym9i".into())),
    );
    assert!(!shown.contains("hunter2") && !shown.contains("c4c9") && !shown.contains("AGJv"));
    assert!(!shown.contains("Ym9i"), "{shown}");
}

#[test]
fn rfc1939_apop_example() {
    // RFC 1939 §7.
    let greeting = b"POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
    let ts = auth::apop_timestamp(greeting).unwrap();
    assert_eq!(ts, b"<1896.697170952@dbc.mtview.ca.us>");
    let d = auth::apop_digest(&ts, &Secret::new("tanstaaf".into()));
    assert_eq!(d.expose(), "c4c9334bac560ecc979e58001b3e22fb");
    assert_eq!(auth::apop_timestamp(b"ready <no-at-sign>"), None);
    assert_eq!(auth::apop_timestamp(b"ready"), None);
}

#[test]
fn rfc2195_cram_md5_example() {
    // RFC 2195 §2: challenge <1896.697170952@postoffice.reston.mci.net>, secret tanstaaftanstaaf.
    let challenge = b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+";
    let r = auth::cram_md5_response(challenge, "tim", &Secret::new("tanstaaftanstaaf".into()));
    assert_eq!(
        r.unwrap().expose(),
        "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
    );
    assert!(auth::cram_md5_response(b"%%%", "tim", &Secret::new("x".into())).is_none());
}

#[test]
fn sasl_plain_and_login_encodings() {
    let p = auth::plain_response("tim", &Secret::new("tanstaaf".into()));
    assert_eq!(p.expose(), "AHRpbQB0YW5zdGFhZg==");
    assert_eq!(auth::login_response("tim").expose(), "dGlt");
}

#[test]
fn status_lines_parse() {
    let s = Status::parse(b"+OK 2 320").unwrap();
    assert_eq!(
        (s.kind, s.code, s.text.as_slice()),
        (StatusKind::Ok, None, &b"2 320"[..])
    );
    let s = Status::parse(b"-ERR [IN-USE] Do you have another POP session running?").unwrap();
    assert_eq!(s.kind, StatusKind::Err);
    assert_eq!(s.code, Some(ResponseCode::InUse));
    assert_eq!(s.text, b"Do you have another POP session running?");
    for (line, code) in [
        (&b"-ERR [LOGIN-DELAY] wait"[..], ResponseCode::LoginDelay),
        (b"-ERR [SYS/TEMP] later", ResponseCode::SysTemp),
        (b"-ERR [SYS/PERM] never", ResponseCode::SysPerm),
        (b"-ERR [AUTH] bad password", ResponseCode::Auth),
        (b"-err [auth] lower case", ResponseCode::Auth),
    ] {
        assert_eq!(Status::parse(line).unwrap().code, Some(code));
    }
    // Unknown codes are ignored (RFC 2449 §8), the text is kept.
    let s = Status::parse(b"-ERR [XYZZY/FOO] odd").unwrap();
    assert_eq!((s.code, s.text.as_slice()), (None, &b"odd"[..]));
    assert_eq!(Status::parse(b"+OK").unwrap().text, b"");
    assert_eq!(
        Status::parse(b"+ PDE4OTY+").unwrap().kind,
        StatusKind::Continue
    );
    assert_eq!(Status::parse(b"+").unwrap().kind, StatusKind::Continue);
    assert!(Status::parse(b"+OKAY").is_none());
    assert!(Status::parse(b"HELLO").is_none());
    assert!(Status::parse(b"").is_none());
}

#[test]
fn uidl_validation() {
    assert!(Uidl::parse(b"whqtswO00WBw418f9t5JxYwZ").is_ok());
    assert!(Uidl::parse(&[b'a'; 70]).is_ok());
    assert_eq!(Uidl::parse(&[b'a'; 71]), Err(InvalidUidl::TooLong(71)));
    assert_eq!(Uidl::parse(b""), Err(InvalidUidl::Empty));
    assert_eq!(Uidl::parse(b"a b"), Err(InvalidUidl::BadByte(b' ')));
    assert_eq!(Uidl::parse(b"a\xffb"), Err(InvalidUidl::BadByte(0xff)));
    assert_eq!(MsgNum::parse(b"0"), None);
    assert_eq!(MsgNum::parse(b"4294967296"), None);
    assert_eq!(MsgNum::parse(b"+1"), None);
    assert_eq!(
        MsgNum::parse(b"4294967295").map(MsgNum::get),
        Some(u32::MAX)
    );
}

#[test]
fn capabilities_parse() {
    let lines: Vec<&[u8]> = vec![
        b"TOP",
        b"UIDL",
        b"RESP-CODES",
        b"PIPELINING",
        b"AUTH-RESP-CODE",
        b"STLS",
        b"USER",
        b"SASL PLAIN login CRAM-MD5",
        b"LOGIN-DELAY 900",
        b"EXPIRE NEVER",
        b"IMPLEMENTATION Dovecot",
        b"X-UNKNOWN whatever",
    ];
    let c = Capabilities::from_lines(lines);
    assert!(c.top && c.uidl && c.resp_codes && c.pipelining && c.stls && c.user);
    assert!(c.auth_resp_code);
    assert_eq!(c.sasl, ["PLAIN", "LOGIN", "CRAM-MD5"]);
    assert!(c.has_sasl("cram-md5"));
    assert_eq!(c.login_delay, Some(900));
    assert_eq!(c.expire, Some(None));
    assert_eq!(c.implementation.as_deref(), Some("Dovecot"));
    let c = Capabilities::from_lines([&b"EXPIRE 0"[..]]);
    assert_eq!(c.expire, Some(Some(0)));
}

/// Decodes `input` fed in chunks of `chunk` bytes (0 = whole), merging consecutive Data events
/// so that results do not depend on where the reads happened to split.
fn decode_all(expects: &[Expect], input: &[u8], chunk: usize) -> Result<Vec<Event>, DecodeError> {
    let mut d = Pipeline::<()>::new();
    for &e in expects {
        d.expect("test", e, ());
    }
    let mut out: Vec<Event> = Vec::new();
    let step = if chunk == 0 {
        input.len().max(1)
    } else {
        chunk
    };
    for piece in input.chunks(step) {
        d.feed(piece);
        while let Some(ev) = d.next_event()? {
            match (out.last_mut(), ev) {
                (Some(Event::Data(prev)), Event::Data(more)) => prev.extend_from_slice(&more),
                (_, ev) => out.push(ev),
            }
        }
    }
    Ok(out)
}

fn ok(text: &str) -> Event {
    Event::Status(Status::parse(format!("+OK {text}").as_bytes()).unwrap())
}

/// A session's worth of answers, pipelined: every shape of answer, dot-stuffing, 8-bit bytes, an
/// empty body, a bare LF from a careless server and a lone CR inside a line.
const SESSION: &[u8] = b"+OK 2 messages\r\n\
+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n\
-ERR [IN-USE] busy\r\n\
+OK 120 octets\r\nSubject: dots\r\n\r\n..leading dot\r\n..\r\n...\r\n8bit \xe4\xf6\xfc\xff\r\nbare lf\nlone \r cr\r\n.\r\n\
+OK 0 octets\r\n.\r\n\
+OK bye\r\n";

fn session_expects() -> Vec<Expect> {
    vec![
        Expect::Single,
        Expect::Lines,
        Expect::Single,
        Expect::Body,
        Expect::Body,
        Expect::Single,
    ]
}

fn session_events() -> Vec<Event> {
    vec![
        ok("2 messages"),
        ok(""),
        Event::Line(b"1 whqtswO00WBw418f9t5JxYwZ".to_vec()),
        Event::Line(b"2 QhdPYR:00WBw1Ph7x7".to_vec()),
        Event::End,
        Event::Status(Status::parse(b"-ERR [IN-USE] busy").unwrap()),
        ok("120 octets"),
        Event::Data(
            b"Subject: dots\n\n.leading dot\n.\n..\n8bit \xe4\xf6\xfc\xff\nbare lf\nlone \r cr\n"
                .to_vec(),
        ),
        Event::End,
        ok("0 octets"),
        Event::End,
        ok("bye"),
    ]
}

#[test]
fn decoder_known_answers() {
    assert_eq!(
        decode_all(&session_expects(), SESSION, 0).unwrap(),
        session_events()
    );
}

/// Answers that test the terminator rule (RFC 1939 §3, decided per answer): a bare-LF "." line
/// inside CRLF answers (content, not an end), and answers that are bare-LF throughout (their
/// bare-LF "." ends them).
const SLOPPY: &[u8] = b"+OK 77 octets\r\n\
first part\r\nA sloppy server passes a bare LF:\n.\nSECOND PART that must not be lost\r\n.\r\n\
+OK\r\n1 a\n.\n2 b\r\n.\r\n\
+OK lf only\nline\n..dot\n\n.\n\
+OK\n1 a\n2 b\n.\n\
+OK crlf status\r\nbare\n.\nstill here\n.\r\n\
+OK\nfirst bare\ncrlf later\r\n.\nend\r\n.\r\n\
+OK bye\r\n";

fn sloppy_expects() -> Vec<Expect> {
    vec![
        Expect::Body,
        Expect::Lines,
        Expect::Body,
        Expect::Lines,
        Expect::Body,
        Expect::Body,
        Expect::Single,
    ]
}

fn sloppy_events() -> Vec<Event> {
    let line = |l: &[u8]| Event::Line(l.to_vec());
    let data = |d: &[u8]| Event::Data(d.to_vec());
    vec![
        ok("77 octets"),
        data(b"first part\nA sloppy server passes a bare LF:\n.\nSECOND PART that must not be lost\n"),
        Event::End,
        ok(""),
        line(b"1 a"),
        line(b"."),
        line(b"2 b"),
        Event::End,
        ok("lf only"),
        data(b"line\n.dot\n\n"),
        Event::End,
        ok(""),
        line(b"1 a"),
        line(b"2 b"),
        Event::End,
        ok("crlf status"),
        data(b"bare\n.\nstill here\n"),
        Event::End,
        ok(""),
        data(b"first bare\ncrlf later\n.\nend\n"),
        Event::End,
        ok("bye"),
    ]
}

#[test]
fn decoder_ends_an_answer_only_at_its_own_terminator() {
    assert_eq!(
        decode_all(&sloppy_expects(), SLOPPY, 0).unwrap(),
        sloppy_events()
    );
}

#[test]
fn decoder_gives_same_result_for_every_chunk_size() {
    for (expects, input) in [(session_expects(), SESSION), (sloppy_expects(), SLOPPY)] {
        let whole = decode_all(&expects, input, 0).unwrap();
        let mut size = 1;
        while size <= 512 {
            assert_eq!(
                decode_all(&expects, input, size).unwrap(),
                whole,
                "chunk size {size}"
            );
            size *= 2;
        }
    }
}

#[test]
fn decoder_caps_line_length() {
    let mut long = b"+OK ".to_vec();
    long.extend(std::iter::repeat_n(b'x', MAX_LINE));
    assert_eq!(
        decode_all(&[Expect::Single], &long, 0),
        Err(DecodeError::LineTooLong)
    );
    // A body line may be longer than MAX_LINE: it streams without being held whole.
    let mut body = b"+OK\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'y', 3 * MAX_LINE));
    body.extend_from_slice(b"\r\n.\r\n");
    let ev = decode_all(&[Expect::Body], &body, 1000).unwrap();
    assert_eq!(ev.len(), 3);
}

#[test]
fn decoder_buffer_stays_bounded_for_endless_body_line() {
    let mut d = Decoder::new();
    d.begin(Expect::Body);
    d.feed(b"+OK\r\n");
    d.next_event().unwrap();
    for _ in 0..1000 {
        d.buffer_mut().extend_from_slice(&[b'z'; 4096]);
        while let Some(ev) = d.next_event().unwrap() {
            assert!(matches!(ev, Event::Data(_)));
        }
        assert!(d.buffered() <= 1);
    }
}

#[test]
fn decoder_rejects_garbage_and_unsolicited_data() {
    assert!(matches!(
        decode_all(&[Expect::Single], b"HTTP/1.1 400 Bad Request\r\n", 0),
        Err(DecodeError::BadStatus(_))
    ));
    assert!(matches!(
        decode_all(&[Expect::Single], b"+OK\r\n+OK extra\r\n", 0),
        Err(DecodeError::Unexpected(_))
    ));
}

#[test]
fn sasl_continuation_keeps_the_answer_open() {
    let ev = decode_all(&[Expect::Single], b"+ PDE+\r\n+ \r\n+OK done\r\n", 3).unwrap();
    let kinds: Vec<_> = ev
        .iter()
        .map(|e| match e {
            Event::Status(s) => s.kind,
            _ => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [StatusKind::Continue, StatusKind::Continue, StatusKind::Ok]
    );
}

/// Dot-stuffs `body` (lines ending in \n) the way a server puts it on the wire.
fn stuff(body: &[u8]) -> Vec<u8> {
    let mut wire = b"+OK\r\n".to_vec();
    for line in body.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if content.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(content);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

proptest! {
    /// Stuffing then decoding gives the body back (with a final newline), whatever the bytes and
    /// however the reads split.
    #[test]
    fn body_round_trips(lines in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\n' && *b != b'\r'), 0..40), 0..20),
            chunk in 1usize..64) {
        let mut body = Vec::new();
        for l in &lines {
            body.extend_from_slice(l);
            body.push(b'\n');
        }
        let ev = decode_all(&[Expect::Body], &stuff(&body), chunk).unwrap();
        let mut want = vec![Event::Status(Status::parse(b"+OK").unwrap())];
        if !body.is_empty() {
            want.push(Event::Data(body.clone()));
        }
        want.push(Event::End);
        prop_assert_eq!(ev, want);
    }

    /// Arbitrary bytes never panic the decoder, and its buffer stays bounded.
    #[test]
    fn decoder_survives_arbitrary_input(input in proptest::collection::vec(any::<u8>(), 0..4096),
                                        chunk in 1usize..300) {
        let mut d = Pipeline::<()>::new();
        for e in [Expect::Single, Expect::Lines, Expect::Body, Expect::Lines] {
            d.expect("test", e, ());
        }
        'outer: for piece in input.chunks(chunk) {
            d.feed(piece);
            loop {
                match d.next_event() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            prop_assert!(d.buffered() <= MAX_LINE + chunk);
        }
    }
}

#[test]
fn bearer_token_encodings() {
    use base64::Engine as _;
    let b64 = |s: &Secret<String>| {
        base64::engine::general_purpose::STANDARD
            .decode(s.expose())
            .unwrap()
    };
    let token = Secret::new("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==".to_string());
    // The layout of RFC 7628 §4.1's example.
    assert_eq!(
        b64(&auth::oauthbearer_response(
            "user@example.com",
            "server.example.com",
            143,
            &token
        )),
        b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer \
          vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    );
    // RFC 5801 saslname escaping of the user.
    let odd = b64(&auth::oauthbearer_response("a,b=c", "h", 995, &token));
    assert!(odd.starts_with(b"n,a=a=2Cb=3Dc,\x01"));
    assert_eq!(
        b64(&auth::xoauth2_response("someuser@example.com", &token)),
        b"user=someuser@example.com\x01auth=Bearer \
          vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
    );
    // The abort answers of RFC 7628 §3.2.3 (a lone ^A) and of XOAUTH2 (empty).
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(auth::OAUTHBEARER_ABORT)
            .unwrap(),
        b"\x01"
    );
    assert_eq!(auth::XOAUTH2_ABORT, "");
}

#[test]
fn oauth_error_challenges_are_described_without_surprises() {
    use base64::Engine as _;
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let c =
        enc(r#"{"status":"invalid_token","scope":"https://mail.google.com/","schemes":"Bearer"}"#);
    assert_eq!(
        auth::describe_oauth_error(c.as_bytes()).unwrap(),
        "status invalid_token, scope https://mail.google.com/, schemes Bearer"
    );
    let c = enc(r#"{"status":401}"#);
    assert_eq!(
        auth::describe_oauth_error(c.as_bytes()).unwrap(),
        "status 401"
    );
    // Control characters from the server never reach a log line; long values are cut.
    let c = enc(&format!(
        r#"{{"status":"a\u001b[31mb\nc{}"}}"#,
        "x".repeat(1000)
    ));
    let d = auth::describe_oauth_error(c.as_bytes()).unwrap();
    assert!(d.starts_with("status a[31mbc") && !d.contains('\u{1b}') && d.len() < 220);
    assert_eq!(auth::describe_oauth_error(b"not base64!"), None);
    assert_eq!(auth::describe_oauth_error(enc("[1,2]").as_bytes()), None);
    assert_eq!(auth::describe_oauth_error(enc("{}").as_bytes()), None);
}

#[test]
fn a_login_delay_beyond_u64_saturates() {
    for (line, want) in [
        (&b"LOGIN-DELAY 18446744073709551615"[..], Some(u64::MAX)),
        (b"LOGIN-DELAY 99999999999999999999999999", Some(u64::MAX)),
        (b"LOGIN-DELAY 10 USER", Some(10)),
        (b"LOGIN-DELAY -1", None),
        (b"LOGIN-DELAY", None),
    ] {
        assert_eq!(
            Capabilities::from_lines([line]).login_delay,
            want,
            "{line:?}"
        );
    }
}

#[test]
fn every_command_names_the_shape_of_its_answer() {
    let one = MsgNum::new(1).unwrap();
    for (cmd, want) in [
        (Command::Capa, Expect::Lines),
        (Command::Uidl(None), Expect::Lines),
        (Command::List(None), Expect::Lines),
        (Command::Uidl(Some(one)), Expect::Single),
        (Command::List(Some(one)), Expect::Single),
        (Command::Retr(one), Expect::Body),
        (Command::Top(one, 0), Expect::Body),
        (Command::Stat, Expect::Single),
        (Command::Dele(one), Expect::Single),
        (Command::Quit, Expect::Single),
        (Command::Stls, Expect::Single),
        (
            Command::Auth {
                mechanism: "PLAIN",
                initial: None,
            },
            Expect::Single,
        ),
    ] {
        assert_eq!(cmd.expect(), want, "{cmd:?}");
    }
}
