//! `popfetch import` (issue 9): switching from fetchmail, getmail6 or mpop without fetching old
//! mail again.
//!
//! The peer tests run the real tool (Debian's fetchmail, getmail6, mpop) in keep mode against
//! a private Dovecot, so that it writes its own state file in its own format; then `popfetch
//! import` reads the tool's rc file and state from their default places, new mail arrives,
//! and `popfetch fetch` with the imported config must take exactly the new messages. The tools
//! run as `nobody` through `setpriv` (getmail6 refuses to deliver as root; fetchmail and mpop
//! insist that their rc file, mode 0600, belongs to the user running them), invoked as in
//! `benches/compare/main.rs`.
//!
//! The golden tests translate the rc files under `tests/data/import/` and compare config and
//! messages with the expected files next to them; `POPFETCH_BLESS=1 cargo test --test it
//! import` rewrites those.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::dovecot::{Dovecot, make_temp_dir, run_bounded};
use crate::harness::{Env, Run, expected, message};

/// The password of the test account: a space, quotes and an `@`, so that every rc file
/// format has to quote it and the import has to unquote it.
const PASSWORD: &str = "p@ss \"w0rd\" 9";
/// Bound for each run of an old tool.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// How often getmail6 is run before its SIGCHLD race (see benches/compare/main.rs) fails the test.
const GETMAIL_ATTEMPTS: usize = 3;

/// One test's world: the Dovecot, the old tool's home (traversable by `nobody`), and
/// popfetch's own temp dir.
struct World {
    dovecot: Dovecot,
    tool_dir: tempfile::TempDir,
    env: Env,
    old: Vec<Vec<u8>>,
}

impl World {
    /// A Dovecot with user `alice` holding three old messages.
    fn new() -> World {
        let dovecot = Dovecot::start();
        dovecot.add_user("alice", PASSWORD);
        let old: Vec<Vec<u8>> = (0..3).map(|i| message(9100 + i, 400 + i * 100)).collect();
        dovecot.deliver_many("alice", old.clone());
        let tool_dir = make_temp_dir("popfetch-import-");
        let w = World {
            dovecot,
            tool_dir,
            env: Env::new(),
            old,
        };
        for d in [w.home(), w.tool_maildir()] {
            mkdir(&d);
        }
        for sub in ["new", "cur", "tmp"] {
            mkdir(&w.tool_maildir().join(sub));
        }
        w
    }

    fn home(&self) -> PathBuf {
        self.tool_dir.path().join("home")
    }

    /// Where the old tool delivers.
    fn tool_maildir(&self) -> PathBuf {
        self.tool_dir.path().join("oldmail")
    }

    fn ca(&self) -> String {
        path_str(self.dovecot.ca_file())
    }

    fn state_dir(&self) -> PathBuf {
        self.env.path().join("state")
    }

