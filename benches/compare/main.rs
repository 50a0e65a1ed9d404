//! The comparison benchmark: popfetch against the established fetchers mpop, fetchmail (with
//! procmail as its MDA) and getmail6, on the same mailboxes of one private Dovecot, in one run.
//!
//! ```sh
//! cargo bench --bench compare                             # small (every scenario, every tool)
//! POPFETCH_BENCH=full cargo bench --bench compare         # full sizes
//! POPFETCH_BENCH_ONLY=noop,accounts ...                    # only these scenarios (by key)
//! POPFETCH_BENCH_TOOLS=popfetch,mpop ...                    # only these tools
//! ```
//!
//! Scenarios (full sizes; the default is a small version of each that still runs every tool):
//! 1. 2,000 × 4 KB fetch-and-delete into a Maildir, over plain POP3 (USER/PASS) and over
//!    implicit TLS.
//! 2. A no-op poll of 2,000 kept messages: keep mode, the second poll after a first one fetched
//!    them all; only the second poll is timed.
//! 3. 20 × 20 MB fetch-and-delete into a Maildir.
//! 4. 100 accounts × 20 messages: one `popfetch fetch` over all accounts of one config, mpop run
//!    once per account in sequence (100 processes, reported as the total: wall and CPU summed,
//!    peak RSS the largest), fetchmail with every account as a `user` of one `poll` entry, one
//!    process, getmail6 with one rc file per account, all given to one process.
//! 5. SMTP relay of 2,000 × 4 KB into the test Postfix (popfetch and fetchmail; mpop and getmail6
//!    have no SMTP delivery).
//! 6. LMTP of 2,000 × 4 KB into the same Dovecot's LMTP socket, one mailbox (popfetch and
//!    fetchmail's `lmtp` mode; the others have no LMTP); checked after removing the three fields
//!    Dovecot adds.
//!
//! All but the plain-POP3 half of scenario 1 run over implicit TLS, verified against the
//! fixture's CA with host `localhost`. The tools run interleaved (popfetch, mpop, fetchmail,
//! getmail6, popfetch, …) `RUNS` times each; each run gets a fresh directory (Maildirs, state,
//! configs) and, in delete mode, a mailbox refilled with the same messages (kept messages stay
//! on the server, so scenario 2 fills it once). Every run is checked byte for byte: each account's
//! Maildir (or Postfix's) holds exactly the source messages once each, after removing exactly
//! what the tool adds (see [`Tool::unwrap_delivered`]), the server mailbox is empty after a
//! delete-mode run and untouched after a keep-mode one, and every tool exits with success.
//! Finished run directories are set aside, not deleted, until the end (see [`retire`]).
//! Wall time is taken from spawn to exit; peak RSS and CPU (user + system, the tool's
//! waited-for children such as procmail included; 10 ms resolution) come from `/usr/bin/time`
//! (see [`Invocation::run`]). The medians are printed as a table at the end. Only correctness
//! is asserted, never timings.
//!
//! The old fetchers run as `nobody` through `setpriv` (getmail6 refuses to deliver as root,
//! fetchmail warns); their rc files are 0600 and owned by `nobody`, like everything they write.
//! popfetch runs as the test user (root), as in the other tests. Maildirs and state live under
//! `CARGO_TARGET_TMPDIR`, not `/tmp`, where creating a file costs about 0.8 ms on the test
//! machine (against 0.03 ms elsewhere on the same disk) and would swamp every tool.
//!
//! What each tool adds to a delivered message, and how this file makes it add nothing where it
//! can (all verified by the byte-exact checks):
//! - popfetch: its two-line `Received:` trace (left on, removed with `strip_received`).
//! - mpop: a `Received:` header unless `received_header off`, which is set: nothing is added.
//! - fetchmail: a `Received:` header unless `set invisible`, which is set; `no rewrite` keeps
//!   it from rewriting addresses. procmail (`-m RCFILE`, Maildir) adds nothing. Nothing added.
//! - getmail6: `Delivered-To:` and `Received:` (off with `delivered_to = false`,
//!   `received = false`) and always `Return-Path: <SENDER>`, the sender taken from the
//!   message's `Return-Path:` or `Sender:` header, else `unknown` (it also drops any
//!   `Return-Path:` the message had; these messages have none). Removed by
//!   [`strip_getmail_return_path`].
//! - Postfix (scenario 5) puts its `Return-Path`, `X-Original-To`, `Delivered-To` and
//!   `Received` lines on top: removed with `strip_postfix_headers` before the above.

// The test fixtures, shared with the integration tests (tests/it); this binary uses a part.
#[allow(dead_code)]
#[path = "../../tests/it/support/dovecot.rs"]
mod dovecot;
#[allow(dead_code)]
#[path = "../../tests/it/support/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../../tests/it/support/postfix.rs"]
mod postfix;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::{expected, message, strip_received};
use crate::postfix::{Postfix, strip_postfix_headers};

const PASSWORD: &str = "bench-password-7";
/// The Postfix recipient of scenario 5.
const RELAY_TO: &str = "alice@test.example";
/// The Dovecot users the LMTP scenario delivers to: this prefix, the tool and the run, a
/// fresh mailbox each (emptying one between runs would time the file system's reuse of the
/// deleted files' inodes, see [`retire`]).
const LMTP_TO: &str = "lmtpdst";

/// The mailbox the LMTP scenario's `run` of `tool` delivers to. Every one is made before the
/// first run: Dovecot rereads its passwd-file only when its modification time changes, so a
/// user added in the same second as the last change may stay unknown ("User doesn't exist").
fn lmtp_user(tool: Tool, run: usize) -> String {
    format!("{LMTP_TO}{}{run}", tool.name())
}
/// Bound for one tool process; a run that takes longer is killed and fails the test.
const RUN_TIMEOUT: Duration = Duration::from_secs(1200);
/// Marks `/usr/bin/time`'s report line.
const TIME_MARK: &str = "bench-compare-time:";
/// Bound for Postfix to deliver what was relayed into it.
const POSTFIX_TIMEOUT: Duration = Duration::from_secs(600);

