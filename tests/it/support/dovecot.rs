//! A private, throw-away Dovecot POP3 server for integration tests.
//!
//! This module owns everything about running the real Dovecot (2.3, Debian's `dovecot-core` and
//! `dovecot-pop3d`, installed by `tests/install-peers`) as a test peer: one instance per
//! [`Dovecot`] value, each in its own temporary directory with its own configuration file,
//! run/state directories, log file, users (a passwd-file), Maildirs, and a throw-away CA plus
//! server certificate made with the `openssl` CLI. Instances listen on loopback only, on free
//! high ports picked at start, so tests may run in parallel threads and processes. Nothing is
//! read from or written to `/etc/dovecot` or any other global place; dropping the value stops
//! the server and removes the directory.
//!
//! The tests run as root: Dovecot drops privileges by itself (`dovenull` for the login
//! processes, `dovecot` for internal ones, `nobody`/`nogroup` for the mail processes), so the
//! temporary directory is made traversable for those users and the Maildirs belong to the mail
//! uid.
//!
//! Dovecot facts worth knowing when writing tests against it (see also shared/PEERS.md):
//! - Dovecot treats a connection whose remote IP equals its local IP as *secured*, so on
//!   `127.0.0.1` → `127.0.0.1` `disable_plaintext_auth = yes` ([`Options::plaintext`] `false`)
//!   has no effect: `USER`/`PASS` still work and `CAPA` still lists `USER`. Each instance
//!   therefore also listens on [`Dovecot::insecure_host`] (`127.0.0.2`): connections to it come
//!   from `127.0.0.1` and count as insecure. The certificate names only `localhost` and
//!   `127.0.0.1`.
//! - The APOP timestamp appears in the greeting only when APOP is enabled ([`Options::apop`]).
//! - `pop3_uidl_format = %g` makes the UIDL the Maildir base name, i.e. the name returned by
//!   [`Dovecot::deliver`] (including its `,S=…,W=…` part); Dovecot numbers new messages in the
//!   order of those names, which follow the order of delivery. The sizes in the name must be
//!   exact: a wrong `S=` makes Dovecot log "Cached message size larger than expected" and
//!   break the session.
//! - Failed logins are slow by default (`auth_failure_delay = 2s` plus an anvil "auth penalty"
//!   per client IP that grows to 15 s and also delays later *successful* logins from the same
//!   IP, i.e. every later test on this instance). The config here turns both off; a failed
//!   login still takes up to 0.5 s (Dovecot's fixed check interval).
//! - With `pop3_lock_session = yes` (via [`Dovecot::start_with_extra`]) a second session is
//!   refused with `-ERR [IN-USE]` only after about 12 s; `mail_max_lock_timeout` does not
//!   shorten it.
//! - `dovecot stop` takes over a second per instance, so dropping an instance kills its
//!   processes instead (see `Dovecot::stop`); it takes milliseconds.
//! - [`Options::oauth2`] adds an OAuth2 passdb for `XOAUTH2` and `OAUTHBEARER` in front of the
//!   passwd-file one; what Dovecot does with it is described in [`crate::auth::oauth_peer`], which
//!   also serves the token-validation endpoint it asks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`Dovecot::start`] waits for both ports to greet.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times [`Dovecot::start`] picks new ports when one was taken meanwhile.
const START_ATTEMPTS: u32 = 8;
/// Bound for each external command (`openssl`, `dovecot`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for waiting until the processes of a dropped instance are gone.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The second loopback address, see [`Dovecot::insecure_host`].
const INSECURE_HOST: &str = "127.0.0.2";

