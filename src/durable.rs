//! Making new names durable: a directory created for the journal or a delivery has its name
//! fsync'd in its parent before anything that depends on it (a `D` record, a `DELE`) happens;
//! a file replaced by a new one is either the old or the new, never torn. Used by `deliver`
//! (Maildir), `state`, `status` and `oauth2`, so it lives below them.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Creates `dir` and any missing parent with `mode`, fsyncing each new name in its parent. An
/// existing directory is left as it is.
pub fn create_dir_synced(dir: &Path, mode: u32) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent != Path::new(".") {
        create_dir_synced(parent, mode)?;
    }
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        // Created meanwhile by another process: synced below all the same.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    match File::open(parent) {
        Ok(d) => d.sync_all(),
        // A parent we may write but not read cannot be opened to sync; the names in it are as
        // durable as the file system makes them without.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a replaced file must survive a power failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// The new file and then its name in `dir` are fsync'd before `replace` returns.
    Durable,
    /// Statistics and the like: a crash may leave the previous file, never a torn one.
    Lazy,
}

/// Replaces `path` with `contents` (its parts written in order) through `tmp`, a file the
/// caller has just created afresh in `dir`, the directory of `path`: written, fsync'd for
/// [`Sync::Durable`], renamed over `path`, and then `dir` fsync'd. On an error before the
/// rename, `tmp` is removed.
pub fn replace(
    mut file: File,
    tmp: &Path,
    path: &Path,
    dir: &Path,
    contents: &[&[u8]],
    sync: Sync,
) -> std::io::Result<()> {
    let renamed = contents
        .iter()
        .try_for_each(|part| file.write_all(part))
        .and_then(|()| match sync {
            Sync::Durable => file.sync_all(),
            Sync::Lazy => Ok(()),
        })
        .and_then(|()| {
            drop(file);
            std::fs::rename(tmp, path)
        });
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    match sync {
        Sync::Durable => File::open(dir).and_then(|d| d.sync_all()),
        Sync::Lazy => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parents_with_the_mode_and_leaves_existing_ones() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        create_dir_synced(&deep, 0o700).unwrap();
        assert!(deep.is_dir());
        let mode = std::fs::metadata(tmp.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // Again: nothing to do, no error.
        create_dir_synced(&deep, 0o700).unwrap();
        // A file in the way is an error, not a directory.
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(create_dir_synced(&file.join("d"), 0o700).is_err());
    }

    #[test]
    fn replace_leaves_the_new_file_or_the_old_one_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let (path, tmp) = (dir.path().join("f"), dir.path().join("f.tmp"));
        std::fs::write(&path, b"old").unwrap();
        for sync in [Sync::Durable, Sync::Lazy] {
            let f = File::create(&tmp).unwrap();
            replace(f, &tmp, &path, dir.path(), &[b"ne", b"w"], sync).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            assert!(!tmp.exists());
        }
        // The rename fails (a non-empty directory is in the way): the temp file goes, the
        // directory stays.
        let blocked = dir.path().join("d");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"x").unwrap();
        let f = File::create(&tmp).unwrap();
        assert!(replace(f, &tmp, &blocked, dir.path(), &[b"new"], Sync::Durable).is_err());
        assert!(!tmp.exists() && blocked.join("x").exists());
    }
}

/// Whether the files written under `dir` can be made durable together by one [`sync_fs`]
/// instead of one fsync each. Only where that is known to hold: a local file system whose
/// `syncfs` writes every dirty file back, commits its journal (or log, or tree) and flushes the
/// device, on a kernel that reports a failed write-back through `syncfs` (Linux 5.8 and later;
/// before, `syncfs` said nothing of errors). Elsewhere (NFS, FUSE, an unknown file system, an
/// older kernel) each file gets its own fsync.
pub fn fs_sync_covers(dir: &Path) -> bool {
    kernel_reports_syncfs_errors() && local_journaling_fs(dir)
}

/// Makes every file written on `anchor`'s file system since `anchor` was opened durable: one
/// `syncfs` writes them all back and commits the journal once, where an fsync each would
/// commit and flush the device once per file. A write-back error on that file system since
/// `anchor` was opened is reported, once, even one of another file (the batch then fails as a
/// whole, which is safe: nothing of it is deleted from the server). Then one fsync of `anchor`
/// flushes the device's cache, for a file system (ext2 shares ext4's magic number) whose
/// `syncfs` would not. Only where [`fs_sync_covers`] said so.
pub fn sync_fs(anchor: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor `anchor` keeps open for its duration.
    if unsafe { libc::syncfs(anchor.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    anchor.sync_all()
}

fn kernel_reports_syncfs_errors() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        release_at_least(&release, (5, 8))
    })
}

/// Whether a kernel release such as `6.1.0-27-amd64` is at least `min` (major, minor).
fn release_at_least(release: &str, min: (u32, u32)) -> bool {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= min,
        _ => false,
    }
}

/// Whether `dir` is on ext4, XFS, Btrfs or tmpfs (by `statfs`'s magic number).
fn local_journaling_fs(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const EXT4: i64 = 0xEF53;
    const XFS: i64 = 0x5846_5342;
    const BTRFS: i64 = 0x9123_683E;
    const TMPFS: i64 = 0x0102_1994;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` writes only into `st`, which is as large as it expects, and reads the
    // NUL-terminated path that lives across the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    [EXT4, XFS, BTRFS, TMPFS].contains(&magic)
}

#[cfg(test)]
mod fs_sync_tests {
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(release_at_least("6.1.0-27-amd64\n", (5, 8)));
        assert!(release_at_least("5.8.0", (5, 8)));
        assert!(release_at_least("5.10", (5, 8)));
        assert!(!release_at_least("5.4.0-150-generic", (5, 8)));
        assert!(!release_at_least("4.19.0", (5, 8)));
        assert!(!release_at_least("", (5, 8)));
        assert!(!release_at_least("garbage", (5, 8)));
    }

    #[test]
    fn a_directory_on_this_machine_is_classified() {
        // /dev/shm is tmpfs on any Linux this runs on; /proc is not a place for mail.
        assert!(local_journaling_fs(Path::new("/dev/shm")));
        assert!(!local_journaling_fs(Path::new("/proc")));
        assert!(!local_journaling_fs(Path::new("/nonexistent/popfetch")));
    }
}
