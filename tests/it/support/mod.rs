//! Fixtures shared by every test (and by the benchmarks in `benches/`): the built binary and a
//! temp config (`harness`), one builder of `[[account]]` tables (`config`), private peers
//! (`dovecot`, `postfix`, `cyrus`), the tests' one scripted POP3 server (`pop3_server`), which peers a
//! test needs (`peers`), and the fixtures' own self-tests.

pub mod config;
pub mod cyrus;
pub mod dovecot;
mod fixture_selftest;
pub mod harness;
pub mod peers;
pub mod pop3_server;
pub mod postfix;
mod postfix_selftest;
