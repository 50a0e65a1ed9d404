//! The POP3 protocol without I/O: validated types, the command encoder (with the shape of each
//! command's answer), the response decoder, the one queue of pipelined commands and their
//! answers ([`Pipeline`]), the listing-line parsers ([`listing`]), the choice of a login method
//! over the server's capabilities ([`login`]), the SASL exchange as a stepper ([`sasl`]) and the
//! SASL/APOP encodings ([`auth`]). Nothing here touches a socket, a clock or the file system;
//! [`crate::session`] drives it over tokio. Sources: RFC 1939 (POP3), RFC 2449 (CAPA, response
//! codes, pipelining), RFC 5034 (SASL), RFC 2595 (STLS).

pub mod auth;
mod command;
mod decode;
pub mod listing;
pub mod login;
mod pipeline;
pub mod sasl;
mod types;

pub use command::Command;
pub use decode::{DecodeError, Decoder, Event, Expect, MAX_LINE};
pub use pipeline::Pipeline;
pub(crate) use types::parse_u64;
pub use types::{
    Capabilities, InvalidUidl, MsgNum, ResponseCode, Status, StatusKind, Uidl, printable,
};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_listing;
#[cfg(test)]
mod tests_login;
#[cfg(test)]
mod tests_pipeline;
#[cfg(test)]
mod tests_sasl;
