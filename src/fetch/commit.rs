//! The group commit of Maildir deliveries (files fsync'd together, pending records, renames,
//! delivered records, each step durable before the next), the salvage of a batch after a
//! failed session, and the recovery of what a crashed run left pending.

use std::time::{Duration, Instant};

use super::FetchError;
use super::transfer::Run;
use crate::deliver::{Backend, Sink};
use crate::state::{AccountState, StateError};

/// A group commit covers at most this many messages ...
pub(super) const BATCH_COUNT: usize = 64;
/// ... or bytes ...
pub(super) const BATCH_BYTES: u64 = 8 << 20;
/// ... or this much time since its first message.
pub(super) const BATCH_AGE: Duration = Duration::from_millis(500);

/// Messages written but not yet durable, committed together.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) sinks: Vec<(usize, Sink)>,
    pub(super) bytes: u64,
    pub(super) started: Option<Instant>,
}

impl Batch {
    pub(super) fn is_due(&self) -> bool {
        self.sinks.len() >= BATCH_COUNT
            || self.bytes >= BATCH_BYTES
            || self.started.is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }
}

impl Run<'_> {
    /// After the session failed: commits the messages that arrived whole and wait in the batch.
    /// Their DELEs go at the next poll. A failure here is logged; the session's error is the one
    /// reported, and the messages stay on the server.
    pub(super) async fn salvage(&mut self) {
        if self.batch.sinks.is_empty() {
            return;
        }
        let n = self.batch.sinks.len();
        match self.commit_batch().await {
            Ok(()) => tracing::info!(
                account = self.account.name,
                messages = n,
                "the session failed: committed the messages that had arrived whole"
            ),
            Err(e) => tracing::warn!(
                account = self.account.name,
                messages = n,
                error = %crate::text::error_chain(&e),
                "the session failed, and committing the messages that had arrived whole failed \
                 too; they stay on the server"
            ),
        }
    }

    /// Group commit: the batch's files fsync'd together, their pending records fsync'd once, the
    /// renames with one fsync of `new/`, their delivered records fsync'd once; then their DELEs
    /// may go.
    pub(super) async fn commit_batch(&mut self) -> Result<(), FetchError> {
        let batch = std::mem::take(&mut self.batch);
        let (idx, mut sinks): (Vec<usize>, Vec<Sink>) = batch.sinks.into_iter().unzip();
        let t = Instant::now();
        let deliver_err = |source| FetchError::Deliver {
            what: format!("a batch of {} messages", idx.len()),
            source,
        };
        self.backend
            .sync_batch(&mut sinks)
            .await
            .map_err(deliver_err)?;
        for (&i, sink) in idx.iter().zip(&sinks) {
            if let (Some(u), Some(key)) = (&self.todo[i].uidl, sink.key()) {
                self.state.record_pending(u, key);
            }
        }
        // Durable before the deliveries become visible, so a crash in between can be settled.
        self.state.sync()?;
        let bytes: Vec<u64> = sinks.iter().map(Sink::bytes).collect();
        self.backend
            .publish_batch(sinks)
            .await
            .map_err(deliver_err)?;
        for &i in &idx {
            if let Some(u) = &self.todo[i].uidl {
                self.state.record_delivered(u);
            }
            if let Some(d) = &self.todo[i].message_id {
                self.state.record_message_id(d, self.todo[i].listed);
            }
        }
        self.state.sync()?;
        for (&i, b) in idx.iter().zip(bytes) {
            let item = self.todo[i].clone();
            self.delivered(&item, b, t);
        }
        Ok(())
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
            "removed unfinished deliveries of an earlier run"
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
                "interrupted delivery was complete"
            );
        } else {
            backend.discard(&key);
            state.forget(&uidl);
            tracing::info!(
                account,
                uidl = uidl.as_str(),
                "interrupted delivery will be redone"
            );
        }
    }
    state.sync()?;
    Ok(found)
}
