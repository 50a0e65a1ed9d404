//! Local trouble: a Maildir on a tiny file system that fills up mid-message, and a state
//! directory on a read-only one. Real mounts (tmpfs), set up by the test as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::dovecot::Dovecot;
use crate::harness::{Env, message};
use crate::support::config::Account;

/// A tmpfs mounted for the life of the value.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount (the tests run as root)");
        assert!(
            st.success(),
            "mount -t tmpfs -o {options} {}",
            dir.display()
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn account(d: &Dovecot, env: &Env, maildir: &Path, extra: &str) {
    let account = Account::dovecot(d)
        .name("a")
        .user("u")
        .maildir(maildir)
        .extra(extra);
    env.write_config(&account.to_toml());
}

#[test]
fn a_full_disk_mid_message_deletes_nothing_and_leaves_no_partial_file() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("u", "pw");
    // Three small messages fit; the big one does not.
    let msgs = vec![
        message(1, 2000),
        message(2, 2000),
        message(3, 400_000),
        message(4, 2000),
    ];
    d.deliver_many("u", msgs.clone());
    let env = Env::new();
    let mnt = Mount::tmpfs(&env.path().join("small"), "size=256k");
    let maildir = mnt.0.join("Maildir");
    account(&d, &env, &maildir, "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    // The messages that fit before the big one are delivered and deleted; nothing else is.
    let tmp: Vec<_> = std::fs::read_dir(maildir.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "partial file left in tmp/: {tmp:?}");
    let delivered = std::fs::read_dir(maildir.join("new")).unwrap().count();
    assert_eq!(
        d.message_count("u"),
        msgs.len() - delivered,
        "only delivered messages deleted"
    );
    assert!(
        d.message_count("u") >= 2,
        "the big one and the one after it stay"
    );
    // With room again, the rest arrives.
    drop(mnt);
    let roomy = env.path().join("roomy");
    account(&d, &env, &roomy, "");
    env.popfetch(&["fetch"]).assert_code(0);
    assert_eq!(d.message_count("u"), 0);
}

#[test]
fn a_read_only_state_dir_refuses_to_fetch() {
    crate::peers::require_peers!("dovecot");
    let d = Dovecot::start();
    d.add_user("u", "pw");
    d.deliver("u", &message(1, 500));
    let env = Env::new();
    let _ro = Mount::tmpfs(&env.path().join("state"), "ro,size=64k,mode=0700");
    account(&d, &env, &env.maildir(), "");
    let run = env.popfetch(&["fetch"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("Read-only file system"),
        "{}",
        run.stderr
    );
    assert_eq!(d.message_count("u"), 1, "nothing deleted");
    assert!(
        !env.maildir().join("new").exists()
            || std::fs::read_dir(env.maildir().join("new"))
                .unwrap()
                .count()
                == 0
    );
}
