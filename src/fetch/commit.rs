//! The group commit of Maildir deliveries (files fsync'd together, pending records, renames,
//! delivered records, each step durable before the next), the salvage of a batch after a
//! failed session, and the recovery of what a crashed run left pending.

use std::time::{Duration, Instant};

use super::FetchError;
use super::plan::Item;
use crate::deliver::{Backend, Sink};
use crate::state::{AccountState, StateError};

/// A group commit covers at most this many messages (a Maildir's: each is recognised after a
/// crash, so a bigger batch costs no duplicate, only its DELEs' wait; with one `syncfs` a
/// batch, its size is what divides the commit's cost) ...
pub(super) const BATCH_COUNT: usize = 256;
/// ... or this many, when a crash would repeat them (LMTP's deliveries, recorded with the
/// batch's one fsync; a Maildir's from a server without UIDL, which have no pending record) ...
pub(super) const REPEATABLE_COUNT: usize = 64;
/// ... or bytes ...
pub(super) const BATCH_BYTES: u64 = 8 << 20;
/// ... or this much time since its first message.
pub(super) const BATCH_AGE: Duration = Duration::from_millis(500);
/// A batch of at least this many is also committed whenever the next answer is not here yet.
pub(super) const WAIT_COMMIT_MIN: usize = 16;

/// Messages written but not yet durable, committed together.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) sinks: Vec<(usize, Sink)>,
    pub(super) bytes: u64,
    pub(super) started: Option<Instant>,
    /// A crash before the commit would deliver one of the messages again.
    pub(super) repeatable: bool,
}

impl Batch {
    pub(super) fn is_due(&self) -> bool {
        let count = match self.repeatable {
            true => REPEATABLE_COUNT,
            false => BATCH_COUNT,
        };
        self.sinks.len() >= count
            || self.bytes >= BATCH_BYTES
            || self.started.is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }
}

impl Batch {
    /// Group commit: the batch's files fsync'd together, their pending records fsync'd once, the
    /// renames with one fsync of `new/`, their delivered records fsync'd once; then their DELEs
    /// may go. Returns each committed message's index in `todo` and its size.
    pub(super) async fn commit(
        self,
        backend: &Backend,
        state: &mut AccountState,
        todo: &[Item],
    ) -> Result<Vec<(usize, u64)>, FetchError> {
        let (idx, mut sinks): (Vec<usize>, Vec<Sink>) = self.sinks.into_iter().unzip();
        let deliver_err = |source| FetchError::Deliver {
            what: format!("a batch of {} messages", idx.len()),
            source,
        };
        backend.sync_batch(&mut sinks).await.map_err(deliver_err)?;
        for (&i, sink) in idx.iter().zip(&sinks) {
            if let (Some(u), Some(key)) = (&todo[i].uidl, sink.key()) {
                state.record_pending(u, key);
            }
        }
        // Durable before the deliveries become visible, so a crash in between can be settled.
        state.sync()?;
        let bytes: Vec<u64> = sinks.iter().map(Sink::bytes).collect();
        backend.publish_batch(sinks).await.map_err(deliver_err)?;
        for &i in &idx {
            if let Some(u) = &todo[i].uidl {
                state.record_delivered(u);
            }
            if let Some(d) = &todo[i].message_id {
                state.record_message_id(d, todo[i].listed);
            }
        }
        state.sync()?;
        Ok(idx.into_iter().zip(bytes).collect())
    }
}

/// Resolves deliveries a previous run left pending: committed ones count as delivered, the
/// others are cleaned up and fetched again.
pub(super) fn recover(
    backend: &Backend,
    state: &mut AccountState,
    account: &str,
) -> Result<usize, StateError> {
    let stale = backend.clean_stale();
    if stale > 0 {
        tracing::info!(
            account,
            files = stale,
            "removed {stale} unfinished deliveries of an earlier run"
        );
    }
    let pending = state.pending();
    if pending.is_empty() {
        return Ok(0);
    }
    let mut found = 0;
    for (uidl, key) in pending {
        if backend.was_delivered(&key) {
            state.record_delivered(&uidl);
            found += 1;
            tracing::info!(
                account,
                uidl = uidl.as_str(),
                "the interrupted delivery of message {} was complete",
                uidl.as_str()
            );
        } else {
            backend.discard(&key);
            state.forget(&uidl);
            tracing::info!(
                account,
                uidl = uidl.as_str(),
                "the interrupted delivery of message {} will be redone",
                uidl.as_str()
            );
        }
    }
    state.sync()?;
    Ok(found)
}
