//! What the benchmarks share: the tools compared (popfetch, mpop, fetchmail, getmail6), their
//! configurations written for one job, running one under `/usr/bin/time`, and the byte-for-byte
//! checks of what they delivered. See benches/compare/main.rs for how each tool is made to add
//! nothing (or a known trace) to a message.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::Dovecot;
use crate::harness::strip_received;

pub(crate) const PASSWORD: &str = "bench-password-7";
/// The Postfix recipient of scenario 5.
pub(crate) const RELAY_TO: &str = "alice@test.example";
/// Bound for one tool process; a run that takes longer is killed and fails the test.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(1200);
/// Marks `/usr/bin/time`'s report line.
pub(crate) const TIME_MARK: &str = "bench-time:";
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tool {
    Popfetch,
    Mpop,
    Fetchmail,
    Getmail6,
}

pub(crate) const ALL_TOOLS: &[Tool] =
    &[Tool::Popfetch, Tool::Mpop, Tool::Fetchmail, Tool::Getmail6];

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Popfetch => "popfetch",
            Tool::Mpop => "mpop",
            Tool::Fetchmail => "fetchmail",
            Tool::Getmail6 => "getmail6",
        }
    }

    /// The message as the server had it, from the file the tool delivered: exactly what the
    /// tool adds is removed (see the module docs), and its presence is asserted.
    pub(crate) fn unwrap_delivered(self, raw: &[u8]) -> Vec<u8> {
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
pub(crate) fn strip_getmail_return_path(msg: &[u8]) -> Vec<u8> {
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
pub(crate) struct Scenario {
    /// Short name for directories.
    pub(crate) key: &'static str,
    /// The label in the table.
    pub(crate) title: String,
    /// The server accounts and, for each, the messages in its mailbox.
    pub(crate) accounts: Vec<(String, Vec<Vec<u8>>)>,
    /// Implicit TLS on the pop3s port (else plain POP3 with USER/PASS).
    pub(crate) tls: bool,
    /// Keep mode, no-op second poll timed (else fetch-and-delete).
    pub(crate) keep: bool,
    /// Relay into Postfix (else a Maildir per account).
    pub(crate) smtp: bool,
    /// Deliver over LMTP into the same Dovecot's mailbox `Job::lmtp_to` (on its Unix socket).
    pub(crate) lmtp: bool,
    pub(crate) tools: &'static [Tool],
}

/// Resources of one timed run (summed over the processes of a run, peak RSS their maximum).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    pub(crate) wall: f64,
    pub(crate) rss_kib: u64,
    pub(crate) cpu: f64,
}

/// A process to run for a tool: its arguments and whether it runs as `nobody`.
pub(crate) struct Invocation {
    pub(crate) argv: Vec<OsString>,
    pub(crate) as_nobody: bool,
    pub(crate) home: PathBuf,
}

/// What [`Invocation::run`] saw of one process.
pub(crate) struct Finished {
    pub(crate) code: Option<i32>,
    pub(crate) output: String,
    pub(crate) sample: Sample,
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
    pub(crate) fn run(&self, stats: &Path) -> Finished {
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
        // POPFETCH_BENCH_WRAP='perf record -g -o /tmp/prof/{tool}-{n}.data --' runs every tool
        // under a profiler (or `strace -f -c -o ... --`): {tool} is the program's file name,
        // {n} counts the runs. The timings then include the profiler.
        if let Ok(wrap) = std::env::var("POPFETCH_BENCH_WRAP") {
            static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let tool = Path::new(&self.argv[0])
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            for w in wrap.split_whitespace() {
                cmd.arg(w.replace("{tool}", &tool).replace("{n}", &n.to_string()));
            }
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

/// The parameters every tool's configuration is written from.
pub(crate) struct Job<'a> {
    pub(crate) dovecot: &'a Dovecot,
    pub(crate) scenario: &'a Scenario,
    /// The run's own directory (fresh, under `CARGO_TARGET_TMPDIR`).
    pub(crate) dir: &'a Path,
    /// Postfix's SMTP port, for a relay scenario.
    pub(crate) smtp_port: u16,
    /// Where the tools connect: Dovecot's pop3 or pop3s port, or a proxy in front of it.
    pub(crate) port: u16,
    /// The Dovecot user an LMTP scenario delivers to.
    pub(crate) lmtp_to: String,
}

impl Job<'_> {
    /// Dovecot's own port for the scenario: pop3s for TLS, else pop3.
    pub(crate) fn server_port(dovecot: &Dovecot, scenario: &Scenario) -> u16 {
        if scenario.tls {
            dovecot.pop3s_port()
        } else {
            dovecot.pop3_port()
        }
    }

    /// `localhost` for TLS (the certificate's name), the address itself for plain POP3.
    pub(crate) fn host(&self) -> &'static str {
        if self.scenario.tls {
            "localhost"
        } else {
            "127.0.0.1"
        }
    }

    pub(crate) fn ca(&self) -> String {
        path_str(self.dovecot.ca_file())
    }

    pub(crate) fn users(&self) -> impl Iterator<Item = &str> {
        self.scenario.accounts.iter().map(|(u, _)| u.as_str())
    }

    pub(crate) fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("mail").join(user)
    }
}

