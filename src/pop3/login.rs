//! Which login method to use, chosen over what the server offers: the one place for the method
//! names and for the rule that keeps a secret off an unencrypted link. Pure: the session asks,
//! then runs the exchange ([`super::sasl`] for the SASL ones).

use std::fmt;

use super::Capabilities;
use super::sasl::Mechanism;

/// The configuration's names for `auth`: `auto`, then each [`Method`] in [`Method::ALL`]'s order.
pub const CONFIG_NAMES: &[&str] = &[
    "auto",
    "user",
    "apop",
    "plain",
    "login",
    "cram-md5",
    "xoauth2",
    "oauthbearer",
    "external",
];

/// A concrete login method (the configuration's `auto` is a request to [`choose`], not a method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// USER and PASS (RFC 1939 §7).
    User,
    /// APOP (RFC 1939 §7): a digest of the greeting's timestamp and the password.
    Apop,
    /// SASL PLAIN (RFC 4616).
    Plain,
    /// SASL LOGIN (draft-murchison-sasl-login).
    Login,
    /// SASL CRAM-MD5 (RFC 2195).
    CramMd5,
    /// SASL XOAUTH2, Google's and Microsoft's bearer-token mechanism.
    Xoauth2,
    /// SASL OAUTHBEARER (RFC 7628).
    Oauthbearer,
    /// SASL EXTERNAL (RFC 4422 appendix A): the identity is the TLS client certificate's.
    External,
}

impl Method {
    /// Every method, in the order the configuration's names are listed.
    pub const ALL: [Method; 8] = [
        Method::User,
        Method::Apop,
        Method::Plain,
        Method::Login,
        Method::CramMd5,
        Method::Xoauth2,
        Method::Oauthbearer,
        Method::External,
    ];

    /// The name the configuration uses (`auth = "cram-md5"`).
    pub fn config_name(self) -> &'static str {
        // `Method::ALL` lists the methods in declaration order, as `CONFIG_NAMES` does after
        // its `auto`; a unit test holds the two together.
        CONFIG_NAMES[self as usize + 1]
    }

    /// The method the configuration's name stands for.
    pub fn from_config_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.config_name() == name)
    }

    /// The name in logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Method::User => "USER/PASS",
            Method::Apop => "APOP",
            Method::Plain => "PLAIN",
            Method::Login => "LOGIN",
            Method::CramMd5 => "CRAM-MD5",
            Method::Xoauth2 => "XOAUTH2",
            Method::Oauthbearer => "OAUTHBEARER",
            Method::External => "EXTERNAL",
        }
    }

    /// The SASL mechanism name sent with AUTH; `None` for USER/PASS and APOP.
    pub fn mechanism(self) -> Option<&'static str> {
        match self.exchange() {
            Exchange::User | Exchange::Apop => None,
            Exchange::Sasl(m) => Some(m.name()),
        }
    }

    /// How the login runs: its own commands, or a SASL exchange.
    pub fn exchange(self) -> Exchange {
        match self {
            Method::User => Exchange::User,
            Method::Apop => Exchange::Apop,
            Method::Plain => Exchange::Sasl(Mechanism::Plain),
            Method::Login => Exchange::Sasl(Mechanism::Login),
            Method::CramMd5 => Exchange::Sasl(Mechanism::CramMd5),
            Method::Xoauth2 => Exchange::Sasl(Mechanism::Xoauth2),
            Method::Oauthbearer => Exchange::Sasl(Mechanism::Oauthbearer),
            Method::External => Exchange::Sasl(Mechanism::External),
        }
    }

    /// Whether the method puts the secret on the wire as it is (base64 is not a cipher). A
    /// bearer token is as good as a password to whoever reads it. EXTERNAL sends no secret.
    pub fn sends_secret_in_clear(self) -> bool {
        !matches!(self, Method::Apop | Method::CramMd5 | Method::External)
    }

    /// Whether the method logs in with an OAuth2 access token rather than a password.
    pub fn needs_token(self) -> bool {
        matches!(self, Method::Xoauth2 | Method::Oauthbearer)
    }

    /// The credential the method logs in with.
    pub fn credential(self) -> CredentialKind {
        match self {
            Method::Xoauth2 | Method::Oauthbearer => CredentialKind::Token,
            Method::External => CredentialKind::Certificate,
            _ => CredentialKind::Password,
        }
    }

    /// Whether the server offers the method. Without CAPA (an RFC 1939 server) nothing can be
    /// checked: every method counts as offered, and the server will say, except EXTERNAL,
    /// which only a server that names it is asked for. APOP is offered by a timestamp in the
    /// greeting, not by CAPA.
    fn offered(self, caps: Option<&Capabilities>, apop_timestamp: bool) -> bool {
        match (self, caps) {
            (Method::Apop, _) => apop_timestamp,
            (Method::External, None) => false,
            (_, None) => true,
            (Method::User, Some(c)) => c.user,
            (m, Some(c)) => m.mechanism().is_some_and(|mech| c.has_sasl(mech)),
        }
    }
}

