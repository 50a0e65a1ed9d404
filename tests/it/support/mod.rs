//! Fixtures shared by every test (and by the benchmarks in `benches/`): the built binary and a
//! temp config (`harness`), private peers (`dovecot`, `postfix`), the scripted POP3 server
//! (`hostile_server`), which peers a test needs (`peers`), and the fixtures' own self-tests.

pub mod dovecot;
mod fixture_selftest;
pub mod harness;
pub mod hostile_server;
pub mod peers;
pub mod postfix;
mod postfix_selftest;
