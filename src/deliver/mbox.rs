//! Delivery by appending to an mbox file (`deliver = { mbox = "/var/mail/alice" }`), in the
//! **mboxrd** format: each message is a `From_` line `From SENDER DATE` (the envelope sender of
//! [`envelope::sender`], `MAILER-DAEMON` when there is none or it is the null sender; the date
//! in UTC asctime form, `Thu Nov 26 11:03:51 2026`), then the message with every line that
//! matches `^>*From ` quoted by one more `>`, ending in `\n`, then one empty line. A reader that
//! knows mboxrd removes one `>` from each `^>+From ` line and gets the message back byte for
//! byte (plus the final newline, if the message had none); 8-bit bytes pass through untouched.
//!
//! `Sink::write` quotes the streamed message into an unlinked temporary file (flat memory
//! whatever its size; quoting resumes across chunk boundaries) and keeps the start of it to find
//! the sender. `Sink::prepare` (what [`super::Sink::finish`] calls) is the delivery: it locks the
//! mbox, appends, fsyncs, unlocks.
//!
//! Locking, in this order, each step bounded by one deadline ([`LOCK_TIMEOUT`]), a timeout
//! being [`ErrorKind::Transient`]:
//! 1. a lock inside this process, per mbox: POSIX record locks belong to the process, so two
//!    deliveries of ours to the same file would not exclude each other;
//! 2. the dotlock `PATH.lock`, created with `O_EXCL`, as procmail and mutt expect; one older
//!    than [`DOTLOCK_STALE`] is left over from a crash and is removed. When the directory does
//!    not let us create it (`/var/mail` is often `root:mail 2775`), we go on with the fcntl
//!    lock alone and say so at debug level;
//! 3. an `fcntl` write lock on the whole file, taken with `F_SETLK` in a retry loop.
//!
//! A program that takes the same locks in the other order (mutt takes `fcntl` first) can wait
//! on us while we wait on it; the deadline breaks that tie, and the message is tried again at
//! the next poll. Two programs that both judge a dotlock stale can both take it; the fcntl lock
//! still keeps their appends apart. A reader that takes either lock never sees a message
//! half appended.
//!
//! What a failure leaves behind: an error while appending or syncing (a full disk, a quota)
//! truncates the file back to its old length and syncs it, so no part of the message remains.
//! A crash (of the process or the machine) in the middle of the append cannot do that: the mbox
//! then ends with a partial message (after a power failure, on some file systems, with zero
//! bytes in it), which a reader shows as a truncated last message. The
//! state journal has not recorded the message, so it is fetched and delivered again, whole; the
//! next append first completes the unfinished line and adds the empty line, so its `From_`
//! line starts a message of its own. The user sees a truncated copy and then the full one:
//! duplicated, never lost. A crash after the append but before `prepare` returned leaves the
//! whole message, and the re-fetch delivers a second copy. The same holds if the caller stops
//! waiting for `prepare` (a timeout): the append runs on to the end on its blocking thread.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{DeliverError, ErrorKind, envelope};

/// Write buffer for the spool and for the append: large writes, flat memory.
const BUF_SIZE: usize = 64 * 1024;

/// How much of the message start is kept to find the envelope sender. Real header sections are
/// far smaller; past this the sender is looked for in what was kept.
const HEADER_CAP: usize = 64 * 1024;

/// How long a delivery waits for all its locks together. A mail reader holds the mbox for
/// seconds while it rewrites it; past this the message is left for the next poll.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// A dotlock not modified for this long was left by a crashed program and is removed. No
/// delivery holds a dotlock this long; breaking it sooner risks breaking a live one.
pub const DOTLOCK_STALE: Duration = Duration::from_secs(5 * 60);

/// Pause between two tries at a busy lock.
const LOCK_RETRY: Duration = Duration::from_millis(100);

/// Written in place of a missing or null envelope sender, as local delivery agents do.
const NO_SENDER: &str = "MAILER-DAEMON";

/// An mbox file to deliver into.
#[derive(Debug)]
pub struct Mbox {
    path: PathBuf,
    lock_timeout: Duration,
}

