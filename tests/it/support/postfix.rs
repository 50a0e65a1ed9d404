//! A private, throw-away Postfix SMTP server on loopback that delivers into one Maildir, plus
//! helpers for running the MDAs procmail, maildrop and dovecot-lda as test peers.
//!
//! Postfix (3.7, Debian's `postfix`, installed by `tests/install-peers`) runs one instance per
//! [`Postfix`] value, each in its own temporary directory:
//!
//! ```text
//! <dir>/conf/main.cf, master.cf, rcpt_access   config_directory (root, 0755)
//! <dir>/queue/…                                queue_directory (layout of `postfix-files`)
//! <dir>/data/                                  data_directory (postfix, 0700)
//! <dir>/Maildir/{new,cur,tmp}                  where every message for @test.example lands
//! <dir>/maillog                                maillog_file (no syslog here)
//! ```
//!
//! Nothing is written to `/etc/postfix` or `/var/spool/postfix` (the `postfix` command only
//! reads `/etc/postfix/postfix-files` and the default `main.cf`'s `multi_instance_directories`;
//! only `postfix check` uses the former). The SMTP listener is
//! `127.0.0.1:<free high port>` (`master.cf`), and the same smtpd(8) listens on the Unix
//! socket `<dir>/queue/public/relay` ([`Postfix::socket`]; smtpd takes a Unix-domain client
//! as `localhost[127.0.0.1]`, so the same rules apply). The chroot column is `n` everywhere, there is no
//! DNS and no outbound delivery (`default_transport`, `relay_transport` and `local_transport`
//! are `error:`), so nothing leaves the machine. Dropping the value kills the instance's
//! processes and removes the directory. Instances are independent of each other (own config,
//! queue, data directory, port, `syslog_name`), so tests may run in parallel threads and
//! processes.
//!
//! # What the server does
//! - Accepts any client on 127.0.0.0/8 and any recipient `*@test.example`
//!   (`virtual_mailbox_domains = test.example`, `virtual_mailbox_maps = static:Maildir/`); the
//!   virtual(8) agent delivers each accepted recipient as one file into [`Postfix::maildir`],
//!   as `nobody`/`nogroup` (the test runs as root and reads everything). Recipients in other
//!   domains are refused at RCPT time (`554 5.7.1 <…>: Relay access denied`).
//! - Fault recipients, answered at RCPT time, the transaction goes on:
//!   [`RCPT_TEMPFAIL`] (`rcpt451@test.example`) gets `451 4.7.1 <…>: Recipient address
//!   rejected: Temporary failure for tests`, [`RCPT_PERMFAIL`] (`rcpt550@test.example`) gets
//!   `550 5.1.1 <…>: Recipient address rejected: Permanent failure for tests`.
//! - EHLO advertises `PIPELINING SIZE VRFY ETRN ENHANCEDSTATUSCODES 8BITMIME DSN SMTPUTF8
//!   CHUNKING` (SIZE without a number: no size limit). Error replies do not slow the session
//!   down (`smtpd_error_sleep_time = 0`, high error limits).
//! - Delivery is asynchronous: a `250` after DATA means queued. [`Postfix::wait_for`] waits
//!   until the Maildir holds the expected number of messages and the queue is empty.
//!
//! # What a delivered file looks like
//! LF line endings. At the top Postfix puts exactly these header lines, in this order (from
//! virtual(8), then the `Received:` that smtpd(8) prepended when it received the message):
//!
//! ```text
//! Return-Path: <SENDER>                       (the MAIL FROM address, `<>` for a null sender)
//! X-Original-To: RECIPIENT                    (the RCPT TO address, without angle brackets)
//! Delivered-To: RECIPIENT
//! Received: from HELO (unknown [127.0.0.1])
//! \tby sink.popfetch.invalid (Postfix) with ESMTP id QUEUEID
//! \tfor <RECIPIENT>; Thu, 26 Nov 2026 11:23:33 +0000 (UTC)
//! ```
//!
//! The `Received:` header has continuation lines starting with a TAB. With one recipient in
//! the SMTP transaction it is three lines as above; with several recipients the last two are
//! `\tby … id QUEUEID;` and `\tDATE` (no `for`). `with ESMTP` becomes `with SMTP` after HELO
//! (or `ESMTPS`/`ESMTPA` with TLS/AUTH, not configured here). [`strip_postfix_headers`]
//! removes exactly these lines and panics when they are not there.
//!
//! Everything after them is the message as sent, with CRLF turned into LF and dot-stuffing
//! undone, byte for byte, because this configuration turns off what Postfix would otherwise
//! change:
//! - no `Message-ID:`, `Date:`, `From:`, `To:` are added to a message lacking them
//!   (`local_header_rewrite_clients =` empty, so loopback is not a "local" client, and
//!   `always_add_missing_headers = no`); no address rewriting in headers;
//! - no headers are dropped (`message_drop_headers =` empty; the default drops `Bcc`,
//!   `Content-Length`, `Resent-Bcc` and `Return-Path`, which fetched mail often carries);
//! - 8-bit bytes and long lines (tested: a 3000-byte header line, a 5000-byte body line) pass
//!   unchanged; no MIME conversion.
//!
//! Known exceptions (Postfix 3.7.11, observed): a message whose first line is not a header (or
//! is empty) gets one empty line between Postfix's headers and the message, so after stripping
//! it starts with `\n` (a message that itself started with an empty line arrives identical to
//! it); an empty message is just the prepended headers; a bare LF in DATA counts as a line end
//! (`smtpd_forbid_bare_newline = no`, the 3.7 default); a bare CR (not followed by LF) arrives
//! as a space. virtual(8) has no `Delivered-To:` loop check: a message that already carries
//! `Delivered-To: <the same recipient>` (as fetched mail may) is delivered normally.
//!
//! Maildir file names are virtual(8)'s `SECONDS.VdevIinodeMmicros.HOST`: sorting them sorts by
//! second, but within one second by inode, not by delivery time. Identify messages by content.
//!
//! # Starting fast
//! `postfix start` normally runs `postfix-script check-fatal/check-warn` (post-install,
//! postsuper, find over the directories), which takes about 2 s. [`Postfix::start`] creates the
//! queue directories itself (owners and modes as in `/etc/postfix/postfix-files`) and leaves a
//! `quick-start` file in the queue directory, which makes `postfix start` skip those checks
//! (Postfix's own `quick-stop` mechanism); a start then takes about 0.1 s. The selftest
//! `postfix_check_accepts_layout` runs the full `postfix check` once to prove the layout is
//! right. Postfix also re-reads any config file whose mtime is within the last ~2 s (300 ms
//! naps, "wait for the file to stabilize"), so the generated files are dated a minute back.
//! Stopping kills the master's process group (Postfix's master is a session leader and every
//! daemon is its child), which takes milliseconds; `postfix stop` would also work.
//!
//! # Ports
//! Postfix's master binds its listeners with `SO_REUSEPORT`, so a second instance on the same
//! port does *not* fail with "Address already in use": both bind, and the kernel spreads the
//! connections over them (seen here: one test's message landed in another test's instance).
//! [`Postfix::start`] therefore holds an exclusive lock on `/tmp/popfetch-postfix-start.lock`
//! while it probes a free port and starts (so no two fixtures, in any test process, probe the
//! same port before either has bound it), and afterwards checks `/proc/net/tcp*` for exactly
//! one listener on the port (else it starts over on another port).
//!
//! # MDAs (procmail 3.22, maildrop 2.9.3, dovecot-lda 2.3.19)
//! Observed here, and pinned by the `mda_*` selftests, for a message piped to stdin:
//! - None of the three adds any header line in these setups (procmail `-m RCFILE`, maildrop
//!   `FILTERFILE`, dovecot-lda `-c CONF -d USER`, also with `-f`/`-a`).
//! - procmail: stores the bytes unchanged except that a leading `From ` (mbox) line is removed;
//!   no newline is added at the end; CR stays. It creates the Maildir if missing. Failure to
//!   write the Maildir: exit 73 (EX_CANTCREAT), or 75 (EX_TEMPFAIL) with `-t`. No fallback
//!   delivery to `/var/mail` in `-m` mode. The rcfile must not be world-writable nor lie in a
//!   world-writable directory ("Suspicious rcfile", then nothing is delivered where intended).
//!   Run as another user (e.g. `setpriv --reuid=65534 …`) it prints "Couldn't chdir to
//!   \"/nonexistent\"" (that user's HOME) on stderr and still delivers.
//! - maildrop: stores the bytes unchanged including a leading `From ` line; appends a final
//!   newline when missing; CR stays. The Maildir must exist (it does not create it, and then
//!   fails with "Unable to create a dot-lock", exit 75). Failure to write: exit 75. A
//!   world-writable filter file is refused (exit 75); 0600 and 0644 both work.
//! - dovecot-lda: removes a leading `From ` line, turns CRLF into LF, adds no final newline.
//!   Needs `-d USER` when run as root (exit 64 without it), exit 67 (EX_NOUSER) for a user the
//!   instance's passdb does not know, 75 when the Maildir cannot be written. It runs with the
//!   instance's config, looks the user up through the running instance's auth service, drops
//!   to the mail uid and logs to the instance's log (`lda(USER)…: saved mail to INBOX`).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::dovecot::{Dovecot, mkdir, process_alive, read_lossy, run_bounded, signal, write_file};

