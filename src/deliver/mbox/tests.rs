use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use proptest::prelude::*;

use super::*;

thread_local! {
    /// The directories [`sync_dir`] fsync'd on this thread.
    pub(super) static DIR_SYNCS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn dir_syncs() -> Vec<PathBuf> {
    DIR_SYNCS.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn quote(chunks: &[&[u8]]) -> Vec<u8> {
    let mut q = Quoter::default();
    let mut out = Vec::new();
    for c in chunks {
        q.feed(c, &mut out).unwrap();
    }
    q.finish(&mut out).unwrap();
    out
}

/// The mboxrd reading: one `>` less on each `^>+From ` line.
fn unquote(quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in quoted.split_inclusive(|&b| b == b'\n') {
        let gts = line.iter().take_while(|&&b| b == b'>').count();
        if gts > 0 && line[gts..].starts_with(b"From ") {
            out.extend_from_slice(&line[1..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

fn mbox_in(dir: &tempfile::TempDir) -> Mbox {
    Mbox::open(&dir.path().join("mbox")).unwrap()
}

async fn deliver_chunks(
    mbox: &Mbox,
    header: Option<&[u8]>,
    chunks: &[&[u8]],
) -> Result<u64, DeliverError> {
    let mut sink = mbox.begin(header)?;
    for c in chunks {
        sink.write(c)?;
    }
    sink.prepare().await?;
    Ok(sink.bytes())
}

async fn deliver(mbox: &Mbox, message: &[u8]) {
    deliver_chunks(mbox, None, &[message]).await.unwrap();
}

/// The mbox split at its From_ lines: (From_ line, rest up to the next From_ line).
fn split_mbox(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push((String::from_utf8(line.to_vec()).unwrap(), Vec::new()));
        } else {
            out.last_mut()
                .expect("mbox starts with a From_ line")
                .1
                .extend_from_slice(line);
        }
    }
    out
}

#[test]
fn quotes_from_lines_of_any_depth() {
    let input = b"From x\n>From y\n>>From z\nFrom\nFromage\n From w\n>From\n>>>\n>Fro\nx From y\n";
    let want =
        b">From x\n>>From y\n>>>From z\nFrom\nFromage\n From w\n>From\n>>>\n>Fro\nx From y\n";
    assert_eq!(quote(&[input]), want);
    assert_eq!(unquote(want), input);
}

#[test]
fn held_back_line_start_is_written_at_the_end() {
    assert_eq!(quote(&[b">>Fro"]), b">>Fro");
    assert_eq!(quote(&[b"x\n>>From "]), b"x\n>>>From ");
    assert_eq!(quote(&[b""]), b"");
    assert_eq!(quote(&[b"\n\nFrom "]), b"\n\n>From ");
}

#[test]
fn a_long_run_of_gts_is_held_as_a_count() {
    let mut input = vec![b'>'; 100_000];
    input.extend_from_slice(b"From x\n");
    let mut want = vec![b'>'; 100_001];
    want.extend_from_slice(b"From x\n");
    assert_eq!(quote(&[&input]), want);
    let input = vec![b'>'; 1000];
    assert_eq!(quote(&[&input]), input);
}

#[test]
fn quoting_is_the_same_in_chunks_of_every_size() {
    let input: &[u8] = b"From: a@b\n\nFrom the start\n>From quoted\n>>From twice\nFrom\n\
        Fromage\n>>>Frm\nlast From x";
    let whole = quote(&[input]);
    for size in 1..=16 {
        let chunks: Vec<&[u8]> = input.chunks(size).collect();
        assert_eq!(quote(&chunks), whole, "chunk size {size}");
    }
}

proptest! {
    #[test]
    fn quoting_round_trips_in_any_chunks(
        input in proptest::collection::vec(
            prop::sample::select(b">From \nx".to_vec()), 0..200),
        cuts in proptest::collection::vec(0usize..200, 0..8),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for c in cuts {
            chunks.push(&input[at..c]);
            at = c;
        }
        chunks.push(&input[at..]);
        let quoted = quote(&chunks);
        prop_assert_eq!(&quoted, &quote(&[&input]));
        prop_assert_eq!(unquote(&quoted), input.clone());
        for line in quoted.split(|&b| b == b'\n') {
            prop_assert!(!line.starts_with(b"From "));
        }
    }
}

#[test]
fn asctime_pads_the_day_with_a_space() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_691_031);
    assert_eq!(asctime(t), "Thu Nov 26 11:03:51 2026");
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_691_031 - 86_400 * 20);
    assert_eq!(asctime(t), "Fri Nov  6 11:03:51 2026");
    assert_eq!(asctime(SystemTime::UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_400 * 7);
    assert_eq!(asctime(t), "Tue Mar  7 00:00:00 2000");
}

#[test]
fn from_line_names_the_sender_or_mailer_daemon() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_691_031);
    assert_eq!(
        from_line(Some("bob@example.org"), t),
        b"From bob@example.org Thu Nov 26 11:03:51 2026\n"
    );
    assert_eq!(
        from_line(None, t),
        b"From MAILER-DAEMON Thu Nov 26 11:03:51 2026\n"
    );
    assert_eq!(
        from_line(Some(""), t),
        b"From MAILER-DAEMON Thu Nov 26 11:03:51 2026\n"
    );
}

#[tokio::test]
async fn sender_comes_from_the_headers_even_split_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir);
    let msg: &[u8] = b"Subject: x\nReturn-Path: <bounce@example.org>\nFrom: a@example.org\n\n\
        From: body@example.org\n";
    let chunks: Vec<&[u8]> = msg.chunks(3).collect();
    deliver_chunks(&mbox, Some(b"Received: from s\n\tby h; date\n"), &chunks)
        .await
        .unwrap();
    deliver(
        &mbox,
        b"Return-Path: <>\nFrom: a@example.org\n\nnull sender\n",
    )
    .await;
    deliver(&mbox, b"Subject: nobody\n\nno sender at all\n").await;
    deliver(&mbox, b"Subject: late\n\nFrom: body@example.org\n").await;
    let got = split_mbox(&std::fs::read(mbox.path()).unwrap());
    let senders: Vec<&str> = got
        .iter()
        .map(|(l, _)| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        senders,
        [
            "bounce@example.org",
            "MAILER-DAEMON",
            "MAILER-DAEMON",
            "MAILER-DAEMON"
        ]
    );
    for (line, _) in &got {
        // `From SENDER Www Mmm dd hh:mm:ss yyyy\n`
        let date = line.splitn(3, ' ').nth(2).unwrap();
        assert_eq!(date.len(), "Thu Nov 26 11:03:51 2026\n".len(), "{line:?}");
        assert!(
            date.ends_with('\n') && date.as_bytes()[19] == b' ',
            "{line:?}"
        );
    }
}

