//! The one integration-test binary: real peers (a private Dovecot per test), the in-process
//! scripted server for what a real server will not do, and the real built `popfetch` binary.

mod account_policies;
mod cli;
mod crash;
mod daemon;
mod deliver_mda;
mod deliver_smtp;
mod docs;
mod dovecot;
mod fetch_dovecot;
mod fixture_selftest;
mod full_disk;
mod harness;
mod hostile;
mod hostile_server;
mod import;
mod issue13_edge;
mod issue13_fetch;
mod issue13_mda;
mod issue13_mem;
mod issue13_proto;
mod issue13_state;
mod layers;
mod mbox_peer;
mod oauth2;
mod oauth_login;
mod oauth_peer;
mod package;
mod peers;
mod policy;
mod postfix;
mod postfix_selftest;
mod recovery;
mod scripted;
mod security;
mod soak;
