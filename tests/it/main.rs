//! The one integration-test binary: real peers (a private Dovecot per test), the in-process
//! scripted server for what a real server will not do, and the real built `popfetch` binary.
//! Grouped by area; the fixtures live in `support/` (see `support/peers.rs` for what a test
//! without its peer does).

mod support;
// The fixtures by their short paths: `crate::dovecot::Dovecot`, `crate::harness::Env`, ...
use support::{cyrus, dovecot, harness, peers, pop3_server, postfix};

mod auth;
mod cli;
mod config;
mod daemon;
mod deliver;
mod durability;
mod fetch;
mod import;
