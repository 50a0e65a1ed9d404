//! Making new names durable: a directory created for the journal or a delivery has its name
//! fsync'd in its parent before anything that depends on it (a `D` record, a `DELE`) happens.
//! Used by `deliver` (Maildir) and `state`, so it lives below both.

use std::fs::File;
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
}