/// How to configure an instance. `Options::default()` is what [`Dovecot::start`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Enable APOP (`auth_mechanisms` gets `apop`, the greeting gets a `<timestamp>`).
    pub apop: bool,
    /// `disable_plaintext_auth = no` when true, `yes` when false. Note that Dovecot counts
    /// `127.0.0.1` → `127.0.0.1` as secured anyway; connect to [`Dovecot::insecure_host`] to
    /// see the refusal.
    pub plaintext: bool,
    /// The SASL mechanisms, as Dovecot's `auth_mechanisms` (e.g. `"plain login cram-md5"`).
    pub mechanisms: &'static str,
    /// `pop3_uidl_format`; `None` leaves Dovecot's default (`%08Xu%08Xv`).
    pub uidl_format: Option<&'static str>,
    /// An OAuth2 passdb (`driver = oauth2`) for the `XOAUTH2` and `OAUTHBEARER` mechanisms,
    /// which are then added to `auth_mechanisms`. `None` (the default) configures none. Users
    /// who log in with a token need a Maildir: [`Dovecot::add_mailbox`].
    pub oauth2: Option<OAuth2Passdb>,
    /// Ask every TLS client for a certificate signed by the test CA and refuse a login without
    /// one (`ssl_verify_client_cert`, `auth_ssl_require_client_cert`); see
    /// [`Dovecot::client_cert`].
    pub client_cert: bool,
    /// Offer SASL `EXTERNAL` for TLS clients with a certificate (implies [`Options::client_cert`]):
    /// the user is the certificate's commonName (`auth_ssl_username_from_cert`), and a passdb
    /// consulted for `EXTERNAL` alone lets any such user in without a password (Dovecot checks
    /// an empty one). The user needs a Maildir: [`Dovecot::add_mailbox`] or `add_user`.
    pub external: bool,
    /// Serve a self-signed certificate for `localhost` valid this many days (in place of the
    /// CA-issued one; `server.pem` is then that certificate): a server no CA vouches for, or
    /// one whose certificate ends soon.
    pub self_signed_days: Option<u32>,
    /// Also serve LMTP (`dovecot-lmtpd`): on the Unix socket [`Dovecot::lmtp_socket`] (mode
    /// 0666) and on TCP [`Dovecot::lmtp_port`]; a recipient `user@anything` lands in that
    /// user's Maildir, which the same instance serves over POP3.
    pub lmtp: bool,
}

/// The OAuth2 passdb of an instance, see [`Options::oauth2`] and [`crate::auth::oauth_peer`].
///
/// It is consulted only for `XOAUTH2` and `OAUTHBEARER` (`mechanisms = xoauth2 oauthbearer`)
/// and its verdict is final (`result_failure`/`result_internalfail = return-fail`), so a token
/// is never tried as a passwd-file password, and `USER`/`PASS`, `PLAIN`, `CRAM-MD5` and `APOP`
/// keep going to the passwd-file users exactly as without it. (Without `return-fail` Dovecot
/// does fall through: `XOAUTH2` with a passwd-file user's password as the "token" logs in.)
#[derive(Clone, Debug)]
pub struct OAuth2Passdb {
    /// The text of the passdb's own settings file (`args = FILE`, Dovecot's
    /// `dovecot-oauth2.conf.ext`), one `key = value` a line: e.g. `tokeninfo_url = …`,
    /// `introspection_url = …`, `introspection_mode = …`, `username_attribute = …`.
    pub settings: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            apop: false,
            plaintext: true,
            mechanisms: "plain login cram-md5",
            uidl_format: Some("%g"),
            oauth2: None,
            client_cert: false,
            external: false,
            self_signed_days: None,
            lmtp: false,
        }
    }
}

/// A running private Dovecot POP3 server; stopped and removed on drop.
pub struct Dovecot {
    dir: tempfile::TempDir,
    conf: PathBuf,
    ca_file: PathBuf,
    instance: String,
    pop3_port: u16,
    pop3s_port: u16,
    lmtp_port: Option<u16>,
    master_pid: u32,
    mail_uid: u32,
    mail_gid: u32,
    users: Mutex<BTreeMap<String, String>>,
}

impl Dovecot {
    /// Starts an instance with [`Options::default`].
    pub fn start() -> Dovecot {
        Self::start_with(Options::default())
    }

    /// Starts an instance with the given options.
    pub fn start_with(opts: Options) -> Dovecot {
        Self::start_with_extra(opts, "")
    }

