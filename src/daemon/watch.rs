//! Watching the config file. notify on Linux also reports mere opens and reads of a file, so
//! reading the config on reload would trigger another reload forever: the watcher watches the
//! file's directory (editors replace files by rename), keeps only events that name the config's
//! file name and change it, and the daemon skips reloads whose content did not change.

use std::path::Path;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// Starts watching `config`; each relevant change sends `()` on `tx`. Keep the returned watcher
/// alive for as long as changes should be seen.
pub fn watch(config: &Path, tx: UnboundedSender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let name = config.file_name().map(|n| n.to_os_string());
    let dir = match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
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
        let ours = ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
        if changes && ours {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}
