//! Fetching: the POP3 side against Dovecot and the scripted server (login, TLS, listings, limits,
//! hostile answers, memory bounds) and the per-account policies.

mod account_policies;
mod fetch_dovecot;
mod hostile;
mod issue13_fetch;
mod issue13_mem;
mod issue13_proto;
mod round_trips;
mod scripted;
mod small_bugs;
