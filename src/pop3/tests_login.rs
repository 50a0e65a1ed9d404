//! Known answers for the login-method choice.

use super::Capabilities;
use super::login::{CONFIG_NAMES, CredentialKind, Link, Method, Offer, Refusal, choose};

/// Encrypted, the certificate not checked (`tls_verify = false`).
const SECURE: Link = Link {
    secure: true,
    allow_plaintext: false,
    verified: false,
};
/// Encrypted, the server's certificate checked.
const VERIFIED: Link = Link {
    secure: true,
    allow_plaintext: false,
    verified: true,
};
const INSECURE: Link = Link {
    secure: false,
    allow_plaintext: false,
    verified: false,
};
const ALLOWED: Link = Link {
    secure: false,
    allow_plaintext: true,
    verified: false,
};
const PW: CredentialKind = CredentialKind::Password;
const TOKEN: CredentialKind = CredentialKind::Token;

fn caps(sasl: &[&str], user: bool) -> Capabilities {
    Capabilities {
        sasl: sasl.iter().map(|s| s.to_string()).collect(),
        user,
        ..Capabilities::default()
    }
}

fn auto(
    caps: Option<&Capabilities>,
    ts: bool,
    link: Link,
    kind: CredentialKind,
) -> Result<Method, Refusal> {
    let offer = Offer {
        caps,
        apop_timestamp: ts,
    };
    choose(offer, None, link, kind)
}

fn wanted(
    m: Method,
    caps: Option<&Capabilities>,
    ts: bool,
    link: Link,
    kind: CredentialKind,
) -> Result<Method, Refusal> {
    let offer = Offer {
        caps,
        apop_timestamp: ts,
    };
    choose(offer, Some(m), link, kind)
}

#[test]
fn auto_prefers_challenge_response_then_plain_login_user() {
    let all = caps(&["PLAIN", "LOGIN", "CRAM-MD5"], true);
    assert_eq!(auto(Some(&all), true, SECURE, PW), Ok(Method::CramMd5));
    let no_cram = caps(&["PLAIN", "LOGIN"], true);
    assert_eq!(auto(Some(&no_cram), true, SECURE, PW), Ok(Method::Apop));
    assert_eq!(auto(Some(&no_cram), false, SECURE, PW), Ok(Method::Plain));
    let login = caps(&["LOGIN"], true);
    assert_eq!(auto(Some(&login), false, SECURE, PW), Ok(Method::Login));
    let user = caps(&[], true);
    assert_eq!(auto(Some(&user), false, SECURE, PW), Ok(Method::User));
    // SASL names are matched without regard to case.
    let lower = caps(&["cram-md5"], false);
    assert_eq!(auto(Some(&lower), false, SECURE, PW), Ok(Method::CramMd5));
}

/// Over verified TLS, PLAIN (one round trip with its initial response) goes before CRAM-MD5
/// (two); the rest keep their order, and a server without PLAIN still gets CRAM-MD5.
#[test]
fn auto_over_verified_tls_prefers_plain_for_its_single_round_trip() {
    let all = caps(&["PLAIN", "LOGIN", "CRAM-MD5"], true);
    assert_eq!(auto(Some(&all), true, VERIFIED, PW), Ok(Method::Plain));
    let no_plain = caps(&["LOGIN", "CRAM-MD5"], true);
    assert_eq!(
        auto(Some(&no_plain), true, VERIFIED, PW),
        Ok(Method::CramMd5)
    );
    let login = caps(&["LOGIN"], true);
    assert_eq!(auto(Some(&login), true, VERIFIED, PW), Ok(Method::Apop));
    // Without CAPA nothing says PLAIN exists: APOP or USER as before.
    assert_eq!(auto(None, true, VERIFIED, PW), Ok(Method::Apop));
    assert_eq!(auto(None, false, VERIFIED, PW), Ok(Method::User));
    // Tokens and certificates are not passwords: their own order.
    let bearer = caps(&["PLAIN", "XOAUTH2", "OAUTHBEARER"], false);
    assert_eq!(
        auto(Some(&bearer), false, VERIFIED, CredentialKind::Token),
        Ok(Method::Oauthbearer)
    );
}

#[test]
fn auto_on_an_insecure_link_takes_only_what_keeps_the_secret() {
    let clear_only = caps(&["PLAIN", "LOGIN"], true);
    assert_eq!(
        auto(Some(&clear_only), false, INSECURE, PW),
        Err(Refusal::NoSafeMethod)
    );
    assert_eq!(
        auto(Some(&clear_only), true, INSECURE, PW),
        Ok(Method::Apop)
    );
    let cram = caps(&["PLAIN", "CRAM-MD5"], true);
    assert_eq!(auto(Some(&cram), false, INSECURE, PW), Ok(Method::CramMd5));
    // allow_plaintext_auth lets clear-text methods through.
    assert_eq!(
        auto(Some(&clear_only), false, ALLOWED, PW),
        Ok(Method::Plain)
    );
}