/// The domain the server accepts and delivers into [`Postfix::maildir`].
pub const DOMAIN: &str = "test.example";
/// A recipient that is answered `451 4.7.1` at RCPT time.
pub const RCPT_TEMPFAIL: &str = "rcpt451@test.example";
/// A recipient that is answered `550 5.1.1` at RCPT time.
pub const RCPT_PERMFAIL: &str = "rcpt550@test.example";
/// The server's `myhostname` (in the greeting and the `Received:` header).
pub const HOSTNAME: &str = "sink.popfetch.invalid";

/// smtpd(8)'s `unix` service in `master.cf`; master(8) puts a service that is not private
/// (2nd column `n`) in `public/` of the queue directory (see [`Postfix::socket`]).
const RELAY_SOCKET: &str = "relay";
/// How long [`Postfix::start`] waits for the `220` greeting.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound of [`Postfix::wait_for`].
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times [`Postfix::start`] picks a new port when one was taken meanwhile.
const START_ATTEMPTS: u32 = 8;
/// Bound for each external command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for waiting until the processes of a dropped instance are gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Queue folders that hold messages (the others hold logs or sockets).
const QUEUES: [&str; 6] = [
    "maildrop", "incoming", "active", "deferred", "hold", "corrupt",
];

/// A running private Postfix; stopped and removed on drop.
pub struct Postfix {
    dir: tempfile::TempDir,
    conf: PathBuf,
    port: u16,
    master_pid: u32,
}