/// The sizes of one benchmark run: `POPFETCH_BENCH=full` or the small default.
struct Sizes {
    full: bool,
    runs: usize,
    small_count: usize,
    small_size: usize,
    big_count: usize,
    big_size: usize,
    accounts: usize,
    per_account: usize,
}

impl Sizes {
    fn from_env() -> Sizes {
        if std::env::var("POPFETCH_BENCH").is_ok_and(|v| v == "full") {
            Sizes {
                full: true,
                runs: 5,
                small_count: 2000,
                small_size: 4096,
                big_count: 20,
                big_size: 20 * 1024 * 1024,
                accounts: 100,
                per_account: 20,
            }
        } else {
            Sizes {
                full: false,
                runs: 1,
                small_count: 50,
                small_size: 4096,
                big_count: 2,
                big_size: 1024 * 1024,
                accounts: 5,
                per_account: 4,
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Popfetch,
    Mpop,
    Fetchmail,
    Getmail6,
}

const ALL_TOOLS: &[Tool] = &[Tool::Popfetch, Tool::Mpop, Tool::Fetchmail, Tool::Getmail6];

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Popfetch => "popfetch",
            Tool::Mpop => "mpop",
            Tool::Fetchmail => "fetchmail",
            Tool::Getmail6 => "getmail6",
        }
    }

    /// The message as the server had it, from the file the tool delivered: exactly what the
    /// tool adds is removed (see the module docs), and its presence is asserted.
    fn unwrap_delivered(self, raw: &[u8]) -> Vec<u8> {
        match self {
            Tool::Popfetch => strip_received(raw),
            // Configured to add nothing: `received_header off`; `set invisible` + procmail.
            Tool::Mpop | Tool::Fetchmail => raw.to_vec(),
            Tool::Getmail6 => strip_getmail_return_path(raw),
        }
    }
}

/// Removes the `Return-Path: <unknown>` line getmail6 always writes first (with
/// `delivered_to = false` and `received = false` it is the only line it adds; the sender is
/// `unknown` because these messages have neither `Return-Path:` nor `Sender:`). Panics when the
/// line is not there.
fn strip_getmail_return_path(msg: &[u8]) -> Vec<u8> {
    const LINE: &[u8] = b"Return-Path: <unknown>\n";
    assert!(
        msg.starts_with(LINE),
        "getmail6 delivery does not start with {:?}: {:?}",
        String::from_utf8_lossy(LINE),
        String::from_utf8_lossy(&msg[..msg.len().min(300)])
    );
    msg[LINE.len()..].to_vec()
}

/// One benchmark scenario: the same job for every tool in `tools`.
struct Scenario {
    /// Short name for directories.
    key: &'static str,
    /// The label in the table.
    title: String,
    /// The server accounts and, for each, the messages in its mailbox.
    accounts: Vec<(String, Vec<Vec<u8>>)>,
    /// Implicit TLS on the pop3s port (else plain POP3 with USER/PASS).
    tls: bool,
    /// Keep mode, no-op second poll timed (else fetch-and-delete).
    keep: bool,
    /// Relay into Postfix (else a Maildir per account).
    smtp: bool,
    /// Deliver over LMTP into the same Dovecot's mailbox `Job::lmtp_to` (on its Unix socket).
    lmtp: bool,
    tools: &'static [Tool],
}

fn scenarios(s: &Sizes) -> Vec<Scenario> {
    let small = |base: usize| -> Vec<Vec<u8>> {
        (0..s.small_count)
            .map(|i| expected(&message(base + i, s.small_size)))
            .collect()
    };
    let one = |user: &str, msgs: Vec<Vec<u8>>| vec![(user.to_owned(), msgs)];
    let kib = s.small_size / 1024;
    let n = s.small_count;
    vec![
        Scenario {
            key: "plain",
            title: format!("{n} x {kib} KB, plain POP3"),
            accounts: one("plain", small(100_000)),
            tls: false,
            keep: false,
            smtp: false,
            lmtp: false,
            tools: ALL_TOOLS,
        },
        Scenario {
            key: "tls",
            title: format!("{n} x {kib} KB, TLS"),
            accounts: one("tls", small(200_000)),
            tls: true,
            keep: false,
            smtp: false,
            lmtp: false,
            tools: ALL_TOOLS,
        },
        Scenario {
            key: "noop",
            title: format!("no-op poll, {n} kept"),
            accounts: one("keep", small(300_000)),
            tls: true,
            keep: true,
            smtp: false,
            lmtp: false,
            tools: ALL_TOOLS,
        },
        Scenario {
            key: "big",
            title: format!("{} x {} MB, TLS", s.big_count, s.big_size / (1024 * 1024)),
            accounts: one(
                "big",
                (0..s.big_count)
                    .map(|i| expected(&message(400_000 + i, s.big_size)))
                    .collect(),
            ),
            tls: true,
            keep: false,
            smtp: false,
            lmtp: false,
            tools: ALL_TOOLS,
        },
        Scenario {
            key: "accounts",
            title: format!("{} accounts x {}, TLS", s.accounts, s.per_account),
            accounts: (0..s.accounts)
                .map(|a| {
                    let msgs = (0..s.per_account)
                        .map(|i| expected(&message(500_000 + a * 1000 + i, s.small_size)))
                        .collect();
                    (format!("acct{a:03}"), msgs)
                })
                .collect(),
            tls: true,
            keep: false,
            smtp: false,
            lmtp: false,
            tools: ALL_TOOLS,
        },
        Scenario {
            key: "smtp",
            title: format!("{n} x {kib} KB, SMTP relay"),
            accounts: one("relay", small(600_000)),
            tls: true,
            keep: false,
            smtp: true,
            lmtp: false,
            tools: &[Tool::Popfetch, Tool::Fetchmail],
        },
        Scenario {
            key: "lmtp",
            title: format!("{n} x {kib} KB, LMTP into Dovecot"),
            accounts: one("lmtpsrc", small(700_000)),
            tls: true,
            keep: false,
            smtp: false,
            lmtp: true,
            tools: &[Tool::Popfetch, Tool::Fetchmail],
        },
    ]
}

