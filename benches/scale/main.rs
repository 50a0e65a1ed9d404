//! The scale benchmark: one `popfetch daemon` over thousands of accounts, and the same daemon
//! against fetchmail's daemon and mpop over a thousand Dovecot accounts, in one run.
//!
//! ```sh
//! cargo bench --bench scale                                  # 10,000 scripted + 1,000 Dovecot accounts
//! POPFETCH_SCALE_ACCOUNTS=2000 POPFETCH_SCALE_DOVECOT=200 cargo bench --bench scale   # smaller
//! POPFETCH_SCALE_PARALLEL=64 POPFETCH_SCALE_MESSAGES=5 ...     # one max_parallel, 5 messages per account
//! POPFETCH_SCALE_PER_SERVER=4,16 ...                           # popfetch's limits in part 2
//! POPFETCH_SCALE_RTT=0,20,50 ...                               # part 2's round trips, in ms
//! POPFETCH_SCALE_DOVECOT_PROCS=per-session ...                 # Dovecot's default processes
//! POPFETCH_SCALE_ONLY=scripted (or dovecot) ...                # one part
//! ```
//!
//! Part 1, `scripted`: `POPFETCH_SCALE_ACCOUNTS` accounts (default 10,000) in 100 included
//! files, all at one POP3 server inside this process (see [`server`]: plain TCP, USER/PASS,
//! pipelining), delivering into one Maildir. For each `max_parallel` of
//! `POPFETCH_SCALE_PARALLEL` (default 16, 64, 256; `max_parallel_per_server` the same, since
//! every account is at one server) a fresh daemon with `interval = "24h"` and
//! `start_spread = "0s"` is started and measured:
//! - start-up: spawn to its `daemon started` line, and to the end of the first cycle (every
//!   account's first poll, each creating its state);
//! - a no-op cycle: SIGUSR1 (poll every account now) with every mailbox empty, until every
//!   account logged its `poll done` line (`popfetch::fetch=debug`), its wall time and the
//!   daemon's CPU over it (utime + stime from `/proc/PID/stat`) per account;
//! - a message cycle: every mailbox given `POPFETCH_SCALE_MESSAGES` (default 2) messages of
//!   2 KB, SIGUSR1 again; CPU per message is the cycle's CPU less the no-op cycle's, over the
//!   messages. The Maildir must then hold exactly those messages, byte for byte after the
//!   `Received:` trace, and the server none;
//! - RSS (`VmRSS`) after the first cycle and at the end, idle, and the peak (`VmHWM`).
//!
//! With the first `max_parallel` the config is also timed: `popfetch check` over it (every
//! file read and validated; median of 3), a reload after one included file of the 100 changed
//! (the daemon's own `elapsed_ms`, and from the write to its `config reloaded` line, which
//! holds the watcher's 300 ms debounce), and a SIGHUP reload of the unchanged files.
//!
//! Part 2, `dovecot`: `POPFETCH_SCALE_DOVECOT` accounts (default 1,000) of one private
//! Dovecot over plain POP3 (USER/PASS), keep mode, one 4 KB message each, at each round trip
//! of `POPFETCH_SCALE_RTT` (default 0 and 20 ms). Each tool fetches every message once
//! (checked byte for byte, as in benches/compare), then one cycle that finds nothing new is
//! measured:
//! - popfetch: a daemon with `interval = "24h"`, `start_spread = "0s"`, once per
//!   `max_parallel_per_server` of `POPFETCH_SCALE_PER_SERVER` (default 4, the default, then
//!   32 with `max_parallel` 32), SIGUSR1, until every account's `poll done`; its CPU from
//!   `/proc`;
//! - fetchmail: a daemon (`--daemon 3600 -v`) over one rc file with every account as a `user`
//!   of one `poll` entry, as `nobody`; woken by SIGUSR1, the cycle ends at its
//!   `sleeping at` line; its CPU from `/proc` (waited-for children included);
//! - mpop, at round trip 0 only: `mpop -q ACCOUNT` once per account, as `nobody`, under
//!   `/usr/bin/time`; wall and CPU summed over the processes (what a cron job over the
//!   accounts would cost). It is there for the CPU per account, which no delay changes.
//!
//! Why the round trip: on loopback a cycle is bound by the server, not the client. Each
//! session costs Dovecot CPU (with its default processes a login process and a mail process
//! are started per session, about 14 ms of CPU on this machine's two cores, whatever the
//! client), so a concurrent client cannot beat a sequential one by more than the server's
//! CPU allows. The case the daemon is for, a mail host fetching its users' mailboxes at
//! remote providers, pays a network round trip for each exchange: a sequential fetcher waits
//! for every one of them in turn, account after account, and a concurrent one overlaps them.
//! Above 0 the tools reach Dovecot through the delay proxy of the latency benchmark
//! (benches/latency/proxy.rs), the first, fetching, poll included, at no delay: popfetch's
//! state names a mailbox by host, port and user (and refuses a known mailbox under another
//! port), so both polls of every tool go to the one port; the round trip is set for the
//! measured cycle only. The proxy runs four threads
//! per connection; after each cycle they must all have ended.
//!
//! Dovecot runs its login processes in its documented high-performance mode and reuses its
//! mail processes (see [`DOVECOT_REUSE`]), the same for every tool: a provider's server has
//! more cores than these two shared ones, and with a process started per session Dovecot's
//! CPU, not the client, made every cycle on loopback (measured at 1,000 accounts: 14.4 to
//! 17.6 ms of Dovecot CPU per session with a process per session, 1.7 to 3.3 ms reused).
//! `POPFETCH_SCALE_DOVECOT_PROCS=per-session` keeps Dovecot's defaults. Dovecot's CPU over
//! each cycle (all its processes, from `/proc`) is in the table.
//!
//! The table at the end gives the numbers as measured, per round trip, and the ratios the
//! issue asks for: fetchmail's cycle over each row's at the same round trip, and popfetch's
//! CPU per account over mpop's. Timings are reported, never asserted; what each tool fetched
//! is verified.

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
#[path = "../latency/proxy.rs"]
mod proxy;
mod server;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    Job, PASSWORD, Root, Scenario, Tool, assert_same_messages, maildir_files, median, mkdir,
    path_str, prepare, print_report, retire, write_private,
};
use crate::dovecot::Dovecot;
use crate::harness::{expected, message, strip_received};
use crate::proxy::DelayProxy;
use crate::server::{Msg, Server};