    /// Starts an instance with the given options and `extra_config` appended verbatim to the
    /// generated `dovecot.conf` (e.g. `"pop3_lock_session = yes\n"`).
    pub fn start_with_extra(opts: Options, extra_config: &str) -> Dovecot {
        let dovecot = dovecot_binary();
        let dir = make_temp_dir("popfetch-dovecot-");
        let root = dir.path().to_path_buf();
        let root_str = root.to_str().expect("temp dir path is UTF-8").to_owned();
        assert!(
            !root_str.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\'),
            "temp dir path {root_str:?} cannot be written into dovecot.conf unquoted"
        );
        let instance = root
            .file_name()
            .and_then(|n| n.to_str())
            .expect("temp dir has a name")
            .to_owned();
        for sub in ["run", "state", "home", "tls"] {
            mkdir(&root.join(sub), 0o755);
        }
        make_certificates(&root.join("tls"));
        if let Some(days) = opts.self_signed_days {
            make_self_signed(&root.join("tls"), days);
        }
        write_file(&root.join("passwd"), b"", 0o644);
        if let Some(oauth2) = &opts.oauth2 {
            write_file(
                &root.join(OAUTH2_SETTINGS_FILE),
                oauth2.settings.as_bytes(),
                0o644,
            );
        }
        let (mail_uid, mail_gid) = mail_ids();
        let conf = root.join("dovecot.conf");

        let mut ports = None;
        for attempt in 1..=START_ATTEMPTS {
            let (pop3, pop3s) = free_ports();
            let lmtp = opts.lmtp.then(|| free_ports().0);
            let text = config_text(&ConfigParams {
                lmtp_port: lmtp,
                root: &root_str,
                instance: &instance,
                pop3_port: pop3,
                pop3s_port: pop3s,
                mail_uid,
                mail_gid,
                opts: &opts,
                extra: extra_config,
            });
            write_file(&conf, text.as_bytes(), 0o644);
            let out = run_bounded(
                Command::new(&dovecot).arg("-c").arg(&conf),
                b"",
                COMMAND_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("cannot start dovecot: {e}"));
            if out.status.success() {
                ports = Some((pop3, pop3s, lmtp));
                break;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("Address already in use") && attempt < START_ATTEMPTS {
                // Another test took one of the ports between our probe and Dovecot's bind.
                continue;
            }
            panic!(
                "dovecot -c {} failed ({}):\n{stderr}\n--- config ---\n{text}\n--- log ---\n{}",
                conf.display(),
                out.status,
                read_lossy(&root.join("dovecot.log")),
            );
        }
        let (pop3_port, pop3s_port, lmtp_port) = ports.expect("start loop either breaks or panics");

        // The daemon writes its pid file after the starting command has returned.
        let pid_file = root.join("run/master.pid");
        let deadline = Instant::now() + READY_TIMEOUT;
        let master_pid = loop {
            let pid = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            match pid {
                Some(pid) => break pid,
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                None => {
                    signal(&instance_processes(None, &instance, &conf), "KILL");
                    panic!(
                        "dovecot started but wrote no {} within {READY_TIMEOUT:?}; log:\n{}",
                        pid_file.display(),
                        read_lossy(&root.join("dovecot.log"))
                    );
                }
            }
        };

        // From here on a panic drops `server`, which stops the processes.
        let server = Dovecot {
            // A self-signed certificate is its own trust anchor.
            ca_file: root.join(if opts.self_signed_days.is_some() {
                "tls/server.pem"
            } else {
                "tls/ca.pem"
            }),
            dir,
            conf,
            instance,
            pop3_port,
            pop3s_port,
            lmtp_port,
            master_pid,
            mail_uid,
            mail_gid,
            users: Mutex::new(BTreeMap::new()),
        };
        server.wait_ready();
        server
    }

    /// The plain POP3 port (`STLS` is offered on it).
    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// The implicit-TLS POP3 port.
    pub fn pop3s_port(&self) -> u16 {
        self.pop3s_port
    }

    /// The LMTP TCP port on 127.0.0.1 ([`Options::lmtp`]).
    pub fn lmtp_port(&self) -> u16 {
        self.lmtp_port.expect("started without Options::lmtp")
    }

    /// The LMTP Unix socket ([`Options::lmtp`]): `base_dir/lmtp`.
    pub fn lmtp_socket(&self) -> PathBuf {
        self.dir.path().join("run/lmtp")
    }

    /// The PEM file of the throw-away CA that signed the server certificate (whose names are
    /// `DNS:localhost` and `IP:127.0.0.1`); with [`Options::self_signed_days`], that
    /// certificate itself. `server.pem` stands next to it either way.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A client certificate and its key (CN `alice`), signed by the same CA: what
    /// [`Options::client_cert`] asks for. The key is mode 0600.
    pub fn client_cert(&self) -> (PathBuf, PathBuf) {
        let dir = self
            .ca_file
            .parent()
            .expect("the CA file is in a directory");
        let key = dir.join("client.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the client key");
        (dir.join("client.pem"), key)
    }

    /// A second loopback address this instance also listens on (same ports). Dovecot does not
    /// count connections to it as secured, so `disable_plaintext_auth` takes effect there.
    /// The certificate does not name it.
    pub fn insecure_host(&self) -> &'static str {
        INSECURE_HOST
    }

