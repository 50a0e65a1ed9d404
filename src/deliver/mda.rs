//! Delivery through a mail delivery agent (procmail, maildrop, dovecot-lda, ...): one process per
//! message, run from an argument list without a shell.
//!
//! The message (LF line endings) is spooled to a file first, and that file is the MDA's stdin.
//! A pipe would hand the MDA an early end-of-file if popfetch died mid-message, and most MDAs
//! would then deliver a truncated message; from a file the MDA always reads the whole message,
//! even if popfetch is killed while it runs. The spool is a new unlinked file per message
//! (`O_TMPFILE` where the file system has it), handed over whole: popfetch keeps no handle, and
//! the one open file description is the MDA's (and its children's). A spool reused from message
//! to message would share its offset and its bytes with whatever an earlier MDA left running,
//! and such a leftover could read the next message before that message's MDA did. A new file
//! costs a few microseconds, against milliseconds for starting the MDA.
//!
//! Every MDA leads its own process group ([`crate::child::Group`]). After `mda_timeout` the
//! whole group is ended (SIGTERM, SIGKILL after [`crate::child::TERM_GRACE`]), so the pipeline
//! of `sh -c 'spamc | procmail'` dies with its shell; so does the group of a delivery abandoned
//! mid-wait (a cancelled poll). Being its own group, an MDA also no longer gets the terminal's
//! Ctrl-C: the first one lets popfetch finish the message in flight, as it says.
//!
//! The outcome is the exit status alone. Exit 0 = delivered, even without reading stdin (a
//! filter may discard a message). Exit 75 (EX_TEMPFAIL) or a kill after `mda_timeout` =
//! transient. Anything else = permanent. stderr is read while the MDA runs and for at most
//! [`STDERR_GRACE`] after it exits, then dropped: a background child that keeps it open
//! (`sh -c 'cat >> f; sleep 15 &'`) cannot turn a delivery into a timeout. What was read is
//! logged (bounded, whole lines) with the account and UIDL.
//!
//! Processes an MDA left running when it exited on its own are not killed: a filter may start
//! background work on purpose (`notify-send &`, a spam learner), as it may from a `.forward`
//! or under fetchmail, which does not kill them either. They can do no harm to other messages:
//! the only message file they can hold is their own MDA's, which no other message ever uses,
//! and their stderr pipe is closed (a late write gets EPIPE, as under any reader that stopped).
//!
//! An MDA cannot be asked later whether it delivered, so a crash between its exit and the
//! journal record may duplicate that one message.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::{DeliverError, ErrorKind, envelope};
use crate::child::Group;

