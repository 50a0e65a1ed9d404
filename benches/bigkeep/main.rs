//! A big mailbox kept on the server: 50,000 messages of 1 KB on one Dovecot account over
//! implicit TLS, fetched once in keep mode and then polled again and again with nothing new,
//! popfetch against mpop in one run.
//!
//! ```sh
//! cargo bench --bench bigkeep                          # 50,000 messages, 5 no-op polls each
//! POPFETCH_BENCH_MESSAGES=5000 POPFETCH_BENCH_POLLS=3 cargo bench --bench bigkeep
//! ```
//!
//! Each tool gets a fresh directory (Maildir, state, config) and first fetches every message
//! (timed once, checked byte for byte); then the tools take turns at no-op polls (popfetch,
//! mpop, popfetch, …), each checked to deliver nothing and leave the mailbox alone. Reported:
//! the first fetch, the median no-op poll (wall from spawn to exit; user + system CPU and peak
//! RSS from `/usr/bin/time`, see `common::Invocation::run`) and the size of the state file
//! after the last poll (popfetch's journal, mpop's UIDL file), with popfetch's ratio to mpop
//! on every column. Only correctness is asserted, never timings.

// The test fixtures, shared with the integration tests (tests/it); this binary uses a part.
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/it/support/dovecot.rs"]
mod dovecot;
#[allow(dead_code)]
#[path = "../../tests/it/support/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Instant;

use crate::common::*;
use crate::dovecot::Dovecot;
use crate::harness::{expected, message};

const TOOLS: &[Tool] = &[Tool::Popfetch, Tool::Mpop];
const USER: &str = "bigkeep";

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
        .unwrap_or(default)
}

fn main() {
    no_op_polls_of_a_big_kept_mailbox();
}

/// The sizes of the state files (`*.uidls`) under `dir`, summed.
fn state_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".uidls"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// One poll of `tool` (one process for either), asserting success.
fn poll(label: &str, invocations: &[Invocation], stats: &Path) -> Sample {
    assert_eq!(invocations.len(), 1, "one account, one process");
    let done = invocations[0].run(stats);
    assert!(
        done.code == Some(0),
        "{label}: {:?} exited with {:?}; output:\n{}",
        invocations[0].argv,
        done.code,
        done.output
    );
    eprintln!(
        "bench: {label}: wall {:.3} s, peak RSS {:.1} MiB, CPU {:.2} s",
        done.sample.wall,
        done.sample.rss_kib as f64 / 1024.0,
        done.sample.cpu
    );
    done.sample
}

