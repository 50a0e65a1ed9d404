//! What a server announced at the last session, kept beside the journal as `STEM.capa`: its
//! CAPA lines after TLS, one a line. A hint and nothing more: with it the next session sends its
//! login in the flight of the CAPA it sends anyway ([`crate::session::ConnectParams`]), and the
//! fresh CAPA is read before anything depends on it. A missing, foreign, oversized or stale
//! file costs at most that round trip (or one refused login, tried again by the fresh CAPA);
//! it is not synced, and a crash that loses it loses nothing.

use std::path::{Path, PathBuf};

use crate::mailbox::Mailbox;

/// Largest hint read: a real server's CAPA is a few hundred octets.
const MAX_HINT: u64 = 4096;

fn path(dir: &Path, mailbox: &Mailbox) -> PathBuf {
    dir.join(format!("{}.capa", mailbox.file_stem()))
}

/// The CAPA lines the last session saw, when a trusted file holds them.
pub fn capa_hint(dir: &Path, mailbox: &Mailbox) -> Option<Vec<String>> {
    let p = path(dir, mailbox);
    let meta = std::fs::symlink_metadata(&p).ok()?;
    if !meta.is_file() || meta.len() > MAX_HINT || crate::trust::state_file(&p, &meta).is_err() {
        return None;
    }
    let text = std::fs::read_to_string(&p).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

/// Keeps `lines` for the next session (a 0600 file made afresh, never through a symlink, and
/// renamed into place unsynced, as the status file is; a failure is only logged). The caller
/// writes only what differs from what [`capa_hint`] gave it.
pub fn store_capa_hint(dir: &Path, mailbox: &Mailbox, lines: &[String]) {
    let p = path(dir, mailbox);
    let tmp = p.with_extension("capa.tmp");
    let mut text = lines.join("\n");
    text.push('\n');
    let r = super::create_new(&tmp)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            let lazy = crate::durable::Sync::Lazy;
            crate::durable::replace(f, &tmp, &p, dir, &[text.as_bytes()], lazy)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = r {
        tracing::debug!(path = %p.display(), error = %e, "cannot keep the server's capabilities");
    }
}
