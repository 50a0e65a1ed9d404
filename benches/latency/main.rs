//! The latency benchmark: popfetch, mpop and fetchmail polling one private Dovecot over implicit
//! TLS through a delay proxy (see [`proxy`]), at round trips of 10, 50 and 150 ms, in one run.
//!
//! ```sh
//! cargo bench --bench latency
//! POPFETCH_BENCH_RTTS=50 POPFETCH_BENCH_RUNS=5 cargo bench --bench latency   # one round trip, 5 runs
//! POPFETCH_BENCH_TOOLS=popfetch,mpop cargo bench --bench latency             # only these tools
//! ```
//!
//! Scenarios, each at every round trip:
//! - `noop`: a poll that finds nothing, 200 × 4 KB kept on the server. Each run starts from
//!   fresh state with a first poll through the proxy at no delay (it fetches all 200), then
//!   the second poll, at the round trip, is timed.
//! - `fetch`: fetch-and-delete of 200 × 4 KB into a Maildir, the mailbox refilled each run.
//!
//! The tools run interleaved (popfetch, mpop, fetchmail, popfetch, …), 3 runs each at 10 and
//! 50 ms and 1 at 150 ms (fetchmail takes a few round trips per message there), configured as
//! in the comparison benchmark (benches/common), and every run is verified the same way: the
//! Maildir holds exactly the source messages once each, byte for byte after removing what the
//! tool adds, the mailbox is empty after a fetch and untouched after a poll in keep mode.
//!
//! Reported, as medians: the wall time from spawn to exit, the wall time in round trips
//! (wall / RTT: process start-up and local delivery are in it, a few ms), popfetch's own count
//! of the round trips it waited for (from the `poll done: … (N round trips, …)` line of its
//! `-vv` log), and popfetch's wall time over each tool's. Only correctness is asserted.

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
mod proxy;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{
    Invocation, Job, PASSWORD, Root, Scenario, Tool, assert_same_messages, maildir_files, median,
    mkdir, ok_codes, prepare, print_report, retire,
};
use crate::dovecot::Dovecot;
use crate::harness::{expected, message};
use crate::proxy::DelayProxy;

/// Messages per mailbox, and their size.
const COUNT: usize = 200;
const SIZE: usize = 4096;
/// The tools measured.
const TOOLS: &[Tool] = &[Tool::Popfetch, Tool::Mpop, Tool::Fetchmail];

/// One timed run.
#[derive(Clone, Copy)]
struct Sample {
    wall: f64,
    /// popfetch's own count, from its log.
    round_trips: Option<u32>,
}

fn main() {
    let started = Instant::now();
    let rtts: Vec<(u64, usize)> = match std::env::var("POPFETCH_BENCH_RTTS") {
        Ok(v) if !v.is_empty() => v
            .split(',')
            .map(|ms| (ms.trim().parse().expect("POPFETCH_BENCH_RTTS: ms,ms,…"), 3))
            .collect(),
        _ => vec![(10, 3), (50, 3), (150, 1)],
    };
    let runs_override: Option<usize> = std::env::var("POPFETCH_BENCH_RUNS")
        .ok()
        .map(|v| v.parse().expect("POPFETCH_BENCH_RUNS: a number"));
    let wanted = std::env::var("POPFETCH_BENCH_TOOLS").unwrap_or_default();
    let tools: &'static [Tool] = Box::leak(
        TOOLS
            .iter()
            .copied()
            .filter(|t| wanted.is_empty() || wanted.split(',').any(|n| n.trim() == t.name()))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    assert!(
        !tools.is_empty(),
        "POPFETCH_BENCH_TOOLS={wanted} names no tool"
    );

    let root = Root::new("bench_latency");
    eprintln!("bench: run directories on {}", root.what);
    root.assert_traversable("the old fetchers run");
    let dovecot = Dovecot::start();
    let proxy = DelayProxy::start(dovecot.pop3s_port());
    let msgs = |base: usize| -> Vec<Vec<u8>> {
        (0..COUNT)
            .map(|i| expected(&message(base + i, SIZE)))
            .collect()
    };
    let scenarios = [
        Scenario {
            key: "noop",
            title: format!("no-op poll, {COUNT} kept"),
            accounts: vec![("keep".to_owned(), msgs(700_000))],
            tls: true,
            keep: true,
            smtp: false,
            lmtp: false,
            tools,
        },
        Scenario {
            key: "fetch",
            title: format!("{COUNT} x {} KB fetch+delete", SIZE / 1024),
            accounts: vec![("fetch".to_owned(), msgs(800_000))],
            tls: true,
            keep: false,
            smtp: false,
            lmtp: false,
            tools,
        },
    ];
    for s in &scenarios {
        for (user, m) in &s.accounts {
            dovecot.add_user(user, PASSWORD);
            if s.keep {
                // Kept messages stay: one fill serves every run.
                dovecot.deliver_many(user, m.iter().cloned());
            }
        }
    }

    // (rtt ms, scenario title, tool, median sample, runs)
    let mut table: Vec<(u64, String, Tool, Sample, usize)> = Vec::new();
    for &(rtt_ms, runs) in &rtts {
        let runs = runs_override.unwrap_or(runs);
        let rtt = Duration::from_millis(rtt_ms);
        for s in &scenarios {
            let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); tools.len()];
            for run in 1..=runs {
                for (t, &tool) in tools.iter().enumerate() {
                    let label = format!("{rtt_ms} ms / {} / {} / run {run}", s.title, tool.name());
                    let dir = root
                        .dir
                        .join(format!("{}-{rtt_ms}-{}-{run}", s.key, tool.name()));
                    let sample = run_once(&dovecot, &proxy, &root.dir, &dir, s, tool, rtt, &label);
                    eprintln!(
                        "bench: {label}: wall {:.3} s ({:.1} RTT){}",
                        sample.wall,
                        sample.wall / rtt.as_secs_f64(),
                        sample
                            .round_trips
                            .map(|n| format!(", {n} round trips counted"))
                            .unwrap_or_default()
                    );
                    samples[t].push(sample);
                }
            }
            for (&tool, v) in tools.iter().zip(&samples) {
                let wall = median(v.iter().map(|x| x.wall).collect());
                let round_trips = v
                    .iter()
                    .filter_map(|x| x.round_trips)
                    .map(f64::from)
                    .collect::<Vec<_>>();
                let round_trips = (!round_trips.is_empty()).then(|| median(round_trips) as u32);
                table.push((
                    rtt_ms,
                    s.title.clone(),
                    tool,
                    Sample { wall, round_trips },
                    runs,
                ));
            }
        }
    }
    print_table(&table, &root.what, started);
}

