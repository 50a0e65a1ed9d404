//! The daemon: schedules, reload, signals, readiness, and a soak with many accounts.

mod journal;
mod run;
mod soak;