/// The commands a login method runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// USER, then PASS.
    User,
    /// APOP with the digest.
    Apop,
    /// AUTH and the SASL exchange of [`super::sasl::Sasl`].
    Sasl(Mechanism),
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What proves the user's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Password,
    Token,
    /// The TLS client certificate alone, for SASL EXTERNAL.
    Certificate,
}

/// What the server offers, as far as login is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// The CAPA answer; `None` when the server does not support CAPA.
    pub caps: Option<&'a Capabilities>,
    /// Whether the greeting carries an APOP timestamp.
    pub apop_timestamp: bool,
}

/// What the client may do with a secret on this link.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The connection is encrypted (implicit TLS or STLS).
    pub secure: bool,
    /// The account allows clear-text methods without encryption (`allow_plaintext_auth`).
    pub allow_plaintext: bool,
    /// The link is encrypted and the server proved who it is (its certificate checked against a
    /// CA, or matching a pinned fingerprint): a password sent over it reaches that server alone.
    pub verified: bool,
}

impl Link {
    fn clear_ok(self) -> bool {
        self.secure || self.allow_plaintext
    }
}

/// Why no login is attempted. Its text is the error the user reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The configured method is not among the server's.
    NotOffered {
        method: Method,
        sasl: Vec<String>,
        user: bool,
        /// The greeting carries a timestamp: APOP is offered too.
        apop: bool,
    },
    /// A token is configured and the server offers no bearer-token mechanism.
    NoTokenMethod,
    /// `auto` found nothing it knows, on a link where anything would do.
    NoKnownMethod,
    /// `auto` found only methods that would send the secret over an unencrypted link.
    NoSafeMethod,
    /// A token method with a password.
    NeedsToken(Method),
    /// A password method with a token.
    NeedsPassword(Method),
    /// The method would send the secret in clear text over an unencrypted link.
    Clear(Method),
    /// APOP was asked for and the greeting has no timestamp.
    NoApopTimestamp,
    /// EXTERNAL with a password or a token, which it would not use.
    NeedsCertificate,
    /// A method that needs a password or a token, on an account with a certificate alone.
    CertificateOnly(Method),
    /// EXTERNAL over an unencrypted link, where there is no certificate to show.
    ExternalNeedsTls,
    /// EXTERNAL, and the server answers no CAPA, so nothing says it offers it.
    NoCapa(Method),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotOffered {
                method,
                sasl,
                user,
                apop,
            } => {
                // Every way in the server offers, whichever announces it (CAPA's SASL and
                // USER, the greeting's timestamp for APOP).
                let mut offered = Vec::new();
                if !sasl.is_empty() {
                    offered.push(format!("SASL: {}", sasl.join(" ")));
                }
                if *user {
                    offered.push("USER".to_string());
                }
                if *apop {
                    offered.push("APOP".to_string());
                }
                if offered.is_empty() {
                    write!(
                        f,
                        "the server does not offer {method} (it offers no login method)"
                    )
                } else {
                    write!(
                        f,
                        "the server does not offer {method} (it offers {})",
                        offered.join(", ")
                    )
                }
            }
            Refusal::NoTokenMethod => f.write_str(
                "an OAuth2 token source is configured, but the server offers neither XOAUTH2 \
                 nor OAUTHBEARER",
            ),
            Refusal::NoKnownMethod => {
                f.write_str("the server offers no login method popfetch knows")
            }
            Refusal::NoSafeMethod => f.write_str(
                "the connection is not encrypted and the server offers no login method that \
                 keeps the password secret (CRAM-MD5, APOP); use TLS, or set \
                 allow_plaintext_auth = true",
            ),
            Refusal::NeedsToken(m) => write!(
                f,
                "{m} needs an OAuth2 token source (oauth2_token_command or [account.oauth2])"
            ),
            Refusal::NeedsPassword(m) => write!(
                f,
                "{m} needs a password; an OAuth2 token goes with auth = \"xoauth2\" or \
                 \"oauthbearer\""
            ),
            Refusal::Clear(m) => write!(
                f,
                "{m} would send the password in clear text over an unencrypted connection; \
                 use TLS or set allow_plaintext_auth = true"
            ),
            Refusal::NoApopTimestamp => f.write_str("the greeting carries no APOP timestamp"),
            Refusal::NeedsCertificate => f.write_str(
                "EXTERNAL logs in with the TLS client certificate alone; the account has a \
                 password or an OAuth2 token, which it would not use",
            ),
            Refusal::CertificateOnly(m) => write!(
                f,
                "{m} needs a password or a token; the account logs in with its TLS client \
                 certificate alone (auth = \"external\")"
            ),
            Refusal::ExternalNeedsTls => f.write_str(
                "EXTERNAL needs TLS: the client certificate is shown in the TLS handshake",
            ),
            Refusal::NoCapa(m) => write!(
                f,
                "the server answers no CAPA, so nothing says it offers {m}; popfetch does not \
                 try it unannounced"
            ),
        }
    }
}

