//! Watching the config file. notify on Linux also reports mere opens and reads of a file, so
//! reading the config on reload would trigger another reload forever: the watcher watches
//! directories (editors replace files by rename), keeps only events that change one of the
//! names the config's path resolves through, and the daemon skips reloads whose content did not
//! change.
//!
//! The names that matter are the config's own and every symlink on the way to the real file:
//! Kubernetes ConfigMap and Secret volumes publish a new version by swapping a `..data` symlink
//! next to `config.toml -> ..data/config.toml`, and release directories swap a `current`
//! symlink (`ln -sfn`); the file's own name sees no event then, the symlink's does.
//!
//! The files `include` names are watched the same way, each through its symlinks, and so is
//! the directory of each pattern, for a name that matches it (a file added, removed or
//! replaced), and the symlinks on the way to that directory (a `conf.d` that is itself a
//! ConfigMap volume or reached through one). Which accounts changed is the reload's business:
//! it reads every file again and parses only those whose text changed.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// Symlinks followed at most while resolving the config's path (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Starts watching `config`, the files it includes (`files`) and the directories of its
/// `include` patterns; each relevant change sends `()` on `tx`. Keep the returned watcher
/// alive for as long as changes should be seen.
pub fn watch(
    config: &Path,
    include: &[PathBuf],
    files: &[&Path],
    tx: UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut points = watch_points(config);
    let mut patterns: Vec<Vec<u8>> = Vec::new();
    for pattern in include {
        if let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) {
            points.extend(watch_points(dir));
            points.push((absolute(dir), name.to_os_string()));
            patterns.push(name.as_bytes().to_vec());
        }
    }
    for file in files {
        points.extend(watch_points(file));
    }
    let dirs: BTreeSet<PathBuf> = points.iter().map(|(d, _)| d.clone()).collect();
    let names: BTreeSet<OsString> = points.into_iter().map(|(_, n)| n).collect();
    let matches = move |n: &std::ffi::OsStr| {
        names.contains(n)
            || patterns.iter().any(|p| {
                // A wildcard does not match a leading dot (see `config::include`).
                (!n.as_bytes().starts_with(b".") || p.starts_with(b"."))
                    && crate::config::include::glob(p, n.as_bytes())
            })
    };
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let changes = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Modify(_)
                | EventKind::Remove(_)
                | EventKind::Access(AccessKind::Close(AccessMode::Write))
        );
        let ours = ev.paths.iter().any(|p| p.file_name().is_some_and(&matches));
        if changes && ours {
            let _ = tx.send(());
        }
    })?;
    for dir in &dirs {
        // A directory on the way that cannot be watched (gone, or not readable) leaves the
        // others watched; SIGHUP still reloads.
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::debug!(dir = %dir.display(), "cannot watch {}: {e}", dir.display());
        }
    }
    Ok(watcher)
}

/// The (directory, name) pairs whose change may change what `config` reads: its own, and each
/// symlink met while resolving it, in the directory that holds the link.
pub fn watch_points(config: &Path) -> Vec<(PathBuf, OsString)> {
    let mut points = Vec::new();
    let mut todo = vec![absolute(config)];
    let mut links = 0;
    while let Some(path) = todo.pop() {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            push(&mut points, dir, name);
        }
        // Every prefix that is a symlink: its name in its directory, then where it leads.
        let mut prefix = PathBuf::new();
        for part in path.components() {
            prefix.push(part);
            let Ok(target) = std::fs::read_link(&prefix) else {
                continue;
            };
            links += 1;
            if links > MAX_LINKS {
                return points;
            }
            let dir = prefix.parent().map(Path::to_path_buf).unwrap_or_default();
            if let Some(name) = prefix.file_name() {
                push(&mut points, &dir, name);
            }
            let rest = path.strip_prefix(&prefix).unwrap_or(Path::new(""));
            let resolved = if target.is_absolute() {
                target
            } else {
                dir.join(target)
            };
            todo.push(resolved.join(rest));
            break;
        }
    }
    points
}

fn push(points: &mut Vec<(PathBuf, OsString)>, dir: &Path, name: &std::ffi::OsStr) {
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir.to_path_buf()
    };
    let p = (dir, name.to_os_string());
    if !points.contains(&p) {
        points.push(p);
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_path_buf(), |d| d.join(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configmap_volume_is_watched_through_its_data_symlink() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("..2026_12_03")).unwrap();
        std::fs::write(root.join("..2026_12_03/config.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_12_03", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.toml", root.join("config.toml")).unwrap();
        let points = watch_points(&root.join("config.toml"));
        let has = |dir: &Path, name: &str| points.contains(&(dir.to_path_buf(), name.into()));
        assert!(has(root, "config.toml"), "{points:?}");
        assert!(has(root, "..data"), "{points:?}");
        assert!(has(&root.join("..2026_12_03"), "config.toml"), "{points:?}");
    }

    #[test]
    fn a_release_directory_is_watched_through_its_current_symlink() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("releases/v1")).unwrap();
        std::os::unix::fs::symlink("releases/v1", root.join("current")).unwrap();
        let points = watch_points(&root.join("current/config.toml"));
        let has = |dir: &Path, name: &str| points.contains(&(dir.to_path_buf(), name.into()));
        assert!(has(root, "current"), "{points:?}");
        assert!(has(&root.join("releases/v1"), "config.toml"), "{points:?}");
    }

    #[test]
    fn a_symlink_loop_ends() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::os::unix::fs::symlink("b", root.join("a")).unwrap();
        std::os::unix::fs::symlink("a", root.join("b")).unwrap();
        let points = watch_points(&root.join("a"));
        assert!(points.len() <= 3, "{points:?}");
    }
}
