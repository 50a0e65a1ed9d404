//! Maildir delivery (the Maildir specification by D. J. Bernstein): the message is streamed into
//! `tmp/NAME`, fsync'd, renamed to `new/NAME`, and `new/` is fsync'd. NAME is unique per
//! delivery (`SECS.MUSECSPPID QSEQ.HOST`) and is the key the state journal records, so that after
//! a crash [`Maildir::was_delivered`] can tell whether the rename happened.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::DeliverError;

/// Write buffer per message: large writes, flat memory.
const BUF_SIZE: usize = 64 * 1024;

static SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    host: String,
}

impl Maildir {
    /// Opens the Maildir at `root`, creating it and its `tmp`, `new` and `cur` (mode 0700).
    pub fn open(root: &Path) -> Result<Maildir, DeliverError> {
        for sub in ["", "tmp", "new", "cur"] {
            let dir = root.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| DeliverError::io(format!("cannot create {}", dir.display()), e))?;
        }
        // The spec: '/' and ':' in the host name are written as \057 and \072.
        let host = super::hostname()
            .replace('/', "\\057")
            .replace(':', "\\072");
        Ok(Maildir {
            root: root.to_path_buf(),
            host,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn begin(&self, header: Option<&[u8]>) -> Result<Sink, DeliverError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.M{}P{}Q{}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
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
            tmp,
            new: self.root.join("new").join(&name),
            new_dir: self.root.join("new"),
            name,
            bytes: 0,
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

    /// Removes what an unfinished delivery under `key` left in `tmp/`.
    pub fn discard(&self, key: &str) {
        if !key.contains('/') && !key.is_empty() {
            let _ = std::fs::remove_file(self.root.join("tmp").join(key));
        }
    }
}

/// One message on its way into a Maildir.
#[derive(Debug)]
pub struct Sink {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    new: PathBuf,
    new_dir: PathBuf,
    name: String,
    bytes: u64,
    committed: bool,
}

impl Sink {
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(f) = self.file.as_mut() else {
            return Err(self.closed());
        };
        f.write_all(data)
            .map_err(|e| DeliverError::io(format!("cannot write {}", self.tmp.display()), e))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    pub(super) async fn prepare(&mut self) -> Result<(), DeliverError> {
        let Some(f) = self.file.take() else {
            return Err(self.closed());
        };
        let tmp = self.tmp.clone();
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
            let f = f.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            Ok(f)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match r {
            Ok(f) => {
                drop(f);
                Ok(())
            }
            Err(e) => Err(DeliverError::io(
                format!("cannot write {}", tmp.display()),
                e,
            )),
        }
    }

    pub(super) fn key(&self) -> &str {
        &self.name
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) async fn commit(mut self) -> Result<(), DeliverError> {
        if self.file.is_some() {
            return Err(DeliverError {
                kind: super::ErrorKind::Permanent,
                message: "internal: commit before prepare".into(),
            });
        }
        let (tmp, new, dir) = (self.tmp.clone(), self.new.clone(), self.new_dir.clone());
        let r = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::rename(&tmp, &new)?;
            File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match r {
            Ok(()) => {
                self.committed = true;
                Ok(())
            }
            Err(e) => Err(DeliverError::io(
                format!("cannot move {} into new/", self.tmp.display()),
                e,
            )),
        }
    }

    fn closed(&self) -> DeliverError {
        DeliverError {
            kind: super::ErrorKind::Permanent,
            message: format!("internal: {} written after prepare", self.tmp.display()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.committed {
            // An unfinished delivery leaves no partial file behind.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
