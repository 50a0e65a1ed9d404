//! The integration harness: a fresh temp dir per test, a config written into it, the real built
//! `popfetch` binary run on it, and readers for what landed in the Maildir.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit status\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// One test's private world: a directory with a config, a state dir and a Maildir.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    pub fn maildir(&self) -> PathBuf {
        self.path().join("Maildir")
    }

    /// Writes the config with mode 0600; `state_dir` and the Maildir live in the temp dir.
    pub fn write_config(&self, accounts: &str) {
        let text = format!(
            "state_dir = \"{}\"\n\n{accounts}",
            self.path().join("state").display()
        );
        std::fs::write(self.config_path(), text).unwrap();
        std::fs::set_permissions(self.config_path(), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }

    /// Runs `popfetch -c CONFIG ARGS...`.
    pub fn popfetch(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run popfetch"))
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_popfetch"));
        c.arg("-c").arg(self.config_path()).args(args);
        c.env_remove("POPFETCH_LOG").env_remove("POPFETCH_CONFIG");
        c
    }

    /// The delivered messages (in `new/`), oldest first, with popfetch's Received line removed.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        delivered_in(&self.maildir())
    }
}

pub fn delivered_in(maildir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<(std::time::SystemTime, String, PathBuf)> =
        match std::fs::read_dir(maildir.join("new")) {
            Ok(rd) => rd
                .flatten()
                .map(|e| {
                    let m = e.metadata().unwrap().modified().unwrap();
                    (m, e.file_name().to_string_lossy().into_owned(), e.path())
                })
                .collect(),
            Err(_) => return Vec::new(),
        };
    // Names carry the delivery sequence number (Q<n>): sort by it for a stable order.
    files.sort_by_key(|(m, name, _)| (*m, seq_of(name)));
    files
        .into_iter()
        .map(|(_, _, p)| strip_received(&std::fs::read(p).unwrap()))
        .collect()
}

fn seq_of(name: &str) -> u64 {
    name.split('Q')
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Removes the two-line `Received:` trace popfetch prepends, asserting it is there.
pub fn strip_received(msg: &[u8]) -> Vec<u8> {
    assert!(
        msg.starts_with(b"Received: from "),
        "no Received line: {:?}",
        String::from_utf8_lossy(&msg[..msg.len().min(200)])
    );
    let first = msg.iter().position(|&b| b == b'\n').unwrap() + 1;
    assert_eq!(msg[first], b'\t', "Received line is folded once");
    let second = first + msg[first..].iter().position(|&b| b == b'\n').unwrap() + 1;
    msg[second..].to_vec()
}

/// What a message dropped into Dovecot's Maildir (LF endings) looks like after the trip: the
/// same bytes, with a final newline added when it had none (POP3 cannot carry its absence).
pub fn expected(source: &[u8]) -> Vec<u8> {
    let mut v = source.to_vec();
    if !v.is_empty() && !v.ends_with(b"\n") {
        v.push(b'\n');
    }
    v
}

/// A plain message of about `size` bytes with a unique subject.
pub fn message(i: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: sender@example.org\nTo: alice@example.org\nSubject: message {i}\nMessage-ID: <{i}@example.org>\n\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

/// Runs `cmd` in its own process group; kills the group and fails the test when it has not
/// ended within `limit` (a hang is a bug too).
pub fn run_bounded(mut cmd: Command, limit: std::time::Duration) -> Run {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::Instant;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= until {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    let Some(status) = status else {
        panic!(
            "popfetch did not end within {limit:?}: it hangs\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}