/// Resources of one timed run (summed over the processes of a run, peak RSS their maximum).
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    wall: f64,
    rss_kib: u64,
    cpu: f64,
}

/// A process to run for a tool: its arguments and whether it runs as `nobody`.
struct Invocation {
    argv: Vec<OsString>,
    as_nobody: bool,
    home: PathBuf,
}

/// What [`Invocation::run`] saw of one process.
struct Finished {
    code: Option<i32>,
    output: String,
    sample: Sample,
}

impl Invocation {
    /// Runs the process under `/usr/bin/time`, which reports its peak RSS and CPU time (user +
    /// system, the children it waited for included, e.g. fetchmail's procmail; for RSS the
    /// largest of them), with `timeout` killing it after [`RUN_TIMEOUT`]. The wall time is
    /// taken here, from spawn to exit: it includes the start-up of `time`, `timeout` and, for
    /// the old fetchers, `setpriv`, a millisecond or two.
    ///
    /// Why not `wait4` on a direct child: Linux carries the parent's peak RSS over a fork
    /// (and `posix_spawn`) and exec into the child's `ru_maxrss`, so every tool would report at
    /// least this test process's size (hundreds of MiB while the 20 MB messages are held).
    /// `time` is small, and reports only what its own child used.
    fn run(&self, stats: &Path) -> Finished {
        let mut cmd = Command::new("/usr/bin/time");
        cmd.arg("--format")
            .arg(format!("{TIME_MARK} %x %M %U %S"))
            .arg("--output")
            .arg(stats)
            .arg("timeout")
            .args(["--signal=KILL", &RUN_TIMEOUT.as_secs().to_string()]);
        if self.as_nobody {
            cmd.args([
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--",
            ]);
            cmd.env("USER", "nobody").env("LOGNAME", "nobody");
        }
        cmd.args(&self.argv)
            .env("HOME", &self.home)
            .env("LC_ALL", "C")
            .env_remove("POPFETCH_LOG")
            .env_remove("POPFETCH_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null());
        let _ = fs::remove_file(stats);
        let start = Instant::now();
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?} (install GNU time): {e}"));
        let wall = start.elapsed().as_secs_f64();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report = fs::read_to_string(stats).unwrap_or_default();
        let fields: Vec<&str> = report
            .lines()
            .find_map(|l| l.strip_prefix(TIME_MARK))
            .unwrap_or_else(|| panic!("{cmd:?}: no report from time: {report:?}\n{output}"))
            .split_whitespace()
            .collect();
        let num = |i: usize| -> f64 {
            fields[i]
                .parse()
                .unwrap_or_else(|e| panic!("time report {report:?}: {e}"))
        };
        let code = out.status.code();
        assert!(
            code != Some(124) && code != Some(137),
            "{:?} killed after {RUN_TIMEOUT:?}; output:\n{output}",
            self.argv
        );
        Finished {
            code,
            output,
            sample: Sample {
                wall,
                rss_kib: num(1) as u64,
                cpu: num(2) + num(3),
            },
        }
    }
}

/// Runs the invocations of one poll in sequence, asserting each exits with one of `ok_codes`;
/// the sample is their total (peak RSS: the maximum). `Err` only for getmail6's known race
/// (see [`is_getmail6_race`]), which the caller retries; any other failure panics.
fn run_poll(
    tool: Tool,
    label: &str,
    invocations: &[Invocation],
    stats: &Path,
    ok_codes: &[i32],
) -> Result<Sample, String> {
    let mut total = Sample::default();
    for inv in invocations {
        let done = inv.run(stats);
        if tool == Tool::Getmail6 && done.code != Some(0) && is_getmail6_race(&done.output) {
            return Err(done.output);
        }
        assert!(
            done.code.is_some_and(|c| ok_codes.contains(&c)),
            "{label}: {:?} exited with {:?} (want one of {ok_codes:?}); output:\n{}",
            inv.argv,
            done.code,
            done.output
        );
        total.wall += done.sample.wall;
        total.cpu += done.sample.cpu;
        total.rss_kib = total.rss_kib.max(done.sample.rss_kib);
    }
    Ok(total)
}

/// getmail6 6.18 delivers each message in a forked child and installs its SIGCHLD handler only
/// after `fork()` returned (`ForkingBase.forkchild`, then `_prepare_child`); when the child
/// exits before the parent waits (seen on a loaded machine), the notification is lost and
/// getmail waits out its `timeout` and fails with "operation error (waiting child pid N timed
/// out)" (exit 127). That is a bug of getmail6, not of the benchmark: such a run is discarded
/// and repeated (and noted under the table).
fn is_getmail6_race(output: &str) -> bool {
    output.contains("operation error (waiting child pid") && output.contains("timed out)")
}

/// How often a run is tried before a getmail6 race fails the test.
const ATTEMPTS: usize = 3;

