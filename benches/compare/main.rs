//! The comparison benchmark: popfetch against the established fetchers mpop, fetchmail (with
//! procmail as its MDA) and getmail6, on the same mailboxes of one private Dovecot, in one run.
//!
//! ```sh
//! cargo bench --bench compare                             # small (every scenario, every tool)
//! POPFETCH_BENCH=full cargo bench --bench compare         # full sizes
//! POPFETCH_BENCH_ONLY=noop,accounts ...                    # only these scenarios (by key)
//! POPFETCH_BENCH_TOOLS=popfetch,mpop ...                    # only these tools
//! POPFETCH_BENCH_WRAP='perf record -g -o /tmp/prof/{tool}-{n}.data --' ...   # profile each run
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
//! 6. LMTP of 2,000 × 4 KB into the same Dovecot's LMTP socket, a fresh mailbox per run
//!    (popfetch and fetchmail's `lmtp` mode; the others have no LMTP); checked after removing the
//!    three fields Dovecot adds.
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
// What this benchmark shares with the latency one.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::dovecot::Dovecot;
use crate::harness::{expected, message};
use crate::postfix::{Postfix, strip_postfix_headers};

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
        // storing: wait for it (bounded), and say so, since its wall time then ends early.
        let t = Instant::now();
        while job.dovecot.message_count(&job.lmtp_to) < sources.len()
            && t.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let late = t.elapsed().as_secs_f64();
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

/// The Dovecot users the LMTP scenario delivers to: this prefix, the tool and the run, a
/// fresh mailbox each. Every one is made before the first run: Dovecot rereads its
/// passwd-file only when its modification time changes, so a user added in the same second as
/// the last change may stay unknown.
const LMTP_TO: &str = "lmtpdst";

fn lmtp_user(tool: Tool, run: usize) -> String {
    format!("{LMTP_TO}{}{run}", tool.name())
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
        let line_end = |from: usize| {
            m[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(m.len(), |i| from + i + 1)
        };
        let mut end = line_end(0);
        while matches!(m.get(end), Some(b' ' | b'\t')) {
            end = line_end(end);
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
        port: Job::server_port(dovecot, s),
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

/// Removes every message from `user`'s mailbox on the server (between sessions).
fn empty_mailbox(dovecot: &Dovecot, user: &str) {
    for sub in ["new", "cur"] {
        let d = dovecot.maildir(user).join(sub);
        for e in fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            fs::remove_file(e.path()).unwrap();
        }
    }
}

fn main() {
    compare_with_mpop_fetchmail_getmail6();
}

/// The comparison (a `harness = false` benchmark: `cargo bench --bench compare`).
fn compare_with_mpop_fetchmail_getmail6() {
    let started = Instant::now();
    let sizes = Sizes::from_env();
    let root = Root::new("bench_compare");
    eprintln!("bench: run directories on {}", root.what);
    root.assert_traversable("the old fetchers run");
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
    print_report(out, &root.what, started);
}