/// The included files the scripted accounts are spread over.
const FILES: usize = 100;
/// Size of each message of the message cycle.
const MSG_SIZE: usize = 2048;
/// Bound for a cycle, a start or a reload; past it the benchmark fails with the log's tail.
const WAIT: Duration = Duration::from_secs(1200);
/// How often a log is read while waiting on it.
const TICK: Duration = Duration::from_millis(5);
/// Settling time before an idle reading.
const SETTLE: Duration = Duration::from_secs(1);

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
        .unwrap_or(default)
}

/// A comma-separated list of numbers from the environment, or `default`.
fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.split(',')
                .map(|p| {
                    p.trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("{name}={v}: {e}"))
                })
                .collect()
        })
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    let started = Instant::now();
    let accounts = env_num("POPFETCH_SCALE_ACCOUNTS", 10_000);
    let dovecot_accounts = env_num("POPFETCH_SCALE_DOVECOT", 1000);
    let messages = env_num("POPFETCH_SCALE_MESSAGES", 2);
    let parallel = env_list("POPFETCH_SCALE_PARALLEL", &[16, 64, 256]);
    let per_server = env_list("POPFETCH_SCALE_PER_SERVER", &[4, 32]);
    let rtts = env_list("POPFETCH_SCALE_RTT", &[0, 20]);
    let reuse = match std::env::var("POPFETCH_SCALE_DOVECOT_PROCS").as_deref() {
        Ok("reuse") | Ok("") | Err(_) => true,
        Ok("per-session") => false,
        Ok(other) => panic!("POPFETCH_SCALE_DOVECOT_PROCS={other}: reuse or per-session"),
    };
    let only = std::env::var("POPFETCH_SCALE_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    assert!(
        want("scripted") || want("dovecot"),
        "POPFETCH_SCALE_ONLY={only} names no part (scripted, dovecot)"
    );

    let root = Root::new("bench_scale");
    eprintln!("bench: run directories on {}", root.what);
    root.assert_traversable("the old fetchers run");
    let mut out = String::new();
    if want("scripted") {
        out.push_str(&scripted(&root.dir, accounts, messages, &parallel));
    }
    if want("dovecot") {
        out.push_str(&against_dovecot(
            &root.dir,
            dovecot_accounts,
            &per_server,
            &rtts,
            reuse,
        ));
    }
    print_report(out, &root.what, started);
}

// ---------------------------------------------------------------------------------------------
// Watching a process: its log and its /proc entries.

