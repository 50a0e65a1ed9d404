//! popfetch: fetch mail from POP3 accounts and deliver it locally without ever losing a message.
//!
//! The one path a message takes: [`session`] streams `RETR` → [`deliver`] makes it durable →
//! [`state`] records the UIDL durably → [`session`] sends `DELE` → `QUIT +OK` → [`state`] marks it
//! deleted. [`fetch`] is the only module that knows both ends. See ARCHITECTURE.md.

pub mod child;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod deliver;
pub mod durable;
pub mod fetch;
pub mod import;
pub mod logging;
pub mod mailbox;
pub mod metrics;
pub mod net;
pub mod oauth2;
pub mod password;
pub mod pop3;
pub mod probe;
pub mod progress;
pub mod report;
pub mod route;
pub mod scheduler;
pub mod secret;
pub mod session;
pub mod shell;
pub mod smtp_codec;
pub mod state;
pub mod status;
pub mod text;
pub mod trust;
pub mod url;

#[doc(hidden)]
pub mod demo;
