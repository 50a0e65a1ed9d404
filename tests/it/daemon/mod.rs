//! The daemon: schedules, reload, signals, readiness, its metrics, and a soak with many
//! accounts.

mod metrics;
mod run;
mod soak;
