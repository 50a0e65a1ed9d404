//! A write-back error under a Maildir: the batch's files were written into the page cache, their
//! `write()`s all succeeded, and the disk then failed them. A batch of small messages is made
//! durable by one `syncfs` (see `durable::sync_fs`), which must report that error so that the
//! whole batch fails: nothing renamed into `new/`, nothing recorded, no `DELE`.
//!
//! The fault is real: ext4 on a loop device whose backing file is a sparse image on a small
//! tmpfs, which a blocker file then fills. ext4 still has room, so `write()` succeeds; the loop
//! device cannot allocate the image's blocks, so their write-back fails (EIO or ENOSPC). The
//! inode tables and journal are written at `mkfs`, so that nothing but the batch writes new
//! blocks once the blocker is in. Without a journal ext4 stays writable and the error is the
//! files' alone; with one (ext4 as made by default) the failed write-back also aborts the
//! journal and the file system goes read-only until the user repairs it: the next poll, after
//! `e2fsck`, delivers every message exactly once all the same.

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
    /// With `journal`, ext4 as `mkfs.ext4` makes it by default; without, one whose write-back
    /// errors stay errors of the files written.
    fn new(dir: &Path, journal: bool) -> FaultyExt4 {
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
            .args(["-q", "-F"])
            .args([
                "-O",
                if journal {
                    "has_journal"
                } else {
                    "^has_journal"
                },
            ])
            .args(["-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image));
        let dev = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image));
        assert!(
            dev.starts_with("/dev/loop"),
            "no loop device set up: {dev:?}"
        );
        fs.loop_dev = Some(dev);
        fs.mount();
        fs
    }

    fn mount(&mut self) {
        // A metadata write-back error is an ext4 error too: without a journal the file system
        // is to stay writable, so that the user's next poll finds the same Maildir.
        let dev = self.loop_dev.as_deref().unwrap();
        run(Command::new("mount")
            .args(["-o", "errors=continue"])
            .arg(dev)
            .arg(&self.mnt));
        self.mounted = true;
    }

    /// What a user does after ext4 has gone read-only: unmount, repair, mount again.
    fn fsck_and_remount(&mut self) {
        run(Command::new("umount").arg(&self.mnt));
        self.mounted = false;
        let dev = self.loop_dev.as_deref().unwrap();
        let out = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(dev)
            .output()
            .expect("run e2fsck");
        // 0: clean; 1: errors corrected.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "e2fsck -f -y {dev}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        self.mount();
    }

    fn read_only(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mnt = self.mnt.to_str().unwrap();
        mounts.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 3 && f[1] == mnt && f[3].split(',').any(|o| o == "ro" || o == "emergency_ro")
        })
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
    // Without the `syncfs` error this poll reported 20 messages delivered and deleted them from
    // the server, their data lost with the failed write-back.
    crate::peers::require_peers!("dovecot");
    scenario(false);
}

#[test]
fn on_journalled_ext4_the_failed_batch_waits_for_the_repaired_file_system() {
    // Here the journal's abort would also stop the batch (its renames fail: read-only), but
    // `syncfs` reports the write-back error first.
    crate::peers::require_peers!("dovecot");
    scenario(true);
}

/// N small messages (one batch) polled into a Maildir on [`FaultyExt4`] once its write-back
/// fails, then again once the disk has room.
fn scenario(journal: bool) {
    const N: usize = 20;
    let d = Dovecot::start();
    d.add_user("u", "pw");
    let msgs: Vec<Vec<u8>> = (0..N).map(|i| message(i, 4000)).collect();
    d.deliver_many("u", msgs.clone());
    let env = Env::new();
    let mut fs = FaultyExt4::new(&env.path().join("disk"), journal);
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
    // The loop device fails the image's writes with ENOSPC or EIO; which one `syncfs` reports
    // depends on which failed write came last.
    let says = format!(
        "delivery of a batch of {N} messages failed: cannot make the batch's files in {} durable: ",
        maildir.join("tmp").display()
    );
    assert!(
        first.stderr.contains(&format!("{says}Input/output error"))
            || first
                .stderr
                .contains(&format!("{says}No space left on device")),
        "the poll's error does not name the batch's failed sync:\n{}",
        first.stderr
    );
    // Nothing of the batch reached new/, nothing was deleted.
    assert_eq!(names(&maildir.join("new")), Vec::<String>::new());
    assert_eq!(d.message_count("u"), N, "a message was deleted");
    fs.unblock();
    if journal {
        // The failed write-back aborted ext4's journal: the file system is read-only, the
        // batch's files are stuck in tmp/ (not removable), and the user repairs it.
        assert!(fs.read_only(), "ext4 did not go read-only");
        assert!(names(&maildir.join("tmp")).len() <= N);
        fs.fsck_and_remount();
    } else {
        // Without a journal ext4 stays writable (errors=continue): the batch's files are
        // removed, and the user polls again into the same Maildir.
        assert!(!fs.read_only(), "ext4 went read-only");
        assert_eq!(names(&maildir.join("tmp")), Vec::<String>::new());
    }
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
    // Whatever the failed poll left in tmp/ is gone.
    assert_eq!(names(&maildir.join("tmp")), Vec::<String>::new());
}