/// Counts the lines of a growing log file that contain given patterns, reading only what was
/// added since the last look.
struct LogWatch {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Lines that contain each pattern asked about so far.
    counts: Vec<(&'static str, usize)>,
    /// The last lines, for a failure's message.
    tail: Vec<String>,
    /// Lines that say something went wrong (by `is_bad`).
    bad: Vec<String>,
    is_bad: fn(&str) -> bool,
}

impl LogWatch {
    fn new(path: &Path, patterns: &[&'static str], is_bad: fn(&str) -> bool) -> LogWatch {
        LogWatch {
            path: path.to_owned(),
            offset: 0,
            partial: Vec::new(),
            counts: patterns.iter().map(|p| (*p, 0)).collect(),
            tail: Vec::new(),
            bad: Vec::new(),
            is_bad,
        }
    }

    fn read(&mut self) {
        let Ok(mut f) = fs::File::open(&self.path) else {
            return;
        };
        f.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut buf = Vec::new();
        self.offset += f.read_to_end(&mut buf).unwrap() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        for line in String::from_utf8_lossy(&whole).lines() {
            for (p, n) in &mut self.counts {
                if line.contains(*p) {
                    *n += 1;
                }
            }
            if (self.is_bad)(line) && self.bad.len() < 20 {
                self.bad.push(line.to_owned());
            }
            self.tail.push(line.to_owned());
        }
        let keep = self.tail.len().saturating_sub(20);
        self.tail.drain(..keep);
    }

    fn count(&self, pattern: &str) -> usize {
        self.counts
            .iter()
            .find(|(p, _)| *p == pattern)
            .map_or(0, |(_, n)| *n)
    }

    /// Waits until `pattern` has been seen `n` times in all; when it was.
    fn wait(&mut self, pattern: &str, n: usize, child: &mut Child, what: &str) -> Instant {
        let deadline = Instant::now() + WAIT;
        loop {
            self.read();
            if self.count(pattern) >= n {
                return Instant::now();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{what}: the process exited ({status}) before {n} lines with {pattern:?} \
                     (saw {}); log tail:\n{}",
                    self.count(pattern),
                    self.tail.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no {n} lines with {pattern:?} within {WAIT:?} (saw {}); log tail:\n{}",
                self.count(pattern),
                self.tail.join("\n")
            );
            std::thread::sleep(TICK);
        }
    }

    fn assert_clean(&mut self, what: &str) {
        self.read();
        assert!(
            self.bad.is_empty(),
            "{what}: the log says something failed:\n{}",
            self.bad.join("\n")
        );
    }
}

/// Fields of `/proc/PID/stat` (proc(5)): the parent's pid, and utime, stime, cutime, cstime
/// in clock ticks; `None` once the process is gone.
fn proc_stat(pid: u32) -> Option<(u32, [u64; 4])> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // `after` begins at field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    Some((f[1] as u32, [f[11], f[12], f[13], f[14]]))
}

/// Clock ticks to seconds.
fn tick_seconds(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// The CPU time (user + system) a process used, in seconds; with `children`, that of the
/// children it waited for too (fetchmail's procmail).
fn cpu_seconds(pid: u32, children: bool) -> f64 {
    let (_, [u, s, cu, cs]) = proc_stat(pid).expect("read /proc/PID/stat");
    tick_seconds(u + s + if children { cu + cs } else { 0 })
}

/// `VmRSS` and `VmHWM` (the peak) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {}", child.id());
}

/// A daemon this benchmark started: killed when dropped (a failed run must not leave it
/// polling, nor its files holding the run's file system).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Daemon {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Ends a daemon with SIGTERM, waiting for it (SIGKILL after a minute).
fn stop(mut child: Daemon) {
    signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the daemon did not end within a minute of SIGTERM");
}

/// Starts `popfetch -c CONFIG daemon`, its stderr into `log`.
fn spawn_popfetch(config: &Path, log: &Path, home: &Path) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_popfetch"))
            .arg("-c")
            .arg(config)
            .arg("daemon")
            .env("HOME", home)
            .env("LC_ALL", "C")
            .env_remove("POPFETCH_LOG")
            .env_remove("POPFETCH_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).expect("create the daemon's log"))
            .spawn()
            .expect("start popfetch daemon"),
    )
}

/// What in popfetch's log means a poll or the daemon failed.
fn popfetch_bad(line: &str) -> bool {
    line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("poll failed")
}

/// The daemon settings of every run: a day's interval so that only SIGUSR1 polls again,
/// every account's first poll at once, and each poll's `poll done` line in the log.
const DAEMON_GLOBALS: &str = "interval = \"24h\"\nstart_spread = \"0s\"\nlog_target = \
     \"stderr\"\nlog_level = \"info,popfetch::fetch=debug\"\n";
const POLL_DONE: &str = "poll done:";

// ---------------------------------------------------------------------------------------------
// Part 1: thousands of accounts at the scripted server.

/// One daemon's numbers at one `max_parallel`.
struct ScriptedRow {
    parallel: usize,
    to_started: f64,
    first_cycle: f64,
    noop_wall: f64,
    noop_cpu: f64,
    noop_peak_sessions: usize,
    msg_wall: f64,
    msg_cpu: f64,
    rss_after_first: u64,
    rss_idle_end: u64,
    rss_peak: u64,
}

/// The config timings, taken with the first `max_parallel`.
struct ConfigTimes {
    check: Vec<f64>,
    check_rss: u64,
    file_reload_wall: f64,
    hup_reload_wall: f64,
}

fn user_name(i: usize) -> String {
    format!("u{i:05}")
}

/// Writes the main config and its `FILES` included files for `n` accounts at `port`.
fn write_scripted_config(dir: &Path, n: usize, port: u16, parallel: usize) -> PathBuf {
    let state = dir.join("state");
    mkdir(&dir.join("conf.d"));
    mkdir(&state);
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let maildir = dir.join("mail");
    for sub in ["", "new", "cur", "tmp"] {
        mkdir(&maildir.join(sub));
    }
    let config = dir.join("config.toml");
    write_private(
        &config,
        &format!(
            "state_dir = \"{}\"\n{DAEMON_GLOBALS}max_parallel = {parallel}\n\
             max_parallel_per_server = {parallel}\ninclude = [\"conf.d/*.toml\"]\n\n\
             [defaults]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nauth = \"user\"\n\
             allow_plaintext_auth = true\npassword = \"{PASSWORD}\"\n\
             deliver = {{ maildir = \"{}\" }}\n",
            path_str(&state),
            path_str(&maildir)
        ),
    );
    let per = n.div_ceil(FILES);
    for f in 0..FILES {
        let mut text = String::new();
        for i in (f * per..((f + 1) * per).min(n)).map(user_name) {
            writeln!(text, "[[account]]\nname = \"{i}\"\nuser = \"{i}\"\n").unwrap();
        }
        write_private(&dir.join(format!("conf.d/users-{f:03}.toml")), &text);
    }
    config
}