/// The benchmark (`harness = false`: `cargo bench --bench bigkeep`).
fn no_op_polls_of_a_big_kept_mailbox() {
    let started = Instant::now();
    let count = env_count("POPFETCH_BENCH_MESSAGES", 50_000);
    let polls = env_count("POPFETCH_BENCH_POLLS", 5).max(1);
    let root = Root::new("bench_bigkeep");
    eprintln!("bench: run directories on {}", root.what);
    root.assert_traversable("mpop runs");
    let dovecot = Dovecot::start();
    dovecot.add_user(USER, PASSWORD);
    let scenario = Scenario {
        key: "bigkeep",
        title: format!("{count} x 1 KB kept, TLS"),
        accounts: vec![(
            USER.to_owned(),
            (0..count)
                .map(|i| expected(&message(800_000 + i, 1024)))
                .collect(),
        )],
        tls: true,
        keep: true,
        smtp: false,
        lmtp: false,
        tools: TOOLS,
    };
    let t = Instant::now();
    dovecot.deliver_many(USER, scenario.accounts[0].1.iter().cloned());
    eprintln!(
        "bench: {count} messages put into Dovecot in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let stats = root.dir.join("time-report");
    let port = Job::server_port(&dovecot, &scenario);
    let dirs: Vec<_> = TOOLS
        .iter()
        .map(|t| root.dir.join(format!("bigkeep-{}", t.name())))
        .collect();
    let jobs: Vec<Job> = dirs
        .iter()
        .map(|dir| {
            mkdir(dir);
            Job {
                dovecot: &dovecot,
                scenario: &scenario,
                dir,
                smtp_port: 0,
                port,
                lmtp_to: String::new(),
            }
        })
        .collect();
    let invocations: Vec<_> = TOOLS
        .iter()
        .zip(&jobs)
        .map(|(&t, job)| prepare(t, job))
        .collect();
    let check = |tool: Tool, job: &Job, label: &str| {
        assert_same_messages(
            label,
            maildir_files(&job.maildir(USER)),
            &scenario.accounts[0].1,
            |raw| tool.unwrap_delivered(raw),
        );
        assert_eq!(
            dovecot.message_count(USER),
            count,
            "{label}: keep mode must leave the mailbox alone"
        );
    };
    let mut first = Vec::new();
    for ((&tool, job), inv) in TOOLS.iter().zip(&jobs).zip(&invocations) {
        let label = format!("{} / {} / first fetch", scenario.title, tool.name());
        first.push(poll(&label, inv, &stats));
        check(tool, job, &label);
    }
    let mut noop = vec![Vec::new(); TOOLS.len()];
    for round in 1..=polls {
        for (t, (&tool, inv)) in TOOLS.iter().zip(&invocations).enumerate() {
            let label = format!("{} / {} / no-op poll {round}", scenario.title, tool.name());
            noop[t].push(poll(&label, inv, &stats));
        }
    }
    for (&tool, job) in TOOLS.iter().zip(&jobs) {
        check(
            tool,
            job,
            &format!("{} / {} / after", scenario.title, tool.name()),
        );
    }
    let state: Vec<u64> = jobs
        .iter()
        .map(|j| state_bytes(&j.dir.join("state")))
        .collect();
    let med: Vec<Sample> = noop
        .iter()
        .map(|v| Sample {
            wall: median(v.iter().map(|x| x.wall).collect()),
            rss_kib: median(v.iter().map(|x| x.rss_kib as f64).collect()) as u64,
            cpu: median(v.iter().map(|x| x.cpu).collect()),
        })
        .collect();

    let mut out = format!(
        "\nbench_bigkeep ({}; first fetch once, no-op poll: median of {polls}; \
         ratio = popfetch / mpop)\n",
        scenario.title
    );
    writeln!(
        out,
        "{:<16} | {:>9} | {:>7} | {:>8} | {:>9} | {:>7} | {:>8} | {:>11}",
        "tool", "fetch s", "CPU s", "RSS MiB", "no-op s", "CPU s", "RSS MiB", "state bytes"
    )
    .unwrap();
    writeln!(out, "{}", "-".repeat(96)).unwrap();
    let row = |out: &mut String, name: &str, f: [f64; 7], prec: usize| {
        writeln!(
            out,
            "{name:<16} | {:>9.p$} | {:>7.p$} | {:>8.p$} | {:>9.p$} | {:>7.p$} | {:>8.p$} | {:>11.q$}",
            f[0],
            f[1],
            f[2],
            f[3],
            f[4],
            f[5],
            f[6],
            p = prec,
            q = if prec == 2 { 2 } else { 0 },
        )
        .unwrap();
    };
    let fields = |t: usize| {
        [
            first[t].wall,
            first[t].cpu,
            first[t].rss_kib as f64 / 1024.0,
            med[t].wall,
            med[t].cpu,
            med[t].rss_kib as f64 / 1024.0,
            state[t] as f64,
        ]
    };
    for (t, &tool) in TOOLS.iter().enumerate() {
        row(&mut out, tool.name(), fields(t), 3);
    }
    let (ours, theirs) = (fields(0), fields(1));
    let ratio: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| if b > 0.0 { a / b } else { f64::NAN })
        .collect();
    row(
        &mut out,
        "popfetch / mpop",
        ratio.try_into().expect("seven columns"),
        2,
    );
    print_report(out, &root.what, started);
}