impl Mbox {
    /// Checks that the directory of `path` exists and that `path`, if it exists, is a regular
    /// file. Creates nothing: the file is created (mode 0600) by the first delivery.
    pub fn open(path: &Path) -> Result<Mbox, DeliverError> {
        let unusable = |why: &str| DeliverError {
            kind: ErrorKind::Unavailable,
            message: format!("mbox {}: {why}", path.display()),
        };
        if path.file_name().is_none() {
            return Err(unusable("not a file name"));
        }
        let dir = parent_dir(path);
        let meta = std::fs::metadata(dir)
            .map_err(|e| DeliverError::io(format!("mbox directory {}", dir.display()), e))?;
        if !meta.is_dir() {
            return Err(unusable("its parent is not a directory"));
        }
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => return Err(unusable("not a regular file")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DeliverError::io(format!("mbox {}", path.display()), e)),
        }
        Ok(Mbox {
            path: path.to_path_buf(),
            lock_timeout: LOCK_TIMEOUT,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same mbox with another bound on the wait for locks.
    #[cfg(test)]
    pub(super) fn with_lock_timeout(self, lock_timeout: Duration) -> Mbox {
        Mbox {
            lock_timeout,
            ..self
        }
    }

    /// Starts one message; `header` (a trace line with `\n` endings) goes first.
    pub(super) fn begin(&self, header: Option<&[u8]>) -> Result<Sink, DeliverError> {
        let file = tempfile::tempfile().map_err(|e| {
            DeliverError::io(
                format!("cannot create a spool file for {}", self.path.display()),
                e,
            )
        })?;
        let mut sink = Sink {
            path: self.path.clone(),
            lock_timeout: self.lock_timeout,
            spool: Some(Spool {
                file: BufWriter::with_capacity(BUF_SIZE, file),
                quoter: Quoter::default(),
                last: None,
            }),
            head: Vec::new(),
            head_done: false,
            bytes: 0,
        };
        if let Some(h) = header {
            sink.write(h)?;
        }
        Ok(sink)
    }
}

/// One message on its way into an mbox.
#[derive(Debug)]
pub struct Sink {
    path: PathBuf,
    lock_timeout: Duration,
    /// `None` once `prepare` has taken it.
    spool: Option<Spool>,
    /// The start of the message, up to the end of its header section or [`HEADER_CAP`].
    head: Vec<u8>,
    head_done: bool,
    bytes: u64,
}

impl Sink {
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(spool) = self.spool.as_mut() else {
            return Err(self.closed());
        };
        spool.write(data).map_err(|e| {
            DeliverError::io(
                format!("cannot spool a message for {}", self.path.display()),
                e,
            )
        })?;
        self.bytes += data.len() as u64;
        if !self.head_done {
            // Search only the new bytes (and the one before them) so that tiny chunks do not
            // make the search quadratic.
            let from = self.head.len().saturating_sub(1);
            let take = data.len().min(HEADER_CAP - self.head.len());
            self.head.extend_from_slice(&data[..take]);
            let end = match from {
                0 => envelope::header_end(&self.head),
                _ => memchr::memmem::find(&self.head[from..], b"\n\n").map(|i| from + i + 2),
            };
            if let Some(end) = end {
                self.head.truncate(end);
                self.head_done = true;
            } else if self.head.len() == HEADER_CAP {
                self.head_done = true;
            }
        }
        Ok(())
    }

    /// Delivers the message: after `Ok` it is durably in the mbox. On `Err` the mbox is as it
    /// was (see the module documentation for a crash).
    pub(super) async fn prepare(&mut self) -> Result<(), DeliverError> {
        let Some(spool) = self.spool.take() else {
            return Err(self.closed());
        };
        let line = from_line(envelope::sender(&self.head).as_deref(), SystemTime::now());
        let (path, timeout) = (self.path.clone(), self.lock_timeout);
        let bytes = self.bytes;
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            deliver(&path, timeout, &line, spool)?;
            tracing::debug!(
                path = %path.display(),
                bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "appended to mbox"
            );
            Ok(())
        })
        .await
        .map_err(|e| {
            DeliverError::io(
                format!("cannot append to {}", self.path.display()),
                io::Error::other(e),
            )
        })?
    }

    /// Message bytes written so far (trace header included, before quoting).
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    fn closed(&self) -> DeliverError {
        DeliverError {
            kind: ErrorKind::Permanent,
            message: format!(
                "internal: message for {} written after prepare",
                self.path.display()
            ),
        }
    }
}