fn scripted(root: &Path, n: usize, messages: usize, parallel: &[usize]) -> String {
    let server = Server::start((0..n).map(user_name), PASSWORD);
    eprintln!(
        "bench: scripted server on 127.0.0.1:{} with {n} users",
        server.port()
    );
    let mut rows = Vec::new();
    let mut config_times = None;
    for (run, &p) in parallel.iter().enumerate() {
        let dir = root.join(format!("scripted-{p}"));
        mkdir(&dir);
        let config = write_scripted_config(&dir, n, server.port(), p);
        let home = dir.join("home");
        mkdir(&home);
        if run == 0 {
            config_times = Some(check_times(&config, &home));
        }
        let log = dir.join("daemon.log");
        let mut watch = LogWatch::new(&log, &["daemon started", POLL_DONE], popfetch_bad);
        let label = format!("scripted, max_parallel {p}");

        // Start-up and the first cycle.
        let t0 = Instant::now();
        let mut child = spawn_popfetch(&config, &log, &home);
        let pid = child.id();
        let to_started = watch.wait("daemon started", 1, &mut child, &label) - t0;
        let first_cycle = watch.wait(POLL_DONE, n, &mut child, &label) - t0;
        std::thread::sleep(SETTLE);
        let rss_after_first = rss_kib(pid).0;
        server.take_counts();

        // A no-op cycle.
        let c0 = cpu_seconds(pid, false);
        let t = Instant::now();
        signal(&child, "USR1");
        let noop_wall = (watch.wait(POLL_DONE, 2 * n, &mut child, &label) - t).as_secs_f64();
        let noop_cpu = cpu_seconds(pid, false) - c0;
        let (_, noop_peak_sessions) = server.take_counts();
        std::thread::sleep(SETTLE);

        // A cycle with `messages` new messages in every mailbox.
        let mut sources = Vec::with_capacity(n * messages);
        for u in 0..n {
            let msgs: Vec<Msg> = (0..messages)
                .map(|k| {
                    let id = (run * n + u) * messages + k;
                    let data = expected(&message(id, MSG_SIZE));
                    sources.push(data.clone());
                    Msg::new(format!("scale-{id}"), data)
                })
                .collect();
            server.push(&user_name(u), msgs);
        }
        let c0 = cpu_seconds(pid, false);
        let t = Instant::now();
        signal(&child, "USR1");
        let msg_wall = (watch.wait(POLL_DONE, 3 * n, &mut child, &label) - t).as_secs_f64();
        let msg_cpu = cpu_seconds(pid, false) - c0;
        assert_eq!(
            server.remaining(),
            0,
            "{label}: messages left on the server"
        );
        assert_same_messages(&label, maildir_files(&dir.join("mail")), &sources, |raw| {
            strip_received(raw)
        });
        drop(sources);
        std::thread::sleep(SETTLE);
        let (rss_idle_end, rss_peak) = rss_kib(pid);

        if run == 0 {
            let ct = config_times.as_mut().unwrap();
            reload_times(&dir, &mut watch, &mut child, ct);
        }
        watch.assert_clean(&label);
        stop(child);
        let row = ScriptedRow {
            parallel: p,
            to_started: to_started.as_secs_f64(),
            first_cycle: first_cycle.as_secs_f64(),
            noop_wall,
            noop_cpu,
            noop_peak_sessions,
            msg_wall,
            msg_cpu,
            rss_after_first,
            rss_idle_end,
            rss_peak,
        };
        eprintln!(
            "bench: {label}: started {:.3} s, first cycle {:.2} s, no-op cycle {:.2} s \
             ({:.2} s CPU, {} sessions at most), message cycle {:.2} s ({:.2} s CPU), \
             RSS {} / {} KiB idle, {} KiB peak",
            row.to_started,
            row.first_cycle,
            row.noop_wall,
            row.noop_cpu,
            row.noop_peak_sessions,
            row.msg_wall,
            row.msg_cpu,
            row.rss_after_first,
            row.rss_idle_end,
            row.rss_peak
        );
        rows.push(row);
        retire(&dir);
    }
    scripted_table(n, messages, &rows, config_times.as_ref())
}

/// `popfetch check` three times over the config: wall times and the peak RSS (from `time`).
fn check_times(config: &Path, home: &Path) -> ConfigTimes {
    let mut check = Vec::new();
    let mut check_rss = 0;
    let stats = config.with_file_name("check.time");
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new("/usr/bin/time")
            .args(["--format", "%M", "--output"])
            .arg(&stats)
            .arg(env!("CARGO_BIN_EXE_popfetch"))
            .arg("-c")
            .arg(config)
            .arg("check")
            .env("HOME", home)
            .env_remove("POPFETCH_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run popfetch check");
        check.push(t.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "popfetch check failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rss: u64 = fs::read_to_string(&stats)
            .unwrap()
            .trim()
            .parse()
            .expect("time's %M");
        check_rss = check_rss.max(rss);
    }
    ConfigTimes {
        check,
        check_rss,
        file_reload_wall: 0.0,
        hup_reload_wall: 0.0,
    }
}

