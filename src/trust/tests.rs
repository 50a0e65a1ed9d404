use std::os::unix::fs::PermissionsExt;

use super::*;

fn file_with_mode(dir: &Path, name: &str, mode: u32) -> (PathBuf, Metadata) {
    let p = dir.join(name);
    std::fs::write(&p, "x").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    let m = std::fs::metadata(&p).unwrap();
    (p, m)
}

#[test]
fn state_dir_owned_by_me_and_closed_is_trusted() {
    let d = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(d.path()).unwrap().uid();
    for mode in [0o700, 0o750, 0o755] {
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        assert_eq!(
            state_entry("state directory", d.path(), &m, true, me),
            Ok(())
        );
    }
}

#[test]
fn state_dir_writable_by_others_is_refused_with_chmod() {
    let d = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(d.path()).unwrap().uid();
    for mode in [0o770, 0o707, 0o1777, 0o720] {
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        let e = state_entry("state directory", d.path(), &m, true, me).unwrap_err();
        assert!(e.fix.contains("chmod go-w"), "{e}");
        assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
    }
}

#[test]
fn state_dir_of_another_user_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let owner = std::fs::metadata(d.path()).unwrap().uid();
    let m = std::fs::metadata(d.path()).unwrap();
    // As root: run as the owner.
    if owner != 0 {
        let e = state_entry("state directory", d.path(), &m, true, 0).unwrap_err();
        assert!(e.fix.contains("sudo -u"), "{e}");
    }
    // As someone else: not yours.
    let e = state_entry("state directory", d.path(), &m, true, owner + 1).unwrap_err();
    assert!(e.problem.contains("not owned"), "{e}");
}

#[test]
fn state_file_must_be_a_regular_file() {
    let d = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(d.path()).unwrap().uid();
    let link = d.path().join("a.uidls");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let m = std::fs::symlink_metadata(&link).unwrap();
    let e = state_entry("state file", &link, &m, false, me).unwrap_err();
    assert!(e.problem.contains("not a regular file"), "{e}");
}

#[test]
fn secret_rule_allows_group_read_never_group_write() {
    let d = tempfile::tempdir().unwrap();
    let me = std::fs::metadata(d.path()).unwrap().uid();
    let ok = [(0o600, true), (0o640, true), (0o400, true), (0o644, false)];
    for (mode, secret) in ok {
        let (p, m) = file_with_mode(d.path(), "f", mode);
        assert_eq!(
            secret_entry("config file", &p, &m, secret, me),
            Ok(()),
            "{mode:o}"
        );
    }
    let bad = [
        (0o644, true),
        (0o604, true),
        (0o660, false),
        (0o602, false),
        (0o666, true),
    ];
    for (mode, secret) in bad {
        let (p, m) = file_with_mode(d.path(), "f", mode);
        let e = secret_entry("config file", &p, &m, secret, me).unwrap_err();
        assert!(e.fix.starts_with("run `chmod"), "{e}");
    }
}

#[test]
fn secret_rule_accepts_root_and_me_as_owner_only() {
    let d = tempfile::tempdir().unwrap();
    let (p, m) = file_with_mode(d.path(), "f", 0o600);
    let owner = m.uid();
    assert_eq!(secret_entry("f", &p, &m, true, owner), Ok(()));
    if owner == 0 {
        // A root-owned file is trusted by every user.
        assert_eq!(secret_entry("f", &p, &m, true, 1000), Ok(()));
    } else {
        let e = secret_entry("f", &p, &m, true, owner + 1).unwrap_err();
        assert!(e.fix.contains("chown"), "{e}");
    }
}