    /// Dovecot's `instance_name` (unique on the machine while the instance lives); the process
    /// titles contain it.
    pub fn instance_name(&self) -> &str {
        &self.instance
    }

    /// Adds a user (or changes the password of an existing one) and creates the user's Maildir.
    pub fn add_user(&self, user: &str, password: &str) {
        check_user_name(user);
        assert!(
            !password.contains([':', '\n', '\r']),
            "a passwd-file password cannot contain ':' or line breaks: {password:?}"
        );
        let mut users = lock(&self.users);
        users.insert(user.to_owned(), password.to_owned());
        let mut text = String::new();
        for (u, p) in users.iter() {
            writeln!(text, "{u}:{{PLAIN}}{p}::::::").expect("write to String");
        }
        // Replace the file atomically: the auth process re-reads it when it changes.
        let tmp = self.dir.path().join("passwd.tmp");
        write_file(&tmp, text.as_bytes(), 0o644);
        rename(&tmp, &self.dir.path().join("passwd"));
        self.add_mailbox(user);
    }

    /// Creates the user's home and Maildir (if missing) without adding a password: for users
    /// who log in only with an OAuth2 token ([`Options::oauth2`]). The userdb is static, so
    /// any name that passes the passdb gets `<dir>/home/<user>`, and this makes it exist.
    pub fn add_mailbox(&self, user: &str) {
        check_user_name(user);
        let home = self.dir.path().join("home").join(user);
        let maildir = home.join("Maildir");
        for d in [
            home.clone(),
            maildir.clone(),
            maildir.join("new"),
            maildir.join("cur"),
            maildir.join("tmp"),
        ] {
            mkdir(&d, 0o700);
            self.chown_mail(&d);
        }
    }

    /// Drops one message into the user's `Maildir/new` and returns its base name (the UIDL
    /// with `uidl_format = %g`). The bytes are stored as given; LF line endings are what a
    /// Maildir normally holds, and Dovecot sends CRLF on the wire.
    pub fn deliver(&self, user: &str, message: &[u8]) -> String {
        let maildir = self.user_maildir(user);
        self.deliver_into(&maildir, message)
    }

    /// Like [`Dovecot::deliver`] for many messages (thousands are fine); the names are returned
    /// in the order of the messages, which is also Dovecot's message order.
    pub fn deliver_many(
        &self,
        user: &str,
        messages: impl IntoIterator<Item = Vec<u8>>,
    ) -> Vec<String> {
        let maildir = self.user_maildir(user);
        messages
            .into_iter()
            .map(|m| self.deliver_into(&maildir, &m))
            .collect()
    }

    /// Number of messages in the user's Maildir (`new/` plus `cur/`).
    pub fn message_count(&self, user: &str) -> usize {
        let maildir = self.maildir(user);
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

    /// The user's Maildir (`<dir>/home/<user>/Maildir`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("home").join(user).join("Maildir")
    }