/// One account of the first included file given another interval (the watcher reloads), then
/// a SIGHUP: both timed.
fn reload_times(dir: &Path, watch: &mut LogWatch, child: &mut Child, ct: &mut ConfigTimes) {
    let file = dir.join("conf.d/users-000.toml");
    let text = fs::read_to_string(&file).unwrap();
    let one = user_name(0);
    let edited = text.replacen(
        &format!("name = \"{one}\"\n"),
        &format!("name = \"{one}\"\ninterval = \"12h\"\n"),
        1,
    );
    assert_ne!(text, edited, "the edit applies");
    let t = Instant::now();
    write_private(&file, &edited);
    watch.counts.push(("config reloaded", 0));
    ct.file_reload_wall = (watch.wait("config reloaded", 1, child, "reload") - t).as_secs_f64();
    let t = Instant::now();
    signal(child, "HUP");
    ct.hup_reload_wall = (watch.wait("config reloaded", 2, child, "SIGHUP") - t).as_secs_f64();
}

fn scripted_table(
    n: usize,
    messages: usize,
    rows: &[ScriptedRow],
    ct: Option<&ConfigTimes>,
) -> String {
    let mut out = format!(
        "\nbench_scale, part 1: {n} accounts in {FILES} included files, one popfetch daemon, \
         the in-process scripted server (plain POP3, loopback); message cycle: {messages} x \
         {} KB per account\n",
        MSG_SIZE / 1024
    );
    writeln!(
        out,
        "{:>8} | {:>9} | {:>9} | {:>9} | {:>8} | {:>11} | {:>9} | {:>9} | {:>15} | {:>8}",
        "max_par",
        "start s",
        "1st cyc s",
        "no-op s",
        "sessions",
        "CPU/poll ms",
        "msgs s",
        "CPU/msg ms",
        "idle RSS MiB",
        "peak MiB"
    )
    .unwrap();
    writeln!(out, "{}", "-".repeat(120)).unwrap();
    for r in rows {
        let per_poll = r.noop_cpu / n as f64 * 1000.0;
        let per_msg = (r.msg_cpu - r.noop_cpu) / (n * messages) as f64 * 1000.0;
        writeln!(
            out,
            "{:>8} | {:>9.3} | {:>9.2} | {:>9.2} | {:>8} | {:>11.3} | {:>9.2} | {:>9.3} | {:>6.1} / {:>6.1} | {:>8.1}",
            r.parallel,
            r.to_started,
            r.first_cycle,
            r.noop_wall,
            r.noop_peak_sessions,
            per_poll,
            r.msg_wall,
            per_msg,
            r.rss_after_first as f64 / 1024.0,
            r.rss_idle_end as f64 / 1024.0,
            r.rss_peak as f64 / 1024.0
        )
        .unwrap();
    }
    writeln!(
        out,
        "start s: spawn to 'daemon started'; 1st cyc s: spawn to every account's first poll done; \
         no-op s / msgs s: SIGUSR1 to the last poll done; sessions: most open at once at the \
         server in the no-op cycle; CPU: the daemon's user+system; idle RSS: after the first \
         cycle / at the end"
    )
    .unwrap();
    if let Some(ct) = ct {
        writeln!(
            out,
            "config ({n} accounts, {FILES} files): load (popfetch check) {:.3} s, median of {}, \
             {:.1} MiB peak RSS; reload, one file of {FILES} changed: {:.3} s from the write to \
             'config reloaded' (the watcher's 300 ms debounce in it); reload on SIGHUP, \
             nothing changed: {:.3} s from the signal to 'config reloaded'",
            median(ct.check.clone()),
            ct.check.len(),
            ct.check_rss as f64 / 1024.0,
            ct.file_reload_wall,
            ct.hup_reload_wall
        )
        .unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Part 2: a thousand Dovecot accounts, popfetch's daemon against fetchmail's and mpop.

/// Dovecot's services in part 2 unless `POPFETCH_SCALE_DOVECOT_PROCS=per-session`: the
/// high-performance mode of Dovecot's login processes (`service_count = 0`: a login process
/// serves many connections) and mail processes reused from session to session (every user
/// here has the one mail uid), two of each kept waiting. Appended to the generated config,
/// whose `service pop3-login` block Dovecot merges with this one (`doveconf -n` shows one
/// block with the listeners and these settings). The auth service's client limit is raised
/// to what Dovecot counts as its need once processes serve many clients (it warns below it).
const DOVECOT_REUSE: &str = "service pop3-login {\n  service_count = 0\n  \
     process_min_avail = 2\n}\nservice pop3 {\n  service_count = 0\n  process_min_avail = 2\n}\n\
     service auth {\n  client_limit = 2048\n}\n";
/// How long the proxy's threads of a finished cycle may take to end.
const PROXY_DRAIN: Duration = Duration::from_secs(10);

/// One tool's no-op cycle over every account.
struct Cycle {
    wall: f64,
    cpu: f64,
    rss_kib: u64,
    /// Dovecot's CPU over the cycle, all its processes.
    server_cpu: f64,
}

/// The CPU of one Dovecot instance's processes: the master's own and its reaped children's
/// (`cutime`, `cstime`), and each live child's own.
struct DovecotCpu {
    master: u32,
}

/// Ticks at one moment: the master's (own and reaped children's), and each live child's.
struct Ticks {
    master: u64,
    children: HashMap<u32, u64>,
}

impl DovecotCpu {
    /// Finds the master of `instance`: the parent of its processes, whose titles are
    /// `dovecot-INSTANCE/SERVICE`.
    fn new(instance: &str) -> DovecotCpu {
        let title = format!("dovecot-{instance}/");
        let master = pids()
            .find(|&pid| {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with(title.as_bytes()))
            })
            .and_then(|pid| proc_stat(pid).map(|(ppid, _)| ppid))
            .unwrap_or_else(|| panic!("no process titled {title}…"));
        DovecotCpu { master }
    }

    fn ticks(&self) -> Ticks {
        let (_, [u, s, cu, cs]) = proc_stat(self.master).expect("Dovecot's master runs");
        let children = pids()
            .filter_map(|pid| match proc_stat(pid) {
                Some((ppid, [u, s, ..])) if ppid == self.master => Some((pid, u + s)),
                _ => None,
            })
            .collect();
        Ticks {
            master: u + s + cu + cs,
            children,
        }
    }

    /// Seconds of CPU from `then` to now: a child alive then and reaped since counts in the
    /// master's `cutime` whole, so what it had used before `then` is taken off.
    fn since(&self, then: &Ticks) -> f64 {
        let now = self.ticks();
        let mut ticks = (now.master - then.master) as i64;
        for (pid, t) in &now.children {
            ticks += (*t - then.children.get(pid).copied().unwrap_or(0).min(*t)) as i64;
        }
        for (pid, t) in &then.children {
            if !now.children.contains_key(pid) {
                ticks -= *t as i64;
            }
        }
        tick_seconds(ticks.max(0) as u64)
    }
}

fn pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// This process's threads (`Threads:` of `/proc/self/status`): the proxy runs four per
/// connection.
fn own_threads() -> usize {
    fs::read_to_string("/proc/self/status")
        .expect("read /proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a Threads line")
}

/// What surrounds each tool's measured cycle: the round trip the delay proxy adds to it (the
/// first, fetching poll goes through the proxy at no delay), and Dovecot's CPU over it.
struct Meter<'a> {
    dovecot: DovecotCpu,
    delay: Option<(&'a DelayProxy, Duration)>,
    /// This process's threads with the proxy idle: every connection's threads must have ended
    /// after a cycle.
    idle_threads: usize,
}

impl Meter<'_> {
    /// The measured cycle begins: the round trip is set.
    fn begin(&self) -> Ticks {
        if let Some((proxy, rtt)) = self.delay {
            proxy.set_rtt(rtt);
        }
        self.dovecot.ticks()
    }

    /// The measured cycle has ended: Dovecot's CPU over it; the proxy back to no delay, once
    /// the threads of its connections have ended.
    fn end(&self, then: &Ticks, label: &str) -> f64 {
        let cpu = self.dovecot.since(then);
        if let Some((proxy, _)) = self.delay {
            proxy.set_rtt(Duration::ZERO);
            let deadline = Instant::now() + PROXY_DRAIN;
            while own_threads() > self.idle_threads {
                assert!(
                    Instant::now() < deadline,
                    "{label}: {} threads of the delay proxy still running {PROXY_DRAIN:?} after \
                     the cycle",
                    own_threads() - self.idle_threads
                );
                std::thread::sleep(TICK);
            }
        }
        cpu
    }
}