/// The quoted message so far, in an unlinked temporary file.
#[derive(Debug)]
struct Spool {
    file: BufWriter<File>,
    quoter: Quoter,
    /// The last message byte, to know whether the message ends with a newline.
    last: Option<u8>,
}

impl Spool {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.quoter.feed(data, &mut self.file)?;
        if let Some(&b) = data.last() {
            self.last = Some(b);
        }
        Ok(())
    }

    /// Ends the message (a final newline if it lacks one, then the empty separator line) and
    /// returns the file, rewound.
    fn finish(mut self) -> io::Result<File> {
        self.quoter.finish(&mut self.file)?;
        if self.last.is_some_and(|b| b != b'\n') {
            self.file.write_all(b"\n")?;
        }
        self.file.write_all(b"\n")?;
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }
}

/// mboxrd quoting of a stream: a `>` is added before each line that matches `^>*From `. A line
/// start is held back (as counts, so a line of a million `>` costs nothing) until it is known
/// whether it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoter {
    /// At the start of a line that so far is `gts` times `>` then `FROM[..matched]`.
    LineStart { gts: u64, matched: usize },
    /// Inside a line already known not to need quoting.
    MidLine,
}

const FROM: &[u8] = b"From ";

impl Default for Quoter {
    fn default() -> Quoter {
        Quoter::LineStart { gts: 0, matched: 0 }
    }
}

impl Quoter {
    fn feed(&mut self, data: &[u8], out: &mut impl Write) -> io::Result<()> {
        let mut i = 0;
        while i < data.len() {
            match *self {
                Quoter::MidLine => match memchr::memchr(b'\n', &data[i..]) {
                    Some(n) => {
                        out.write_all(&data[i..=i + n])?;
                        i += n + 1;
                        *self = Quoter::default();
                    }
                    None => {
                        out.write_all(&data[i..])?;
                        i = data.len();
                    }
                },
                Quoter::LineStart { gts, matched } => {
                    let b = data[i];
                    if matched == 0 && b == b'>' {
                        *self = Quoter::LineStart {
                            gts: gts + 1,
                            matched,
                        };
                        i += 1;
                    } else if b == FROM[matched] {
                        i += 1;
                        if matched + 1 == FROM.len() {
                            write_gts(out, gts + 1)?;
                            out.write_all(FROM)?;
                            *self = Quoter::MidLine;
                        } else {
                            *self = Quoter::LineStart {
                                gts,
                                matched: matched + 1,
                            };
                        }
                    } else {
                        // Not a From line: give back what was held and read `b` again as
                        // part of an ordinary line (it may be its end).
                        self.flush(out)?;
                        *self = Quoter::MidLine;
                    }
                }
            }
        }
        Ok(())
    }

    /// At the end of the message: writes what was held back (a last line such as `>>Fro`).
    fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.flush(out)?;
        *self = Quoter::MidLine;
        Ok(())
    }

    fn flush(&self, out: &mut impl Write) -> io::Result<()> {
        if let Quoter::LineStart { gts, matched } = *self {
            write_gts(out, gts)?;
            out.write_all(&FROM[..matched])?;
        }
        Ok(())
    }
}

