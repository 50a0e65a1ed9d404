//! Delivery through a mail delivery agent (procmail, maildrop, dovecot-lda, ...): one process per
//! message, run from an argument list without a shell.
//!
//! The message (LF line endings) is spooled to a file first, and that file is the MDA's stdin.
//! A pipe would hand the MDA an early end-of-file if popfetch died mid-message, and most MDAs
//! would then deliver a truncated message; from a file the MDA always reads the whole message,
//! even if popfetch is killed while it runs. The spool is one unlinked file per poll, rewritten
//! for each message: memory stays flat and no file is created per message.
//!
//! Exit 0 = delivered. Exit 75 (EX_TEMPFAIL) or a kill after `mda_timeout` = transient. Anything
//! else = permanent. The MDA's stderr is collected (bounded) and logged with the account and
//! UIDL. An MDA cannot be asked later whether it delivered, so a crash between its exit and the
//! journal record may duplicate that one message.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{DeliverError, ErrorKind, envelope};

/// Most header bytes read back from the spool to fill `{from}`.
const MAX_HEADER: usize = 256 * 1024;
/// Most stderr bytes kept for the log.
const MAX_STDERR: usize = 4096;
/// EX_TEMPFAIL from sysexits.h: "try again later".
const EX_TEMPFAIL: i32 = 75;
/// Spool write buffer.
const BUF_SIZE: usize = 64 * 1024;

#[derive(Debug)]
pub struct Mda {
    argv: Vec<String>,
    timeout: Duration,
    account: String,
    user: String,
    /// The poll's spool file, lent to one sink at a time.
    spool: Arc<Mutex<Option<File>>>,
}

impl Mda {
    pub fn new(argv: Vec<String>, timeout: Duration, account: &str, user: &str) -> Mda {
        Mda {
            argv,
            timeout,
            account: account.to_string(),
            user: user.to_string(),
            spool: Arc::new(Mutex::new(None)),
        }
    }

    pub(super) fn begin(
        &self,
        header: Option<&[u8]>,
        uidl: Option<&str>,
    ) -> Result<Sink, DeliverError> {
        let lent = self
            .spool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let file = match lent {
            Some(f) => f,
            None => tempfile::tempfile()
                .map_err(|e| DeliverError::io("cannot create the MDA spool file", e))?,
        };
        // The MDA shared the file's offset: start over at 0.
        let mut file = file;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .map_err(|e| DeliverError::io("cannot reset the MDA spool file", e))?;
        let mut sink = Sink {
            argv: self.argv.clone(),
            timeout: self.timeout,
            account: self.account.clone(),
            user: self.user.clone(),
            uidl: uidl.unwrap_or("-").to_string(),
            header_len: header.map_or(0, <[u8]>::len),
            spool: Some(BufWriter::with_capacity(BUF_SIZE, file)),
            home: self.spool.clone(),
            bytes: 0,
        };
        if let Some(h) = header {
            sink.write(h)?;
        }
        Ok(sink)
    }
}

/// The argument list with whole-argument placeholders replaced. Nothing else is touched: an
/// argument like `--from={from}` stays as it is, so no message byte can become a new argument.
pub fn expand_argv(argv: &[String], from: &str, account: &str, user: &str) -> Vec<String> {
    argv.iter()
        .map(|a| match a.as_str() {
            "{from}" => from.to_string(),
            "{account}" => account.to_string(),
            "{user}" => user.to_string(),
            _ => a.clone(),
        })
        .collect()
}

#[derive(Debug)]
pub struct Sink {
    argv: Vec<String>,
    timeout: Duration,
    account: String,
    user: String,
    uidl: String,
    /// Length of the trace header at the front of the message.
    header_len: usize,
    spool: Option<BufWriter<File>>,
    /// Where the spool file goes back when this sink is done.
    home: Arc<Mutex<Option<File>>>,
    bytes: u64,
}

