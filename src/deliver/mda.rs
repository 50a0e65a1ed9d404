//! Delivery through a mail delivery agent (procmail, maildrop, dovecot-lda, ...): one process per
//! message, run from an argument list without a shell, the message (LF line endings) streamed to
//! its stdin. The header section is held back (bounded) until it is complete, so that `{from}`
//! can be filled in before the process starts.
//!
//! Exit 0 = delivered. Exit 75 (EX_TEMPFAIL) or a kill after `mda_timeout` = transient. Anything
//! else = permanent. The MDA's stderr is collected (bounded) and logged with the account and
//! UIDL. An MDA cannot be asked later whether it delivered, so a crash between its exit and the
//! journal record may duplicate that one message.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use super::{DeliverError, ErrorKind, envelope};

/// Most header bytes held back before the MDA is started anyway (with an empty `{from}`).
const MAX_HEADER: usize = 256 * 1024;
/// Most stderr bytes kept for the log.
const MAX_STDERR: usize = 4096;
/// EX_TEMPFAIL from sysexits.h: "try again later".
const EX_TEMPFAIL: i32 = 75;

#[derive(Debug)]
pub struct Mda {
    argv: Vec<String>,
    timeout: Duration,
    account: String,
    user: String,
}

impl Mda {
    pub fn new(argv: Vec<String>, timeout: Duration, account: &str, user: &str) -> Mda {
        Mda {
            argv,
            timeout,
            account: account.to_string(),
            user: user.to_string(),
        }
    }

    pub(super) fn begin(&self, header: Option<&[u8]>, uidl: Option<&str>) -> Sink {
        Sink {
            argv: self.argv.clone(),
            timeout: self.timeout,
            account: self.account.clone(),
            user: self.user.clone(),
            uidl: uidl.unwrap_or("-").to_string(),
            held: header.map(<[u8]>::to_vec).unwrap_or_default(),
            header_len: header.map_or(0, <[u8]>::len),
            running: None,
            bytes: 0,
        }
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
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

#[derive(Debug)]
pub struct Sink {
    argv: Vec<String>,
    timeout: Duration,
    account: String,
    user: String,
    uidl: String,
    /// Bytes held back until the header section is complete.
    held: Vec<u8>,
    /// Length of the trace header at the front of `held`.
    header_len: usize,
    running: Option<Running>,
    bytes: u64,
}

impl Sink {
    pub(super) async fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        self.bytes += data.len() as u64;
        if self.running.is_none() {
            self.held.extend_from_slice(data);
            let complete = envelope::header_end(&self.held[self.header_len..]).is_some();
            if !complete && self.held.len() < MAX_HEADER {
                return Ok(());
            }
            self.start()?;
            let held = std::mem::take(&mut self.held);
            return self.feed(&held).await;
        }
        self.feed(data).await
    }

    fn start(&mut self) -> Result<(), DeliverError> {
        let from = envelope::sender(&self.held[self.header_len..]).unwrap_or_default();
        let argv = expand_argv(&self.argv, &from, &self.account, &self.user);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("POPFETCH_FROM", &from)
            .env("POPFETCH_ACCOUNT", &self.account)
            .env("POPFETCH_USER", &self.user)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DeliverError {
                // A missing or unexecutable MDA fails every message the same way.
                kind: ErrorKind::Unavailable,
                message: format!("cannot run the MDA {:?}: {e}", argv[0]),
            })?;
        let stdin = child.stdin.take();
        let mut err = child.stderr.take();
        let stderr = tokio::spawn(async move {
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
        });
        self.running = Some(Running {
            child,
            stdin,
            stderr,
        });
        Ok(())
    }

    async fn feed(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        let Some(r) = self.running.as_mut() else {
            return Ok(());
        };
        let Some(stdin) = r.stdin.as_mut() else {
            // The MDA closed its input early; its exit status decides.
            return Ok(());
        };
        match tokio::time::timeout(self.timeout, stdin.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                r.stdin = None;
                Ok(())
            }
            Ok(Err(e)) => Err(DeliverError {
                kind: ErrorKind::Transient,
                message: format!("writing to the MDA {:?}: {e}", self.argv[0]),
            }),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> DeliverError {
        DeliverError {
            kind: ErrorKind::Transient,
            message: format!(
                "the MDA {:?} did not finish within {}s and was killed",
                self.argv[0],
                self.timeout.as_secs()
            ),
        }
    }

    /// Closes the MDA's input and waits for its verdict.
    pub(super) async fn prepare(&mut self) -> Result<(), DeliverError> {
        if self.running.is_none() {
            self.start()?;
            let held = std::mem::take(&mut self.held);
            self.feed(&held).await?;
        }
        let Some(mut r) = self.running.take() else {
            return Ok(());
        };
        if let Some(mut stdin) = r.stdin.take() {
            let _ = tokio::time::timeout(self.timeout, stdin.shutdown()).await;
        }
        let status = match tokio::time::timeout(self.timeout, r.child.wait()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(DeliverError {
                    kind: ErrorKind::Transient,
                    message: format!("waiting for the MDA {:?}: {e}", self.argv[0]),
                });
            }
            Err(_) => {
                let _ = r.child.kill().await;
                return Err(self.timed_out());
            }
        };
        let stderr = r.stderr.await.unwrap_or_default();
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
