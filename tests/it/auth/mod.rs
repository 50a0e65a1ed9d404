//! Authentication and trust: OAuth2 (token endpoint, flows, the Dovecot OAuth2 passdb) and
//! certificate and secret handling.

mod external;
mod oauth2;
mod oauth_login;
pub mod oauth_peer;
mod pinning;
mod security;
