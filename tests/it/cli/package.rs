//! The binary run the way the packaged system service runs it: as an unprivileged user with no
//! supplementary groups and no new privileges, umask 077, a clean environment and the state
//! directory systemd hands it in `$STATE_DIRECTORY`, fetching over TLS from a private Dovecot
//! into a Maildir in that user's own home.
//!
//! The binary is `$POPFETCH_INSTALLED_BINARY` when set (`packaging/test-install` sets it to
//! `/usr/bin/popfetch` between installing the .deb and removing it), else the freshly built
//! one, copied where the unprivileged user may run it: the test means the same on every run
//! and never skips. It needs root (to drop to `nobody` with setpriv), as the rest of tests/it.

use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::dovecot::{Dovecot, run_bounded};
use crate::harness::{delivered_in, expected, message};

/// The unprivileged user and group the test runs popfetch as.
const USER: &str = "nobody";
const GROUP: &str = "nogroup";
/// Bound for one popfetch run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn packaged_binary_fetches_as_an_unprivileged_user_into_its_own_maildir() {
    crate::peers::require_peers!("dovecot");
    assert!(
        is_root(),
        "this test runs popfetch as {USER} with setpriv and must run as root (tests/run does)"
    );
    let uid = lookup_id("/etc/passwd", USER);
    let gid = lookup_id("/etc/group", GROUP);

    let server = Dovecot::start();
    server.add_user("pkg", "pkg-secret");
    let sources: Vec<Vec<u8>> = (0..3).map(|i| message(i, 3000)).collect();
    server.deliver_many("pkg", sources.clone());

    // The user's home: a fresh directory only that user can enter, like /var/lib/popfetch.
    let home_dir = tempfile::Builder::new()
        .prefix("popfetch-package-")
        .tempdir_in(traversable_temp_parent())
        .expect("temp dir");
    let home = home_dir.path();
    give(home, uid, gid, 0o700);
    let state = home.join("state");
    std::fs::create_dir(&state).expect("create the state dir");
    give(&state, uid, gid, 0o700);
    let maildir = home.join("Maildir");
    std::fs::create_dir(&maildir).expect("create the Maildir");
    give(&maildir, uid, gid, 0o700);
    let password_file = home.join("pkg.pass");
    std::fs::write(&password_file, "pkg-secret\n").expect("write the password file");
    give(&password_file, uid, gid, 0o600);
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "# written by tests/it/cli/package.rs\n\
             [[account]]\n\
             name = \"pkg\"\n\
             host = \"127.0.0.1\"\n\
             port = {port}\n\
             tls = \"implicit\"\n\
             ca_file = \"{ca}\"\n\
             user = \"pkg\"\n\
             password_file = \"pkg.pass\"\n\
             deliver = {{ maildir = \"~/Maildir\" }}\n",
            port = server.pop3s_port(),
            ca = server.ca_file().display(),
        ),
    )
    .expect("write the config");
    give(&config, uid, gid, 0o600);

    let binary = binary(home, uid, gid);
    let run = |args: &[&str]| -> (i32, String, String) {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            USER,
            "--regid",
            GROUP,
            "--clear-groups",
            "--no-new-privs",
        ])
        .args(["--", "/bin/sh", "-c", "umask 077 && exec \"$0\" \"$@\""])
        .arg(&binary)
        .arg("-c")
        .arg(&config)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("STATE_DIRECTORY", &state)
        .current_dir(home);
        let out = run_bounded(&mut cmd, b"", RUN_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot run popfetch as {USER}: {e}"));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = run(&["--version"]);
    assert_eq!(
        (code, stdout.trim()),
        (
            0,
            format!("popfetch {}", env!("CARGO_PKG_VERSION")).as_str()
        ),
        "{} --version is not this version; stderr: {stderr}",
        binary.display()
    );

    let (code, stdout, stderr) = run(&["fetch"]);
    assert_eq!(
        code,
        0,
        "popfetch fetch as {USER}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- dovecot log\n{}",
        server.log()
    );
    assert!(
        stdout.contains("pkg: 3 new messages delivered"),
        "unexpected summary: {stdout}"
    );

    let mut got = delivered_in(&maildir);
    let mut want: Vec<Vec<u8>> = sources.iter().map(|m| expected(m)).collect();
    got.sort();
    want.sort();
    assert!(
        got == want,
        "the Maildir does not hold the 3 messages unchanged"
    );
    assert_eq!(
        server.message_count("pkg"),
        0,
        "the messages were not deleted from the server"
    );

    // Everything popfetch made is the user's, and private to it.
    let made = walk(&maildir).into_iter().chain(walk(&state));
    let mut checked = 0;
    for path in made {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (uid, gid),
            "{} does not belong to {USER}:{GROUP}",
            path.display()
        );
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "{} is open to group or others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        );
        checked += 1;
    }
    // The Maildir, tmp, new, cur, 3 messages; the state dir and at least the journal.
    assert!(
        checked >= 9,
        "only {checked} files and directories were made"
    );
    assert!(
        std::fs::read_dir(&state)
            .expect("list the state dir")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("pkg.")),
        "nothing for account pkg in $STATE_DIRECTORY"
    );

    // A second poll finds nothing new; `status` reads the state the fetch left.
    let (code, stdout, stderr) = run(&["fetch"]);
    assert_eq!(code, 0, "second fetch: {stdout}{stderr}");
    assert!(
        stdout.contains("pkg: 0 new messages"),
        "second fetch: {stdout}"
    );
    let (code, stdout, stderr) = run(&["status"]);
    assert_eq!(code, 0, "status: {stdout}{stderr}");
    assert!(
        stdout.contains("3 delivered in total"),
        "status does not show the delivery: {stdout}"
    );
}

/// `$POPFETCH_INSTALLED_BINARY`, or a copy of the built binary in `home` (the build tree may not
/// be reachable for the unprivileged user).
fn binary(home: &Path, uid: u32, gid: u32) -> PathBuf {
    if let Some(path) = std::env::var_os("POPFETCH_INSTALLED_BINARY").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("POPFETCH_INSTALLED_BINARY={}: {e}", path.display()));
        assert!(
            path.is_absolute() && meta.is_file() && meta.mode() & 0o001 != 0,
            "POPFETCH_INSTALLED_BINARY={} is not an absolute path to a file others may run",
            path.display()
        );
        return path;
    }
    let copy = home.join("popfetch");
    std::fs::copy(env!("CARGO_BIN_EXE_popfetch"), &copy).expect("copy the built binary");
    give(&copy, uid, gid, 0o755);
    copy
}

fn give(path: &Path, uid: u32, gid: u32, mode: u32) {
    chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// `dir` and everything below it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() && !out[i].is_symlink() {
            let entries = std::fs::read_dir(&out[i])
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", out[i].display()));
            let children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// The temp dir when every ancestor lets others through (so the user can reach its home),
/// else /tmp.
fn traversable_temp_parent() -> PathBuf {
    let tmp = std::env::temp_dir();
    let open = tmp.ancestors().all(|d| {
        std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    });
    if open { tmp } else { PathBuf::from("/tmp") }
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective uid.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The numeric id of `name` in an /etc/passwd or /etc/group style file.
fn lookup_id(file: &str, name: &str) -> u32 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name)
                .then(|| fields.nth(1)?.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no {name} in {file}"))
}