impl Sink {
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(spool) = self.spool.as_mut() else {
            return Err(self.used());
        };
        spool
            .write_all(data)
            .map_err(|e| DeliverError::io("cannot write the MDA spool file", e))?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    fn used(&self) -> DeliverError {
        DeliverError {
            kind: ErrorKind::Permanent,
            message: "internal: MDA sink used after delivery".into(),
        }
    }

    /// Runs the MDA on the spooled message and waits for its verdict.
    pub(super) async fn prepare(&mut self) -> Result<(), DeliverError> {
        let Some(spool) = self.spool.take() else {
            return Err(self.used());
        };
        let io = |e| DeliverError::io("cannot read the MDA spool file", e);
        let mut file = spool.into_inner().map_err(|e| io(e.into_error()))?;
        file.rewind().map_err(io)?;
        let mut head = Vec::new();
        (&mut file)
            .take((self.header_len + MAX_HEADER) as u64)
            .read_to_end(&mut head)
            .map_err(io)?;
        file.rewind().map_err(io)?;
        let from =
            envelope::sender(head.get(self.header_len..).unwrap_or_default()).unwrap_or_default();
        let stdin = file.try_clone().map_err(io)?;
        let r = self.run(&from, stdin).await;
        *self.home.lock().unwrap_or_else(PoisonError::into_inner) = Some(file);
        r
    }

    async fn run(&self, from: &str, stdin: File) -> Result<(), DeliverError> {
        let argv = expand_argv(&self.argv, from, &self.account, &self.user);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("POPFETCH_FROM", from)
            .env("POPFETCH_ACCOUNT", &self.account)
            .env("POPFETCH_USER", &self.user)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DeliverError {
                // A missing or unexecutable MDA fails every message the same way.
                kind: ErrorKind::Unavailable,
                message: format!("cannot run the MDA {:?}: {e}", argv[0]),
            })?;
        let mut err = child.stderr.take();
        let stderr = async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            if let Some(err) = err.as_mut() {
                // Read to the end so the MDA never blocks on a full pipe; keep only the start.
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let room = MAX_STDERR.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            kept
        };
        let waited = tokio::time::timeout(self.timeout, async {
            let (status, stderr) = tokio::join!(child.wait(), stderr);
            (status, stderr)
        })
        .await;
        let (status, stderr) = match waited {
            Ok((Ok(s), e)) => (s, e),
            Ok((Err(e), _)) => {
                return Err(DeliverError {
                    kind: ErrorKind::Transient,
                    message: format!("waiting for the MDA {:?}: {e}", self.argv[0]),
                });
            }
            Err(_) => {
                let _ = child.kill().await;
                return Err(DeliverError {
                    kind: ErrorKind::Transient,
                    message: format!(
                        "the MDA {:?} did not finish within {}s and was killed",
                        self.argv[0],
                        self.timeout.as_secs()
                    ),
                });
            }
        };
        if !stderr.is_empty() {
            tracing::warn!(
                account = self.account,
                uidl = self.uidl,
                stderr = crate::pop3::printable(&stderr, MAX_STDERR),
                "MDA wrote to stderr"
            );
        }
        self.verdict(status)
    }

    fn verdict(&self, status: ExitStatus) -> Result<(), DeliverError> {
        match status.code() {
            Some(0) => Ok(()),
            Some(EX_TEMPFAIL) => Err(DeliverError {
                kind: ErrorKind::Transient,
                message: format!(
                    "the MDA {:?} exited with 75 (try again later)",
                    self.argv[0]
                ),
            }),
            _ => Err(DeliverError {
                kind: ErrorKind::Permanent,
                message: format!("the MDA {:?} failed ({status})", self.argv[0]),
            }),
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // An abandoned message: the spool goes back for the next one.
        if let Some(spool) = self.spool.take()
            && let Ok(f) = spool.into_inner()
        {
            *self.home.lock().unwrap_or_else(PoisonError::into_inner) = Some(f);
        }
    }
}