    /// The instance's log file as text (for assertion messages).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("dovecot.log"))
    }

    fn user_maildir(&self, user: &str) -> PathBuf {
        let maildir = self.maildir(user);
        assert!(
            maildir.join("new").is_dir(),
            "no Maildir for user {user:?}: call add_user first"
        );
        maildir
    }

    fn deliver_into(&self, maildir: &Path, message: &[u8]) -> String {
        let (secs, micros) = next_stamp();
        let name = format!(
            "{secs}.M{micros:06}P{}.popfetch,S={},W={}",
            std::process::id(),
            message.len(),
            virtual_size(message)
        );
        // Maildir protocol: write in tmp/, then rename into new/.
        let tmp = maildir.join("tmp").join(&name);
        write_file(&tmp, message, 0o600);
        self.chown_mail(&tmp);
        rename(&tmp, &maildir.join("new").join(&name));
        name
    }

    fn chown_mail(&self, path: &Path) {
        chown(path, Some(self.mail_uid), Some(self.mail_gid)).unwrap_or_else(|e| {
            panic!(
                "cannot chown {} to {}:{} (tests must run as root): {e}",
                path.display(),
                self.mail_uid,
                self.mail_gid
            )
        });
    }

    /// Waits until the plain port greets with `+OK` and the TLS port greets with `+OK` over
    /// a TLS session verified against the CA (both names); panics with the log on timeout.
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        let mut plain_ok = false;
        loop {
            if !process_alive(self.master_pid) {
                panic!(
                    "dovecot master (pid {}) died during start; log:\n{}",
                    self.master_pid,
                    self.log()
                );
            }
            if !plain_ok {
                match plain_greeting(self.pop3_port) {
                    Ok(line) if line.starts_with("+OK") => plain_ok = true,
                    Ok(line) => last = format!("plain port greeted {line:?}"),
                    Err(e) => last = format!("plain port: {e}"),
                }
            }
            if plain_ok {
                match self.tls_greeting().and_then(|()| self.lmtp_greeting()) {
                    Ok(()) => return,
                    Err(e) => last = format!("TLS port: {e}"),
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "dovecot (ports {}/{}) not ready after {READY_TIMEOUT:?}: {last}\n--- log ---\n{}",
                    self.pop3_port,
                    self.pop3s_port,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// With [`Options::lmtp`]: both LMTP listeners greet with 220.
    fn lmtp_greeting(&self) -> Result<(), String> {
        let Some(port) = self.lmtp_port else {
            return Ok(());
        };
        let greet = |s: &mut dyn Read| -> Result<(), String> {
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).map_err(|e| e.to_string())?;
            if &buf == b"220" {
                Ok(())
            } else {
                Err(format!("LMTP greeted {buf:?}"))
            }
        };
        let mut tcp =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("LMTP port: {e}"))?;
        tcp.set_read_timeout(Some(READY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        greet(&mut tcp)?;
        let mut unix = std::os::unix::net::UnixStream::connect(self.lmtp_socket())
            .map_err(|e| format!("LMTP socket: {e}"))?;
        unix.set_read_timeout(Some(READY_TIMEOUT))
            .map_err(|e| e.to_string())?;
        greet(&mut unix)
    }

    fn tls_greeting(&self) -> Result<(), String> {
        let out = run_bounded(
            Command::new("openssl")
                .arg("s_client")
                .arg("-connect")
                .arg(format!("127.0.0.1:{}", self.pop3s_port))
                .args(["-servername", "localhost", "-verify_hostname", "localhost"])
                .args(["-verify_ip", "127.0.0.1", "-verify_return_error", "-quiet"])
                .arg("-CAfile")
                .arg(self.ca_file()),
            b"QUIT\r\n",
            READY_TIMEOUT,
        )?;
        if out.status.success() && out.stdout.starts_with(b"+OK") {
            Ok(())
        } else {
            Err(format!(
                "openssl s_client ({}): stdout {:?}, stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops every process of this instance and waits (bounded) until they are gone.
    ///
    /// `dovecot stop` (SIGTERM) costs more than a second per instance (the master sleeps 1 s
    /// for its log process, and `dovecot stop` then polls for the reaped pid), which adds up
    /// over a test suite. A test server has no state worth a clean shutdown, so the master is
    /// frozen (SIGSTOP, so it forks no more), its children are collected, and all get SIGKILL.
    fn stop(&self) {
        let master = self.master_pid;
        // Make sure the pid is still our master before freezing it.
        let master_alive = process_alive(master) && is_master_of(master, &self.conf);
        if master_alive {
            signal(&[master], "STOP");
        }
        let known_master = master_alive.then_some(master);
        let mut victims = instance_processes(known_master, &self.instance, &self.conf);
        if master_alive {
            victims.push(master);
        }
        signal(&victims, "KILL");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let alive: Vec<u32> = victims
                .iter()
                .copied()
                .filter(|&p| process_alive(p))
                .collect();
            if alive.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "warning: dovecot instance {} (conf {}): processes {alive:?} still alive after {STOP_TIMEOUT:?}",
                    self.instance,
                    self.conf.display()
                );
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        // `self.dir` (TempDir) is removed when the fields drop, after this.
    }
}

/// The name of the OAuth2 passdb's settings file in the instance directory.
const OAUTH2_SETTINGS_FILE: &str = "dovecot-oauth2.conf.ext";

fn check_user_name(user: &str) {
    assert!(
        !user.is_empty()
            && !user.contains(|c: char| c == ':' || c == '/' || c == '@' || c.is_whitespace()),
        "bad test user name {user:?}"
    );
}

struct ConfigParams<'a> {
    root: &'a str,
    instance: &'a str,
    pop3_port: u16,
    pop3s_port: u16,
    lmtp_port: Option<u16>,
    mail_uid: u32,
    mail_gid: u32,
    opts: &'a Options,
    extra: &'a str,
}

fn config_text(p: &ConfigParams<'_>) -> String {
    let ConfigParams {
        root,
        instance,
        pop3_port,
        pop3s_port,
        lmtp_port,
        mail_uid,
        mail_gid,
        opts,
        extra,
    } = p;
    let (protocols, lmtp) = match lmtp_port {
        None => ("pop3", String::new()),
        Some(port) => (
            "pop3 lmtp",
            format!(
                r#"lmtp_save_to_detail_mailbox = no
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"#
            ),
        ),
    };
    let mut mechanisms = if opts.apop {
        format!("{} apop", opts.mechanisms)
    } else {
        opts.mechanisms.to_owned()
    };
    // Without an OAuth2 passdb the text is exactly what it always was.
    let mut client_cert = if opts.client_cert || opts.external {
        format!(
            "ssl_ca = <{root}/tls/ca.pem\nssl_verify_client_cert = yes\n\
             auth_ssl_require_client_cert = yes\nssl_require_crl = no\n"
        )
    } else {
        String::new()
    };
    let external_passdb = if opts.external {
        mechanisms.push_str(" external");
        client_cert.push_str("auth_ssl_username_from_cert = yes\n");
        // Its verdict is final, so EXTERNAL never falls through to the passwd-file users.
        "passdb {\n  driver = static\n  mechanisms = external\n  args = nopassword=y\n  \
         result_failure = return-fail\n  result_internalfail = return-fail\n}\n"
            .to_string()
    } else {
        String::new()
    };
    let oauth2_passdb = match &opts.oauth2 {
        None => String::new(),
        Some(_) => {
            for mech in ["xoauth2", "oauthbearer"] {
                if !mechanisms
                    .split_whitespace()
                    .any(|m| m.eq_ignore_ascii_case(mech))
                {
                    mechanisms.push(' ');
                    mechanisms.push_str(mech);
                }
            }
            format!(
                r#"passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/{OAUTH2_SETTINGS_FILE}
  result_failure = return-fail
  result_internalfail = return-fail
}}
"#
            )
        }
    };
    let disable_plaintext = if opts.plaintext { "no" } else { "yes" };
    let uidl = opts
        .uidl_format
        .map(|f| format!("pop3_uidl_format = {f}\n"))
        .unwrap_or_default();
    format!(
        r#"# Generated by tests/it/support/dovecot.rs for one test; removed with it.
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1, {INSECURE_HOST}
default_login_user = dovenull
default_internal_user = dovecot
mail_uid = {mail_uid}
mail_gid = {mail_gid}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
{uidl}pop3_fast_size_lookups = yes
ssl = yes
ssl_cert = <{root}/tls/server.pem
ssl_key = <{root}/tls/server.key
{client_cert}disable_plaintext_auth = {disable_plaintext}
auth_mechanisms = {mechanisms}
auth_verbose = yes
auth_failure_delay = 0
{oauth2_passdb}{external_passdb}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/home/%n
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = {pop3s_port}
    ssl = yes
  }}
}}
{lmtp}{extra}
"#
    )
}