impl Postfix {
    /// Starts an instance listening on `127.0.0.1:<free port>`; returns once it greets with
    /// `220`. Panics (with the log) when it does not within about 15 s.
    pub fn start() -> Postfix {
        let postfix = postfix_binary();
        let dir = crate::dovecot::make_temp_dir("popfetch-postfix-");
        let root = dir.path().to_path_buf();
        let root_str = root.to_str().expect("temp dir path is UTF-8").to_owned();
        assert!(
            !root_str.contains(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '\\'),
            "temp dir path {root_str:?} cannot be written into main.cf"
        );
        let instance = root
            .file_name()
            .and_then(|n| n.to_str())
            .expect("temp dir has a name")
            .to_owned();
        let ids = Ids::lookup();
        let conf = root.join("conf");
        mkdir(&conf, 0o755);
        make_queue_layout(&root, &ids);
        let maildir = make_maildir(&root);
        for d in ["", "new", "cur", "tmp"] {
            chown_path(&maildir.join(d), ids.mail_uid, ids.mail_gid);
        }
        write_config(
            &conf.join("rcpt_access"),
            format!(
                "{RCPT_TEMPFAIL} 451 4.7.1 Temporary failure for tests\n\
                 {RCPT_PERMFAIL} 550 5.1.1 Permanent failure for tests\n"
            )
            .as_bytes(),
        );
        write_config(
            &conf.join("main.cf"),
            main_cf(&root_str, &instance, &ids).as_bytes(),
        );

        let maillog = root.join("maillog");
        let pid_file = root.join("queue/pid/master.pid");
        // Postfix binds its listener with SO_REUSEPORT: two instances that probed the same
        // free port would both bind it and share its connections. Starts are serialized
        // across test processes, and the port is checked to have exactly one listener.
        let start_lock = StartLock::acquire();
        let mut started = None;
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            write_config(&conf.join("master.cf"), master_cf(port).as_bytes());
            // Skip postfix-script's slow integrity checks (see the module docs); `postfix
            // start` removes the file again.
            write_file(&root.join("queue/quick-start"), b"", 0o644);
            let log_before = read_lossy(&maillog).len();
            let out = run_bounded(
                Command::new(&postfix).arg("-c").arg(&conf).arg("start"),
                b"",
                COMMAND_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("cannot start postfix: {e}"));
            if out.status.success() {
                // `master -w` returns after the master initialized, so its pid file is there.
                let master_pid = fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok())
                    .unwrap_or_else(|| {
                        kill_instance(None, &conf);
                        panic!(
                            "postfix started but {} holds no pid; log:\n{}",
                            pid_file.display(),
                            read_lossy(&maillog)
                        )
                    });
                let listeners = listeners_on(port);
                if listeners == 1 {
                    started = Some((port, master_pid));
                    break;
                }
                // Someone else that does not take the lock (also with SO_REUSEPORT) listens
                // there too: start over on another port.
                kill_instance(Some(master_pid), &conf);
                assert!(
                    attempt < START_ATTEMPTS,
                    "port {port} has {listeners} listeners after {attempt} attempts; log:\n{}",
                    read_lossy(&maillog)
                );
                continue;
            }
            let log = read_lossy(&maillog);
            let new_log = log.get(log_before..).unwrap_or(&log);
            if new_log.contains("Address already in use") && attempt < START_ATTEMPTS {
                // Another program took the port between our probe and Postfix's bind.
                continue;
            }
            panic!(
                "postfix -c {} start failed ({}):\n{}{}\n--- log ---\n{log}",
                conf.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
        }
        drop(start_lock);
        let (port, master_pid) = started.expect("start loop either breaks or panics");

