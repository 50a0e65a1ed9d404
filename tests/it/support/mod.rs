//! Fixtures shared by every test (and by the benchmarks in `benches/`): the built binary and a
//! temp config (`harness`), one builder of `[[account]]` tables (`config`), private peers (`dovecot`, `postfix`), the scripted POP3 server
//! (`hostile_server`), which peers a test needs (`peers`), and the fixtures' own self-tests.

pub mod config;
pub mod dovecot;
mod fixture_selftest;
pub mod harness;
pub mod hostile_server;
pub mod peers;
pub mod postfix;
mod postfix_selftest;
