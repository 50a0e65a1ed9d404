//! Child processes run as the leader of their own process group, and ended as a group.
//!
//! Killing only the process popfetch started is not enough: `sh -c 'spamc | procmail'` leaves
//! `spamc` and `procmail` running when the shell dies, and whatever they hold (a message's file,
//! a pipe popfetch reads) lives on with them. So every child gets its own group
//! (`setpgid(0, 0)` at spawn: the group id is the child's pid), and [`Group::end`] signals the
//! whole group: SIGTERM, then SIGKILL after [`TERM_GRACE`]. A [`Group`] dropped while its leader
//! may still run (a cancelled poll, an abandoned delivery) SIGKILLs the group at once, since a
//! destructor cannot wait.
//!
//! A group whose leader exited on its own is left alone: its remaining members are the
//! program's own business (see `deliver::mda` for why).
//!
//! The group id is the leader's pid, so it cannot name another group while the leader is
//! unreaped or any member lives. Only between the last member's death and a later signal could
//! the number be reused, which needs the pid space to wrap within [`TERM_GRACE`].

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::secret::Secret;

/// How long the group has after SIGTERM to clean up (procmail removes its lock files, an LDA
/// aborts its transaction) before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// How often the group is looked at while it ends.
const POLL: Duration = Duration::from_millis(20);
/// How long a child's output is still read after it exited: enough for a last write racing the
/// exit, short enough that a background process holding the pipe does not delay the poll.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(300);

/// A running child that leads its own process group.
#[derive(Debug)]
pub struct Group {
    child: Child,
    pgid: libc::pid_t,
    /// The leader exited on its own, or the group was SIGKILLed: nothing left to end on drop.
    settled: bool,
}

impl Group {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> io::Result<Group> {
        let child = cmd.process_group(0).kill_on_drop(true).spawn()?;
        let pgid = child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
            .ok_or_else(|| io::Error::other("the child has no process id"))?;
        Ok(Group {
            child,
            pgid,
            settled: false,
        })
    }