        // From here on a panic drops `server`, which stops the processes.
        let server = Postfix {
            dir,
            conf,
            port,
            master_pid,
        };
        server.wait_ready();
        server
    }

    /// The SMTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same SMTP server on a Unix socket (smtpd(8) as a `unix` service of `master.cf`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("queue/public").join(RELAY_SOCKET)
    }

    /// The Maildir (`new/`, `cur/`, `tmp/`) where everything for `@test.example` lands.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("Maildir")
    }

    /// The instance's `config_directory` (holds `main.cf`, for `postfix -c DIR …`).
    pub fn config_dir(&self) -> &Path {
        &self.conf
    }

    /// Waits (up to 20 s) until exactly `n` messages are in the Maildir (`new/` + `cur/`) and
    /// the queue is empty; returns their contents sorted by file name (see the module docs on
    /// what that order means). Panics with the log on timeout or when more than `n` arrived.
    pub fn wait_for(&self, n: usize) -> Vec<Vec<u8>> {
        self.wait_for_within(n, DELIVERY_TIMEOUT)
    }

    /// [`Postfix::wait_for`] with an explicit bound.
    pub fn wait_for_within(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self.delivered_count();
            let queued = self.queued_count();
            if queued == 0 && count == n {
                return maildir_messages(&self.maildir());
            }
            if queued == 0 && count > n {
                panic!(
                    "expected {n} delivered messages, found {count}\n--- log ---\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "after {timeout:?}: {count} of {n} messages delivered, {queued} still queued \
                     (port {})\n--- log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The messages in the Maildir now (`new/` + `cur/`, sorted by file name), without waiting.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        maildir_messages(&self.maildir())
    }

    /// Number of messages in the Maildir now (`new/` + `cur/`).
    pub fn delivered_count(&self) -> usize {
        maildir_count(&self.maildir())
    }

    /// Number of queue files (messages being received, waiting or deferred) now.
    pub fn queued_count(&self) -> usize {
        let queue = self.dir.path().join("queue");
        QUEUES.iter().map(|q| count_files(&queue.join(q))).sum()
    }

    /// The instance's `maillog_file` as text (for assertion messages).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("maillog"))
    }

    /// Waits until the port greets with `220`; panics with the log on timeout.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !process_alive(self.master_pid) {
                panic!(
                    "postfix master (pid {}) died during start; log:\n{}",
                    self.master_pid,
                    self.log()
                );
            }
            let last = match smtp_greeting(self.port) {
                Ok(line) if line.starts_with("220 ") => return,
                Ok(line) => format!("greeted {line:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "postfix (port {}) not ready after {READY_TIMEOUT:?}: {last}\n--- log ---\n{}",
                    self.port,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills every process of this instance and waits (bounded) until they are gone.
    fn stop(&self) {
        kill_instance(Some(self.master_pid), &self.conf);
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        self.stop();
        // `self.dir` (TempDir) is removed when the fields drop, after this.
    }
}

/// Splits a delivered file into the header lines Postfix put at the top (see the module docs:
/// `Return-Path`, `X-Original-To`, `Delivered-To`, and the multi-line `Received` of smtpd) and
/// the rest, which is the message as sent. Panics (showing the start of the message) when the
/// file does not start with exactly those lines.
pub fn split_postfix_headers(msg: &[u8]) -> (&[u8], &[u8]) {
    let fail = |why: &str| -> ! {
        let head = &msg[..msg.len().min(600)];
        panic!(
            "not a message as delivered by the Postfix fixture ({why}); it starts with:\n{}",
            String::from_utf8_lossy(head)
        )
    };
    let mut pos = 0;
    let next_line = |pos: &mut usize| -> Option<&[u8]> {
        let rest = &msg[*pos..];
        let end = rest.iter().position(|&b| b == b'\n')? + 1;
        *pos += end;
        Some(&rest[..end])
    };
    for name in ["Return-Path: <", "X-Original-To: ", "Delivered-To: "] {
        match next_line(&mut pos) {
            Some(line) if line.starts_with(name.as_bytes()) => {}
            _ => fail(&format!("no {name:?} line where expected")),
        }
    }
    match next_line(&mut pos) {
        Some(line) if line.starts_with(b"Received: from ") => {}
        _ => fail("no \"Received: from \" line after Delivered-To"),
    }
    let mut saw_by = false;
    while msg[pos..].starts_with(b"\t") {
        let line = next_line(&mut pos).unwrap_or_else(|| fail("unterminated Received header"));
        saw_by |= line.starts_with(b"\tby ") && line.windows(15).any(|w| w == b" (Postfix) with");
    }
    if !saw_by {
        fail("the Received header has no \"\\tby … (Postfix) with …\" line");
    }
    (&msg[..pos], &msg[pos..])
}

/// The delivered file without the header lines Postfix put at the top (see
/// [`split_postfix_headers`], which panics when they are not exactly as documented).
pub fn strip_postfix_headers(msg: &[u8]) -> Vec<u8> {
    split_postfix_headers(msg).1.to_vec()
}

/// Creates `dir/Maildir/{new,cur,tmp}` (mode 0700, owned by the caller) and returns
/// `dir/Maildir`.
pub fn make_maildir(dir: &Path) -> PathBuf {
    let maildir = dir.join("Maildir");
    for d in ["", "new", "cur", "tmp"] {
        mkdir(&maildir.join(d), 0o700);
    }
    maildir
}

/// Writes a procmail rcfile `dir/procmailrc` (mode 0600) that delivers every message into
/// `dir/Maildir/` (created here) and returns its path. Use it as
/// `procmail -m RCFILE < message` (add `-t` to get exit 75 instead of 73 on failure). `dir`
/// must not be world-writable (procmail then distrusts the rcfile).
pub fn procmail_rc(dir: &Path) -> PathBuf {
    let d = config_safe(dir);
    make_maildir(dir);
    let rc = dir.join("procmailrc");
    let text = format!(
        "# Written by tests/it/support/postfix.rs: deliver everything into a Maildir (trailing slash).\n\
         MAILDIR={d}\n\
         DEFAULT={d}/Maildir/\n"
    );
    write_file(&rc, text.as_bytes(), 0o600);
    rc
}

/// Writes a maildrop filter file `dir/mailfilter` (mode 0600) that delivers every message into
/// `dir/Maildir/` (created here: maildrop does not create it) and returns its path. Use it as
/// `maildrop FILTERFILE < message`.
pub fn maildrop_filter(dir: &Path) -> PathBuf {
    let d = config_safe(dir);
    make_maildir(dir);
    let filter = dir.join("mailfilter");
    let text = format!(
        "# Written by tests/it/support/postfix.rs: deliver everything into a Maildir (trailing slash).\n\
         to \"{d}/Maildir/\"\n"
    );
    write_file(&filter, text.as_bytes(), 0o600);
    filter
}

/// The path of the dovecot-lda binary (in `dovecot-core`).
pub const DOVECOT_LDA: &str = "/usr/lib/dovecot/dovecot-lda";

/// The configuration file of a [`Dovecot`] fixture instance (`<dir>/dovecot.conf`, found next
/// to its `tls/` folder).
pub fn dovecot_config_file(dovecot: &Dovecot) -> PathBuf {
    let conf = dovecot
        .ca_file()
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("dovecot.conf"))
        .expect("the CA file lies in <dir>/tls/");
    assert!(conf.is_file(), "no Dovecot config at {}", conf.display());
    conf
}

