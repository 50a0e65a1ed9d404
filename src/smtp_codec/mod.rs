//! SMTP and LMTP, client side, without I/O: the reply decoder (multi-line replies, RFC 3463
//! enhanced status codes kept, every line capped), the command encoder, the LHLO/EHLO
//! extension list, and the DATA rules (every line end made CRLF, RFC 5321 §4.5.2
//! dot-stuffing). Nothing here touches a socket, a clock or a file: [`crate::deliver`]'s LMTP
//! backend drives it, and its SMTP backend shares the line-end rule. Sources: RFC 5321 (SMTP),
//! RFC 2033 (LMTP), RFC 2920 (PIPELINING), RFC 3463 / 2034 (enhanced status codes), RFC 6152
//! (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3207 (STARTTLS).

mod command;
mod data;
mod reply;

pub use command::Command;
pub use data::{DotStuff, LineEnds};
pub use reply::{Class, Decoder, Enhanced, Extensions, MAX_LINE, MAX_LINES, Reply, ReplyError};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