    /// Runs the old tool as `nobody` with HOME set to its home.
    fn run_tool(&self, argv: &[&str]) -> (Option<i32>, String) {
        chown_tree(self.tool_dir.path());
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .args(argv)
            .env("HOME", self.home())
            .env("USER", "nobody")
            .env("LOGNAME", "nobody")
            .env("LC_ALL", "C")
            .env_remove("FETCHMAILHOME")
            .env_remove("XDG_CONFIG_HOME");
        let out = run_bounded(&mut cmd, b"", TOOL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Runs `popfetch import ARGS` as root, with the old tool's home as HOME, so the default
    /// places of its files are used.
    fn import(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_popfetch"))
            .arg("import")
            .args(args)
            .arg("--state-dir")
            .arg(self.state_dir())
            .env("HOME", self.home())
            .env_remove("FETCHMAILHOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("POPFETCH_CONFIG")
            .env_remove("POPFETCH_LOG")
            .output()
            .expect("run popfetch import");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The second half of every peer test: the import must have recorded the three old
    /// messages; its config must load as it is; pointed at the test's Maildir, its first
    /// fetch must take exactly the messages that arrived after the import.
    fn finish(&self, run: &Run) {
        run.assert_code(0);
        assert!(
            run.stderr.contains("recorded 3 UIDLs from"),
            "stderr:\n{}",
            run.stderr
        );
        // As imported (it holds the password, so 0600): `popfetch check` accepts it.
        write_private(&self.env.config_path(), &run.stdout);
        let check = self.env.popfetch(&["check"]);
        check.assert_code(0);
        assert!(
            check.stdout.contains("valid, 1 account(s)"),
            "{}",
            check.stdout
        );
        assert!(check.stdout.contains("keep = true"), "{}", check.stdout);

        let new: Vec<Vec<u8>> = (0..2).map(|i| message(9200 + i, 700)).collect();
        self.dovecot.deliver_many("alice", new.clone());
        write_private(
            &self.env.config_path(),
            &with_maildir(&run.stdout, &self.env.maildir()),
        );
        let fetch = self.env.popfetch(&["fetch"]);
        fetch.assert_code(0);
        let got = delivered(&self.env.maildir());
        let want: Vec<Vec<u8>> = new.iter().map(|m| expected(m)).collect();
        assert_eq!(
            got.len(),
            want.len(),
            "fetched {} messages, want the {} new ones; stdout:\n{}",
            got.len(),
            want.len(),
            fetch.stdout
        );
        for w in &want {
            assert!(got.contains(w), "a new message was not fetched");
        }
        for o in &self.old {
            assert!(
                !got.contains(&expected(o)),
                "an old message was fetched again"
            );
        }
        // Keep mode on both sides: everything is still on the server.
        assert_eq!(self.dovecot.message_count("alice"), 5);
    }
}

#[test]
fn fetchmail_keep_mode_then_import_fetches_only_new_mail() {
    crate::peers::require_peers!("procmail", "fetchmail", "dovecot");
    let w = World::new();
    let procmailrc = w.tool_dir.path().join("procmailrc");
    fs::write(
        &procmailrc,
        format!("DEFAULT={}/\n", path_str(&w.tool_maildir())),
    )
    .unwrap();
    // Real-world shape: daemon setting, noise words, separators, quoting with escapes.
    let rc = format!(
        "# fetchmail, as a user would have it\n\
         set daemon 600\n\
         set no syslog\n\n\
         poll localhost with proto POP3 service {port}, uidl:\n\
         \x20   user \"alice\" there with password '{pw}' is nobody here;\n\
         \x20   options ssl sslcertck sslcertfile '{ca}' keep\n\
         \x20   mda \"/usr/bin/procmail -m {procmailrc}\"\n",
        port = w.dovecot.pop3s_port(),
        pw = PASSWORD,
        ca = w.ca(),
        procmailrc = path_str(&procmailrc),
    );
    write_private(&w.home().join(".fetchmailrc"), &rc);
    let (code, out) = w.run_tool(&[
        "/usr/bin/fetchmail",
        "--daemon",
        "0",
        "--nodetach",
        "--nosyslog",
    ]);
    assert_eq!(code, Some(0), "fetchmail:\n{out}");
    assert_eq!(maildir_count(&w.tool_maildir()), 3, "fetchmail:\n{out}");
    let ids = fs::read_to_string(w.home().join(".fetchids")).expect("fetchmail wrote .fetchids");
    assert_eq!(ids.lines().count(), 3, "{ids}");

    let run = w.import(&["fetchmail"]);
    assert!(run.stdout.contains("tls = \"implicit\""), "{}", run.stdout);
    assert!(run.stdout.contains("interval = \"10m\""), "{}", run.stdout);
    w.finish(&run);
}

#[test]
fn getmail6_keep_mode_then_import_fetches_only_new_mail() {
    crate::peers::require_peers!("getmail", "dovecot");
    let w = World::new();
    let gdir = w.home().join(".getmail");
    mkdir(&gdir);
    let rc = format!(
        "; getmail6, as a user would have it\n\
         [retriever]\n\
         type = SimplePOP3SSLRetriever\n\
         server = localhost\n\
         port = {port}\n\
         username = alice\n\
         password = {pw}\n\
         ca_certs = {ca}\n\
         timeout = 30\n\n\
         [destination]\n\
         type = Maildir\n\
         path = {maildir}/\n\n\
         [options]\n\
         verbose = 0\n\
         read_all = false\n\
         delete = false\n",
        port = w.dovecot.pop3s_port(),
        pw = PASSWORD,
        ca = w.ca(),
        maildir = path_str(&w.tool_maildir()),
    );
    write_private(&gdir.join("getmailrc"), &rc);
    let mut last = String::new();
    for attempt in 1..=GETMAIL_ATTEMPTS {
        let (code, out) = w.run_tool(&["/usr/bin/getmail", "--quiet"]);
        if code == Some(0) {
            last.clear();
            break;
        }
        assert!(
            out.contains("operation error (waiting child pid") && attempt < GETMAIL_ATTEMPTS,
            "getmail ({code:?}, attempt {attempt}):\n{out}"
        );
        last = out;
    }
    assert!(last.is_empty(), "{last}");
    let oldmail: Vec<_> = fs::read_dir(&gdir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("oldmail-"))
        .collect();
    assert_eq!(oldmail.len(), 1, "getmail wrote one oldmail file");

    let run = w.import(&["getmail"]);
    assert!(
        run.stdout.contains("name = \"alice-localhost\""),
        "{}",
        run.stdout
    );
    w.finish(&run);
}

#[test]
fn mpop_keep_mode_then_import_fetches_only_new_mail() {
    crate::peers::require_peers!("mpop", "dovecot");
    let w = World::new();
    // STARTTLS on the plain port this time; inheritance through `defaults`.
    let rc = format!(
        "# mpop, as a user would have it\n\
         defaults\n\
         tls on\n\
         tls_trust_file {ca}\n\
         keep on\n\
         received_header off\n\n\
         account alice\n\
         host localhost\n\
         port {port}\n\
         user alice\n\
         password \"{pw}\"\n\
         delivery maildir {maildir}\n",
        port = w.dovecot.pop3_port(),
        pw = PASSWORD,
        ca = w.ca(),
        maildir = path_str(&w.tool_maildir()),
    );
    write_private(&w.home().join(".mpoprc"), &rc);
    let (code, out) = w.run_tool(&["/usr/bin/mpop", "-q", "alice"]);
    assert_eq!(code, Some(0), "mpop:\n{out}");
    assert_eq!(maildir_count(&w.tool_maildir()), 3, "mpop:\n{out}");
    let uidls = fs::read_to_string(w.home().join(".mpop_uidls/alice_at_localhost"))
        .expect("mpop wrote its UIDLs file");
    assert!(uidls.contains(" 3 localhost alice\n"), "{uidls}");

    let run = w.import(&["mpop"]);
    assert!(run.stdout.contains("tls = \"starttls\""), "{}", run.stdout);
    assert!(
        run.stdout.contains("received_header = false"),
        "{}",
        run.stdout
    );
    w.finish(&run);
}

/// A popfetch process that holds the account stops the import before anything is written
/// or printed.
#[test]
fn import_refuses_an_account_another_popfetch_holds() {
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("fetchmailrc");
    write_private(
        &rc,
        "poll pop.example.org proto pop3 user alice password secret keep mda \"/usr/bin/procmail\"\n",
    );
    let ids = dir.path().join("fetchids");
    fs::write(
        &ids,
        "alice@pop.example.org UID1\nalice@pop.example.org UID2\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    // The generated config names no port and asks for STLS: 110.
    let mailbox = popfetch::state::Mailbox::new("pop.example.org", 110, "alice");
    let held =
        popfetch::state::AccountState::open(&state, &mailbox, "alice-pop.example.org").unwrap();
    let run = import_cmd(dir.path(), &["fetchmail"], &[&rc], &ids, &state);
    run.assert_code(1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("another popfetch process"),
        "{}",
        run.stderr
    );
    drop(held);
    // Once free, the same import records both.
    let run = import_cmd(dir.path(), &["fetchmail"], &[&rc], &ids, &state);
    run.assert_code(0);
    assert!(run.stderr.contains("recorded 2 UIDLs"), "{}", run.stderr);
    let st =
        popfetch::state::AccountState::open(&state, &mailbox, "alice-pop.example.org").unwrap();
    assert_eq!(st.delivered_count(), 2);
}

/// An mpop that is fetching holds a lock on its UIDLs file: the import waits for no one and
/// refuses.
#[test]
fn import_refuses_while_mpop_holds_its_uidls_file() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("mpoprc");
    let uidls = dir.path().join("uidls");
    write_private(
        &rc,
        &format!(
            "account a\nhost pop.example.org\nuser alice\npassword x\nkeep on\n\
             delivery maildir ~/Maildir\nuidls_file {}\n",
            uidls.display()
        ),
    );
    fs::write(&uidls, "# mpop\n 1 pop.example.org alice\nUID1\n").unwrap();
    let f = fs::OpenOptions::new().write(true).open(&uidls).unwrap();
    // SAFETY: fcntl(F_SETLK) with a zeroed flock on an open descriptor, as mpop locks it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) }, 0);
    let state = dir.path().join("state");
    let run = import_cmd(dir.path(), &["mpop"], &[&rc], &uidls, &state);
    run.assert_code(1);
    assert!(run.stderr.contains("mpop is fetching"), "{}", run.stderr);
    assert!(!state.join("a.uidls").exists());
    drop(f);
    let run = import_cmd(dir.path(), &["mpop"], &[&rc], &uidls, &state);
    run.assert_code(0);
    assert!(
        run.stderr.contains("recorded 1 UIDL from"),
        "{}",
        run.stderr
    );
}

/// Issue 19: a multidrop poll imported from a .fetchmailrc loads as it is (`popfetch check`)
/// and routes a catch-all Dovecot mailbox as fetchmail would have: by the first Delivered-To,
/// its full-address mappings, the mda's %T (dovecot-lda into each user's mailbox), and the
/// postmaster for a message without the header, never by To or Cc.
#[test]
fn fetchmail_multidrop_import_routes_a_catchall_mailbox_into_dovecot_users() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    for u in ["catchall", "alice", "bob", "postmaster"] {
        d.add_user(u, "pw");
    }
    let msg = |headers: &str, subject: &str| {
        format!("{headers}From: sender@elsewhere.example\nSubject: {subject}\n\nHello.\n")
            .into_bytes()
    };
    d.deliver_many(
        "catchall",
        [
            msg(
                "Delivered-To: alice@family.example\nTo: team@family.example\n",
                "for alice",
            ),
            // Bcc: Cc names alice; only the envelope says robert, who is bob here.
            msg(
                "Delivered-To: robert@family.example\nTo: carol@elsewhere.example\n\
                 Cc: alice@family.example\n",
                "bcc for bob",
            ),
            // fetchmail read the first Delivered-To only.
            msg(
                "Delivered-To: alice@family.example\nDelivered-To: robert@family.example\n",
                "two headers",
            ),
            // No envelope header: To is not trusted; the postmaster gets it.
            msg("To: alice@family.example\n", "no header"),
        ],
    );
    let env = Env::new();
    let rc = env.path().join("fetchmailrc");
    let ids = env.path().join("fetchids");
    write_private(&ids, "");
    write_private(
        &rc,
        &format!(
            "set postmaster \"postmaster\"\n\
             poll localhost proto pop3 port {} envelope \"Delivered-To:\"\n\
             \tuser catchall password pw is 'alice@family.example'='alice' \
             'robert@family.example'='bob' here\n\
             \tssl sslcertfile {} sslcertck\n\
             \tmda \"{} -c {} -d %T\"\n",
            d.pop3s_port(),
            path_str(d.ca_file()),
            crate::postfix::DOVECOT_LDA,
            path_str(&crate::postfix::dovecot_config_file(&d)),
        ),
    );
    let import = import_cmd(
        env.path(),
        &["fetchmail"],
        &[&rc],
        &ids,
        &env.path().join("state"),
    );
    import.assert_code(0);
    assert!(
        import.stdout.contains("[account.route]") && !import.stdout.contains("\n# [[account]]"),
        "not routed, or inactive:\n{}",
        import.stdout
    );
    write_private(&env.config_path(), &import.stdout);
    let check = env.popfetch(&["check"]);
    check.assert_code(0);
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("alice"), 2, "for alice, two headers");
    assert_eq!(d.message_count("bob"), 1, "bcc for bob");
    assert_eq!(d.message_count("postmaster"), 1, "no header");
    assert_eq!(d.message_count("catchall"), 0, "delivered, then deleted");
}

/// Runs `popfetch import TOOL FILES --state-dir STATE` (and `--ids IDS` for fetchmail) with
/// HOME at `home`.
fn import_cmd(home: &Path, tool: &[&str], files: &[&Path], ids: &Path, state: &Path) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_popfetch"));
    c.arg("import").args(tool).args(files);
    if tool == ["fetchmail"] {
        c.arg("--ids").arg(ids);
    }
    c.arg("--state-dir")
        .arg(state)
        .env("HOME", home)
        .env("USER", "alice")
        .env_remove("FETCHMAILHOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("POPFETCH_CONFIG");
    let out = c.output().expect("run popfetch import");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// --- golden files ------------------------------------------------------------------------------

const BLESS_VAR: &str = "POPFETCH_BLESS";

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/import")
}

/// The cases: each `CASE.args` file holds the arguments of `popfetch import`, one per line,
/// run from `tests/data/import` with HOME at a missing directory, USER=alice and `--dry-run`;
/// `CASE.toml` is the expected stdout, `CASE.stderr` the expected stderr.
fn golden_cases() -> Vec<String> {
    let mut cases: Vec<String> = fs::read_dir(data_dir())
        .expect("tests/data/import")
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".args"))
                .map(str::to_string)
        })
        .collect();
    cases.sort();
    cases
}

