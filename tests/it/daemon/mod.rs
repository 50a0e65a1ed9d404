//! The daemon: schedules, reload, signals, readiness, its journal lines, its metrics, and a
//! soak with many accounts.

mod include;
mod journal;
mod metrics;
mod per_server;
mod reload_links;
mod run;
mod soak;
mod start_spread;
mod status;
