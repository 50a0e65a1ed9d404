//! The command line, the docs and man pages against the CLI, the package, and the import rule
//! between the crate's modules.

mod check;
mod commands;
mod connect;
mod docs;
mod first_steps;
mod layers;
mod package;
mod status;
mod terminal;
mod units;
