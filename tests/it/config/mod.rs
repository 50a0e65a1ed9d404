//! The config as the binary reads it: files included from a directory.

pub(crate) mod include;
