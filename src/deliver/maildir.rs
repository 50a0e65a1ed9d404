//! Maildir delivery (the Maildir specification by D. J. Bernstein): the message is streamed into
//! `tmp/NAME`, fsync'd, renamed to `new/NAME`, and `new/` is fsync'd. NAME is unique per
//! delivery (`SECS.MUSECSPPID QSEQ.HOST`) and is the key the state journal records, so that after
//! a crash [`Maildir::was_delivered`] can tell whether the rename happened.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::DeliverError;

/// Write buffer per message: large writes, flat memory.
const BUF_SIZE: usize = 64 * 1024;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// This process's ID, asked of the kernel once (it is in every file name).
fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    host: String,
    /// Where one `syncfs` makes a batch durable (see [`crate::durable::fs_sync_covers`]): `tmp/`,
    /// opened here, before any file of the poll is written. A `syncfs` through it reports each
    /// write-back error on the file system since it was opened, once (the descriptor keeps its
    /// own place in the file system's error sequence), so a small message's file is closed as
    /// soon as it is written: a poll holds one descriptor here, not one per message of its
    /// batch.
    anchor: Option<Arc<File>>,
}

impl Maildir {
    /// Opens the Maildir at `root`, creating it and its `tmp`, `new` and `cur` (mode 0700).
    /// The name of every directory created here is fsync'd in its parent: `publish` fsyncs
    /// `new/` itself, which does not make a new `new/` durable.
    pub fn open(root: &Path) -> Result<Maildir, DeliverError> {
        Self::open_as(root, true)
    }

    /// [`Maildir::open`] where each file gets its own fsync, never a `syncfs`: for a caller
    /// that makes one message at a time durable (a routed copy), where a `syncfs` would write
    /// back the whole file system for one file.
    pub(super) fn open_one_at_a_time(root: &Path) -> Result<Maildir, DeliverError> {
        Self::open_as(root, false)
    }

    fn open_as(root: &Path, batches: bool) -> Result<Maildir, DeliverError> {
        for sub in ["", "tmp", "new", "cur"] {
            let dir = root.join(sub);
            crate::durable::create_dir_synced(&dir, 0o700)
                .map_err(|e| DeliverError::io(format!("cannot create {}", dir.display()), e))?;
        }
        // The spec: '/' and ':' in the host name are written as \057 and \072.
        let host = super::hostname()
            .replace('/', "\\057")
            .replace(':', "\\072");
        Ok(Maildir {
            root: root.to_path_buf(),
            host,
            anchor: match batches && crate::durable::fs_sync_covers(&root.join("tmp")) {
                true => Some(Arc::new(open_anchor(root)?)),
                false => None,
            },
        })
    }