/// `dovecot-lda -c <instance config> -d <user>`: delivers stdin into `user`'s Maildir of that
/// instance (`dovecot.maildir(user)`; call `add_user` first), which the instance serves over
/// POP3. Runs as root; dovecot-lda drops to the instance's mail uid itself.
pub fn dovecot_lda_command(dovecot: &Dovecot, user: &str) -> Command {
    let mut cmd = Command::new(DOVECOT_LDA);
    cmd.arg("-c")
        .arg(dovecot_config_file(dovecot))
        .arg("-d")
        .arg(user);
    cmd
}

/// The messages in a Maildir (`new/` + `cur/`, dot files skipped), sorted by file name.
pub fn maildir_messages(maildir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for sub in ["new", "cur"] {
        let d = maildir.join(sub);
        let entries =
            fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                files.push((name, entry.path()));
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display())))
        .collect()
}

/// Number of messages in a Maildir (`new/` + `cur/`, dot files skipped).
pub fn maildir_count(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|sub| {
            let d = maildir.join(sub);
            fs::read_dir(&d)
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()))
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .sum()
}

/// The user and group ids the instance needs.
struct Ids {
    /// `mail_owner` (the `postfix` user) owns the queue folders and the data directory.
    postfix_uid: u32,
    /// `setgid_group` (`postdrop`) owns `maildrop/` and `public/`.
    postdrop_gid: u32,
    /// virtual(8) delivers as `nobody`/`nogroup`.
    mail_uid: u32,
    mail_gid: u32,
}