/// The Dovecot master binary; panics with a hint when it is not installed.
fn dovecot_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/dovecot");
    if sbin.is_file() {
        return sbin;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("dovecot"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("dovecot is not installed: run tests/install-peers as root (Debian: dovecot-core dovecot-pop3d)")
    })
}

/// A fresh temp dir (0755) that unprivileged peer users can traverse, named `PREFIX...`; also
/// used by the Postfix fixture.
///
/// Without an explicit `$TMPDIR`, `/dev/shm` (tmpfs) comes first: on a VM disk creating a file
/// can cost a millisecond, which makes bulk deliveries slow, and tmpfs does not. A directory
/// that others cannot traverse, or whose path is too long for the Unix sockets Dovecot puts
/// under it, is skipped; `/tmp` is the last resort.
pub(crate) fn make_temp_dir(prefix: &str) -> tempfile::TempDir {
    let mut candidates = Vec::new();
    if std::env::var_os("TMPDIR").is_none() {
        candidates.push(PathBuf::from("/dev/shm"));
    }
    candidates.push(std::env::temp_dir());
    candidates.push(PathBuf::from("/tmp"));
    let mut errors = Vec::new();
    for parent in candidates {
        if parent.as_os_str().len() > 40 || !traversable_by_others(&parent) {
            errors.push(format!(
                "{}: too long or not traversable by others",
                parent.display()
            ));
            continue;
        }
        match tempfile::Builder::new().prefix(prefix).tempdir_in(&parent) {
            Ok(dir) => {
                fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
                    .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", dir.path().display()));
                return dir;
            }
            Err(e) => errors.push(format!("{}: {e}", parent.display())),
        }
    }
    panic!("no usable temp dir for {prefix}: {errors:?}");
}