/// One measured row: its round trip, its name, its tool, its cycle.
struct Row {
    rtt_ms: u64,
    name: String,
    tool: Tool,
    cycle: Cycle,
}

fn against_dovecot(
    root: &Path,
    n: usize,
    per_server: &[usize],
    rtts: &[usize],
    reuse: bool,
) -> String {
    let extra = if reuse { DOVECOT_REUSE } else { "" };
    let dovecot = Dovecot::start_with_extra(dovecot::Options::default(), extra);
    let accounts: Vec<(String, Vec<Vec<u8>>)> = (0..n)
        .map(|i| {
            (
                format!("d{i:05}"),
                vec![expected(&message(900_000 + i, 4096))],
            )
        })
        .collect();
    for (user, msgs) in &accounts {
        dovecot.add_user(user, PASSWORD);
        dovecot.deliver_many(user, msgs.iter().cloned());
    }
    // Dovecot rereads its passwd-file when its modification time changes: let the last change
    // be seen as one.
    std::thread::sleep(Duration::from_millis(1100));
    let tools: &'static [Tool] = &[Tool::Popfetch, Tool::Fetchmail, Tool::Mpop];
    let scenario = Scenario {
        key: "dovecot",
        title: format!("{n} Dovecot accounts"),
        accounts,
        tls: false,
        keep: true,
        smtp: false,
        lmtp: false,
        tools,
    };
    let proxy = rtts
        .iter()
        .any(|&r| r > 0)
        .then(|| DelayProxy::start(dovecot.pop3_port()));
    let idle_threads = own_threads();
    let mut results: Vec<Row> = Vec::new();
    for &rtt_ms in rtts {
        let rtt_ms = rtt_ms as u64;
        // Through the proxy for all of a tool's run, its first poll as well: popfetch's state
        // names a mailbox by host, port and user.
        let (port, delay) = match &proxy {
            Some(proxy) if rtt_ms > 0 => {
                (proxy.port(), Some((proxy, Duration::from_millis(rtt_ms))))
            }
            _ => (dovecot.pop3_port(), None),
        };
        // popfetch once per `max_parallel_per_server` asked for (the default, 4, first), then
        // fetchmail; mpop, one process per account, only without delay: it is there for the
        // CPU per account.
        let runs: Vec<(Tool, Option<usize>)> = per_server
            .iter()
            .map(|&p| (Tool::Popfetch, Some(p)))
            .chain([(Tool::Fetchmail, None)])
            .chain((rtt_ms == 0).then_some((Tool::Mpop, None)))
            .collect();
        for (tool, limit) in runs {
            let dir = root.join(format!(
                "dovecot-{rtt_ms}ms-{}{}",
                tool.name(),
                limit.map(|l| format!("-{l}")).unwrap_or_default()
            ));
            mkdir(&dir);
            let job = Job {
                dovecot: &dovecot,
                scenario: &scenario,
                dir: &dir,
                smtp_port: 0,
                port,
                lmtp_to: String::new(),
            };
            let name = match (tool, limit) {
                (Tool::Popfetch, Some(4)) => "popfetch daemon (defaults)".to_owned(),
                (Tool::Popfetch, Some(l)) => format!("popfetch daemon, {l}/server"),
                (Tool::Fetchmail, _) => "fetchmail daemon (1 rc)".to_owned(),
                _ => "mpop (1 process/account)".to_owned(),
            };
            let label = format!("{} / {rtt_ms} ms / {name}", scenario.title);
            let meter = Meter {
                dovecot: DovecotCpu::new(dovecot.instance_name()),
                delay,
                idle_threads,
            };
            let cycle = match tool {
                Tool::Popfetch => popfetch_daemon_cycle(&job, limit.unwrap_or(4), &label, &meter),
                Tool::Fetchmail => fetchmail_daemon_cycle(&job, &label, &meter),
                Tool::Mpop => mpop_cycle(&job, &label, &meter),
                Tool::Getmail6 => unreachable!("not in this benchmark"),
            };
            for (user, msgs) in &scenario.accounts {
                assert_eq!(
                    dovecot.message_count(user),
                    msgs.len(),
                    "{label}: keep mode must leave the mailbox alone"
                );
            }
            eprintln!(
                "bench: {label}: no-op cycle {:.2} s wall, {:.2} s CPU, {:.1} MiB peak RSS, \
                 Dovecot {:.2} s CPU",
                cycle.wall,
                cycle.cpu,
                cycle.rss_kib as f64 / 1024.0,
                cycle.server_cpu
            );
            results.push(Row {
                rtt_ms,
                name,
                tool,
                cycle,
            });
            retire(&dir);
        }
    }
    dovecot_table(n, reuse, &results)
}