/// One run of one tool at one round trip: fill (fetch), prepare a fresh directory, poll (twice
/// in keep mode: the first at no delay), verify, set the directory aside.
#[allow(clippy::too_many_arguments)]
fn run_once(
    dovecot: &Dovecot,
    proxy: &DelayProxy,
    root: &Path,
    dir: &Path,
    s: &Scenario,
    tool: Tool,
    rtt: Duration,
    label: &str,
) -> Sample {
    let stats = root.join("time-report");
    let (user, sources) = &s.accounts[0];
    if !s.keep {
        assert_eq!(dovecot.message_count(user), 0, "{label}: mailbox not empty");
        dovecot.deliver_many(user, sources.iter().cloned());
    }
    mkdir(dir);
    let job = Job {
        dovecot,
        scenario: s,
        dir,
        smtp_port: 0,
        lmtp_to: String::new(),
        port: proxy.port(),
    };
    let mut invocations = prepare(tool, &job);
    assert_eq!(invocations.len(), 1, "one account, one process");
    let inv = &mut invocations[0];
    if tool == Tool::Popfetch {
        // Debug level: the summary line of a poll that finds nothing is logged there.
        inv.argv.insert(inv.argv.len() - 1, "-vv".into());
    }
    let verify = |what: &str| {
        assert_same_messages(
            &format!("{label}{what}"),
            maildir_files(&job.maildir(user)),
            sources,
            |raw| tool.unwrap_delivered(raw),
        );
    };
    if s.keep {
        proxy.set_rtt(Duration::ZERO);
        poll(inv, &stats, tool, false, &format!("{label}, first poll"));
        verify(", first poll");
    }
    proxy.set_rtt(rtt);
    let sample = poll(inv, &stats, tool, s.keep, label);
    verify("");
    let left = dovecot.message_count(user);
    if s.keep {
        assert_eq!(
            left,
            sources.len(),
            "{label}: keep mode must leave the mailbox alone"
        );
    } else {
        assert_eq!(left, 0, "{label}: delete mode must empty the mailbox");
    }
    retire(dir);
    sample
}

/// Runs one poll, asserting its exit code; popfetch's round trips come from its log.
fn poll(inv: &Invocation, stats: &Path, tool: Tool, noop: bool, label: &str) -> Sample {
    let done = inv.run(stats);
    let codes = ok_codes(tool, noop);
    assert!(
        done.code.is_some_and(|c| codes.contains(&c)),
        "{label}: {:?} exited with {:?} (want one of {codes:?}); output:\n{}",
        inv.argv,
        done.code,
        done.output
    );
    Sample {
        wall: done.sample.wall,
        round_trips: (tool == Tool::Popfetch).then(|| round_trips(&done.output, label)),
    }
}

/// N of popfetch's `poll done: … (N round trips, M ms)` line.
fn round_trips(log: &str, label: &str) -> u32 {
    let line = log
        .lines()
        .find(|l| l.contains("poll done:"))
        .unwrap_or_else(|| panic!("{label}: no `poll done` line in popfetch's log:\n{log}"));
    let at = line
        .find(" round trips")
        .expect("round trips in the poll line");
    let digits: String = line[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.chars().rev().collect::<String>().parse().unwrap()
}

fn print_table(table: &[(u64, String, Tool, Sample, usize)], root: &str, started: Instant) {
    let mut out = String::from(
        "\nbench_latency (implicit TLS through the delay proxy; medians; RTTs = wall / round trip; \
         counted = popfetch's own count; ratio = popfetch wall / tool wall)\n",
    );
    let w = table.iter().map(|r| r.1.len()).max().unwrap_or(8).max(8);
    writeln!(
        out,
        "{:>6} | {:<w$} | {:<9} | {:>4} | {:>7} | {:>6} | {:>7} | {:>14}",
        "RTT ms", "scenario", "tool", "runs", "wall s", "RTTs", "counted", "popfetch ratio"
    )
    .unwrap();
    writeln!(out, "{}", "-".repeat(w + 75)).unwrap();
    for (rtt_ms, title, tool, m, runs) in table {
        let ours = table
            .iter()
            .find(|r| r.0 == *rtt_ms && r.1 == *title && r.2 == Tool::Popfetch)
            .map(|r| r.3.wall);
        let ratio = ours.map_or_else(|| "-".to_owned(), |o| format!("{:.2}", o / m.wall));
        let counted = m
            .round_trips
            .map_or_else(|| "-".to_owned(), |n| n.to_string());
        writeln!(
            out,
            "{rtt_ms:>6} | {title:<w$} | {:<9} | {runs:>4} | {:>7.3} | {:>6.1} | {counted:>7} | \
             {ratio:>14}",
            tool.name(),
            m.wall,
            m.wall * 1000.0 / *rtt_ms as f64
        )
        .unwrap();
    }
    print_report(out, root, started);
}
