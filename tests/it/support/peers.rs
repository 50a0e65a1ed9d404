//! Which real programs (peers) a test needs, and what happens when one is missing.
//!
//! A test that runs a peer (Dovecot, Postfix, procmail, fetchmail, strace, ...) starts with
//! [`require_peers!`]. When every program the named peers need is installed, the test runs.
//! When one is missing:
//! - under `tests/run` (which exports `POPFETCH_REQUIRE_PEERS=1`, and CI runs `tests/run`) the
//!   test FAILS, naming the peer: the full suite never silently skips;
//! - under plain `cargo test` the test returns early and writes one line to the terminal,
//!   `skipped: <test>: needs <peer> (run tests/run)`, past libtest's output capture, so every
//!   test that did not run is named in the output.

use std::io::Write as _;
use std::path::Path;

/// Set (to anything but empty or `0`) by `tests/run`: a missing peer fails the test.
pub const REQUIRE_VAR: &str = "POPFETCH_REQUIRE_PEERS";

/// The programs each peer needs (the Debian packages are in `tests/install-peers`).
const PEERS: &[(&str, &[&str])] = &[
    ("dovecot", &["/usr/sbin/dovecot", "/usr/bin/openssl"]),
    ("dovecot-lmtp", &["/usr/lib/dovecot/lmtp"]),
    (
        "cyrus",
        &["/usr/lib/cyrus/bin/master", "/usr/lib/cyrus/bin/lmtpd"],
    ),
    ("postfix", &["/usr/sbin/postfix"]),
    ("procmail", &["/usr/bin/procmail"]),
    ("maildrop", &["/usr/bin/maildrop"]),
    ("mblaze", &["/usr/bin/mdeliver"]),
    ("fetchmail", &["/usr/bin/fetchmail"]),
    ("mpop", &["/usr/bin/mpop"]),
    ("getmail", &["/usr/bin/getmail"]),
    ("strace", &["/usr/bin/strace"]),
    ("time", &["/usr/bin/time"]),
    ("man", &["/usr/bin/man"]),
    ("openssl", &["/usr/bin/openssl"]),
    ("lintian", &["/usr/bin/lintian"]),
    ("promtool", &["/usr/bin/promtool"]),
    ("prometheus", &["/usr/bin/prometheus"]),
    // A private journald, in a mount namespace of its own (util-linux's unshare).
    (
        "journald",
        &[
            "/lib/systemd/systemd-journald",
            "/usr/bin/journalctl",
            "/usr/bin/unshare",
        ],
    ),
];

/// The first program of `peer` that is not installed, if any. Panics on an unknown peer name.
pub fn missing_program(peer: &str) -> Option<&'static str> {
    let (_, programs) = PEERS
        .iter()
        .find(|(name, _)| *name == peer)
        .unwrap_or_else(|| panic!("unknown peer {peer:?}: add it to tests/it/support/peers.rs"));
    programs.iter().copied().find(|p| !Path::new(p).is_file())
}

/// Whether a missing peer must fail the test (`tests/run`) rather than skip it.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Checks `peers` for the running test: `true` when all are installed. When one is missing,
/// panics under [`REQUIRE_VAR`], else prints the `skipped:` line and returns `false`.
pub fn check(module: &str, peers: &[&str]) -> bool {
    let Some((peer, program)) = peers
        .iter()
        .find_map(|peer| missing_program(peer).map(|prog| (*peer, prog)))
    else {
        return true;
    };
    // libtest names each test's thread after the test; the module is the fallback.
    let current = std::thread::current();
    let test = current
        .name()
        .filter(|n| *n != "main")
        .map_or_else(|| module.to_owned(), str::to_owned);
    assert!(
        !required(),
        "{test}: needs {peer}, but {program} is not installed \
         ({REQUIRE_VAR} is set: install the peers with tests/install-peers as root)"
    );
    // Straight to the process's stderr: libtest captures only `eprintln!`.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: needs {peer} ({program} missing; run tests/run)"
    );
    false
}

/// Returns from the calling test (after printing `skipped: ...`) unless every named peer is
/// installed; fails it instead under `tests/run`. See the module docs.
macro_rules! require_peers {
    ($($peer:literal),+ $(,)?) => {
        if !$crate::peers::check(module_path!(), &[$($peer),+]) {
            return;
        }
    };
}
pub(crate) use require_peers;