impl Ids {
    fn lookup() -> Ids {
        let need = |file: &str, name: &str| {
            lookup_id(file, name).unwrap_or_else(|| {
                panic!("no {name:?} in {file}: is postfix installed? (tests/install-peers)")
            })
        };
        Ids {
            postfix_uid: need("/etc/passwd", "postfix"),
            postdrop_gid: need("/etc/group", "postdrop"),
            mail_uid: lookup_id("/etc/passwd", "nobody").unwrap_or(65534),
            mail_gid: lookup_id("/etc/group", "nogroup").unwrap_or(65534),
        }
    }
}

/// The numeric id (third field) of `name` in a passwd- or group-style file.
fn lookup_id(file: &str, name: &str) -> Option<u32> {
    fs::read_to_string(file).ok()?.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name)
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

fn main_cf(root: &str, instance: &str, ids: &Ids) -> String {
    let Ids {
        mail_uid, mail_gid, ..
    } = ids;
    format!(
        r#"# Generated by tests/it/support/postfix.rs for one test; removed with it.
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
syslog_name = postfix-{instance}
myhostname = {HOSTNAME}
mydomain = popfetch.invalid
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
# No DNS, nothing leaves the machine.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = error:outbound delivery is disabled in tests
relay_transport = error:outbound delivery is disabled in tests
local_transport = error:local delivery is disabled in tests
alias_maps =
alias_database =
local_recipient_maps =
# Everything for {DOMAIN} goes into {root}/Maildir/.
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {root}
virtual_mailbox_maps = static:Maildir/
virtual_uid_maps = static:{mail_uid}
virtual_gid_maps = static:{mail_gid}
virtual_minimum_uid = 1
message_size_limit = 0
mailbox_size_limit = 0
virtual_mailbox_limit = 0
# Deliver the message as sent: no added or dropped headers, no rewriting.
local_header_rewrite_clients =
always_add_missing_headers = no
message_drop_headers =
# Only {DOMAIN} is accepted (554 Relay access denied for others); fault recipients, see
# rcpt_access.
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:{root}/conf/rcpt_access, permit_mynetworks, reject
# Tests make errors on purpose and may go fast.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
smtpd_junk_command_limit = 1000
in_flow_delay = 0
"#
    )
}