/// Writes the tool's configuration for `job` into the run directory and returns what to run
/// for one poll.
pub(crate) fn prepare(tool: Tool, job: &Job) -> Vec<Invocation> {
    for d in ["home", "state", "mail"] {
        mkdir(&job.dir.join(d));
    }
    if !job.scenario.smtp && !job.scenario.lmtp {
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
pub(crate) fn prepare_popfetch(job: &Job) -> Vec<Invocation> {
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
            job.port,
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
pub(crate) fn prepare_mpop(job: &Job) -> Vec<Invocation> {
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
        job.port,
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
pub(crate) fn prepare_fetchmail(job: &Job) -> Vec<Invocation> {
    let s = job.scenario;
    let mut text = String::from("set no syslog\nset invisible\n\n");
    writeln!(
        text,
        "poll {} with proto POP3 service {}{}{}",
        job.host(),
        job.port,
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
pub(crate) fn prepare_getmail6(job: &Job) -> Vec<Invocation> {
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
            job.port,
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
pub(crate) fn ok_codes(tool: Tool, noop: bool) -> &'static [i32] {
    match (tool, noop) {
        (Tool::Fetchmail, true) => &[1],
        _ => &[0],
    }
}

/// Asserts that `files` (raw delivered messages), unwrapped by `unwrap`, are exactly `sources`,
/// each once, in any order.
pub(crate) fn assert_same_messages(
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
pub(crate) fn maildir_files(maildir: &Path) -> impl Iterator<Item = (String, Vec<u8>)> {
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

/// Sets a finished run's directory aside without deleting its files: they are truncated (their
/// space is freed) and renamed away, and everything is removed when the benchmark ends. On
/// ext4 without a journal (this machine's root file system) the kernel will not reuse an inode
/// freed in the last minutes and scans past every such inode for each file it creates, so
/// deleting thousands of files after each run made the next run, of whatever tool, pay for
/// the previous one's cleanup (measured: 2,000 Maildir deliveries took 0.4 s on fresh inodes,
/// 2.5 s after two rounds of deletions, nearly all of it in the kernel's inode allocator).
pub(crate) fn retire(dir: &Path) {
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

/// Prints a benchmark's report `out`, ended by where its run directories were (`what`, see
/// [`Root`]) and how long the whole benchmark took since `started`.
pub(crate) fn print_report(mut out: String, what: &str, started: Instant) {
    writeln!(out, "run directories on {what}").unwrap();
    writeln!(
        out,
        "total benchmark time {:.0} s",
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    eprintln!("{out}");
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
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
pub(crate) struct Root {
    pub(crate) dir: PathBuf,
    pub(crate) image: Option<PathBuf>,
    /// What the run directories live on, for the report.
    pub(crate) what: String,
}

impl Root {
    /// Checks that every directory above the run directories can be passed through by others:
    /// the old fetchers run as `nobody` (`who` says which, for the message).
    pub(crate) fn assert_traversable(&self, who: &str) {
        for dir in self.dir.ancestors() {
            let mode = fs::metadata(dir)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            assert!(
                mode & 0o001 != 0,
                "{} is not traversable by others: {who} as nobody",
                dir.display()
            );
        }
    }

    /// The directory `NAME-PID` (and its image `NAME-PID.img`).
    pub(crate) fn new(name: &str) -> Root {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("{name}-{}", std::process::id()));
        mkdir(&dir);
        let image = base.join(format!("{name}-{}.img", std::process::id()));
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

pub(crate) fn path_str(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 path").to_owned();
    assert!(
        !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\'),
        "path {s:?} cannot be written unquoted into the tools' rc files"
    );
    s
}

pub(crate) fn mkdir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// Writes a config file with mode 0600 (fetchmail and mpop insist; it holds a password).
pub(crate) fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// The uid of `nobody` and gid of `nogroup`, the user `setpriv` runs the old fetchers as.
pub(crate) fn nobody_ids() -> (u32, u32) {
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
pub(crate) fn chown_tree(dir: &Path, (uid, gid): (u32, u32)) {
    chown(dir, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {} (run as root): {e}", dir.display()));
    if dir.is_dir() {
        for e in fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            chown_tree(&e.path(), (uid, gid));
        }
    }
}