#[tokio::test]
async fn messages_are_appended_with_an_empty_line_between() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir);
    assert!(!mbox.path().exists(), "open creates nothing");
    let one: &[u8] = b"From: a@example.org\nSubject: one\n\nFrom the start\n>From quoted\n";
    let two: &[u8] = b"From: b@example.org\nSubject: two\n\nbody \xff\xfe\x80 8-bit\n";
    deliver(&mbox, one).await;
    deliver(&mbox, two).await;
    let bytes = std::fs::read(mbox.path()).unwrap();
    let got = split_mbox(&bytes);
    assert_eq!(got.len(), 2);
    assert!(got[0].0.starts_with("From a@example.org "));
    assert!(got[1].0.starts_with("From b@example.org "));
    assert_eq!(
        got[0].1,
        b"From: a@example.org\nSubject: one\n\n>From the start\n>>From quoted\n\n"
    );
    assert_eq!(got[1].1, [two, b"\n"].concat());
    assert!(bytes.ends_with(b"8-bit\n\n"));
    let mode = std::fs::metadata(mbox.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!dir.path().join("mbox.lock").exists(), "dotlock removed");
}

#[tokio::test]
async fn a_message_without_final_newline_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir);
    let bytes = deliver_chunks(&mbox, None, &[b"Subject: x\n\nlast line", b" From y"])
        .await
        .unwrap();
    assert_eq!(bytes, 28);
    deliver(&mbox, b"Subject: y\n\n").await;
    let got = split_mbox(&std::fs::read(mbox.path()).unwrap());
    assert_eq!(got[0].1, b"Subject: x\n\nlast line From y\n\n");
    assert_eq!(got[1].1, b"Subject: y\n\n\n");
}