#[test]
fn auto_without_capa_is_apop_with_a_timestamp_else_user() {
    assert_eq!(auto(None, true, INSECURE, PW), Ok(Method::Apop));
    assert_eq!(auto(None, false, SECURE, PW), Ok(Method::User));
    assert_eq!(auto(None, false, ALLOWED, PW), Ok(Method::User));
    assert_eq!(auto(None, false, INSECURE, PW), Err(Refusal::NoSafeMethod));
}

#[test]
fn auto_with_nothing_known_says_so() {
    let odd = caps(&["SCRAM-SHA-256", "GSSAPI"], false);
    assert_eq!(
        auto(Some(&odd), false, SECURE, PW),
        Err(Refusal::NoKnownMethod)
    );
    assert_eq!(
        auto(Some(&odd), false, INSECURE, PW),
        Err(Refusal::NoSafeMethod)
    );
}

#[test]
fn auto_with_a_token_prefers_oauthbearer_and_needs_capa() {
    let both = caps(&["XOAUTH2", "OAUTHBEARER", "PLAIN"], true);
    assert_eq!(
        auto(Some(&both), false, SECURE, TOKEN),
        Ok(Method::Oauthbearer)
    );
    let x = caps(&["XOAUTH2"], true);
    assert_eq!(auto(Some(&x), false, SECURE, TOKEN), Ok(Method::Xoauth2));
    let none = caps(&["PLAIN"], true);
    assert_eq!(
        auto(Some(&none), false, SECURE, TOKEN),
        Err(Refusal::NoTokenMethod)
    );
    assert_eq!(auto(None, true, SECURE, TOKEN), Err(Refusal::NoTokenMethod));
    // A token is a secret too.
    assert_eq!(
        auto(Some(&both), false, INSECURE, TOKEN),
        Err(Refusal::Clear(Method::Oauthbearer))
    );
}

#[test]
fn a_configured_method_must_be_offered_when_capa_says() {
    let plain = caps(&["PLAIN"], false);
    let err = wanted(Method::CramMd5, Some(&plain), false, SECURE, PW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server does not offer CRAM-MD5 (it offers SASL: PLAIN)"
    );
    let err = wanted(Method::Login, Some(&caps(&[], true)), false, SECURE, PW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server does not offer LOGIN (it offers USER)"
    );
    // APOP is offered by the greeting, not by CAPA: it is listed all the same.
    let err = wanted(Method::CramMd5, Some(&caps(&[], true)), true, SECURE, PW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server does not offer CRAM-MD5 (it offers USER, APOP)"
    );
    let err = wanted(Method::Login, Some(&plain), true, SECURE, PW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server does not offer LOGIN (it offers SASL: PLAIN, APOP)"
    );
    let err = wanted(Method::Login, Some(&caps(&[], false)), false, SECURE, PW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server does not offer LOGIN (it offers no login method)"
    );
    assert_eq!(
        wanted(Method::User, Some(&plain), false, SECURE, PW),
        Err(Refusal::NotOffered {
            method: Method::User,
            sasl: vec!["PLAIN".into()],
            user: false,
            apop: false,
        })
    );
    // Without CAPA the server will say.
    for m in [Method::User, Method::Plain, Method::Login, Method::CramMd5] {
        assert_eq!(wanted(m, None, false, SECURE, PW), Ok(m));
    }
    assert_eq!(
        wanted(Method::Xoauth2, None, false, SECURE, TOKEN),
        Ok(Method::Xoauth2)
    );
}

#[test]
fn apop_needs_the_greeting_timestamp() {
    assert_eq!(
        wanted(Method::Apop, None, true, INSECURE, PW),
        Ok(Method::Apop)
    );
    assert_eq!(
        wanted(Method::Apop, Some(&caps(&[], true)), false, SECURE, PW),
        Err(Refusal::NoApopTimestamp)
    );
}

#[test]
fn a_configured_clear_text_method_is_refused_on_an_insecure_link() {
    let all = caps(
        &["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"],
        true,
    );
    for m in [Method::User, Method::Plain, Method::Login] {
        assert_eq!(
            wanted(m, Some(&all), false, INSECURE, PW),
            Err(Refusal::Clear(m))
        );
        assert_eq!(wanted(m, Some(&all), false, ALLOWED, PW), Ok(m));
        assert_eq!(wanted(m, Some(&all), false, SECURE, PW), Ok(m));
    }
    assert_eq!(
        wanted(Method::CramMd5, Some(&all), false, INSECURE, PW),
        Ok(Method::CramMd5)
    );
    assert_eq!(
        wanted(Method::Xoauth2, Some(&all), false, INSECURE, TOKEN)
            .unwrap_err()
            .to_string(),
        "XOAUTH2 would send the password in clear text over an unencrypted connection; \
         use TLS or set allow_plaintext_auth = true"
    );
}

