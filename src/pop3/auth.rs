//! Credential encodings: the APOP digest (RFC 1939 §7), SASL PLAIN (RFC 4616), LOGIN
//! (draft-murchison-sasl-login) and CRAM-MD5 (RFC 2195). Pure functions; the exchange itself is
//! driven by [`crate::session`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use md5::{Digest, Md5};

use crate::secret::Secret;
use crate::text::hex;

/// The APOP timestamp from a greeting: the first `<...>` containing an `@` (RFC 1939 §7 says it is
/// a msg-id, `<process-ID.clock@hostname>`).
pub fn apop_timestamp(greeting_text: &[u8]) -> Option<Vec<u8>> {
    let start = memchr::memchr(b'<', greeting_text)?;
    let len = memchr::memchr(b'>', &greeting_text[start..])?;
    let ts = &greeting_text[start..=start + len];
    // Characters the RFC allows in a msg-id, and an '@' between brackets.
    if ts.len() > 2 && ts.contains(&b'@') && ts.iter().all(|b| (0x21..=0x7e).contains(b)) {
        Some(ts.to_vec())
    } else {
        None
    }
}

/// `MD5(timestamp + password)` in lower-case hex.
pub fn apop_digest(timestamp: &[u8], password: &Secret<String>) -> Secret<String> {
    let mut h = Md5::new();
    h.update(timestamp);
    h.update(password.expose().as_bytes());
    Secret::new(hex(&h.finalize()))
}

/// The base64 PLAIN initial response: `authzid NUL authcid NUL passwd` with an empty authzid.
pub fn plain_response(user: &str, password: &Secret<String>) -> Secret<String> {
    let mut raw = Vec::with_capacity(user.len() + password.expose().len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.expose().as_bytes());
    Secret::new(B64.encode(raw))
}

/// Base64 of one string, for the LOGIN mechanism's two answers.
pub fn login_response(value: &str) -> Secret<String> {
    Secret::new(B64.encode(value.as_bytes()))
}

/// The CRAM-MD5 answer to a base64 challenge: base64 of `user SP hex(HMAC-MD5(password, challenge))`.
/// `None` when the challenge is not valid base64.
pub fn cram_md5_response(
    challenge_b64: &[u8],
    user: &str,
    password: &Secret<String>,
) -> Option<Secret<String>> {
    let challenge = B64.decode(challenge_b64.trim_ascii()).ok()?;
    let mut mac = hmac::Hmac::<Md5>::new_from_slice(password.expose().as_bytes()).ok()?;
    mac.update(&challenge);
    let digest = hex(&mac.finalize().into_bytes());
    Some(Secret::new(B64.encode(format!("{user} {digest}"))))
}

/// Decodes a base64 server challenge for logs; `None` when it is not base64.
pub fn decode_challenge(challenge_b64: &[u8]) -> Option<Vec<u8>> {
    B64.decode(challenge_b64.trim_ascii()).ok()
}

/// The SASL XOAUTH2 initial response (Google's and Microsoft's bearer-token mechanism):
/// base64 of `user=USER ^A auth=Bearer TOKEN ^A ^A`.
pub fn xoauth2_response(user: &str, token: &Secret<String>) -> Secret<String> {
    let raw = format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose());
    Secret::new(B64.encode(raw))
}

/// The SASL OAUTHBEARER initial response (RFC 7628 §3.1): a GS2 header naming the user, then
/// `host`, `port` and `auth` key-value pairs separated by ^A, base64-encoded.
pub fn oauthbearer_response(
    user: &str,
    host: &str,
    port: u16,
    token: &Secret<String>,
) -> Secret<String> {
    // RFC 5801 saslname: ',' and '=' are escaped.
    let authzid = user.replace('=', "=3D").replace(',', "=2C");
    let raw = format!(
        "n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
        token.expose()
    );
    Secret::new(B64.encode(raw))
}

/// What a client answers to the error challenge of a failed XOAUTH2 exchange: an empty line.
pub const XOAUTH2_ABORT: &str = "";
/// What a client answers to the error challenge of a failed OAUTHBEARER exchange: a lone ^A
/// (RFC 7628 §3.2.3), base64.
pub const OAUTHBEARER_ABORT: &str = "AQ==";

/// Describes the JSON error a server sends as the challenge of a failed bearer-token login
/// (RFC 7628 §3.2.2: `status`, `scope`, `schemes`), for the log and the error message. Only
/// those fields are taken, each bounded and made printable; `None` when the challenge is not
/// such an object.
pub fn describe_oauth_error(challenge_b64: &[u8]) -> Option<String> {
    let raw = decode_challenge(challenge_b64)?;
    let value: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let obj = value.as_object()?;
    let mut parts = Vec::new();
    for key in ["status", "scope", "schemes"] {
        let Some(v) = obj.get(key) else { continue };
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let clean: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
        parts.push(format!("{key} {clean}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}
