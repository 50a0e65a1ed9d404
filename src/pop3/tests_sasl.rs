//! Known answers for the SASL stepper.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::sasl::{MAX_AUTH_LINE, Mechanism, Next, Sasl, SaslError};
use super::{Command, Status};
use crate::secret::Secret;

fn st(line: &str) -> Status {
    Status::parse(line.as_bytes()).unwrap()
}

fn wire(cmd: &Command) -> String {
    let mut v = Vec::new();
    cmd.encode(&mut v);
    String::from_utf8(v).unwrap().trim_end().to_string()
}

fn sent(next: Result<Next, SaslError>) -> String {
    match next {
        Ok(Next::Send(c)) => wire(&c),
        other => panic!("expected a line to send, got {other:?}"),
    }
}

fn pw(p: &str) -> Secret<String> {
    Secret::new(p.to_string())
}

const SERVER: (&str, u16) = ("pop.example.org", 995);

#[test]
fn cram_md5_rfc_2195_example() {
    // RFC 2195 §2: user "tim", password "tanstaaftanstaaf".
    let mut s = Sasl::new(Mechanism::CramMd5, "tim", &pw("tanstaaftanstaaf"), SERVER);
    assert_eq!(wire(&s.first()), "AUTH CRAM-MD5");
    let answer = sent(s.answer(&st(
        "+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
    )));
    assert_eq!(answer, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw");
    assert!(matches!(s.answer(&st("+OK welcome")), Ok(Next::Done)));
}

#[test]
fn cram_md5_cancels_a_challenge_that_is_not_base64() {
    let mut s = Sasl::new(Mechanism::CramMd5, "tim", &pw("x"), SERVER);
    s.first();
    assert_eq!(sent(s.answer(&st("+ !!not base64!!"))), "*");
    assert_eq!(
        s.answer(&st("-ERR cancelled")).unwrap_err(),
        SaslError::Unanswerable {
            mechanism: Mechanism::CramMd5
        }
    );
}

#[test]
fn plain_sends_its_initial_response_with_auth() {
    // RFC 4616 §4: "\0tim\0tanstaaftanstaaf".
    let mut s = Sasl::new(Mechanism::Plain, "tim", &pw("tanstaaftanstaaf"), SERVER);
    assert_eq!(wire(&s.first()), "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
    assert!(matches!(s.answer(&st("+OK")), Ok(Next::Done)));
}

#[test]
fn a_long_initial_response_waits_for_the_empty_challenge() {
    let long = "p".repeat(MAX_AUTH_LINE);
    let mut s = Sasl::new(Mechanism::Plain, "tim", &pw(&long), SERVER);
    assert_eq!(wire(&s.first()), "AUTH PLAIN");
    let ir = sent(s.answer(&st("+ ")));
    let raw = B64.decode(&ir).unwrap();
    assert_eq!(raw, [b"\0tim\0".as_slice(), long.as_bytes()].concat());
    assert!(matches!(s.answer(&st("+OK")), Ok(Next::Done)));
}

#[test]
fn login_answers_username_then_password() {
    let mut s = Sasl::new(Mechanism::Login, "tim", &pw("secret"), SERVER);
    assert_eq!(wire(&s.first()), "AUTH LOGIN");
    assert_eq!(sent(s.answer(&st("+ VXNlcm5hbWU6"))), "dGlt");
    assert_eq!(sent(s.answer(&st("+ UGFzc3dvcmQ6"))), "c2VjcmV0");
    assert!(matches!(s.answer(&st("+OK")), Ok(Next::Done)));
}

#[test]
fn a_refusal_is_refused() {
    let mut s = Sasl::new(Mechanism::Login, "tim", &pw("secret"), SERVER);
    s.first();
    assert_eq!(
        s.answer(&st("-ERR [AUTH] no")).unwrap_err(),
        SaslError::Refused { detail: None }
    );
}

#[test]
fn an_endless_run_of_challenges_is_cut_off_per_mechanism() {
    for (mechanism, most) in [
        (Mechanism::Plain, 2),
        (Mechanism::Login, 3),
        (Mechanism::CramMd5, 1),
        (Mechanism::Xoauth2, 2),
        (Mechanism::Oauthbearer, 2),
    ] {
        assert_eq!(mechanism.max_challenges(), most);
        let mut s = Sasl::new(mechanism, "tim", &pw("secret"), SERVER);
        s.first();
        let mut answered = 0;
        let err = loop {
            assert!(answered <= most, "{mechanism:?} answered past its bound");
            match s.answer(&st("+ ")) {
                Ok(Next::Send(_)) => answered += 1,
                Ok(Next::Done) => panic!("{mechanism:?}: a challenge is not a success"),
                Err(e) => break e,
            }
        };
        // A cancelled exchange the server keeps going ends at the bound too.
        assert_eq!(err, SaslError::Looping { mechanism });
        assert_eq!(answered, most, "{mechanism:?}");
    }
}

#[test]
fn xoauth2_known_answer_and_error_challenge() {
    let mut s = Sasl::new(Mechanism::Xoauth2, "me@example.org", &pw("tok"), SERVER);
    let first = wire(&s.first());
    let ir = first.strip_prefix("AUTH XOAUTH2 ").unwrap();
    assert_eq!(
        B64.decode(ir).unwrap(),
        b"user=me@example.org\x01auth=Bearer tok\x01\x01"
    );
    // RFC 7628 §3.2.2 style error challenge: answered with an empty line, then -ERR.
    let err = B64.encode(r#"{"status":"401","schemes":"bearer","scope":"mail"}"#);
    assert_eq!(sent(s.answer(&st(&format!("+ {err}")))), "");
    let e = s.answer(&st("-ERR [AUTH] invalid token")).unwrap_err();
    assert_eq!(
        e,
        SaslError::Refused {
            detail: Some("status 401, scope mail, schemes bearer".into())
        }
    );
    assert!(!format!("{e} {s:?}").contains("tok\u{1}"));
}

#[test]
fn oauthbearer_names_the_server_and_aborts_with_ctrl_a() {
    let mut s = Sasl::new(Mechanism::Oauthbearer, "a,b=c", &pw("tok"), SERVER);
    let first = wire(&s.first());
    let ir = first.strip_prefix("AUTH OAUTHBEARER ").unwrap();
    assert_eq!(
        B64.decode(ir).unwrap(),
        b"n,a=a=2Cb=3Dc,\x01host=pop.example.org\x01port=995\x01auth=Bearer tok\x01\x01"
    );
    assert_eq!(sent(s.answer(&st("+ bm90IGpzb24="))), "AQ==");
    assert_eq!(
        s.answer(&st("-ERR no")).unwrap_err(),
        SaslError::Refused {
            detail: Some("no details".into())
        }
    );
}

#[test]
fn the_secret_stays_out_of_debug() {
    let s = Sasl::new(Mechanism::Login, "tim", &pw("hunter2"), SERVER);
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn external_sends_an_empty_authorization_identity_with_auth() {
    // RFC 4422 appendix A with RFC 5034 §4's "=" for an empty initial response: the server
    // takes the identity from the certificate.
    let mut s = Sasl::new(Mechanism::External, "alice", &pw(""), SERVER);
    assert_eq!(wire(&s.first()), "AUTH EXTERNAL =");
    assert!(matches!(s.answer(&st("+OK welcome")), Ok(Next::Done)));
    let mut s = Sasl::new(Mechanism::External, "alice", &pw(""), SERVER);
    s.first();
    assert_eq!(
        s.answer(&st("-ERR [AUTH] no certificate")).unwrap_err(),
        SaslError::Refused { detail: None }
    );
    // A challenge EXTERNAL has no answer for is cancelled.
    let mut s = Sasl::new(Mechanism::External, "alice", &pw(""), SERVER);
    s.first();
    assert_eq!(sent(s.answer(&st("+ "))), "*");
    assert!(matches!(
        s.answer(&st("-ERR cancelled")),
        Err(SaslError::Unanswerable { .. })
    ));
}