#[tokio::test]
async fn bytes_count_the_header_and_the_message_before_quoting() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir);
    let n = deliver_chunks(&mbox, Some(b"Received: x\n"), &[b"Subject: x\n\nFrom y\n"])
        .await
        .unwrap();
    assert_eq!(n, 12 + 19);
    let got = split_mbox(&std::fs::read(mbox.path()).unwrap());
    assert_eq!(got[0].1, b"Received: x\nSubject: x\n\n>From y\n\n");
}

#[tokio::test]
async fn a_delivery_is_the_same_in_chunks_of_every_size() {
    let dir = tempfile::tempdir().unwrap();
    let msg: &[u8] = b"From: a@example.org\nSubject: chunks\n\nFrom the start\n>From quoted\n\
        >>From twice\nFromage\n\xc3\xa9t\xe9 8-bit\nFrom";
    let mut bodies = Vec::new();
    for size in 1..=16 {
        let mbox = Mbox::open(&dir.path().join(format!("mbox{size}"))).unwrap();
        let chunks: Vec<&[u8]> = msg.chunks(size).collect();
        deliver_chunks(&mbox, None, &chunks).await.unwrap();
        let got = split_mbox(&std::fs::read(mbox.path()).unwrap());
        assert_eq!(got.len(), 1, "chunk size {size}");
        assert!(got[0].0.starts_with("From a@example.org "));
        bodies.push(got.into_iter().next().unwrap().1);
    }
    assert_eq!(
        bodies[0],
        b"From: a@example.org\nSubject: chunks\n\n>From the start\n>>From quoted\n\
        >>>From twice\nFromage\n\xc3\xa9t\xe9 8-bit\nFrom\n\n"
    );
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn an_mbox_not_ending_in_an_empty_line_is_completed_first() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir);
    let m: &[u8] = b"Subject: x\n\nbody\n";
    for (before, gap) in [
        (
            &b"From a Thu Nov 26 11:03:51 2026\nSubject: p\n\npartial li"[..],
            &b"\n\n"[..],
        ),
        (
            b"From a Thu Nov 26 11:03:51 2026\nSubject: p\n\nno gap\n",
            b"\n",
        ),
        (
            b"From a Thu Nov 26 11:03:51 2026\nSubject: p\n\nfine\n\n",
            b"",
        ),
        (b"\n", b"\n"),
        (b"", b""),
    ] {
        std::fs::write(mbox.path(), before).unwrap();
        deliver(&mbox, m).await;
        let bytes = std::fs::read(mbox.path()).unwrap();
        let rest = bytes.strip_prefix(before).unwrap();
        let rest = rest.strip_prefix(gap).unwrap();
        assert!(rest.starts_with(b"From MAILER-DAEMON "), "{rest:?}");
        assert!(rest.ends_with(b"\nSubject: x\n\nbody\n\n"));
    }
}

/// Writes to a file until `left` bytes have gone through, then fails like a full disk.
struct FailAfter<'a> {
    file: &'a File,
    left: usize,
}

impl Write for FailAfter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::StorageFull.into());
        }
        let n = buf.len().min(self.left);
        let n = (&*self.file).write(&buf[..n])?;
        self.left -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
}