/// Checks that every account's Maildir holds its one message.
fn verify_fetched(tool: Tool, job: &Job, label: &str) {
    for (user, sources) in &job.scenario.accounts {
        assert_same_messages(
            &format!("{label}, account {user}"),
            maildir_files(&job.maildir(user)),
            sources,
            |raw| tool.unwrap_delivered(raw),
        );
    }
}

/// popfetch's daemon with `max_parallel_per_server` = `per_server` (and `max_parallel` at
/// least that; both left to their defaults, 8 and 4, for 4).
fn popfetch_daemon_cycle(job: &Job, per_server: usize, label: &str, meter: &Meter) -> Cycle {
    let n = job.scenario.accounts.len();
    prepare(Tool::Popfetch, job);
    let config = job.dir.join("config.toml");
    let text = fs::read_to_string(&config).unwrap();
    let limits = if per_server == 4 {
        String::new()
    } else {
        format!(
            "max_parallel = {}\nmax_parallel_per_server = {per_server}\n",
            per_server.max(8)
        )
    };
    write_private(&config, &format!("{DAEMON_GLOBALS}{limits}{text}"));
    let log = job.dir.join("daemon.log");
    let mut watch = LogWatch::new(&log, &[POLL_DONE], popfetch_bad);
    let mut child = spawn_popfetch(&config, &log, &job.dir.join("home"));
    watch.wait(POLL_DONE, n, &mut child, label);
    verify_fetched(Tool::Popfetch, job, label);
    std::thread::sleep(SETTLE);
    let cycle = woken_cycle(
        &mut child,
        &mut watch,
        (POLL_DONE, 2 * n),
        false,
        meter,
        label,
    );
    verify_fetched(Tool::Popfetch, job, label);
    watch.assert_clean(label);
    stop(child);
    cycle
}

/// Wakes a daemon whose first cycle is over (SIGUSR1) and measures its next cycle, which ends
/// when its log holds `until.1` lines with `until.0`: the wall time, the daemon's CPU (with its
/// waited-for children when `children`), the server's CPU and the daemon's peak RSS.
fn woken_cycle(
    child: &mut Daemon,
    watch: &mut LogWatch,
    until: (&str, usize),
    children: bool,
    meter: &Meter,
    label: &str,
) -> Cycle {
    let pid = child.id();
    let c0 = cpu_seconds(pid, children);
    let server = meter.begin();
    let t = Instant::now();
    signal(child, "USR1");
    let wall = (watch.wait(until.0, until.1, child, label) - t).as_secs_f64();
    Cycle {
        wall,
        cpu: cpu_seconds(pid, children) - c0,
        server_cpu: meter.end(&server, label),
        rss_kib: rss_kib(pid).1,
    }
}

/// What in fetchmail's `-v` log means a poll failed: a query status other than 0 (mail) or
/// 1 (none), an authentication failure, a connection error.
fn fetchmail_bad(line: &str) -> bool {
    (line.contains("Query status=") && !line.contains("Query status=1 "))
        || line.contains("uthorization failure")
        || line.contains("onnection errors")
}

