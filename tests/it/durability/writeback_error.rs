//! A write-back error under a Maildir: the batch's files were written into the page cache, their
//! `write()`s all succeeded, and the disk then failed them. A batch of small messages is made
//! durable by one `syncfs` (see `durable::sync_fs`), which must report that error so that the
//! whole batch fails: nothing renamed into `new/`, nothing recorded, no `DELE`.
//!
//! The fault is real: ext4 on a loop device whose backing file is a sparse image on a small
//! tmpfs, which a blocker file then fills. ext4 still has room, so `write()` succeeds; the loop
//! device cannot allocate the image's blocks, so their write-back fails with EIO. ext4 is made
//! without a journal, so the error stays a write-back error of the files (with a journal, the
//! failed commit aborts it and the file system goes read-only); and with its inode tables
//! written at `mkfs`, so that nothing but the batch writes new blocks once the blocker is in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::dovecot::Dovecot;
use crate::harness::{Env, delivered_in, expected, message, run_bounded};
use crate::support::config::Account;

/// `cmd`, which must succeed (the tests run as root; a missing tool fails the test).
#[track_caller]
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// ext4 without a journal on a loop device over a sparse 512 MiB image on a 48 MiB tmpfs; taken
/// down (file system, loop device, tmpfs) when dropped, also when the test panics.
struct FaultyExt4 {
    backing: PathBuf,
    mnt: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
}

impl FaultyExt4 {
    fn new(dir: &Path) -> FaultyExt4 {
        let mut fs = FaultyExt4 {
            backing: dir.join("backing"),
            mnt: dir.join("mnt"),
            loop_dev: None,
            mounted: false,
        };
        std::fs::create_dir_all(&fs.backing).unwrap();
        std::fs::create_dir_all(&fs.mnt).unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
            .arg(&fs.backing));
        let image = fs.backing.join("image");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(512 << 20))
            .unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "^has_journal"])
            .args(["-E", "nodiscard,lazy_itable_init=0"])
            .arg(&image));
        let dev = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image));
        assert!(
            dev.starts_with("/dev/loop"),
            "no loop device set up: {dev:?}"
        );
        fs.loop_dev = Some(dev.clone());
        // A metadata write-back error is an ext4 error too: it is to stay writable, so that the
        // user's next poll finds the same Maildir (`remount-ro` would need an fsck first).
        run(Command::new("mount")
            .args(["-o", "errors=continue"])
            .arg(&dev)
            .arg(&fs.mnt));
        fs.mounted = true;
        fs
    }

    /// Fills the tmpfs under the image: from now on, a block of the image not written before
    /// cannot be stored, and its write-back fails.
    fn block(&self) {
        let mut f = std::fs::File::create(self.blocker()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let err = loop {
            if let Err(e) = f.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOSPC),
            "the blocker stopped at {err}"
        );
    }

    fn unblock(&self) {
        std::fs::remove_file(self.blocker()).unwrap();
    }

    fn blocker(&self) -> PathBuf {
        self.backing.join("blocker")
    }
}

impl Drop for FaultyExt4 {
    fn drop(&mut self) {
        if self.mounted {
            let st = Command::new("umount").arg(&self.mnt).status();
            if !st.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.backing).status();
    }
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_write_back_error_fails_the_batch_and_deletes_nothing() {
    crate::peers::require_peers!("dovecot");
    const N: usize = 20;
    let d = Dovecot::start();
    d.add_user("u", "pw");
    let msgs: Vec<Vec<u8>> = (0..N).map(|i| message(i, 4000)).collect();
    d.deliver_many("u", msgs.clone());
    let env = Env::new();
    let fs = FaultyExt4::new(&env.path().join("disk"));
    // The Maildir exists and is on disk before the fault: what fails is the batch alone.
    let maildir = fs.mnt.join("Maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    run(Command::new("sync").arg("-f").arg(&maildir));
    let account = Account::dovecot(&d).name("a").user("u").maildir(&maildir);
    env.write_config(&account.to_toml());
    fs.block();

    let first = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    first.assert_code(1);
    let says = format!(
        "cannot make the batch's files in {} durable: Input/output error",
        maildir.join("tmp").display()
    );
    assert!(
        first
            .stderr
            .contains(&format!("a batch of {N} messages failed"))
            && first.stderr.contains(&says),
        "the poll's error does not name the batch's failed sync:\n{}",
        first.stderr
    );
    // Nothing of the batch reached new/, no file is left in tmp/, nothing was deleted.
    assert_eq!(names(&maildir.join("new")), Vec::<String>::new());
    assert_eq!(names(&maildir.join("tmp")), Vec::<String>::new());
    assert_eq!(d.message_count("u"), N, "a message was deleted");

    // The disk has room again; the file system stayed writable (no journal to abort), so the
    // user polls again into the same Maildir.
    fs.unblock();
    let second = run_bounded(env.command(&["fetch"]), Duration::from_secs(60));
    second.assert_code(0);
    assert_eq!(d.message_count("u"), 0, "the server still holds messages");
    let mut got = delivered_in(&maildir);
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| expected(m)).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), N, "each message exactly once");
    assert!(
        got == want,
        "the delivered messages differ from the sent ones"
    );
    assert_eq!(names(&maildir.join("tmp")), Vec::<String>::new());
}