fn traversable_by_others(dir: &Path) -> bool {
    dir.is_absolute()
        && dir.ancestors().all(|d| {
            fs::metadata(d)
                .map(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
        })
}

/// uid of `nobody` and gid of `nogroup` (65534 on Debian).
fn mail_ids() -> (u32, u32) {
    fn lookup(file: &str, name: &str) -> Option<u32> {
        fs::read_to_string(file).ok()?.lines().find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name)
                .then(|| fields.nth(1)?.parse().ok())
                .flatten()
        })
    }
    (
        lookup("/etc/passwd", "nobody").unwrap_or(65534),
        lookup("/etc/group", "nogroup").unwrap_or(65534),
    )
}

/// Two distinct free ports on 127.0.0.1 (free at the time of the probe).
fn free_ports() -> (u16, u16) {
    let bind = || {
        TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"))
    };
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| {
        l.local_addr()
            .expect("bound listener has an address")
            .port()
    };
    (port(&a), port(&b))
}

/// Makes `ca.pem`/`ca.key` (a throw-away CA) and `server.pem`/`server.key` (signed by it,
/// SAN `DNS:localhost, IP:127.0.0.1`) in `dir`. EC P-256 keys: fast to generate.
pub(crate) fn make_certificates(dir: &Path) {
    write_file(
        &dir.join("ca.cnf"),
        b"[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
          [dn]\nCN = popfetch test CA\n\
          [v3_ca]\nbasicConstraints = critical,CA:TRUE\n\
          keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
        0o644,
    );
    write_file(
        &dir.join("server.cnf"),
        b"[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = localhost\n",
        0o644,
    );
    write_file(
        &dir.join("server-ext.cnf"),
        b"subjectAltName = DNS:localhost, IP:127.0.0.1\n\
          basicConstraints = critical,CA:FALSE\n\
          keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n\
          subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        0o644,
    );
    write_file(
        &dir.join("client.cnf"),
        b"[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = alice\n",
        0o644,
    );
    write_file(
        &dir.join("client-ext.cnf"),
        b"basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
          extendedKeyUsage = clientAuth\n",
        0o644,
    );
    let serial = format!(
        "0x{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos()
    );
    let curve = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!("req -x509 -new -config ca.cnf {curve} -keyout ca.key -out ca.pem -days 3650"),
        format!("req -new -config server.cnf {curve} -keyout server.key -out server.csr"),
        format!(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial {serial} -days 3650 \
             -extfile server-ext.cnf -out server.pem"
        ),
        format!("req -new -config client.cnf {curve} -keyout client.key -out client.csr"),
        format!(
            "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -set_serial {serial}1 -days 3650 \
             -extfile client-ext.cnf -out client.pem"
        ),
    ];
    for args in &steps {
        let out = run_bounded(
            Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(dir),
            b"",
            COMMAND_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("openssl (install it: tests/install-peers): {e}"));
        assert!(
            out.status.success(),
            "openssl {args} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Replaces `server.pem`/`server.key` in `dir` by a self-signed certificate for `localhost`
/// (and 127.0.0.1), valid `days` days.
fn make_self_signed(dir: &Path, days: u32) {
    let out = run_bounded(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args([
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-days",
                &days.to_string(),
            ])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-keyout", "server.key", "-out", "server.pem"])
            .current_dir(dir),
        b"",
        COMMAND_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl req -x509: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Connects to the plain port and returns the greeting line.
fn plain_greeting(port: u16) -> std::io::Result<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    // Be polite; the answer does not matter.
    let _ = (&stream).write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_owned())
}

/// Runs `cmd` with `input` on stdin, capturing stdout and stderr, killing it after `timeout`.
/// Output goes to anonymous files rather than pipes, so a daemon that inherits them (as
/// `dovecot` does) cannot make the wait hang. `Err` when it cannot run or timed out.
pub(crate) fn run_bounded(
    cmd: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let io = |e: std::io::Error| format!("{what}: {e}");
    let mut stdin = tempfile::tempfile().map_err(io)?;
    stdin.write_all(input).map_err(io)?;
    stdin.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut stdout = tempfile::tempfile().map_err(io)?;
    let mut stderr = tempfile::tempfile().map_err(io)?;
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout.try_clone().map_err(io)?))
        .stderr(Stdio::from(stderr.try_clone().map_err(io)?));
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what} timed out after {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(5));
    };
    let read_back = |f: &mut fs::File| -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(0)).map_err(io)?;
        f.read_to_end(&mut buf).map_err(io)?;
        Ok(buf)
    };
    Ok(Output {
        status,
        stdout: read_back(&mut stdout)?,
        stderr: read_back(&mut stderr)?,
    })
}