    pub(super) fn begin(&self, header: Option<&[u8]>) -> Result<Sink, DeliverError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            pid(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            self.host
        );
        let tmp = self.root.join("tmp").join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| DeliverError::io(format!("cannot create {}", tmp.display()), e))?;
        let mut sink = Sink {
            file: Some(BufWriter::with_capacity(BUF_SIZE, file)),
            unsynced: None,
            syncing: None,
            tmp,
            new: self.root.join("new").join(&name),
            new_dir: self.root.join("new"),
            anchor: self.anchor.clone(),
            fs_pending: false,
            name,
            bytes: 0,
            kicked: 0,
            committed: false,
        };
        if let Some(h) = header {
            sink.write(h)?;
        }
        Ok(sink)
    }

    /// Whether the delivery named `key` reached `new/` (or was since moved to `cur/` by a mail
    /// reader, which appends `:2,FLAGS`).
    pub fn was_delivered(&self, key: &str) -> bool {
        if key.contains('/') || key.is_empty() {
            return false;
        }
        if self.root.join("new").join(key).exists() {
            return true;
        }
        std::fs::read_dir(self.root.join("cur"))
            .map(|entries| {
                entries.flatten().any(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n == key || n.strip_prefix(key).is_some_and(|r| r.starts_with(':'))
                })
            })
            .unwrap_or(false)
    }

    /// Removes from `tmp/` the files popfetch processes on this host left when they died before
    /// finishing a message (their PID is in the name and no longer runs). Files of live
    /// processes, and of other programs, are left alone.
    pub fn clean_stale_tmp(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(self.root.join("tmp")) else {
            return 0;
        };
        let suffix = format!(".{}", self.host);
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(stem) = name.strip_suffix(&suffix) else {
                continue;
            };
            // SECS.MUSECSPPIDQSEQ
            let pid = stem
                .split_once(".M")
                .and_then(|(_, r)| r.split_once('P'))
                .and_then(|(_, r)| r.split_once('Q'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok());
            let Some(pid) = pid else { continue };
            if pid != self::pid()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::remove_file(e.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Removes what an unfinished delivery under `key` left in `tmp/`.
    pub fn discard(&self, key: &str) {
        if !key.contains('/') && !key.is_empty() {
            let _ = std::fs::remove_file(self.root.join("tmp").join(key));
        }
    }
}

/// One message on its way into a Maildir: written into `tmp/` ([`Sink::write`]), flushed
/// ([`Sink::finish`]), fsync'd ([`sync_all`], for a whole batch at once), and renamed into `new/`
/// ([`publish`], with one fsync of `new/` for the batch).
#[derive(Debug)]
pub struct Sink {
    /// While the message is being written.
    file: Option<BufWriter<File>>,
    /// Written and flushed, its fsync left for [`sync_all`] (a small message).
    unsynced: Option<File>,
    /// Written and flushed, its fsync running in the background since [`Sink::finish`] (a large
    /// message), while the next messages stream in.
    syncing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    tmp: PathBuf,
    new: PathBuf,
    new_dir: PathBuf,
    /// The Maildir's `tmp/` anchor, when one `syncfs` makes a batch durable.
    anchor: Option<Arc<File>>,
    /// Written, flushed and closed, made durable by the batch's `syncfs` (a small message,
    /// with an anchor).
    fs_pending: bool,
    name: String,
    bytes: u64,
    /// Where the last write-behind started (see [`WRITE_BEHIND`]).
    kicked: u64,
    committed: bool,
}

/// A large message's data is handed to the disk every this many bytes while it streams in, so
/// that its fsync at the end finds little left to write and the disk works while the network
/// does.
const WRITE_BEHIND: u64 = 4 << 20;

impl Sink {
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(f) = self.file.as_mut() else {
            return Err(self.closed());
        };
        f.write_all(data)
            .map_err(|e| DeliverError::io(format!("cannot write {}", self.tmp.display()), e))?;
        self.bytes += data.len() as u64;
        // What the kernel has of the file: all but what the buffer still holds.
        let in_kernel = self.bytes - f.buffer().len() as u64;
        if in_kernel - self.kicked >= WRITE_BEHIND {
            start_writeback(f.get_ref(), self.kicked, in_kernel - self.kicked);
            self.kicked = in_kernel;
        }
        Ok(())
    }

    /// Flushes the message into its file in `tmp/`, and starts the fsync of a large one; it is
    /// not durable until [`sync_all`] has seen its fsync succeed.
    pub(super) fn finish(&mut self) -> Result<(), DeliverError> {
        let Some(f) = self.file.take() else {
            return Err(self.closed());
        };
        let f = f.into_inner().map_err(|e| {
            DeliverError::io(
                format!("cannot write {}", self.tmp.display()),
                e.into_error(),
            )
        })?;
        if self.bytes >= WRITE_BEHIND {
            self.syncing = Some(tokio::task::spawn_blocking(move || f.sync_all()));
        } else {
            // Small files are made durable together at the batch's commit; their writing
            // starts now.
            start_writeback(&f, self.kicked, self.bytes - self.kicked);
            if self.anchor.is_some() {
                self.fs_pending = true;
            } else {
                self.unsynced = Some(f);
            }
        }
        Ok(())
    }

    pub(super) fn key(&self) -> &str {
        &self.name
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn closed(&self) -> DeliverError {
        DeliverError {
            kind: super::ErrorKind::Permanent,
            message: format!("internal: {} used out of order", self.tmp.display()),
        }
    }
}

/// Starts writing `len` bytes of `file` from `offset` to the disk, without waiting: a hint
/// only (durability still comes from the fsync); errors are left for the fsync to report.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor `file` keeps open for the call's duration; it
    // reads and writes no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Makes the finished messages of `sinks` durable in `tmp/`. Where a `syncfs` covers them (the
/// sinks' Maildirs have an anchor), one `syncfs` per Maildir through its anchor on one blocking
/// thread: one journal commit and one device flush for the batch, where an fsync each costs a
/// flush each, and one thread hand-off where an fsync each took one per message. Elsewhere the
/// files' fsyncs run concurrently, so that they share the file system's journal commits. A
/// large message's fsync was started at its end, while the next ones were arriving, and is
/// only awaited here.
pub(super) async fn sync_all(sinks: &mut [&mut Sink]) -> Result<(), DeliverError> {
    // Each Maildir's anchor once, with its `tmp/` for the error.
    let mut anchors: Vec<(PathBuf, Arc<File>)> = Vec::new();
    for s in sinks.iter_mut() {
        if s.fs_pending {
            let Some(a) = &s.anchor else {
                return Err(s.closed());
            };
            if !anchors.iter().any(|(_, b)| Arc::ptr_eq(a, b)) {
                let tmp = s.tmp.parent().unwrap_or(Path::new("."));
                anchors.push((tmp.to_path_buf(), Arc::clone(a)));
            }
        } else if let Some(f) = s.unsynced.take() {
            s.syncing = Some(tokio::task::spawn_blocking(move || f.sync_all()));
        } else if s.syncing.is_none() {
            return Err(s.closed());
        }
    }
    let mut failed: Option<DeliverError> = None;
    if !anchors.is_empty() {
        // A permit first, so that hundreds of polls committing at once wait here, not each on
        // a blocking thread of its own (each thread's stack stays in memory for a while).
        let permit = FS_SYNCS.acquire().await;
        let r = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            for (tmp, anchor) in &anchors {
                crate::durable::sync_fs(anchor).map_err(|e| (tmp.clone(), e))?;
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err((PathBuf::from("tmp"), std::io::Error::other(e))));
        match r {
            Ok(()) => {
                for s in sinks.iter_mut() {
                    s.fs_pending = false;
                }
            }
            Err((tmp, e)) => {
                failed = Some(DeliverError::io(
                    format!("cannot make the batch's files in {} durable", tmp.display()),
                    e,
                ));
            }
        }
    }
    for s in sinks.iter_mut() {
        let Some(job) = s.syncing.take() else {
            continue;
        };
        let r = match job.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = r {
            failed.get_or_insert_with(|| {
                DeliverError::io(format!("cannot write {}", s.tmp.display()), e)
            });
        }
    }
    failed.map_or(Ok(()), Err)
}

/// How many `syncfs` calls of batches run at once, in the whole process. One makes everything
/// written so far durable, so a few at a time lose nothing against many, and hold a few threads
/// instead of one per poll committing.
static FS_SYNCS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// `tmp/` of the Maildir at `root`, opened as the anchor of its batches' `syncfs`.
fn open_anchor(root: &Path) -> Result<File, DeliverError> {
    let tmp = root.join("tmp");
    File::open(&tmp).map_err(|e| DeliverError::io(format!("cannot open {}", tmp.display()), e))
}

/// Renames every synced message of `sinks` into its `new/`, then fsyncs each `new/` once. After
/// an error the messages renamed so far stay delivered (the journal's pending records find
/// them); the others are removed.
pub(super) async fn publish(mut sinks: Vec<Sink>) -> Result<(), DeliverError> {
    let mut dirs: Vec<PathBuf> = sinks.iter().map(|s| s.new_dir.clone()).collect();
    dirs.sort();
    dirs.dedup();
    tokio::task::spawn_blocking(move || {
        for s in &mut sinks {
            if s.file.is_some() || s.unsynced.is_some() || s.syncing.is_some() || s.fs_pending {
                return Err(s.closed());
            }
            std::fs::rename(&s.tmp, &s.new).map_err(|e| {
                DeliverError::io(format!("cannot move {} into new/", s.tmp.display()), e)
            })?;
            s.committed = true;
        }
        for dir in &dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| DeliverError::io(format!("cannot sync {}", dir.display()), e))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| DeliverError::io("rename task", std::io::Error::other(e)))?
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.committed {
            // An unfinished delivery leaves no partial file behind.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `n` small messages into `md`, syncs and publishes them as one batch, and checks
    /// every one is in `new/` with its content and `tmp/` is empty.
    async fn batch_of(md: &Maildir, root: &Path, n: usize) {
        let mut sinks = Vec::new();
        for i in 0..n {
            let mut s = md.begin(None).unwrap();
            s.write(format!("Subject: {i}\n\nbody {i}\n").as_bytes())
                .unwrap();
            s.finish().unwrap();
            // With an anchor the file is closed once written; without, it waits for its fsync.
            assert!(s.file.is_none());
            assert_eq!(s.fs_pending, md.anchor.is_some());
            assert_eq!(s.unsynced.is_some(), md.anchor.is_none());
            sinks.push(s);
        }
        let mut refs: Vec<&mut Sink> = sinks.iter_mut().collect();
        sync_all(&mut refs).await.unwrap();
        assert!(sinks.iter().all(|s| !s.fs_pending && s.unsynced.is_none()));
        let keys: Vec<String> = sinks.iter().map(|s| s.key().to_string()).collect();
        publish(sinks).await.unwrap();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(
                std::fs::read(root.join("new").join(k)).unwrap(),
                format!("Subject: {i}\n\nbody {i}\n").as_bytes()
            );
        }
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn batches_are_made_durable_by_one_syncfs_each_through_the_maildirs_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Mail");
        let md = Maildir::open(&root).unwrap();
        // The test directory is on ext4, XFS, Btrfs or tmpfs on the machines this runs on.
        assert!(md.anchor.is_some(), "{} has no anchor", root.display());
        batch_of(&md, &root, 300).await;
        // The next batch goes through the same anchor.
        batch_of(&md, &root, 3).await;
        assert_eq!(std::fs::read_dir(root.join("new")).unwrap().count(), 303);
    }

    #[tokio::test]
    async fn without_an_anchor_each_file_is_fsynced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Mail");
        let md = Maildir::open_one_at_a_time(&root).unwrap();
        assert!(md.anchor.is_none());
        batch_of(&md, &root, 40).await;
    }

    #[tokio::test]
    async fn a_file_not_made_durable_is_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Mail");
        let md = Maildir::open(&root).unwrap();
        let mut s = md.begin(None).unwrap();
        s.write(b"Subject: x\n\nbody\n").unwrap();
        s.finish().unwrap();
        let key = s.key().to_string();
        // Finished, not synced: publishing refuses it and it is removed, never renamed.
        assert!(publish(vec![s]).await.is_err());
        assert!(!md.was_delivered(&key));
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }
}