/// Most header bytes read back from the spool to fill `{from}`.
const MAX_HEADER: usize = 256 * 1024;
/// Most stderr bytes kept for the log.
const MAX_STDERR: usize = 4096;
/// How long stderr is still read after the MDA exited: enough for a last write racing the exit,
/// short enough that a background child holding stderr does not delay the poll.
pub const STDERR_GRACE: Duration = Duration::from_millis(300);
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

    pub(super) fn begin(
        &self,
        header: Option<&[u8]>,
        uidl: Option<&str>,
    ) -> Result<Sink, DeliverError> {
        // A new file per message: never shared with an earlier MDA or what it left running.
        let file = tempfile::tempfile()
            .map_err(|e| DeliverError::io("cannot create the MDA spool file", e))?;
        let mut sink = Sink {
            argv: self.argv.clone(),
            timeout: self.timeout,
            account: self.account.clone(),
            user: self.user.clone(),
            uidl: uidl.unwrap_or("-").to_string(),
            header_len: header.map_or(0, <[u8]>::len),
            spool: Some(BufWriter::with_capacity(BUF_SIZE, file)),
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
        // The file itself, not a dup: popfetch keeps no handle on it.
        self.run(&from, file).await
    }

    async fn run(&self, from: &str, stdin: File) -> Result<(), DeliverError> {
        let argv = expand_argv(&self.argv, from, &self.account, &self.user);
        let mut group = Group::spawn(
            Command::new(&argv[0])
                .args(&argv[1..])
                .env("POPFETCH_FROM", from)
                .env("POPFETCH_ACCOUNT", &self.account)
                .env("POPFETCH_USER", &self.user)
                .stdin(Stdio::from(stdin))
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .map_err(|e| DeliverError {
            // A missing or unexecutable MDA fails every message the same way.
            kind: ErrorKind::Unavailable,
            message: format!("cannot run the MDA {:?}: {e}", argv[0]),
        })?;
        let mut stderr = Stderr::default();
        let pipe = group.child().stderr.take();
        let waited = {
            let mut reading = std::pin::pin!(stderr.read(pipe));
            let mut read_all = false;
            let waited = tokio::time::timeout(self.timeout, async {
                loop {
                    tokio::select! {
                        s = group.wait() => break s,
                        () = &mut reading, if !read_all => read_all = true,
                    }
                }
            })
            .await;
            // Once it exited, its status stands. A last write may race the exit; a background
            // child may hold the pipe forever: read a little longer, never past the grace.
            if matches!(waited, Ok(Ok(_)))
                && !read_all
                && tokio::time::timeout(STDERR_GRACE, &mut reading)
                    .await
                    .is_err()
            {
                tracing::debug!(
                    account = self.account,
                    uidl = self.uidl,
                    "the MDA exited with its stderr still open; stopped reading it"
                );
            }
            waited
        };
        let result = match waited {
            Ok(Ok(status)) => self.verdict(status),
            Ok(Err(e)) => Err(DeliverError {
                kind: ErrorKind::Transient,
                message: format!("waiting for the MDA {:?}: {e}", self.argv[0]),
            }),
            Err(_) => {
                group.end().await;
                Err(DeliverError {
                    kind: ErrorKind::Transient,
                    message: format!(
                        "the MDA {:?} did not finish within {} and was killed with its process group",
                        self.argv[0],
                        humantime::format_duration(self.timeout)
                    ),
                })
            }
        };
        // What the MDA said goes with its failure, so the one line that reports the failure
        // says why; after a success it is worth a line of its own.
        match (stderr.text(), result) {
            (Some(text), Err(mut e)) => {
                e.message.push_str(&format!("; it said: {text}"));
                Err(e)
            }
            (Some(text), Ok(())) => {
                tracing::info!(
                    account = self.account,
                    uidl = self.uidl,
                    stderr = text,
                    "message {}: the MDA {:?} delivered it and said: {text}",
                    self.uidl,
                    self.argv[0]
                );
                Ok(())
            }
            (None, r) => r,
        }
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

/// What an MDA wrote to stderr: the first [`MAX_STDERR`] bytes, and how many there were.
#[derive(Debug, Default)]
struct Stderr {
    kept: Vec<u8>,
    total: u64,
}

impl Stderr {
    /// Reads `pipe` to its end (so the MDA never blocks on a full pipe), keeping the start.
    async fn read(&mut self, pipe: Option<tokio::process::ChildStderr>) {
        let Some(mut pipe) = pipe else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            self.push(&buf[..n]);
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = MAX_STDERR.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..data.len().min(room)]);
        self.total += data.len() as u64;
    }

    /// The text for the log: whole lines only (a line cut by the cap is left out), control
    /// characters shown as `?`, lines joined with ` | `, and how many bytes were left out.
    fn text(&self) -> Option<String> {
        if self.total == 0 {
            return None;
        }
        let complete = self.total == self.kept.len() as u64;
        let shown = if complete {
            &self.kept[..]
        } else {
            // Up to the last line end; a single huge line is cut at the cap.
            match self.kept.iter().rposition(|&b| b == b'\n') {
                Some(end) => &self.kept[..end],
                None => &self.kept[..],
            }
        };
        let mut text = shown
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| crate::pop3::printable(l, MAX_STDERR))
            .collect::<Vec<_>>()
            .join(" | ");
        let left_out = self.total - shown.len() as u64;
        if !complete && left_out > 0 {
            text.push_str(&format!(" ({left_out} more bytes not shown)"));
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests;