fn write_gts(out: &mut impl Write, mut n: u64) -> io::Result<()> {
    const GTS: [u8; 64] = [b'>'; 64];
    while n > 0 {
        let k = n.min(GTS.len() as u64) as usize;
        out.write_all(&GTS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// `From SENDER DATE\n`; `sender` is what [`envelope::sender`] found.
fn from_line(sender: Option<&str>, t: SystemTime) -> Vec<u8> {
    let sender = sender.filter(|s| !s.is_empty()).unwrap_or(NO_SENDER);
    format!("From {sender} {}\n", asctime(t)).into_bytes()
}

/// The asctime(3) form of `t` in UTC, `Thu Nov  6 11:03:51 2026` (the day padded with a
/// space), rearranged from [`super::rfc5322_date`] so that there is one calendar in the crate.
fn asctime(t: SystemTime) -> String {
    let date = super::rfc5322_date(t);
    let fields: Vec<&str> = date.split(' ').collect();
    let [wday, day, mon, year, time, _zone] = fields[..] else {
        return date;
    };
    let wday = wday.trim_end_matches(',');
    let day = day.trim_start_matches('0');
    format!("{wday} {mon} {day:>2} {time} {year}")
}

/// The directory that holds `path`.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Locks `path`, appends the From_ line and the finished spool, syncs, unlocks.
fn deliver(
    path: &Path,
    timeout: Duration,
    from_line: &[u8],
    spool: Spool,
) -> Result<(), DeliverError> {
    let mut spool = spool.finish().map_err(|e| {
        DeliverError::io(format!("cannot spool a message for {}", path.display()), e)
    })?;
    let locked = Locked::acquire(path, timeout)?;
    let file = &locked.file.0;
    append(file, file, from_line, &mut spool)
        .map_err(|e| DeliverError::io(format!("cannot append to {}", path.display()), e))
}

/// Appends `from_line` and `spool` to the end of `file`, written through `out` (which writes
/// to `file`; in tests, a writer that fails midway), and syncs. On any error `file` is
/// truncated back to its old length and synced: it is left as it was.
fn append(file: &File, out: impl Write, from_line: &[u8], spool: &mut impl Read) -> io::Result<()> {
    let old_len = file.metadata()?.len();
    let result = (|| {
        let gap = separator_needed(file, old_len)?;
        let mut w = BufWriter::with_capacity(BUF_SIZE, out);
        w.write_all(gap)?;
        w.write_all(from_line)?;
        io::copy(spool, &mut w)?;
        w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    if result.is_err()
        && let Err(e) = file.set_len(old_len).and_then(|()| file.sync_all())
    {
        tracing::warn!(
            error = %e,
            "cannot truncate an mbox after a failed append: {e}; a partial message is left at \
             its end"
        );
    }
    result
}

/// What must come before a new From_ line so that it starts a message: the mbox may end
/// without the empty line (another writer's habit) or mid-line (after a crash).
fn separator_needed(file: &File, len: u64) -> io::Result<&'static [u8]> {
    let mut tail = [0u8; 2];
    let n = len.min(2) as usize;
    file.read_exact_at(&mut tail[..n], len - n as u64)?;
    Ok(match &tail[..n] {
        [] | [b'\n', b'\n'] => b"",
        [.., b'\n'] => b"\n",
        _ => b"\n\n",
    })
}

/// All three locks on an mbox, open for appending. Fields drop in order: the fcntl lock, the
/// dotlock, then the lock inside the process.
struct Locked {
    file: FcntlLock,
    _dotlock: Option<DotLock>,
    _local: LocalLock,
}

impl Locked {
    fn acquire(path: &Path, timeout: Duration) -> Result<Locked, DeliverError> {
        let deadline = Instant::now() + timeout;
        let local = LocalLock::acquire(path, deadline)?;
        let dotlock = DotLock::acquire(path, deadline)?;
        let file = open_or_create(path)
            .map_err(|e| DeliverError::io(format!("cannot open {}", path.display()), e))?;
        let file = FcntlLock::acquire(file, path, deadline)?;
        Ok(Locked {
            file,
            _dotlock: dotlock,
            _local: local,
        })
    }
}

/// Opens `path` for appending, creating it (mode 0600) when it does not exist. The directory
/// entry of a file created here is fsync'd before anything is appended: the file's own fsync
/// does not make its name durable (POSIX; ext4 and XFS may lose it in a crash), and the DELE
/// that follows the delivery must not outlive the mbox. The loop is bounded: a mail reader may
/// remove an empty mbox (mutt does) between the two opens.
fn open_or_create(path: &Path) -> io::Result<File> {
    for _ in 0..3 {
        match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => {
                sync_dir(parent_dir(path))?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match OpenOptions::new().read(true).append(true).open(path) {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(
        "the file is removed as soon as it is created",
    ))
}

/// fsyncs the directory `dir`, making the names created in it durable. A directory we may
/// write but not read (mode 0730) cannot be opened to sync: that is said at debug level and
/// the delivery goes on, as durable as the file system makes a new name without it.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all()?,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(
                dir = %dir.display(),
                "cannot open the mbox's directory to fsync the new file's name"
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    #[cfg(test)]
    tests::DIR_SYNCS.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    Ok(())
}

fn lock_timeout(path: &Path, what: &str) -> DeliverError {
    DeliverError {
        kind: ErrorKind::Transient,
        message: format!(
            "mbox {} is locked ({what}); gave up waiting",
            path.display()
        ),
    }
}

/// The mboxes this process is delivering into, by canonical path.
static LOCAL_HELD: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static LOCAL_FREED: Condvar = Condvar::new();

/// Excludes our own other deliveries to the same mbox.
struct LocalLock(PathBuf);

impl LocalLock {
    fn acquire(path: &Path, deadline: Instant) -> Result<LocalLock, DeliverError> {
        let key = std::fs::canonicalize(parent_dir(path))
            .map(|d| d.join(path.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| path.to_path_buf());
        let mut held = LOCAL_HELD.lock().unwrap_or_else(PoisonError::into_inner);
        while held.contains(&key) {
            let now = Instant::now();
            if now >= deadline {
                return Err(lock_timeout(path, "by another delivery of this process"));
            }
            held = LOCAL_FREED
                .wait_timeout(held, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        held.insert(key.clone());
        Ok(LocalLock(key))
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        LOCAL_HELD
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.0);
        LOCAL_FREED.notify_all();
    }
}

/// `PATH.lock`, removed on drop.
struct DotLock(PathBuf);

impl DotLock {
    /// `None` when the directory does not let us create a dotlock.
    fn acquire(path: &Path, deadline: Instant) -> Result<Option<DotLock>, DeliverError> {
        let mut name = path.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&lock)
            {
                Ok(_) => return Ok(Some(DotLock(lock))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match dotlock_age(&lock) {
                        // Gone meanwhile: try again at once.
                        None => continue,
                        Some(age) if age > DOTLOCK_STALE => match std::fs::remove_file(&lock) {
                            Ok(()) => {
                                tracing::info!(
                                    path = %lock.display(),
                                    age_s = age.as_secs(),
                                    "removed a stale dotlock {} ({}s old)",
                                    lock.display(),
                                    age.as_secs()
                                );
                                continue;
                            }
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(_) => {}
                        },
                        Some(_) => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::debug!(
                        path = %lock.display(),
                        "cannot create a dotlock here; locking the mbox with fcntl only"
                    );
                    return Ok(None);
                }
                Err(e) => {
                    return Err(DeliverError::io(
                        format!("cannot create {}", lock.display()),
                        e,
                    ));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(lock_timeout(path, &format!("{} exists", lock.display())));
            }
            std::thread::sleep(LOCK_RETRY.min(deadline - now));
        }
    }
}

/// How long ago the dotlock was last modified; `None` when it is gone. A time in the future
/// (a clock step) counts as fresh.
fn dotlock_age(lock: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(lock).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default(),
    )
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove the dotlock {}: {e}", self.0.display());
        }
    }
}

/// The mbox, open, with an `fcntl` write lock on all of it; unlocked on drop.
struct FcntlLock(File);

impl FcntlLock {
    fn acquire(file: File, path: &Path, deadline: Instant) -> Result<FcntlLock, DeliverError> {
        loop {
            match fcntl_setlk(&file, libc::F_WRLCK) {
                Ok(true) => return Ok(FcntlLock(file)),
                Ok(false) => {}
                Err(e) => {
                    return Err(DeliverError::io(
                        format!("cannot lock {}", path.display()),
                        e,
                    ));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(lock_timeout(path, "fcntl lock held by another process"));
            }
            std::thread::sleep(LOCK_RETRY.min(deadline - now));
        }
    }
}

impl Drop for FcntlLock {
    fn drop(&mut self) {
        // Closing the file would release the lock too; unlocking says so explicitly.
        let _ = fcntl_setlk(&self.0, libc::F_UNLCK);
    }
}

/// `fcntl(F_SETLK)` of type `kind` (`F_WRLCK`, `F_UNLCK`) over the whole file, including what
/// is appended past its current end. `Ok(false)` when another process holds a conflicting lock
/// (or a signal interrupted the call): try again later.
fn fcntl_setlk(file: &File, kind: libc::c_int) -> io::Result<bool> {
    // SAFETY: `flock` is a plain C struct of integers, for which all zeroes is a valid value
    // (l_start = l_len = 0: the whole file). The descriptor is open for as long as `file` is
    // borrowed, and F_SETLK only reads the struct during the call.
    let r = unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl)
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES | libc::EINTR) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests;