fn master_cf(port: u16) -> String {
    // The chroot column (5th) is `n` everywhere: the queue is not set up as a chroot jail.
    format!(
        "# Generated by tests/it/support/postfix.rs for one test; removed with it.\n\
         127.0.0.1:{port} inet n - n - - smtpd\n\
         {RELAY_SOCKET} unix n - n - - smtpd\n\
         pickup     unix  n - n 60 1 pickup\n\
         cleanup    unix  n - n - 0 cleanup\n\
         qmgr       unix  n - n 300 1 qmgr\n\
         rewrite    unix  - - n - - trivial-rewrite\n\
         bounce     unix  - - n - 0 bounce\n\
         defer      unix  - - n - 0 bounce\n\
         trace      unix  - - n - 0 bounce\n\
         verify     unix  - - n - 1 verify\n\
         flush      unix  n - n 1000? 0 flush\n\
         proxymap   unix  - - n - - proxymap\n\
         smtp       unix  - - n - - smtp\n\
         showq      unix  n - n - - showq\n\
         error      unix  - - n - - error\n\
         retry      unix  - - n - - error\n\
         discard    unix  - - n - - discard\n\
         virtual    unix  - n n - - virtual\n\
         anvil      unix  - - n - 1 anvil\n\
         scache     unix  - - n - 1 scache\n\
         postlog    unix-dgram n - n - 1 postlogd\n"
    )
}

/// The queue and data directories as `post-install create-missing` makes them (owners and
/// modes from `/etc/postfix/postfix-files`).
fn make_queue_layout(root: &Path, ids: &Ids) {
    let queue = root.join("queue");
    mkdir(&queue, 0o755);
    mkdir(&queue.join("pid"), 0o755);
    for d in [
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private",
        "saved", "trace",
    ] {
        let p = queue.join(d);
        mkdir(&p, 0o700);
        chown_path(&p, ids.postfix_uid, 0);
    }
    for (d, mode) in [("maildrop", 0o730), ("public", 0o710)] {
        let p = queue.join(d);
        mkdir(&p, mode);
        chown_path(&p, ids.postfix_uid, ids.postdrop_gid);
    }
    let data = root.join("data");
    mkdir(&data, 0o700);
    chown_path(&data, ids.postfix_uid, 0);
}

/// The `postfix` command; panics with a hint when it is not installed.
fn postfix_binary() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/postfix");
    assert!(
        p.is_file(),
        "postfix is not installed: run tests/install-peers as root (Debian: postfix)"
    );
    p
}

/// A port on 127.0.0.1 that was free at the time of the probe.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
        .port()
}

/// Connects and returns the greeting line (then says QUIT).
fn smtp_greeting(port: u16) -> std::io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let _ = (&stream).write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_owned())
}

/// A directory path that can go unquoted into a procmail rcfile or quoted into a maildrop
/// filter.
fn config_safe(dir: &Path) -> &str {
    let d = dir.to_str().expect("MDA test dir path is UTF-8");
    assert!(
        dir.is_absolute() && !d.contains(|c: char| c.is_whitespace() || "\"'\\$`=#".contains(c)),
        "MDA test dir {d:?} cannot be written into an rcfile/filter"
    );
    d
}