    /// The child, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the leader to exit on its own. Cancel-safe: a cancelled wait leaves the group
    /// running, and dropping the `Group` then ends it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.settled = true;
        Ok(status)
    }

    /// Waits up to `timeout` for the leader to exit while `read` collects its output. The
    /// outcome is the exit: once the leader exited, `read` gets at most [`OUTPUT_GRACE`] more,
    /// so a background process it left holding the pipe (`sh -c 'echo pw; sleep 99 &'`) does
    /// not turn an answer into a timeout. `None` when `timeout` passed first: the group has
    /// then been ended.
    pub async fn wait_reading<F>(
        &mut self,
        timeout: Duration,
        read: F,
    ) -> Option<io::Result<ExitStatus>>
    where
        F: std::future::Future<Output = io::Result<()>>,
    {
        let work = async {
            let mut read = std::pin::pin!(read);
            let first = tokio::select! {
                r = &mut read => First::Output(r),
                s = self.child.wait() => First::Exit(s),
            };
            match first {
                // The output ended first: the exit follows.
                First::Output(Ok(())) => self.child.wait().await,
                First::Output(Err(e)) => Err(e),
                First::Exit(s) => {
                    let _ = tokio::time::timeout(OUTPUT_GRACE, &mut read).await;
                    s
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => {
                self.settled = r.is_ok();
                Some(r)
            }
            Err(_) => {
                self.end().await;
                None
            }
        }
    }

    /// Ends the whole group: SIGTERM to every member, SIGKILL to those left after
    /// [`TERM_GRACE`], and reaps the leader (waiting at most another [`TERM_GRACE`] for it: a
    /// process stuck in the kernel cannot be hurried, and the runtime reaps it later).
    pub async fn end(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let mut status = None;
        let gone = tokio::time::timeout(TERM_GRACE, async {
            loop {
                if status.is_none() {
                    status = self.child.try_wait().ok().flatten();
                }
                if status.is_some() && !self.alive() {
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        if gone.is_err() {
            self.signal(libc::SIGKILL);
        }
        self.settled = true;
        match status {
            Some(s) => Some(s),
            None => tokio::time::timeout(TERM_GRACE, self.child.wait())
                .await
                .ok()
                .and_then(Result::ok),
        }
    }

    /// Whether any process of the group is left (a zombie leader counts until reaped).
    fn alive(&self) -> bool {
        // SAFETY: kill(2) with signal 0 only checks that the group exists.
        unsafe { libc::kill(-self.pgid, 0) == 0 }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's process group; an error (ESRCH: all gone) is the
        // outcome we want anyway.
        unsafe {
            libc::kill(-self.pgid, sig);
        }
    }
}

/// How much of a program's output [`run_capture`] keeps.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// Bytes of stdout kept; the rest is read and dropped.
    pub stdout: usize,
    /// Bytes of stderr kept, or `None` to let the program write to popfetch's own stderr.
    pub stderr: Option<usize>,
}

/// What a program run by [`run_capture`] left: its exit status and the first bytes of its
/// output. Stdout is a [`Secret`]: it may hold a password or a token, and is wiped when dropped.
#[derive(Debug)]
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: Secret<Vec<u8>>,
    /// Empty when stderr was not captured.
    pub stderr: Vec<u8>,
}

/// Why [`run_capture`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run it: {0}")]
    Spawn(io::Error),
    #[error("{0}")]
    Io(io::Error),
    /// The program did not exit within the timeout; its group has been ended.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// Runs `argv` (no shell, stdin closed) as its own process [`Group`] and collects its output
/// (capped by `caps`) until it exits, for at most `timeout`; after that the group is ended. The
/// output is read to its end, so a chatty program is never blocked on a full pipe, and its
/// output cannot fill memory. `argv` is not empty (the config checks it).
pub async fn run_capture(
    argv: &[String],
    timeout: Duration,
    caps: Caps,
) -> Result<Captured, RunError> {
    let mut child = Group::spawn(
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match caps.stderr {
                Some(_) => Stdio::piped(),
                None => Stdio::inherit(),
            }),
    )
    .map_err(RunError::Spawn)?;
    let no_pipe = |what| RunError::Io(io::Error::other(format!("no {what}")));
    let mut stdout = child
        .child()
        .stdout
        .take()
        .ok_or_else(|| no_pipe("stdout"))?;
    let mut stderr = match caps.stderr {
        Some(_) => Some(
            child
                .child()
                .stderr
                .take()
                .ok_or_else(|| no_pipe("stderr"))?,
        ),
        None => None,
    };
    let mut out = Secret::new(Vec::new());
    let mut errout = Vec::new();
    let read = async {
        let err_read = async {
            match (&mut stderr, caps.stderr) {
                (Some(e), Some(cap)) => read_capped(e, &mut errout, cap).await,
                _ => Ok(()),
            }
        };
        let (a, b) = tokio::join!(
            read_capped(&mut stdout, out.expose_mut(), caps.stdout),
            err_read
        );
        a.and(b)
    };
    let status = match child.wait_reading(timeout, read).await {
        Some(r) => r.map_err(RunError::Io)?,
        None => return Err(RunError::Timeout(timeout)),
    };
    Ok(Captured {
        status,
        stdout: out,
        stderr: errout,
    })
}

/// Reads `r` to its end, keeping the first `cap` bytes.
async fn read_capped(
    r: &mut (impl AsyncRead + Unpin),
    keep: &mut Vec<u8>,
    cap: usize,
) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let result = loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let room = cap.saturating_sub(keep.len());
        keep.extend_from_slice(&chunk[..n.min(room)]);
    };
    // The chunk may have held a password or a token.
    crate::secret::wipe(&mut chunk);
    result
}

/// What [`Group::wait_reading`] saw first.
enum First {
    Output(io::Result<()>),
    Exit(io::Result<ExitStatus>),
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.settled {
            // The leader is unreaped here, so the group id still names this group.
            self.signal(libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests;