/// The parameters every tool's configuration is written from.
struct Job<'a> {
    dovecot: &'a Dovecot,
    scenario: &'a Scenario,
    /// The run's own directory (fresh, under `CARGO_TARGET_TMPDIR`).
    dir: &'a Path,
    /// Postfix's SMTP port, for a relay scenario.
    smtp_port: u16,
    /// The Dovecot user an LMTP scenario delivers to.
    lmtp_to: String,
}

impl Job<'_> {
    fn port(&self) -> u16 {
        if self.scenario.tls {
            self.dovecot.pop3s_port()
        } else {
            self.dovecot.pop3_port()
        }
    }

    /// `localhost` for TLS (the certificate's name), the address itself for plain POP3.
    fn host(&self) -> &'static str {
        if self.scenario.tls {
            "localhost"
        } else {
            "127.0.0.1"
        }
    }

    fn ca(&self) -> String {
        path_str(self.dovecot.ca_file())
    }

    fn users(&self) -> impl Iterator<Item = &str> {
        self.scenario.accounts.iter().map(|(u, _)| u.as_str())
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user)
    }
}

/// Writes the tool's configuration for `job` into the run directory and returns what to run
/// for one poll.
fn prepare(tool: Tool, job: &Job) -> Vec<Invocation> {
    for d in ["home", "state", "mail"] {
        mkdir(&job.dir.join(d));
    }
    if !job.scenario.smtp {
        for user in job.users() {
            let m = job.maildir(user);
            for sub in ["", "new", "cur", "tmp"] {
                mkdir(&m.join(sub));
            }
        }
    }
    let invocations = match tool {
        Tool::Popfetch => prepare_popfetch(job),
        Tool::Mpop => prepare_mpop(job),
        Tool::Fetchmail => prepare_fetchmail(job),
        Tool::Getmail6 => prepare_getmail6(job),
    };
    if tool != Tool::Popfetch {
        chown_tree(job.dir, nobody_ids());
    }
    invocations
}

/// popfetch: one config with every account, one `popfetch fetch`.
fn prepare_popfetch(job: &Job) -> Vec<Invocation> {
    let mut text = format!("state_dir = \"{}\"\n", path_str(&job.dir.join("state")));
    for user in job.users() {
        let tls = if job.scenario.tls {
            format!("tls = \"implicit\"\nca_file = \"{}\"\n", job.ca())
        } else {
            "tls = \"none\"\nauth = \"user\"\nallow_plaintext_auth = true\n".to_owned()
        };
        let deliver = if job.scenario.smtp {
            format!(
                "{{ smtp = {{ host = \"127.0.0.1\", port = {}, to = [\"{RELAY_TO}\"] }} }}",
                job.smtp_port
            )
        } else if job.scenario.lmtp {
            format!(
                "{{ lmtp = {{ socket = \"{}\", to = [\"{}\"] }} }}",
                path_str(&job.dovecot.lmtp_socket()),
                job.lmtp_to
            )
        } else {
            format!("{{ maildir = \"{}\" }}", path_str(&job.maildir(user)))
        };
        write!(
            text,
            "\n[[account]]\nname = \"{user}\"\nhost = \"{}\"\nport = {}\n{tls}\
             user = \"{user}\"\npassword = \"{PASSWORD}\"\nkeep = {}\ndeliver = {deliver}\n",
            job.host(),
            job.port(),
            job.scenario.keep
        )
        .unwrap();
    }
    let config = job.dir.join("config.toml");
    write_private(&config, &text);
    vec![Invocation {
        argv: vec![
            env!("CARGO_BIN_EXE_popfetch").into(),
            "-c".into(),
            config.into(),
            "fetch".into(),
        ],
        as_nobody: false,
        home: job.dir.join("home"),
    }]
}

/// mpop: one rc file with every account, one `mpop -q ACCOUNT` process per account.
fn prepare_mpop(job: &Job) -> Vec<Invocation> {
    assert!(!job.scenario.smtp, "mpop has no SMTP delivery");
    let tls = if job.scenario.tls {
        format!("tls on\ntls_starttls off\ntls_trust_file {}\n", job.ca())
    } else {
        "tls off\nauth user\n".to_owned()
    };
    let mut text = format!(
        "defaults\nhost {}\nport {}\n{tls}password {PASSWORD}\nkeep {}\nreceived_header off\n\
         uidls_file {}/%U.uidls\n",
        job.host(),
        job.port(),
        if job.scenario.keep { "on" } else { "off" },
        path_str(&job.dir.join("state"))
    );
    for user in job.users() {
        write!(
            text,
            "\naccount {user}\nuser {user}\ndelivery maildir {}\n",
            path_str(&job.maildir(user))
        )
        .unwrap();
    }
    let rc = job.dir.join("mpoprc");
    write_private(&rc, &text);
    job.users()
        .map(|user| Invocation {
            argv: vec![
                "/usr/bin/mpop".into(),
                "-C".into(),
                rc.clone().into(),
                "-q".into(),
                user.into(),
            ],
            as_nobody: true,
            home: job.dir.join("home"),
        })
        .collect()
}

