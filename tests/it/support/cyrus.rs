//! A private, throw-away Cyrus `lmtpd` (Debian `cyrus-common`) for LMTP delivery tests: one
//! `master` in the foreground as user `cyrus`, with its config, spool and sockets in one
//! temporary directory, LMTP on a Unix socket only ([`Cyrus::socket`]). Mailboxes are created
//! at the first delivery (`autocreate_post`), duplicates are not suppressed. Cyrus rewrites
//! Return-Path from the envelope sender and prepends Received, X-Cyrus-Session-Id and X-Sieve;
//! it adds a Date field to a message without one. Dropping the value ends its process group.

use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The master's program.
pub const MASTER: &str = "/usr/lib/cyrus/bin/master";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Cyrus {
    dir: tempfile::TempDir,
    master: Child,
}

impl Cyrus {
    pub fn start() -> Cyrus {
        let dir = crate::dovecot::make_temp_dir("popfetch-cyrus-");
        let root = dir.path().to_path_buf();
        for sub in ["config", "spool", "socket"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let d = root.display();
        std::fs::write(
            root.join("imapd.conf"),
            format!(
                "configdirectory: {d}/config\npartition-default: {d}/spool\n\
                 defaultpartition: default\nlmtpsocket: {d}/socket/lmtp\n\
                 idlesocket: {d}/socket/idle\nnotifysocket: {d}/socket/notify\n\
                 mboxname_lockpath: {d}/config/lock\nstatuscache: 0\nadmins: cyrus\n\
                 duplicatesuppression: 0\nautocreate_post: 1\nautocreate_quota: 0\n\
                 lmtp_downcase_rcpt: 1\nunixhierarchysep: 1\naltnamespace: 1\n\
                 syslog_prefix: popfetch-test\n"
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("cyrus.conf"),
            format!(
                "START {{\n  recover cmd=\"ctl_cyrusdb -r -C {d}/imapd.conf\"\n}}\n\
                 SERVICES {{\n  lmtpunix cmd=\"lmtpd -C {d}/imapd.conf\" listen=\"{d}/socket/lmtp\" prefork=0\n}}\n\
                 EVENTS {{\n}}\n"
            ),
        )
        .unwrap();
        let (uid, gid) = cyrus_ids();
        for entry in walk(&root) {
            chown(&entry, Some(uid), Some(gid)).unwrap();
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = std::fs::File::create(root.join("master.log")).unwrap();
        let master = Command::new(MASTER)
            .arg("-C")
            .arg(root.join("imapd.conf"))
            .arg("-M")
            .arg(root.join("cyrus.conf"))
            .arg("-p")
            .arg(root.join("master.pid"))
            .arg("-D")
            .current_dir(&root)
            .uid(uid)
            .gid(gid)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {MASTER}: {e}"));
        let c = Cyrus { dir, master };
        c.wait_ready();
        c
    }

    /// The LMTP Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("socket/lmtp")
    }

    /// Every stored message (all users), in no particular order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        walk(&self.dir.path().join("spool"))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix('.'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.socket()) {
                use std::io::Read;
                s.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
                let mut b = [0u8; 3];
                if s.read_exact(&mut b).is_ok() && &b == b"220" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "cyrus lmtpd not ready after {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        let group = format!("-{}", self.master.id());
        // Children of the group may outlive the master: the KILL is for them, and may find none.
        let kill = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        kill("-TERM");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.master.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill("-KILL");
        let _ = self.master.wait();
    }
}

fn cyrus_ids() -> (u32, u32) {
    let line = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("cyrus:"))
        .map(str::to_string)
        .expect("no user cyrus: install cyrus-common (tests/install-peers)");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