#[test]
fn a_failed_append_leaves_the_mbox_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    let before = b"From a Thu Nov 26 11:03:51 2026\nSubject: old\n\nold body\n";
    let spool: Vec<u8> = b"Subject: new\n\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'x', 3 * BUF_SIZE))
        .collect();
    // Fail within the first buffer, and after several buffers reached the file.
    for left in [0, 10, 2 * BUF_SIZE + 17] {
        std::fs::write(&path, before).unwrap();
        let file = open_rw(&path);
        let out = FailAfter { file: &file, left };
        let e = append(
            &file,
            out,
            b"From b Thu Nov 26 11:03:52 2026\n",
            &mut &spool[..],
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(DeliverError::io("x", e).kind, ErrorKind::Unavailable);
        assert_eq!(std::fs::read(&path).unwrap(), before, "left = {left}");
    }
    // The same writer with room enough succeeds.
    let file = open_rw(&path);
    let out = FailAfter {
        file: &file,
        left: usize::MAX,
    };
    append(
        &file,
        out,
        b"From b Thu Nov 26 11:03:52 2026\n",
        &mut &spool[..],
    )
    .unwrap();
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), before.len() + 1 + 32 + spool.len());
}

/// A spool that yields `good` bytes, then fails.
struct BadSpool {
    good: usize,
}

impl Read for BadSpool {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.good == 0 {
            return Err(io::Error::other("spool read error"));
        }
        let n = buf.len().min(self.good);
        buf[..n].fill(b'y');
        self.good -= n;
        Ok(n)
    }
}

#[test]
fn a_spool_read_error_leaves_the_mbox_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    std::fs::write(&path, b"").unwrap();
    let file = open_rw(&path);
    let e = append(
        &file,
        &file,
        b"From b x\n",
        &mut BadSpool { good: 5 * BUF_SIZE },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "spool read error");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

/// Holds an fcntl write lock on `path` from another process (locks are per process) for
/// `secs`, using Python's `fcntl.lockf`, as a mail reader would. Returns once it holds it.
fn hold_fcntl_lock(path: &Path, secs: f64) -> Child {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys, time\n\
             f = open(sys.argv[1], 'a')\n\
             fcntl.lockf(f, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\n\
             time.sleep(float(sys.argv[2]))\n",
        ])
        .arg(path)
        .arg(secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    child
}

#[tokio::test]
async fn delivery_waits_for_another_process_fcntl_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir);
    let mut holder = hold_fcntl_lock(mbox.path(), 1.5);
    let started = Instant::now();
    deliver(&mbox, b"Subject: waited\n\nbody\n").await;
    let waited = started.elapsed();
    assert!(holder.wait().unwrap().success());
    assert!(
        waited >= Duration::from_millis(1000),
        "waited only {waited:?}"
    );
    let got = split_mbox(&std::fs::read(mbox.path()).unwrap());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"Subject: waited\n\nbody\n\n");
    assert!(!dir.path().join("mbox.lock").exists());
}

#[tokio::test]
async fn an_fcntl_lock_held_past_the_bound_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir).with_lock_timeout(Duration::from_millis(300));
    let mut holder = hold_fcntl_lock(mbox.path(), 3.0);
    let started = Instant::now();
    let e = deliver_chunks(&mbox, None, &[b"Subject: x\n\nbody\n"])
        .await
        .unwrap_err();
    let waited = started.elapsed();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("fcntl"), "{e}");
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    assert_eq!(std::fs::metadata(mbox.path()).unwrap().len(), 0);
    assert!(
        !dir.path().join("mbox.lock").exists(),
        "our dotlock is removed"
    );
}