#[test]
fn rc_files_translate_to_the_expected_configs_and_notes() {
    let bless = std::env::var_os(BLESS_VAR).is_some_and(|v| v == "1");
    let cases = golden_cases();
    assert!(cases.len() >= 4, "found only {cases:?}");
    let mut stale = Vec::new();
    for case in &cases {
        let args = fs::read_to_string(data_dir().join(format!("{case}.args"))).unwrap();
        let args: Vec<&str> = args.lines().filter(|l| !l.is_empty()).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_popfetch"))
            .arg("import")
            .args(&args)
            .args(["--dry-run", "--state-dir", "/var/lib/popfetch-imported"])
            .current_dir(data_dir())
            // Relative, so that messages naming default files read the same everywhere.
            .env("HOME", "no-home")
            .env("USER", "alice")
            .env_remove("FETCHMAILHOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("POPFETCH_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{case}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for (ext, got) in [("toml", &out.stdout), ("stderr", &out.stderr)] {
            let path = data_dir().join(format!("{case}.{ext}"));
            let want = fs::read(&path).ok();
            if want.as_deref() == Some(got.as_slice()) {
                continue;
            }
            if bless {
                fs::write(&path, got).unwrap();
                eprintln!("import: wrote {}", path.display());
            } else {
                stale.push(format!(
                    "--- {case}.{ext}: expected\n{}\n--- got\n{}",
                    String::from_utf8_lossy(want.as_deref().unwrap_or_default()),
                    String::from_utf8_lossy(got)
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nrun POPFETCH_BLESS=1 cargo test --test it import to update",
        stale.join("\n")
    );
}

/// Every expected config is one popfetch loads: the import promises a working config.
#[test]
fn every_expected_config_parses() {
    for case in golden_cases() {
        let path = data_dir().join(format!("{case}.toml"));
        let text = fs::read_to_string(&path).unwrap();
        if let Err(e) = popfetch::config::parse(&path, &text) {
            panic!("{case}.toml does not load: {e}");
        }
    }
}

// --- helpers -----------------------------------------------------------------------------------

/// The imported config with every account's `deliver` pointed at `maildir`.
fn with_maildir(config: &str, maildir: &Path) -> String {
    let mut t: toml::Table = toml::from_str(config).expect("imported config is TOML");
    let accounts = t
        .get_mut("account")
        .and_then(|a| a.as_array_mut())
        .expect("accounts");
    for a in accounts {
        let mut d = toml::Table::new();
        d.insert("maildir".into(), path_str(maildir).into());
        a.as_table_mut()
            .unwrap()
            .insert("deliver".into(), toml::Value::Table(d));
    }
    toml::to_string(&t).unwrap()
}

/// The messages in `maildir/new`, a leading `Received:` trace line (two lines) removed where
/// there is one: the mpop test carries `received_header off` over.
fn delivered(maildir: &Path) -> Vec<Vec<u8>> {
    fs::read_dir(maildir.join("new"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let m = fs::read(e.path()).unwrap();
                    if m.starts_with(b"Received: from ") {
                        crate::harness::strip_received(&m)
                    } else {
                        m
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn maildir_count(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .map(|s| fs::read_dir(maildir.join(s)).map_or(0, |d| d.count()))
        .sum()
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
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes a file with mode 0600 (fetchmail and mpop insist; it holds a password).
fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// Gives `dir` and everything below it to `nobody:nogroup` (uid/gid 65534 on Debian).
fn chown_tree(dir: &Path) {
    chown(dir, Some(65534), Some(65534)).unwrap();
    if dir.is_dir() {
        for e in fs::read_dir(dir).unwrap().flatten() {
            chown_tree(&e.path());
        }
    }
}
