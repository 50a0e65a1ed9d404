use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use super::authorize::{
    Poll, Redirect, parse_device_answer, parse_pasted, parse_redirect, pkce, poll_step, s256,
};
use super::http::{
    HttpError, MAX_BODY, Response, ResponseParser, Url, decode_component, form_encode, parse_query,
};
use super::*;

// ---- URLs and forms

#[test]
fn urls_parse_to_host_port_and_target() {
    let u = Url::parse("https://oauth2.googleapis.com/token").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.target.as_str()),
        ("oauth2.googleapis.com", 443, "/token")
    );
    let u = Url::parse("https://127.0.0.1:8443/a/b?x=1#frag").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.target.as_str()),
        ("127.0.0.1", 8443, "/a/b?x=1")
    );
    let u = Url::parse("https://[::1]:9000").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.target.as_str()),
        ("::1", 9000, "/")
    );
    let u = Url::parse("https://h?q").unwrap();
    assert_eq!(u.target, "/?q");
}

#[test]
fn urls_that_would_leak_or_confuse_are_refused() {
    for bad in [
        "http://example.org/token",
        "example.org/token",
        "https://user:pw@example.org/",
        "https://exa mple.org/",
        "https://example.org:0/",
        "https://example.org:99999/",
        "https://:443/",
        "https://[::1/",
        "https://example.org/\u{1b}[31m",
    ] {
        let e: HttpError = Url::parse(bad).unwrap_err().into();
        assert!(matches!(e, HttpError::Url(_)), "{bad}: {e}");
    }
}

#[test]
fn form_encoding_known_answers_and_round_trip() {
    assert_eq!(
        form_encode(&[("grant_type", "refresh_token"), ("scope", "a b/c")]),
        "grant_type=refresh_token&scope=a+b%2Fc"
    );
    assert_eq!(form_encode(&[("x", "&=+%é~")]), "x=%26%3D%2B%25%C3%A9%7E");
    for s in [
        "",
        "plain",
        "a b+c&d=e%f",
        "ünïcödé",
        "https://mail.google.com/",
    ] {
        let enc = form_encode(&[("k", s)]);
        let pairs = parse_query(&enc);
        assert_eq!(pairs, vec![("k".to_string(), s.to_string())], "{enc}");
    }
    assert_eq!(decode_component("%zz"), None);
    assert_eq!(decode_component("%c3"), None);
    assert_eq!(decode_component("%4"), None);
}

// ---- HTTP response framing

fn parse_all(bytes: &[u8]) -> Result<Option<Response>, HttpError> {
    ResponseParser::default().parse(bytes, true)
}

/// Feeds `bytes` in pieces of `step`, as reads would bring them, then signals the end.
fn parse_split(bytes: &[u8], step: usize) -> Result<Option<Response>, HttpError> {
    let mut p = ResponseParser::default();
    let mut buf = Vec::new();
    for chunk in bytes.chunks(step) {
        buf.extend_from_slice(chunk);
        if let Some(r) = p.parse(&buf, false)? {
            return Ok(Some(r));
        }
    }
    p.parse(&buf, true)
}

const LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":\"bcdef\"}";
const CHUNKED: &[u8] = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\n{\"a\":\r\n8\r\n\"bcdef\"}\r\n0\r\nX-Trailer: y\r\n\r\n";
const CLOSE: &[u8] = b"HTTP/1.0 200 OK\r\n\r\n{\"a\":\"bcdef\"}";
const CONTINUE: &[u8] =
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"a\":\"bcdef\"}";

#[test]
fn responses_decode_alike_in_any_split() {
    for (bytes, status) in [(LENGTH, 200), (CHUNKED, 400), (CLOSE, 200), (CONTINUE, 200)] {
        let whole = parse_all(bytes).unwrap().unwrap();
        assert_eq!(whole.status, status);
        assert_eq!(whole.body, b"{\"a\":\"bcdef\"}");
        for step in [1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512] {
            assert_eq!(
                parse_split(bytes, step).unwrap().as_ref(),
                Some(&whole),
                "step {step}"
            );
        }
    }
}

#[test]
fn incomplete_answers_wait_for_more() {
    let mut p = ResponseParser::default();
    assert_eq!(p.parse(&LENGTH[..LENGTH.len() - 1], false).unwrap(), None);
    let mut p = ResponseParser::default();
    assert_eq!(p.parse(&CHUNKED[..CHUNKED.len() - 2], false).unwrap(), None);
    let mut p = ResponseParser::default();
    assert_eq!(
        p.parse(CLOSE, false).unwrap(),
        None,
        "until-close needs the end"
    );
}

#[test]
fn oversized_and_malformed_answers_are_errors() {
    let huge_length = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    let huge_chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n";
    let mut endless_headers = b"HTTP/1.1 200 OK\r\n".to_vec();
    while endless_headers.len() <= super::http::MAX_HEADER + 10 {
        endless_headers.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut endless_body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    endless_body.resize(MAX_BODY + 100, b'x');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("larger than", huge_length.into_bytes()),
        ("larger than", huge_chunk.as_bytes().to_vec()),
        ("headers longer", endless_headers),
        ("larger than", endless_body),
        ("status line", b"SMTP 220 hello\r\n\r\n".to_vec()),
        ("status line", b"HTTP/1.1 2000 OK\r\n\r\n".to_vec()),
        (
            "header line",
            b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n".to_vec(),
        ),
        (
            "Content-Length",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n".to_vec(),
        ),
        (
            "Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
        ),
        (
            "chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
        (
            "CRLF",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n".to_vec(),
        ),
    ];
    for (want, bytes) in cases {
        let e = parse_all(&bytes).unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
}

// ---- token answers

fn resp(status: u16, body: &str) -> Response {
    Response {
        status,
        body: body.as_bytes().to_vec(),
    }
}

fn grant(r: &Response) -> Grant {
    match parse_answer("https://t/", r).unwrap() {
        Answer::Grant(g) => g,
        Answer::Error { error, .. } => panic!("error answer {error}"),
    }
}

#[test]
fn token_answers_are_read() {
    let g = grant(&resp(
        200,
        r#"{"access_token":"ya29.a0-b_c~d+e/f=","expires_in":3599,"token_type":"Bearer","refresh_token":"1//rt","scope":"x"}"#,
    ));
    assert_eq!(g.access_token.expose(), "ya29.a0-b_c~d+e/f=");
    assert_eq!(g.expires_in, Some(3599));
    assert_eq!(
        g.refresh_token.as_ref().map(|t| t.expose().as_str()),
        Some("1//rt")
    );
    let g = grant(&resp(200, r#"{"access_token":"t","expires_in":"60"}"#));
    assert_eq!((g.expires_in, g.refresh_token.is_none()), (Some(60), true));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    assert_eq!(
        g.token(now, None).expires_at,
        Some(now + Duration::from_secs(60))
    );
    let g = grant(&resp(200, r#"{"access_token":"t"}"#));
    assert_eq!(g.token(now, None).expires_at, None, "no lifetime: use once");
    assert_eq!(
        g.token(now, Some(Duration::from_secs(5))).expires_at,
        Some(now + Duration::from_secs(5))
    );
}

#[test]
fn error_answers_are_read_and_clipped() {
    let long = "x".repeat(500);
    let body = format!(
        r#"{{"error":"invalid_grant","error_description":"Token has been expired or revoked.\u001b[2J{long}"}}"#
    );
    match parse_answer("https://t/", &resp(400, &body)).unwrap() {
        Answer::Error {
            status,
            error,
            description,
        } => {
            assert_eq!((status, error.as_str()), (400, "invalid_grant"));
            let d = description.unwrap();
            assert!(d.starts_with("Token has been expired or revoked.?"), "{d}");
            assert!(d.chars().count() <= 61 && !d.contains('\u{1b}'), "{d}");
        }
        Answer::Grant(_) => panic!("grant"),
    }
}

#[test]
fn hostile_token_answers_are_refused_clearly() {
    for (body, want) in [
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ("[1,2]", "not an object"),
        (r#"{"token":"t"}"#, "no `access_token`"),
        (r#"{"access_token":""}"#, "empty"),
        (r#"{"access_token":"a b"}"#, "cannot have"),
        (r#"{"access_token":"a\u0001b"}"#, "cannot have"),
        (r#"{"access_token":"t","expires_in":-5}"#, "plausible"),
        (
            r#"{"access_token":"t","expires_in":99999999999}"#,
            "plausible",
        ),
        (r#"{"access_token":"t","token_type":"mac"}"#, "Bearer"),
        (r#"{"access_token":"t","refresh_token":7}"#, "not a string"),
    ] {
        let e = parse_answer("https://t/", &resp(200, body)).err().unwrap();
        let msg = e.to_string();
        assert!(msg.contains(want), "{body}: {msg}");
        assert!(msg.starts_with("oauth2 token endpoint https://t/"), "{msg}");
    }
    let big = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(20_000));
    let e = parse_answer("https://t/", &resp(200, &big)).err().unwrap();
    assert!(e.to_string().contains("too long"), "{e}");
    assert!(!e.to_string().contains("aaaa"), "the token is not quoted");
    let e = parse_answer("https://t/", &resp(500, "{}")).err().unwrap();
    assert!(e.to_string().contains("HTTP 500 without an `error`"), "{e}");
}

#[test]
fn revoked_error_says_what_to_run_and_transience_is_right() {
    let e = OAuth2Error::Revoked {
        url: "https://t/".into(),
        account: "alice".into(),
        description: Some("Token has been expired or revoked.".into()),
    };
    let msg = e.to_string();
    assert!(
        msg.contains("run `popfetch oauth2-authorize alice`"),
        "{msg}"
    );
    assert!(
        msg.contains("invalid_grant: Token has been expired"),
        "{msg}"
    );
    assert!(!e.is_transient());
    let refused = |status, error: &str| OAuth2Error::Refused {
        url: "u".into(),
        status,
        error: error.into(),
        description: None,
    };
    assert!(refused(503, "server_error").is_transient());
    assert!(refused(400, "temporarily_unavailable").is_transient());
    assert!(!refused(401, "invalid_client").is_transient());
}

// ---- token commands

fn ok() -> ExitStatus {
    ExitStatus::from_raw(0)
}

#[test]
fn command_output_bare_or_json() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let t = command_token(b"tok-123\nignored\n", b"", ok(), None, now).unwrap();
    assert_eq!(
        (t.access_token.expose().as_str(), t.expires_at),
        ("tok-123", None)
    );
    let ttl = Some(Duration::from_secs(3000));
    let t = command_token(b"tok-123\r\n", b"", ok(), ttl, now).unwrap();
    assert_eq!(t.expires_at, Some(now + Duration::from_secs(3000)));
    let t = command_token(
        br#" {"access_token":"j.w.t","expires_in":600} "#,
        b"",
        ok(),
        ttl,
        now,
    )
    .unwrap();
    assert_eq!(t.access_token.expose(), "j.w.t");
    assert_eq!(
        t.expires_at,
        Some(now + Duration::from_secs(600)),
        "its own expiry wins"
    );
}

#[test]
fn command_failures_are_clear_and_never_quote_stdout() {
    let now = SystemTime::now();
    let failed = ExitStatus::from_raw(3 << 8);
    let e = command_token(
        b"secret-token-in-stdout",
        b"warming up\nrefresh failed: no network\n\n",
        failed,
        None,
        now,
    )
    .unwrap_err();
    assert!(
        e.contains("it failed (exit status: 3): refresh failed: no network"),
        "{e}"
    );
    assert!(!e.contains("secret-token"), "{e}");
    let e = command_token(b"\n  \n", b"", ok(), None, now).unwrap_err();
    assert_eq!(e, "it printed no token");
    let e = command_token(b"", b"oama: no such account\n", ok(), None, now).unwrap_err();
    assert_eq!(e, "it printed no token: oama: no such account");
    let e = command_token(b"{\"access_token\": 5}", b"", ok(), None, now).unwrap_err();
    assert!(e.contains("no `access_token` string"), "{e}");
    let e = command_token(b"{not json", b"", ok(), None, now).unwrap_err();
    assert!(e.contains("not JSON"), "{e}");
    let e = command_token(b"\xff\xfe", b"", ok(), None, now).unwrap_err();
    assert!(e.contains("UTF-8"), "{e}");
    let e = command_token(b"two words", b"", ok(), None, now).unwrap_err();
    assert!(e.contains("cannot have") && !e.contains("words"), "{e}");
}

// ---- expiry and cache

#[test]
fn tokens_are_used_only_with_the_margin_to_spare() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
    let at = |secs: u64| Token {
        access_token: Secret::new("t".into()),
        expires_at: Some(now + Duration::from_secs(secs)),
    };
    assert!(usable(&at(EXPIRY_MARGIN.as_secs() + 1), now));
    assert!(!usable(&at(EXPIRY_MARGIN.as_secs()), now));
    assert!(!usable(&at(0), now));
    let past = Token {
        access_token: Secret::new("t".into()),
        expires_at: Some(now - Duration::from_secs(5)),
    };
    assert!(!usable(&past, now));
    let once = Token {
        access_token: Secret::new("t".into()),
        expires_at: None,
    };
    assert!(!usable(&once, now));
}

#[test]
fn the_memory_cache_is_keyed_by_source() {
    let now = SystemTime::now();
    let token = Token {
        access_token: Secret::new("cached".into()),
        expires_at: Some(now + Duration::from_secs(3600)),
    };
    let account = "unit-cache-account";
    cache_put(account, "key-a", &token);
    assert_eq!(cache_get(account, "key-a", now).unwrap().expose(), "cached");
    assert!(cache_get(account, "key-b", now).is_none(), "another source");
    assert!(
        cache_get(account, "key-a", now).is_none(),
        "dropped on mismatch"
    );
    cache_put(account, "key-a", &token);
    assert!(cache_get(account, "key-a", now + Duration::from_secs(3600)).is_none());
    let once = Token {
        expires_at: None,
        ..token
    };
    cache_put(account, "key-a", &once);
    assert!(
        cache_get(account, "key-a", now).is_none(),
        "use-once tokens are not kept"
    );
}

#[test]
fn the_cache_file_round_trips_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let file = cache_file(dir.path(), "acct");
    let now = SystemTime::now();
    let token = Token {
        access_token: Secret::new("file-token".into()),
        expires_at: Some(now + Duration::from_secs(3600)),
    };
    write_cache_file(&file, "k1", &token).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let back = read_cache_file(&file, "k1", now).unwrap();
    assert_eq!(back.access_token.expose(), "file-token");
    assert!(read_cache_file(&file, "k2", now).is_none(), "other key");
    assert!(read_cache_file(&file, "k1", now + Duration::from_secs(3590)).is_none());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        read_cache_file(&file, "k1", now).is_none(),
        "readable by others: ignored"
    );
    std::fs::write(&file, "garbage").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(read_cache_file(&file, "k1", now).is_none());
}

#[test]
fn secret_files_are_replaced_atomically_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refresh");
    std::fs::write(&path, "old\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_secret_file(&path, "new-token").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new-token\n");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("refresh")],
        "no temp file left"
    );
    let e = write_secret_file(&dir.path().join("missing/refresh"), "x").unwrap_err();
    assert!(e.to_string().contains("missing/refresh"), "{e}");
}

#[test]
fn secret_files_open_to_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "s3cret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
    let e = read_secret_file("client secret file", &path).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        read_secret_file("client secret file", &path)
            .unwrap()
            .expose(),
        "s3cret"
    );
    std::fs::write(&path, "\n").unwrap();
    let e = read_secret_file("client secret file", &path).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

// ---- authorization flows

#[test]
fn pkce_s256_matches_rfc_7636_appendix_b() {
    assert_eq!(
        s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    let (v, c) = pkce().unwrap();
    assert_eq!(v.expose().len(), 43);
    assert_eq!(c, s256(v.expose()));
    let (v2, _) = pkce().unwrap();
    assert_ne!(v.expose(), v2.expose());
}

#[test]
fn redirects_must_carry_our_state() {
    let s = "st4te";
    assert_eq!(
        parse_redirect("code=abc&state=st4te", s),
        Redirect::Code("abc".into())
    );
    assert_eq!(
        parse_redirect("code=abc&state=other", s),
        Redirect::Unrelated
    );
    assert_eq!(parse_redirect("code=abc", s), Redirect::Unrelated);
    assert_eq!(
        parse_redirect("state=st4te&code=a%20b", s),
        Redirect::Unrelated
    );
    assert_eq!(
        parse_redirect(
            "error=access_denied&error_description=The+user+said+no&state=st4te",
            s
        ),
        Redirect::Denied("access_denied: The user said no".into())
    );
    assert_eq!(
        parse_pasted(
            "http://127.0.0.1:4567/?state=st4te&code=4%2F0Ab&scope=x\n",
            s
        ),
        Redirect::Code("4/0Ab".into())
    );
    assert_eq!(
        parse_pasted("  4/0AbCd  ", s),
        Redirect::Code("4/0AbCd".into())
    );
    assert_eq!(
        parse_pasted("code=z&state=st4te", s),
        Redirect::Code("z".into())
    );
    assert_eq!(parse_pasted("not a code", s), Redirect::Unrelated);
    assert_eq!(parse_pasted("", s), Redirect::Unrelated);
}

#[test]
fn device_polling_follows_rfc_8628() {
    let i = Duration::from_secs(5);
    let err = |e: &str| Answer::Error {
        status: 400,
        error: e.into(),
        description: None,
    };
    assert!(matches!(poll_step("u", err("authorization_pending"), i), Poll::Wait(d) if d == i));
    assert!(
        matches!(poll_step("u", err("slow_down"), i), Poll::Wait(d) if d == Duration::from_secs(10))
    );
    assert!(
        matches!(poll_step("u", err("slow_down"), Duration::from_secs(58)), Poll::Wait(d) if d == Duration::from_secs(60)),
        "capped"
    );
    match poll_step("u", err("access_denied"), i) {
        Poll::Fail(e) => assert!(e.to_string().contains("declined"), "{e}"),
        _ => panic!("access_denied must fail"),
    }
    match poll_step("u", err("expired_token"), i) {
        Poll::Fail(e) => assert!(e.to_string().contains("run oauth2-authorize again"), "{e}"),
        _ => panic!("expired_token must fail"),
    }
    match poll_step("u", err("invalid_client"), i) {
        Poll::Fail(e) => assert!(e.to_string().contains("invalid_client"), "{e}"),
        _ => panic!("other errors fail"),
    }
    let g = Answer::Grant(Grant {
        access_token: Secret::new("a".into()),
        expires_in: None,
        refresh_token: None,
    });
    assert!(matches!(poll_step("u", g, i), Poll::Done(_)));
}

#[test]
fn device_answers_are_checked_before_they_are_shown() {
    let google = resp(
        200,
        r#"{"device_code":"AH-1Ng","user_code":"GQVQ-JKEC","verification_url":"https://www.google.com/device","expires_in":1800,"interval":0}"#,
    );
    let d = parse_device_answer("u", &google).unwrap();
    assert_eq!(
        (d.user_code.as_str(), d.verification_uri.as_str()),
        ("GQVQ-JKEC", "https://www.google.com/device")
    );
    assert_eq!(d.interval, Duration::from_secs(1), "clamped up");
    assert_eq!(d.expires_in, Duration::from_secs(900), "capped at MAX_WAIT");
    let default_interval = resp(
        200,
        r#"{"device_code":"d","user_code":"C","verification_uri":"https://microsoft.com/devicelogin","expires_in":900}"#,
    );
    assert_eq!(
        parse_device_answer("u", &default_interval)
            .unwrap()
            .interval,
        Duration::from_secs(5)
    );
    for body in [
        r#"{"device_code":"d","user_code":"C","verification_uri":"https://evil\u001b[2J.example/","expires_in":900}"#,
        r#"{"device_code":"d","user_code":"C","verification_uri":"http://plain.example/","expires_in":900}"#,
        r#"{"device_code":"d","user_code":"C\u001b]0;x","verification_uri":"https://ok.example/","expires_in":900}"#,
        r#"{"device_code":"d","verification_uri":"https://ok.example/","expires_in":900}"#,
        r#"{"device_code":"d","user_code":"C","verification_uri":"https://ok.example/"}"#,
        "not json",
    ] {
        let e = parse_device_answer("u", &resp(200, body)).unwrap_err();
        assert!(matches!(e, OAuth2Error::BadAnswer { .. }), "{body}: {e}");
    }
    let e = parse_device_answer("u", &resp(400, r#"{"error":"invalid_client"}"#)).unwrap_err();
    assert!(e.to_string().contains("invalid_client"), "{e}");
}

proptest::proptest! {
    /// Any body, framed by length or in chunks of any sizes, decodes to itself whatever the
    /// read boundaries; arbitrary bytes never panic the parser.
    #[test]
    fn framing_round_trips_in_any_split(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        chunk_sizes in proptest::collection::vec(1usize..50, 1..20),
        step in 1usize..70,
        chunked in proptest::bool::ANY,
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        if chunked {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            let mut sizes = chunk_sizes.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap()).min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n\r\n");
        } else {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            wire.extend_from_slice(&body);
        }
        let got = parse_split(&wire, step).unwrap().unwrap();
        proptest::prop_assert_eq!(got.body, body);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_results_keep_their_bounds(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400),
    ) {
        if let Ok(Some(r)) = parse_all(&bytes) {
            proptest::prop_assert!((200..600).contains(&r.status));
            proptest::prop_assert!(r.body.len() <= MAX_BODY);
        }
        let r = Response { status: 200, body: bytes };
        if let Ok(Answer::Grant(g)) = parse_answer("u", &r) {
            let t = g.access_token.expose();
            proptest::prop_assert!(!t.is_empty() && t.bytes().all(|b| (0x21..0x7f).contains(&b)));
        }
        if let Ok(d) = parse_device_answer("u", &r) {
            proptest::prop_assert!(d.verification_uri.starts_with("https://"));
            proptest::prop_assert!(!d.user_code.chars().any(char::is_control));
        }
    }
}

#[test]
fn a_cache_file_with_an_expiry_beyond_the_clock_is_ignored_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = cache_file(dir.path(), "acct");
    std::fs::write(
        &file,
        format!(
            "{{\"key\":\"k1\",\"access_token\":\"t\",\"expires_at\":{}}}",
            u64::MAX
        ),
    )
    .unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(read_cache_file(&file, "k1", SystemTime::now()).is_none());
}