fn fetchmail_daemon_cycle(job: &Job, label: &str, meter: &Meter) -> Cycle {
    let n = job.scenario.accounts.len();
    let inv = prepare(Tool::Fetchmail, job)
        .pop()
        .expect("one fetchmail process");
    let mut argv = inv.argv.clone();
    argv.retain(|a| a != "--silent");
    argv.extend(["-v".into(), "--daemon".into(), "3600".into()]);
    let log = job.dir.join("fetchmail.log");
    let out = fs::File::create(&log).unwrap();
    let mut child = Daemon(
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .args(&argv)
            .env("USER", "nobody")
            .env("LOGNAME", "nobody")
            .env("HOME", &inv.home)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start fetchmail"),
    );
    const SLEEPING: &str = "sleeping at";
    let mut watch = LogWatch::new(&log, &[SLEEPING], fetchmail_bad);
    watch.wait(SLEEPING, 1, &mut child, label);
    verify_fetched(Tool::Fetchmail, job, label);
    // setpriv execs fetchmail: the child's pid is fetchmail's.
    let cycle = woken_cycle(&mut child, &mut watch, (SLEEPING, 2), true, meter, label);
    verify_fetched(Tool::Fetchmail, job, label);
    watch.assert_clean(label);
    assert!(n > 0);
    stop(child);
    cycle
}

fn mpop_cycle(job: &Job, label: &str, meter: &Meter) -> Cycle {
    let invocations = prepare(Tool::Mpop, job);
    let stats = job.dir.join("time-report");
    let run_all = |what: &str| -> Cycle {
        let mut c = Cycle {
            wall: 0.0,
            cpu: 0.0,
            rss_kib: 0,
            server_cpu: 0.0,
        };
        for inv in &invocations {
            let done = inv.run(&stats);
            assert_eq!(
                done.code,
                Some(0),
                "{label}, {what}: {:?}:\n{}",
                inv.argv,
                done.output
            );
            c.wall += done.sample.wall;
            c.cpu += done.sample.cpu;
            c.rss_kib = c.rss_kib.max(done.sample.rss_kib);
        }
        c
    };
    run_all("first run");
    verify_fetched(Tool::Mpop, job, label);
    let server = meter.begin();
    let mut c = run_all("no-op run");
    c.server_cpu = meter.end(&server, label);
    verify_fetched(Tool::Mpop, job, label);
    c
}

fn dovecot_table(n: usize, reuse: bool, results: &[Row]) -> String {
    let procs = if reuse {
        "login and mail processes reused"
    } else {
        "a login and a mail process per session"
    };
    let mut out = format!(
        "\nbench_scale, part 2: {n} accounts of one Dovecot ({procs}; plain POP3, keep mode, 1 \
         message each, already fetched): one cycle that finds nothing new, at each round trip \
         (through the delay proxy when above 0)\n"
    );
    writeln!(
        out,
        "{:>6} | {:<28} | {:>8} | {:>7} | {:>14} | {:>8} | {:>17} | {:>16}",
        "RTT ms",
        "tool",
        "cycle s",
        "CPU s",
        "CPU/account ms",
        "RSS MiB",
        "Dovecot CPU/acc ms",
        "fetchmail / this"
    )
    .unwrap();
    writeln!(out, "{}", "-".repeat(130)).unwrap();
    let fetchmail_at = |rtt: u64| {
        results
            .iter()
            .find(|r| r.rtt_ms == rtt && r.tool == Tool::Fetchmail)
            .map(|r| r.cycle.wall)
    };
    for r in results {
        let c = &r.cycle;
        let ratio =
            fetchmail_at(r.rtt_ms).map_or_else(|| "-".to_owned(), |f| format!("{:.1}", f / c.wall));
        writeln!(
            out,
            "{:>6} | {:<28} | {:>8.2} | {:>7.2} | {:>14.3} | {:>8.1} | {:>17.2} | {ratio:>16}",
            r.rtt_ms,
            r.name,
            c.wall,
            c.cpu,
            c.cpu / n as f64 * 1000.0,
            c.rss_kib as f64 / 1024.0,
            c.server_cpu / n as f64 * 1000.0,
        )
        .unwrap();
    }
    for r in results.iter().filter(|r| r.tool == Tool::Popfetch) {
        if let Some(f) = fetchmail_at(r.rtt_ms) {
            writeln!(
                out,
                "target: at {} ms, {}: cycle at least 20x faster than fetchmail's: {:.1}x",
                r.rtt_ms,
                r.name,
                f / r.cycle.wall
            )
            .unwrap();
        }
        let mpop = results
            .iter()
            .find(|m| m.rtt_ms == r.rtt_ms && m.tool == Tool::Mpop);
        if let Some(m) = mpop {
            writeln!(
                out,
                "target: at {} ms, {}: CPU per account at most half of mpop's: {:.2} of it",
                r.rtt_ms,
                r.name,
                r.cycle.cpu / m.cycle.cpu
            )
            .unwrap();
        }
    }
    writeln!(
        out,
        "RSS: peak (VmHWM) of the daemon; for mpop the largest of its processes. Dovecot CPU: \
         all its processes over the cycle, per account (one session each)"
    )
    .unwrap();
    out
}