/// fetchmail: one rc file with one `poll` entry holding every account, one process; delivery
/// through procmail (one rcfile per account) or SMTP into Postfix.
fn prepare_fetchmail(job: &Job) -> Vec<Invocation> {
    let s = job.scenario;
    let mut text = String::from("set no syslog\nset invisible\n\n");
    writeln!(
        text,
        "poll {} with proto POP3 service {}{}{}",
        job.host(),
        job.port(),
        if s.keep { " uidl" } else { "" },
        if s.tls { "" } else { " auth password" }
    )
    .unwrap();
    let procmail = job.dir.join("procmail");
    mkdir(&procmail);
    for user in job.users() {
        let tls = if s.tls {
            format!("ssl sslcertck sslcertfile \"{}\"", job.ca())
        } else {
            "sslproto '' no sslcertck".to_owned()
        };
        let mode = if s.keep { "keep" } else { "fetchall no keep" };
        let deliver = if s.smtp {
            format!(
                "smtphost \"127.0.0.1/{}\" smtpname \"{RELAY_TO}\"",
                job.smtp_port
            )
        } else if s.lmtp {
            // An absolute smtphost is a Unix socket; `lmtp` speaks LMTP to it.
            format!(
                "lmtp smtphost \"{}\" smtpname \"{}\"",
                path_str(&job.dovecot.lmtp_socket()),
                job.lmtp_to
            )
        } else {
            let rc = procmail.join(format!("{user}.rc"));
            write_private(
                &rc,
                &format!(
                    "MAILDIR={}\nDEFAULT={}/\n",
                    path_str(&procmail),
                    path_str(&job.maildir(user))
                ),
            );
            format!("mda \"/usr/bin/procmail -m {}\"", path_str(&rc))
        };
        write!(
            text,
            "    user \"{user}\" there with password \"{PASSWORD}\"\n        options {tls} {mode} \
             no rewrite\n        {deliver}\n"
        )
        .unwrap();
    }
    let rc = job.dir.join("fetchmailrc");
    write_private(&rc, &text);
    let state = job.dir.join("state");
    vec![Invocation {
        argv: vec![
            "/usr/bin/fetchmail".into(),
            "-f".into(),
            rc.into(),
            "-i".into(),
            state.join("fetchids").into(),
            "--pidfile".into(),
            state.join("fetchmail.pid").into(),
            "--nodetach".into(),
            "--nosyslog".into(),
            "--silent".into(),
        ],
        as_nobody: true,
        home: job.dir.join("home"),
    }]
}

/// getmail6: one rc file per account, all given to one `getmail` process. `timeout = 30`
/// (default 180 s) bounds socket operations and also how long getmail waits for a delivery
/// child whose exit it missed (see [`is_getmail6_race`]).
fn prepare_getmail6(job: &Job) -> Vec<Invocation> {
    assert!(!job.scenario.smtp, "getmail6 has no SMTP delivery");
    let s = job.scenario;
    let gdir = job.dir.join("getmail");
    mkdir(&gdir);
    let mut argv: Vec<OsString> = vec![
        "/usr/bin/getmail".into(),
        "--getmaildir".into(),
        gdir.clone().into(),
        "--quiet".into(),
    ];
    for user in job.users() {
        let retriever = if s.tls {
            format!("type = SimplePOP3SSLRetriever\nca_certs = {}\n", job.ca())
        } else {
            "type = SimplePOP3Retriever\n".to_owned()
        };
        let text = format!(
            "[retriever]\n{retriever}server = {}\nport = {}\nusername = {user}\n\
             password = {PASSWORD}\ntimeout = 30\n\n\
             [destination]\ntype = Maildir\npath = {}/\n\n\
             [options]\nverbose = 0\ndelete = {}\nread_all = {}\n\
             delivered_to = false\nreceived = false\n",
            job.host(),
            job.port(),
            path_str(&job.maildir(user)),
            !s.keep,
            !s.keep,
        );
        let rc = gdir.join(format!("{user}.rc"));
        write_private(&rc, &text);
        argv.push("--rcfile".into());
        argv.push(rc.into());
    }
    vec![Invocation {
        argv,
        as_nobody: true,
        home: job.dir.join("home"),
    }]
}

/// The exit codes that mean success for `tool`: fetchmail exits 1 for "no mail", which is the
/// expected outcome of the no-op poll (and only there).
fn ok_codes(tool: Tool, noop: bool) -> &'static [i32] {
    match (tool, noop) {
        (Tool::Fetchmail, true) => &[1],
        _ => &[0],
    }
}

/// Asserts that `files` (raw delivered messages), unwrapped by `unwrap`, are exactly `sources`,
/// each once, in any order.
fn assert_same_messages(
    label: &str,
    files: impl IntoIterator<Item = (String, Vec<u8>)>,
    sources: &[Vec<u8>],
    unwrap: impl Fn(&[u8]) -> Vec<u8>,
) {
    let mut want: HashMap<&[u8], usize> = HashMap::new();
    for m in sources {
        *want.entry(m.as_slice()).or_default() += 1;
    }
    let mut got_count = 0;
    for (name, raw) in files {
        got_count += 1;
        let msg = unwrap(&raw);
        match want.get_mut(msg.as_slice()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => {
                let subject = msg
                    .split(|&b| b == b'\n')
                    .find(|l| l.starts_with(b"Subject: "))
                    .map(|l| String::from_utf8_lossy(l).into_owned());
                let twin = subject.as_ref().and_then(|s| {
                    sources
                        .iter()
                        .find(|m| m.split(|&b| b == b'\n').any(|l| l == s.as_bytes()))
                });
                let diff_at = twin.map(|t| {
                    t.iter()
                        .zip(&msg)
                        .position(|(a, b)| a != b)
                        .unwrap_or(t.len().min(msg.len()))
                });
                panic!(
                    "{label}: delivered {name} ({} bytes, {subject:?}) is not one of the source \
                     messages (or a duplicate); source with that subject: {} bytes, first \
                     difference at byte {diff_at:?}; delivered starts with:\n{}",
                    msg.len(),
                    twin.map_or(0, |t| t.len()),
                    String::from_utf8_lossy(&raw[..raw.len().min(500)])
                );
            }
        }
    }
    assert_eq!(
        got_count,
        sources.len(),
        "{label}: number of delivered messages"
    );
}