/// The order `auto` tries password methods in: challenge-response first (CRAM-MD5, then APOP),
/// then PLAIN, LOGIN and USER/PASS. A server whose identity is not proven gets no password it
/// could read.
const PASSWORD_ORDER: [Method; 5] = [
    Method::CramMd5,
    Method::Apop,
    Method::Plain,
    Method::Login,
    Method::User,
];

/// The order over a verified TLS link: PLAIN first, answered with its initial response in one
/// round trip where CRAM-MD5 takes two (its challenge, then the answer). The password reaches
/// only the server that proved who it is, which must know it to check it either way (CRAM-MD5
/// needs it stored in a form as good as the password itself).
const VERIFIED_ORDER: [Method; 5] = [
    Method::Plain,
    Method::CramMd5,
    Method::Apop,
    Method::Login,
    Method::User,
];

/// The order `auto` tries bearer-token methods in: the standard one first.
const TOKEN_ORDER: [Method; 2] = [Method::Oauthbearer, Method::Xoauth2];

/// The method to log in with. `wanted` is the configured method, `None` for `auto`, which
/// takes the strongest method offered that fits the credential and the link.
pub fn choose(
    offer: Offer<'_>,
    wanted: Option<Method>,
    link: Link,
    credential: CredentialKind,
) -> Result<Method, Refusal> {
    let method = match wanted {
        Some(m) => {
            // APOP is checked below, once the credential fits.
            if m != Method::Apop && !m.offered(offer.caps, offer.apop_timestamp) {
                return Err(not_offered(m, offer));
            }
            m
        }
        None => auto(offer, link, credential)?,
    };
    match (credential, method.credential()) {
        (have, want) if have == want => {}
        (CredentialKind::Certificate, _) => return Err(Refusal::CertificateOnly(method)),
        (_, CredentialKind::Certificate) => return Err(Refusal::NeedsCertificate),
        (_, CredentialKind::Token) => return Err(Refusal::NeedsToken(method)),
        (_, CredentialKind::Password) => return Err(Refusal::NeedsPassword(method)),
    }
    if method == Method::External && !link.secure {
        return Err(Refusal::ExternalNeedsTls);
    }
    if !link.clear_ok() && method.sends_secret_in_clear() {
        return Err(Refusal::Clear(method));
    }
    if method == Method::Apop && !offer.apop_timestamp {
        return Err(Refusal::NoApopTimestamp);
    }
    Ok(method)
}

/// Why `m` is not offered, with what the server offers instead.
fn not_offered(m: Method, offer: Offer<'_>) -> Refusal {
    let Some(caps) = offer.caps else {
        if m == Method::External {
            return Refusal::NoCapa(m);
        }
        return Refusal::NotOffered {
            method: m,
            sasl: Vec::new(),
            user: false,
            apop: offer.apop_timestamp,
        };
    };
    Refusal::NotOffered {
        method: m,
        sasl: caps.sasl.clone(),
        user: caps.user,
        apop: offer.apop_timestamp,
    }
}

fn auto(offer: Offer<'_>, link: Link, credential: CredentialKind) -> Result<Method, Refusal> {
    if credential == CredentialKind::Certificate {
        // A certificate alone has one way in; a server that does not name it is not asked.
        let m = Method::External;
        return match m.offered(offer.caps, false) {
            true => Ok(m),
            false => Err(not_offered(m, offer)),
        };
    }
    if credential == CredentialKind::Token {
        // Without CAPA nothing says a bearer mechanism exists: it is not guessed.
        return TOKEN_ORDER
            .into_iter()
            .find(|m| offer.caps.is_some() && m.offered(offer.caps, false))
            .ok_or(Refusal::NoTokenMethod);
    }
    let candidates: &[Method] = if offer.caps.is_some() && link.verified {
        &VERIFIED_ORDER
    } else if offer.caps.is_some() {
        &PASSWORD_ORDER
    } else {
        // No CAPA: an RFC 1939 server. APOP when it offers a timestamp, else USER/PASS.
        &[Method::Apop, Method::User]
    };
    candidates
        .iter()
        .copied()
        .find(|m| {
            m.offered(offer.caps, offer.apop_timestamp)
                && (link.clear_ok() || !m.sends_secret_in_clear())
        })
        .ok_or(if link.clear_ok() {
            Refusal::NoKnownMethod
        } else {
            Refusal::NoSafeMethod
        })
}
