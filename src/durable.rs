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