/// Number of regular files below `dir` (queue folders may be hashed into subfolders).
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// Kills every process of the instance with config directory `conf` and waits (bounded) until
/// they are gone.
///
/// The master is a session and process-group leader and all Postfix daemons are its children
/// in that group, so one SIGKILL to the group stops everything at once (no forks after it).
/// Stragglers outside the group are found by their `MAIL_CONFIG`.
fn kill_instance(master: Option<u32>, conf: &Path) {
    let master = master.filter(|&m| process_alive(m) && is_master_of(m, conf));
    if let Some(m) = master.filter(|&m| process_group(m) == Some(m)) {
        let _ = run_bounded(
            Command::new("sh")
                .arg("-c")
                .arg("kill -s KILL -- \"-$0\" 2>/dev/null")
                .arg(m.to_string()),
            b"",
            COMMAND_TIMEOUT,
        );
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let alive = instance_processes(master, conf);
        if alive.is_empty() {
            return;
        }
        signal(&alive, "KILL");
        if Instant::now() >= deadline {
            eprintln!(
                "warning: postfix instance {}: processes {alive:?} still alive after {STOP_TIMEOUT:?}",
                conf.display()
            );
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// An exclusive lock (flock) on a well-known file, held while an instance picks its port and
/// starts, so that concurrent starts in other test processes cannot pick the same port (see
/// [`Postfix::start`]). Released on drop. Without a usable `/tmp` there is no lock; the
/// listener count check still catches a shared port.
struct StartLock(Option<fs::File>);

impl StartLock {
    const PATH: &str = "/tmp/popfetch-postfix-start.lock";

    fn acquire() -> StartLock {
        let file = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Self::PATH);
        let Ok(file) = file else {
            return StartLock(None);
        };
        // Best effort to let any user share the lock file.
        let _ = fs::set_permissions(Self::PATH, fs::Permissions::from_mode(0o666));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            match file.try_lock() {
                Ok(()) => return StartLock(Some(file)),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("cannot lock {}: {e}", Self::PATH),
            }
        }
    }
}

impl Drop for StartLock {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            let _ = f.unlock();
        }
    }
}

/// How many TCP sockets listen on `port` (any local address, IPv4 and IPv6), from
/// `/proc/net/tcp*`; 1 when that cannot be read (no check possible).
fn listeners_on(port: u16) -> usize {
    let mut readable = false;
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        count += text
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // fields[1] is "ADDR:PORT" in hex, fields[3] the state (0A = LISTEN).
                fields.len() > 3
                    && fields[3] == "0A"
                    && fields[1]
                        .rsplit_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
            .count();
    }
    if readable { count } else { 1 }
}

/// The fields of `/proc/PID/stat` after the command name (state, ppid, pgrp, …).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn process_group(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// Whether `pid` runs with `MAIL_CONFIG=<conf>` in its environment: every process the
/// `postfix -c <conf>` command starts (the master and its daemons) has it.
fn runs_with_config(pid: u32, conf: &Path) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut wanted = b"MAIL_CONFIG=".to_vec();
    wanted.extend_from_slice(conf.as_os_str().as_encoded_bytes());
    environ.split(|&b| b == 0).any(|v| v == wanted.as_slice())
}

/// Whether `pid` is a Postfix master of the instance with config directory `conf`.
fn is_master_of(pid: u32, conf: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    argv0.ends_with(b"/master") && runs_with_config(pid, conf)
}

/// Living processes of one instance: those in the master's process group (when known) and
/// those started with its config. Never pid 1 or this process.
fn instance_processes(master: Option<u32>, conf: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid > 1 && pid != me && process_alive(pid))
        .filter(|&pid| {
            (master.is_some() && process_group(pid) == master) || runs_with_config(pid, conf)
        })
        .collect()
}

fn chown_path(path: &Path, uid: u32, gid: u32) {
    chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| {
        panic!(
            "cannot chown {} to {uid}:{gid} (tests must run as root): {e}",
            path.display()
        )
    });
}

/// Writes a Postfix configuration file (mode 0644) dated a minute back. Postfix's `load_file`
/// reads a file again, after 300 ms naps, for as long as its mtime is within the last second or
/// two ("wait for the file to stabilize"); a fresh `main.cf` would cost every start ~2 s.
fn write_config(path: &Path, contents: &[u8]) {
    write_file(path, contents, 0o644);
    let past = SystemTime::now() - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(past))
        .unwrap_or_else(|e| panic!("cannot set the mtime of {}: {e}", path.display()));
}