/// Sends `signal` (a name such as `KILL`) to `pids`, ignoring pids that are gone.
pub(crate) fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    // The shell's built-in kill: present wherever `sh` is, unlike procps' /bin/kill.
    let _ = run_bounded(
        Command::new("sh")
            .arg("-c")
            .arg("kill -s \"$0\" \"$@\" 2>/dev/null")
            .arg(signal)
            .args(pids.iter().map(u32::to_string)),
        b"",
        COMMAND_TIMEOUT,
    );
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The processes of one instance: the children of `master` (when known) and whatever still
/// carries the instance in its process title (`dovecot-<instance>/<service>`) or is a
/// `dovecot` master started with `conf`. Never pid 1 or this process.
fn instance_processes(master: Option<u32>, instance: &str, conf: &Path) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let title = format!("dovecot-{instance}/");
    let me = std::process::id();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid > 1 && pid != me && Some(pid) != master)
        .filter(|&pid| {
            let ppid = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            (master.is_some() && ppid == master)
                || fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with(title.as_bytes()))
                || is_master_of(pid, conf)
        })
        .collect()
}

/// Whether `pid` runs `dovecot … -c <conf>` (the master of the instance with that file).
fn is_master_of(pid: u32, conf: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|&b| b == 0);
    let conf = conf.as_os_str().as_encoded_bytes();
    args.next().is_some_and(|a| a.ends_with(b"dovecot")) && args.any(|a| a == conf)
}

/// A strictly increasing (seconds, microseconds) stamp for Maildir names: unique within the
/// process (the pid is in the name too) and sorting in delivery order.
fn next_stamp() -> (u64, u32) {
    static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let candidate = (now.as_secs(), now.subsec_micros());
    let mut last = lock(&LAST);
    let next = if candidate > *last {
        candidate
    } else if last.1 < 999_999 {
        (last.0, last.1 + 1)
    } else {
        (last.0 + 1, 0)
    };
    *last = next;
    next
}

/// The message size with every bare LF counted as CRLF (Dovecot's "virtual size", the `W=`
/// of a Maildir name and what `LIST` reports).
fn virtual_size(message: &[u8]) -> usize {
    let bare_lfs = message
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || message[i - 1] != b'\r'))
        .count();
    message.len() + bare_lfs
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test elsewhere must not poison the fixture for the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn rename(from: &Path, to: &Path) {
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", from.display(), to.display()));
}

pub(crate) fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