#[tokio::test]
async fn a_stale_dotlock_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir).with_lock_timeout(Duration::from_secs(2));
    let lock = dir.path().join("mbox.lock");
    let f = File::create(&lock).unwrap();
    f.set_modified(SystemTime::now() - DOTLOCK_STALE - Duration::from_secs(60))
        .unwrap();
    drop(f);
    deliver(&mbox, b"Subject: x\n\nbody\n").await;
    assert!(!lock.exists());
    assert_eq!(split_mbox(&std::fs::read(mbox.path()).unwrap()).len(), 1);
}

#[tokio::test]
async fn a_fresh_dotlock_held_past_the_bound_is_transient() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir).with_lock_timeout(Duration::from_millis(300));
    let lock = dir.path().join("mbox.lock");
    std::fs::write(&lock, b"").unwrap();
    let e = deliver_chunks(&mbox, None, &[b"Subject: x\n\nbody\n"])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("mbox.lock exists"), "{e}");
    assert!(lock.exists(), "someone else's dotlock stays");
    assert!(!mbox.path().exists(), "nothing was written");
    // Once it is released, the next try goes through.
    std::fs::remove_file(&lock).unwrap();
    deliver(&mbox, b"Subject: x\n\nbody\n").await;
}

#[tokio::test]
async fn deliveries_of_one_process_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir).with_lock_timeout(Duration::from_millis(300));
    let held = Locked::acquire(mbox.path(), Duration::from_secs(1)).unwrap();
    let e = deliver_chunks(&mbox, None, &[b"Subject: x\n\nbody\n"])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("this process"), "{e}");
    drop(held);
    assert!(!dir.path().join("mbox.lock").exists());

    // Many at once all land, whole.
    let mbox = std::sync::Arc::new(mbox_in(&dir));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let mbox = mbox.clone();
            tokio::spawn(async move {
                let body = format!("Subject: {i}\n\n{}\n", "x".repeat(100_000));
                deliver(&mbox, body.as_bytes()).await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let got = split_mbox(&std::fs::read(mbox.path()).unwrap());
    assert_eq!(got.len(), 8);
    for (_, body) in got {
        assert_eq!(body.len(), "Subject: 0\n\n".len() + 100_001 + 1);
    }
}

#[tokio::test]
async fn write_after_prepare_is_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = mbox_in(&dir);
    let mut sink = mbox.begin(None).unwrap();
    sink.write(b"Subject: x\n\n").unwrap();
    sink.prepare().await.unwrap();
    assert_eq!(sink.write(b"more").unwrap_err().kind, ErrorKind::Permanent);
    assert_eq!(sink.prepare().await.unwrap_err().kind, ErrorKind::Permanent);
}

#[test]
fn open_checks_the_directory_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Mbox::open(&dir.path().join("missing/mbox")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    let e = Mbox::open(dir.path()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let e = Mbox::open(&dir.path().join("file/mbox")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    let m = Mbox::open(&dir.path().join("file")).unwrap();
    assert_eq!(m.path(), dir.path().join("file"));
}

#[test]
fn a_new_mbox_has_its_directory_entry_synced_before_anything_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mbox");
    dir_syncs();
    let locked = Locked::acquire(&path, Duration::from_secs(1)).unwrap();
    assert_eq!(
        dir_syncs(),
        vec![dir.path().to_path_buf()],
        "created: the directory is synced"
    );
    assert_eq!(
        locked.file.0.metadata().unwrap().len(),
        0,
        "before the append"
    );
    drop(locked);
    let locked = Locked::acquire(&path, Duration::from_secs(1)).unwrap();
    assert_eq!(
        dir_syncs(),
        Vec::<PathBuf>::new(),
        "an existing mbox needs no directory sync"
    );
    drop(locked);
    // Removed between deliveries (as a reader may do with an empty mbox): created and synced again.
    std::fs::remove_file(&path).unwrap();
    drop(Locked::acquire(&path, Duration::from_secs(1)).unwrap());
    assert_eq!(dir_syncs(), vec![dir.path().to_path_buf()]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