#[test]
fn the_credential_must_fit_the_method() {
    let all = caps(&["PLAIN", "XOAUTH2", "OAUTHBEARER"], true);
    assert_eq!(
        wanted(Method::Xoauth2, Some(&all), false, SECURE, PW),
        Err(Refusal::NeedsToken(Method::Xoauth2))
    );
    assert_eq!(
        wanted(Method::Oauthbearer, Some(&all), false, SECURE, PW),
        Err(Refusal::NeedsToken(Method::Oauthbearer))
    );
    assert_eq!(
        wanted(Method::Plain, Some(&all), false, SECURE, TOKEN),
        Err(Refusal::NeedsPassword(Method::Plain))
    );
    // The credential is checked before the link: the first thing to fix is said first.
    assert_eq!(
        wanted(Method::Apop, None, false, INSECURE, TOKEN),
        Err(Refusal::NeedsPassword(Method::Apop))
    );
}

#[test]
fn one_table_of_names() {
    let names: Vec<_> = [
        Method::User,
        Method::Apop,
        Method::Plain,
        Method::Login,
        Method::CramMd5,
        Method::Xoauth2,
        Method::Oauthbearer,
    ]
    .map(|m| (m.name(), m.mechanism(), m.sends_secret_in_clear()))
    .to_vec();
    assert_eq!(
        names,
        [
            ("USER/PASS", None, true),
            ("APOP", None, false),
            ("PLAIN", Some("PLAIN"), true),
            ("LOGIN", Some("LOGIN"), true),
            ("CRAM-MD5", Some("CRAM-MD5"), false),
            ("XOAUTH2", Some("XOAUTH2"), true),
            ("OAUTHBEARER", Some("OAUTHBEARER"), true),
        ]
    );
}

#[test]
fn configuration_names_follow_the_methods() {
    assert_eq!(CONFIG_NAMES.len(), Method::ALL.len() + 1);
    assert_eq!(CONFIG_NAMES[0], "auto");
    for (i, m) in Method::ALL.into_iter().enumerate() {
        assert_eq!(m as usize, i, "Method::ALL is in declaration order");
        assert_eq!(Method::from_config_name(m.config_name()), Some(m));
    }
    assert_eq!(Method::CramMd5.config_name(), "cram-md5");
    assert_eq!(Method::User.config_name(), "user");
    assert_eq!(Method::from_config_name("auto"), None);
    assert_eq!(Method::from_config_name("CRAM-MD5"), None);
}

const CERT: CredentialKind = CredentialKind::Certificate;

#[test]
fn a_certificate_alone_logs_in_with_external_only_where_the_server_names_it() {
    let ext = caps(&["PLAIN", "EXTERNAL"], true);
    assert_eq!(auto(Some(&ext), false, SECURE, CERT), Ok(Method::External));
    assert_eq!(
        wanted(Method::External, Some(&ext), false, SECURE, CERT),
        Ok(Method::External)
    );
    // Not offered: refused before anything is sent, naming what the server offers.
    let plain = caps(&["PLAIN"], true);
    let refusal = auto(Some(&plain), false, SECURE, CERT).unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "the server does not offer EXTERNAL (it offers SASL: PLAIN, USER)"
    );
    assert_eq!(
        wanted(Method::External, Some(&plain), false, SECURE, CERT),
        Err(refusal)
    );
    // Without CAPA, EXTERNAL is never tried on a guess.
    assert_eq!(
        auto(None, false, SECURE, CERT),
        Err(Refusal::NoCapa(Method::External))
    );
    assert_eq!(
        wanted(Method::External, None, false, SECURE, CERT),
        Err(Refusal::NoCapa(Method::External))
    );
    // No TLS, no certificate to show; allow_plaintext_auth does not change that.
    assert_eq!(
        auto(Some(&ext), false, ALLOWED, CERT),
        Err(Refusal::ExternalNeedsTls)
    );
}

#[test]
fn auto_with_a_password_or_token_never_picks_external() {
    let ext = caps(&["EXTERNAL", "PLAIN"], true);
    assert_eq!(auto(Some(&ext), false, SECURE, PW), Ok(Method::Plain));
    let only_ext = caps(&["EXTERNAL"], false);
    assert_eq!(
        auto(Some(&only_ext), false, SECURE, PW),
        Err(Refusal::NoKnownMethod)
    );
    assert_eq!(
        auto(Some(&only_ext), false, SECURE, TOKEN),
        Err(Refusal::NoTokenMethod)
    );
    // And the methods and credentials that do not go together say so.
    assert_eq!(
        wanted(Method::External, Some(&ext), false, SECURE, PW),
        Err(Refusal::NeedsCertificate)
    );
    assert_eq!(
        wanted(Method::Plain, Some(&ext), false, SECURE, CERT),
        Err(Refusal::CertificateOnly(Method::Plain))
    );
    assert!(!Method::External.sends_secret_in_clear());
}
