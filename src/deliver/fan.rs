//! One message, one copy per routed recipient (`[account.route]`), for the backends that take a
//! single recipient: a Maildir or mbox whose path names `{recipient}`, an MDA given
//! `{recipient}` as an argument. The message streams into every recipient's sink at once (no
//! second read of the POP3 stream, memory flat); at the end each copy is finished in turn and
//! made durable before the next (a Maildir's is fsync'd and renamed at once, not in a batch), so
//! that what [`Sink::reached`] reports is delivered for good.
//!
//! A crash between one recipient's copy and its journal record repeats that copy at the next
//! poll: at most the message in flight, as with any backend that cannot be asked later.
//! LMTP and SMTP take every recipient in one transaction instead (see [`super::Backend::begin`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Backend, DeliverError, ErrorKind};
use crate::config::Deliver;

/// What stands for the routed recipient in a target.
pub const PLACEHOLDER: &str = "{recipient}";

/// A single-recipient target with `{recipient}` in it, opened per recipient on first use.
#[derive(Debug)]
pub struct Fan {
    template: Deliver,
    mda_timeout: Duration,
    account: String,
    user: String,
    opened: Mutex<HashMap<String, Arc<Backend>>>,
}

impl Fan {
    pub fn new(template: &Deliver, mda_timeout: Duration, account: &str, user: &str) -> Fan {
        Fan {
            template: template.clone(),
            mda_timeout,
            account: account.to_string(),
            user: user.to_string(),
            opened: Mutex::default(),
        }
    }

    /// The target of `recipient`, opened (a Maildir created, what dead runs left in its `tmp/`
    /// removed) the first time it is asked for.
    fn backend(&self, recipient: &str) -> Result<Arc<Backend>, DeliverError> {
        let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = opened.get(recipient) {
            return Ok(b.clone());
        }
        let b = Arc::new(match &self.template {
            Deliver::Maildir(p) => {
                let m = super::maildir::Maildir::open_one_at_a_time(&fill_path(p, recipient))?;
                m.clean_stale_tmp();
                Backend::Maildir(m)
            }
            Deliver::Mbox(p) => Backend::Mbox(super::mbox::Mbox::open(&fill_path(p, recipient))?),
            Deliver::Mda(argv) => {
                let argv = argv
                    .iter()
                    .map(|a| match a == PLACEHOLDER {
                        true => recipient.to_string(),
                        false => a.clone(),
                    })
                    .collect();
                Backend::Mda(super::mda::Mda::new(
                    argv,
                    self.mda_timeout,
                    &self.account,
                    &self.user,
                ))
            }
            Deliver::Smtp(_) | Deliver::Lmtp(_) => {
                return Err(DeliverError {
                    kind: ErrorKind::Permanent,
                    message: "internal: a relay takes its recipients in one transaction".into(),
                });
            }
        });
        opened.insert(recipient.to_string(), b.clone());
        Ok(b)
    }

    /// Starts one copy per recipient, each with `header` in front.
    pub(super) fn begin(
        &self,
        header: Option<&[u8]>,
        uidl: Option<&str>,
        recipients: &[String],
    ) -> Result<Sink, DeliverError> {
        let mut copies = Vec::with_capacity(recipients.len());
        for r in recipients {
            let b = self.backend(r)?;
            let sink = match &*b {
                Backend::Maildir(m) => super::Sink::Maildir(m.begin(header)?),
                Backend::Mbox(m) => super::Sink::Mbox(m.begin(header)?),
                Backend::Mda(m) => super::Sink::Mda(Box::new(m.begin(header, uidl)?)),
                _ => unreachable!("Fan::backend opens single-recipient targets only"),
            };
            copies.push((r.clone(), sink));
        }
        Ok(Sink {
            copies,
            reached: Vec::new(),
            bytes: 0,
        })
    }
}

/// `path` with every `{recipient}` replaced (the recipient was checked to be a plain word).
fn fill_path(path: &Path, recipient: &str) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len() + recipient.len());
    let mut rest = bytes;
    while let Some(i) = rest
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER.as_bytes())
    {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(recipient.as_bytes());
        rest = &rest[i + PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    PathBuf::from(OsString::from_vec(out))
}

/// One message's copies, one per recipient.
#[derive(Debug)]
pub struct Sink {
    copies: Vec<(String, super::Sink)>,
    /// Recipients whose copy was delivered in this try.
    reached: Vec<String>,
    /// The message's bytes as one copy counts them.
    bytes: u64,
}

impl Sink {
    pub(super) fn write(&mut self, data: &[u8]) -> Result<(), DeliverError> {
        for (_, s) in &mut self.copies {
            match s {
                super::Sink::Maildir(s) => s.write(data)?,
                super::Sink::Mbox(s) => s.write(data)?,
                super::Sink::Mda(s) => s.write(data)?,
                _ => unreachable!("Fan::begin makes single-recipient sinks only"),
            }
        }
        self.bytes = self.copies.first().map_or(0, |(_, s)| s.bytes());
        Ok(())
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn reached(&self) -> &[String] {
        &self.reached
    }

    /// Delivers every copy in turn, each durable before the next; the first failure is returned
    /// after the others were tried, and [`Sink::reached`] names the recipients that have it.
    pub(super) async fn finish(&mut self) -> Result<(), DeliverError> {
        let mut first_error: Option<DeliverError> = None;
        for (recipient, mut sink) in std::mem::take(&mut self.copies) {
            let r = async {
                sink.finish().await?;
                if let super::Sink::Maildir(mut m) = sink {
                    super::maildir::sync_all(&mut [&mut m]).await?;
                    super::maildir::publish(vec![m]).await?;
                }
                Ok::<(), DeliverError>(())
            }
            .await;
            match r {
                Ok(()) => self.reached.push(recipient),
                Err(e) => {
                    let e = DeliverError {
                        kind: e.kind,
                        message: format!("recipient {recipient}: {}", e.message),
                    };
                    // The most lasting kind wins: unavailable stops the poll, permanent holds.
                    let worse = first_error
                        .as_ref()
                        .is_none_or(|f| rank(e.kind) > rank(f.kind));
                    if worse {
                        first_error = Some(e);
                    }
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn rank(k: ErrorKind) -> u8 {
    match k {
        ErrorKind::Transient => 0,
        ErrorKind::Permanent => 1,
        ErrorKind::Unavailable => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_is_replaced_everywhere_in_a_path() {
        assert_eq!(
            fill_path(
                Path::new("/var/mail/{recipient}/Maildir/{recipient}"),
                "alice"
            ),
            PathBuf::from("/var/mail/alice/Maildir/alice")
        );
        assert_eq!(
            fill_path(Path::new("/srv/mbox"), "alice"),
            PathBuf::from("/srv/mbox")
        );
    }
}