/// The files of a Maildir (`new/` and `cur/`; `tmp/` must be empty), read one at a time.
fn maildir_files(maildir: &Path) -> impl Iterator<Item = (String, Vec<u8>)> {
    let tmp = maildir.join("tmp");
    let leftovers: Vec<_> = fs::read_dir(&tmp)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", tmp.display()))
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "{}: left in tmp/: {leftovers:?}",
        maildir.display()
    );
    let mut paths = Vec::new();
    for sub in ["new", "cur"] {
        let d = maildir.join(sub);
        for e in fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()))
            .filter_map(Result::ok)
        {
            paths.push(e.path());
        }
    }
    paths.into_iter().map(|p| {
        let raw = fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        (p.display().to_string(), raw)
    })
}

/// Checks what a poll of `job` delivered (every account's Maildir, or Postfix's).
fn verify_delivery(tool: Tool, job: &Job, postfix: &Postfix, label: &str) {
    let s = job.scenario;
    if s.smtp {
        let sources: Vec<Vec<u8>> = s.accounts.iter().flat_map(|(_, m)| m.clone()).collect();
        let got = postfix.wait_for_within(sources.len(), POSTFIX_TIMEOUT);
        assert_same_messages(
            label,
            got.into_iter()
                .enumerate()
                .map(|(i, m)| (format!("Postfix message {i}"), m)),
            &sources,
            |raw| tool.unwrap_delivered(&strip_postfix_headers(raw)),
        );
    } else if s.lmtp {
        let sources: Vec<Vec<u8>> = s.accounts.iter().flat_map(|(_, m)| m.clone()).collect();
        // A tool that quits before reading every reply after the data leaves the server still
        // storing: said here, since its wall time then ends before the delivery does.
        let t = Instant::now();
        while job.dovecot.message_count(&job.lmtp_to) < sources.len()
            && t.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let late = t.elapsed().as_secs_f64();
        let got = job.dovecot.message_count(&job.lmtp_to);
        if got < sources.len() {
            let left: usize = job.users().map(|u| job.dovecot.message_count(u)).sum();
            eprintln!(
                "bench: {label}: {got} of {} delivered over LMTP, {left} left on the POP3 server\n{}",
                sources.len(),
                job.dovecot
                    .log()
                    .lines()
                    .filter(|l| l.contains("lmtp"))
                    .filter(|l| l.contains("rror") || l.contains("arning") || l.contains("Fatal"))
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if late > 0.1 {
            eprintln!(
                "bench: {label}: the last LMTP deliveries arrived {late:.2} s after the tool exited"
            );
        }
        assert_same_messages(
            label,
            maildir_files(&job.dovecot.maildir(&job.lmtp_to)),
            &sources,
            |raw| tool.unwrap_delivered(&strip_dovecot_lmtp(raw)),
        );
    } else {
        for (user, sources) in &s.accounts {
            assert_same_messages(
                &format!("{label}, account {user}"),
                maildir_files(&job.maildir(user)),
                sources,
                |raw| tool.unwrap_delivered(raw),
            );
        }
    }
}

/// Removes the three fields Dovecot's LMTP puts first (Return-Path, Delivered-To and its
/// Received, folded over several lines), asserting they are there.
fn strip_dovecot_lmtp(msg: &[u8]) -> Vec<u8> {
    let mut m = msg;
    for name in [&b"Return-Path: "[..], b"Delivered-To: ", b"Received: from "] {
        assert!(
            m.starts_with(name),
            "no {} from Dovecot's LMTP: {:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(&m[..m.len().min(200)])
        );
        let mut end = m
            .iter()
            .position(|&b| b == b'\n')
            .map_or(m.len(), |i| i + 1);
        while matches!(m.get(end), Some(b' ' | b'\t')) {
            end += m[end..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(m.len() - end, |i| i + 1);
        }
        m = &m[end..];
    }
    m.to_vec()
}

/// Empties Postfix's Maildir between relay runs.
fn clear_postfix(postfix: &Postfix) {
    for sub in ["new", "cur"] {
        let d = postfix.maildir().join(sub);
        for e in fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Runs one scenario: `runs` rounds of every tool in turn; returns each tool's samples and how
/// many of its runs were repeated (getmail6's race).
fn run_scenario(
    dovecot: &Dovecot,
    postfix: &Postfix,
    root: &Path,
    s: &Scenario,
    runs: usize,
) -> (Vec<Vec<Sample>>, Vec<usize>) {
    let mut samples = vec![Vec::new(); s.tools.len()];
    let mut retries = vec![0; s.tools.len()];
    if s.keep {
        // Kept messages stay: one fill serves every run; each run starts with fresh state.
        for (user, msgs) in &s.accounts {
            dovecot.deliver_many(user, msgs.iter().cloned());
        }
    }
    for run in 1..=runs {
        for (t, &tool) in s.tools.iter().enumerate() {
            let label = format!("{} / {} / run {run}", s.title, tool.name());
            let mut attempt = 1;
            let sample = loop {
                match run_once(dovecot, postfix, root, s, tool, run, &label) {
                    Ok(sample) => break sample,
                    Err(output) => {
                        assert!(
                            attempt < ATTEMPTS,
                            "{label}: getmail6's SIGCHLD race {ATTEMPTS} times in a row:\n{output}"
                        );
                        eprintln!(
                            "bench: {label}: getmail6 lost its delivery child's SIGCHLD \
                             ({}); discarding the run and repeating it",
                            output.trim()
                        );
                        retries[t] += 1;
                        attempt += 1;
                        // Start over from a full mailbox (getmail6 may have deleted some).
                        if !s.keep {
                            for (user, _) in &s.accounts {
                                empty_mailbox(dovecot, user);
                            }
                        }
                    }
                }
            };
            eprintln!(
                "bench: {label}: wall {:.3} s, peak RSS {:.1} MiB, CPU {:.2} s",
                sample.wall,
                sample.rss_kib as f64 / 1024.0,
                sample.cpu
            );
            samples[t].push(sample);
        }
    }
    (samples, retries)
}

/// One run of one tool: fill (delete mode), prepare a fresh directory, poll (twice in keep
/// mode, the second timed), verify, clean up. `Err` only as [`run_poll`] says.
fn run_once(
    dovecot: &Dovecot,
    postfix: &Postfix,
    root: &Path,
    s: &Scenario,
    tool: Tool,
    run: usize,
    label: &str,
) -> Result<Sample, String> {
    let stats = root.join("time-report");
    if !s.keep {
        for (user, msgs) in &s.accounts {
            assert_eq!(dovecot.message_count(user), 0, "{label}: mailbox not empty");
            dovecot.deliver_many(user, msgs.iter().cloned());
        }
    }
    let dir = root.join(format!("{}-{}-{run}", s.key, tool.name()));
    if dir.exists() {
        // A repeated run (getmail6's race): the failed attempt's files move aside.
        retire(&dir);
    }
    mkdir(&dir);
    let job = Job {
        dovecot,
        scenario: s,
        dir: &dir,
        smtp_port: postfix.port(),
        lmtp_to: lmtp_user(tool, run),
    };
    let invocations = prepare(tool, &job);
    let sample = if s.keep {
        let first = format!("{label}, first poll");
        run_poll(tool, &first, &invocations, &stats, ok_codes(tool, false))?;
        verify_delivery(tool, &job, postfix, &first);
        let sample = run_poll(tool, label, &invocations, &stats, ok_codes(tool, true))?;
        // Nothing new delivered, nothing deleted.
        verify_delivery(tool, &job, postfix, label);
        for (user, msgs) in &s.accounts {
            assert_eq!(
                dovecot.message_count(user),
                msgs.len(),
                "{label}: keep mode must leave the mailbox alone"
            );
        }
        sample
    } else {
        let sample = run_poll(tool, label, &invocations, &stats, ok_codes(tool, false))?;
        verify_delivery(tool, &job, postfix, label);
        for (user, _) in &s.accounts {
            assert_eq!(
                dovecot.message_count(user),
                0,
                "{label}: delete mode must empty the mailbox"
            );
        }
        sample
    };
    if s.smtp {
        clear_postfix(postfix);
    }
    retire(&dir);
    Ok(sample)
}

/// Sets a finished run's directory aside without deleting its files: they are truncated (their
/// space is freed) and renamed away, and everything is removed when the benchmark ends. On
/// ext4 without a journal (this machine's root file system) the kernel will not reuse an inode
/// freed in the last minutes and scans past every such inode for each file it creates, so
/// deleting thousands of files after each run made the next run, of whatever tool, pay for
/// the previous one's cleanup (measured: 2,000 Maildir deliveries took 0.4 s on fresh inodes,
/// 2.5 s after two rounds of deletions, nearly all of it in the kernel's inode allocator).
fn retire(dir: &Path) {
    fn truncate_all(dir: &Path) {
        for e in fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                truncate_all(&e.path());
            } else if t.is_file() {
                let _ = fs::OpenOptions::new()
                    .write(true)
                    .open(e.path())
                    .and_then(|f| f.set_len(0));
            }
        }
    }
    truncate_all(dir);
    let mut n = 0;
    let aside = loop {
        let p = dir.with_extension(format!("retired{n}"));
        if !p.exists() {
            break p;
        }
        n += 1;
    };
    fs::rename(dir, &aside).unwrap();
}

/// Removes every message from `user`'s mailbox on the server (between sessions).
fn empty_mailbox(dovecot: &Dovecot, user: &str) {
    for sub in ["new", "cur"] {
        let d = dovecot.maildir(user).join(sub);
        for e in fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            fs::remove_file(e.path()).unwrap();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The benchmark's directory under `CARGO_TARGET_TMPDIR`, on a file system of its own when
/// the machine allows: a fresh ext4 (with its journal, as Debian makes it) in a sparse image,
/// mounted through a loop device. The tools then write where nothing was deleted before and
/// where fsync behaves as on a common installation, whatever state the machine's own file
/// system is in (this one's root is ext4 without a journal, whose inode allocator scans past
/// every inode freed in the last minutes: the cost of one tool's files then depended on what
/// the previous test had deleted). Unmounted and removed when dropped.
struct Root {
    dir: PathBuf,
    image: Option<PathBuf>,
    /// What the run directories live on, for the report.
    what: String,
}

impl Root {
    fn new() -> Root {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("bench_compare-{}", std::process::id()));
        mkdir(&dir);
        let image = base.join(format!("bench_compare-{}.img", std::process::id()));
        let mounted = (|| {
            fs::File::create(&image).ok()?.set_len(8 << 30).ok()?;
            let mkfs = Command::new("mkfs.ext4")
                .args([
                    "-q",
                    "-F",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
                ])
                .arg(&image)
                .output()
                .ok()?;
            let mount = mkfs.status.success().then(|| {
                Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(&dir)
                    .output()
                    .ok()
            })??;
            mount.status.success().then_some(())
        })();
        match mounted {
            Some(()) => Root {
                dir,
                image: Some(image),
                what: "a fresh journaled ext4 (8 GiB loop-mounted image)".to_string(),
            },
            None => {
                let _ = fs::remove_file(&image);
                Root {
                    dir,
                    image: None,
                    what: format!(
                        "{} (no loop mount here: results depend on that file system's state)",
                        base.display()
                    ),
                }
            }
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(image) = &self.image {
            let _ = Command::new("umount").arg(&self.dir).output();
            let _ = fs::remove_file(image);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    compare_with_mpop_fetchmail_getmail6();
}

/// The comparison (a `harness = false` benchmark: `cargo bench --bench compare`).
fn compare_with_mpop_fetchmail_getmail6() {
    let started = Instant::now();
    let sizes = Sizes::from_env();
    let root = Root::new();
    eprintln!("bench: run directories on {}", root.what);
    // `nobody` must reach its run directories below.
    for dir in root.dir.ancestors() {
        let mode = fs::metadata(dir)
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} is not traversable by others: the old fetchers run as nobody",
            dir.display()
        );
    }
    let dovecot = Dovecot::start_with(dovecot::Options {
        lmtp: true,
        ..dovecot::Options::default()
    });
    let postfix = Postfix::start();
    // POPFETCH_BENCH_ONLY=noop,accounts runs just those scenarios (keys as in `scenarios`).
    let only = std::env::var("POPFETCH_BENCH_ONLY").unwrap_or_default();
    let mut scenarios = scenarios(&sizes);
    if !only.is_empty() {
        scenarios.retain(|s| only.split(',').any(|k| k.trim() == s.key));
        assert!(
            !scenarios.is_empty(),
            "POPFETCH_BENCH_ONLY={only} names no scenario"
        );
    }
    // POPFETCH_BENCH_TOOLS=popfetch,mpop runs just those tools (for quick comparisons).
    let tools = std::env::var("POPFETCH_BENCH_TOOLS").unwrap_or_default();
    if !tools.is_empty() {
        for s in &mut scenarios {
            let keep: Vec<Tool> = s
                .tools
                .iter()
                .copied()
                .filter(|t| tools.split(',').any(|n| n.trim() == t.name()))
                .collect();
            s.tools = Box::leak(keep.into_boxed_slice());
        }
        scenarios.retain(|s| !s.tools.is_empty());
    }
    for s in &scenarios {
        for (user, _) in &s.accounts {
            dovecot.add_user(user, PASSWORD);
        }
        if s.lmtp {
            for run in 1..=sizes.runs {
                for &tool in s.tools {
                    dovecot.add_user(&lmtp_user(tool, run), PASSWORD);
                }
            }
        }
    }
    let mut table = Vec::new();
    let mut notes = Vec::new();
    for s in &scenarios {
        let (samples, retries) = run_scenario(&dovecot, &postfix, &root.dir, s, sizes.runs);
        for (&tool, &n) in s.tools.iter().zip(&retries) {
            if n > 0 {
                notes.push(format!(
                    "{} / {}: {n} run(s) discarded and repeated (getmail6's SIGCHLD race)",
                    s.title,
                    tool.name()
                ));
            }
        }
        let med: Vec<Sample> = samples
            .iter()
            .map(|v| Sample {
                wall: median(v.iter().map(|x| x.wall).collect()),
                rss_kib: median(v.iter().map(|x| x.rss_kib as f64).collect()) as u64,
                cpu: median(v.iter().map(|x| x.cpu).collect()),
            })
            .collect();
        let ours = s
            .tools
            .iter()
            .position(|&t| t == Tool::Popfetch)
            .map(|i| med[i].wall)
            .expect("popfetch is in every scenario");
        for (&tool, m) in s.tools.iter().zip(&med) {
            let name = match (s.key, tool) {
                ("accounts", Tool::Mpop) => "mpop (1 proc/account)",
                _ => tool.name(),
            };
            table.push((s.title.clone(), name, *m, ours / m.wall));
        }
    }
    let mut out = format!(
        "\nbench_compare ({} sizes, {} run{} per tool, medians; ratio = popfetch wall / tool wall)\n",
        if sizes.full { "full" } else { "small" },
        sizes.runs,
        if sizes.runs == 1 { "" } else { "s" }
    );
    let w = table.iter().map(|r| r.0.len()).max().unwrap_or(8).max(8);
    writeln!(
        out,
        "{:<w$} | {:<21} | {:>7} | {:>12} | {:>7} | {:>14}",
        "scenario", "tool", "wall s", "peak RSS MiB", "CPU s", "popfetch ratio"
    )
    .unwrap();
    writeln!(out, "{}", "-".repeat(w + 77)).unwrap();
    for (scenario, tool, m, ratio) in &table {
        writeln!(
            out,
            "{scenario:<w$} | {tool:<21} | {:>7.3} | {:>12.1} | {:>7.2} | {ratio:>14.2}",
            m.wall,
            m.rss_kib as f64 / 1024.0,
            m.cpu
        )
        .unwrap();
    }
    for note in &notes {
        writeln!(out, "note: {note}").unwrap();
    }
    writeln!(out, "run directories on {}", root.what).unwrap();
    writeln!(
        out,
        "total benchmark time {:.0} s",
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    eprintln!("{out}");
}

fn path_str(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 path").to_owned();
    assert!(
        !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\'),
        "path {s:?} cannot be written unquoted into the tools' rc files"
    );
    s
}

fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// Writes a config file with mode 0600 (fetchmail and mpop insist; it holds a password).
fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// The uid of `nobody` and gid of `nogroup`, the user `setpriv` runs the old fetchers as.
fn nobody_ids() -> (u32, u32) {
    fn lookup(file: &str, name: &str) -> u32 {
        fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|line| {
                    let mut fields = line.split(':');
                    (fields.next()? == name).then(|| fields.nth(1)?.parse().ok())?
                })
            })
            .unwrap_or_else(|| panic!("no {name} in {file}"))
    }
    (
        lookup("/etc/passwd", "nobody"),
        lookup("/etc/group", "nogroup"),
    )
}

/// Gives `dir` and everything below it to `uid:gid`.
fn chown_tree(dir: &Path, (uid, gid): (u32, u32)) {
    chown(dir, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {} (run as root): {e}", dir.display()));
    if dir.is_dir() {
        for e in fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            chown_tree(&e.path(), (uid, gid));
        }
    }
}
