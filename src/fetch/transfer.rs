//! The transfer of one poll: RETRs pipelined ahead (when the server allows), each message
//! streamed into its sink, failures sorted by kind, DELEs sent once their messages are durable.
//! What is delivered by a Maildir waits in a batch for the group commit ([`super::commit`]).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::FetchError;
use super::commit::Batch;
use super::plan::Item;
use crate::config::Account;
use crate::deliver::{Backend, DeliverError, ErrorKind, MessageInfo};
use crate::pop3::{Command, MsgNum, Uidl};
use crate::progress::Progress;
use crate::report::{Report, ShortMessage};
use crate::session::{Session, SessionError, Tag};
use crate::state::AccountState;

/// How much larger than its LIST size a message may turn out before the session is abandoned: a
/// server that streams without end must not fill the disk. Some servers' sizes are estimates.
pub(super) fn size_cap(listed: u64) -> u64 {
    listed.saturating_mul(2).max(listed.saturating_add(1 << 20))
}

/// The least shortfall below its LIST size that makes a message suspect, whatever its size: small
/// messages are listed with overheads a server adds (a store's own records, an estimate).
pub(super) const SHORT_SLACK: u64 = 64 * 1024;

/// Whether a message that arrived whole with `received` octets (counted with CRLF line endings,
/// as RFC 1939 §11 counts sizes) falls so far short of its LIST size that part of it was likely
/// lost on the way (a terminator seen where there was none): short by more than half its LIST
/// size and by more than [`SHORT_SLACK`]. Honest servers stay clear of it: Dovecot's sizes are
/// exact; a server counting LF line endings lists less than arrives; servers whose sizes are
/// estimates over-report by a little, not by half and 64 KiB.
pub(super) fn far_short(received: u64, listed: u64) -> bool {
    listed.saturating_sub(received) > SHORT_SLACK.max(listed / 2)
}

/// Octets of a body chunk (line endings as `\n`) with CRLF line endings, as LIST counts them.
pub(super) fn wire_len(chunk: &[u8]) -> u64 {
    let lines = memchr::memchr_iter(b'\n', chunk).count();
    (chunk.len() + lines) as u64
}

/// Most RETRs sent ahead of the one being read (with PIPELINING). The window is measured in
/// bytes ([`Window`]); this only bounds the commands written at once (about 7 KB), so
/// that they fit the socket buffers while the server's answers are not being read. It was 32:
/// against a server 50 ms away, 200 small messages then took six round trips of RETRs instead
/// of one.
pub(super) const MAX_AHEAD: usize = 512;
/// The retrieval window at the start, and its floor: announced bytes of RETRs sent ahead. 1 MiB
/// in flight keeps a link of 50 Mbit/s busy across a 150 ms round trip.
pub(super) const MIN_WINDOW: u64 = 1 << 20;
/// The retrieval window's ceiling. What is in flight waits in the server's and the kernel's
/// buffers, not in popfetch's memory; the ceiling bounds what a stop must drain.
pub(super) const MAX_WINDOW: u64 = 16 << 20;

/// The retrieval window, sized to the path's bandwidth-delay product: twice what arrived per
/// round trip so far (the rate of the RETR answers read, times the shortest round trip the
/// session measured), within [`MIN_WINDOW`] and [`MAX_WINDOW`]. While the window is what
/// limits the rate it doubles every round trip, as TCP's slow start does; once the link or the
/// delivery is the limit it stays at twice their product, enough to keep the path full and no
/// more than two round trips of data for a stop to drain. Large messages go one at a time.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// When the first RETR was sent.
    started: Option<Instant>,
    /// Announced octets of the RETR answers read so far (counted as each begins).
    read: u64,
}

impl Window {
    pub(super) fn sent(&mut self) {
        self.started.get_or_insert_with(Instant::now);
    }

    pub(super) fn answered(&mut self, listed: u64) {
        self.read = self.read.saturating_add(listed);
    }

    /// The window now, given the session's shortest round trip.
    pub(super) fn bytes(&self, rtt: Option<Duration>) -> u64 {
        match (self.started, rtt) {
            (Some(t), Some(rtt)) => window_for(self.read, t.elapsed(), rtt),
            _ => MIN_WINDOW,
        }
    }
}

/// Twice the bandwidth-delay product of `read` octets over `elapsed` at round trip `rtt`,
/// within [`MIN_WINDOW`] and [`MAX_WINDOW`]. Before a round trip has passed the rate says
/// nothing yet.
pub(super) fn window_for(read: u64, elapsed: Duration, rtt: Duration) -> u64 {
    if elapsed < rtt || elapsed.is_zero() {
        return MIN_WINDOW;
    }
    let bdp = read as f64 * (rtt.as_secs_f64() / elapsed.as_secs_f64());
    ((2.0 * bdp) as u64).clamp(MIN_WINDOW, MAX_WINDOW)
}
/// Most DELEs sent ahead of their answers (with PIPELINING). A poll may owe a DELE for every
/// message of a large mailbox (all delivered before, or past `delete_after`): queued all at
/// once they would cost memory per message, and their answers could fill the socket buffers
/// while the commands are still being written.
pub(super) const MAX_DELE_AHEAD: usize = 1024;

/// One transfer: RETRs pipelined ahead (when the server allows), each message streamed into its
/// sink, Maildir deliveries group-committed, DELEs sent once their messages are durable.
pub(super) struct Run<'a> {
    pub(super) session: Session,
    pub(super) backend: &'a Backend,
    pub(super) quarantine: Option<&'a Backend>,
    pub(super) state: &'a mut AccountState,
    pub(super) account: &'a Account,
    pub(super) pipelining: bool,
    pub(super) progress: Option<&'a Progress>,
    pub(super) todo: Vec<Item>,
    pub(super) report: Report,
    /// Durably delivered, DELE not yet sent.
    pub(super) dele_wait: VecDeque<(MsgNum, Option<Uidl>)>,
    /// DELE sent, answer not yet read.
    pub(super) dele_sent: VecDeque<(MsgNum, Option<Uidl>)>,
    /// DELE answered +OK: gone once QUIT answers +OK.
    pub(super) deleted: Vec<(MsgNum, Option<Uidl>)>,
    pub(super) batch: Batch,
    /// The target became unavailable: no more RETRs; the error is returned after QUIT.
    pub(super) unavailable: Option<FetchError>,
    /// Shutdown was asked for: no more RETRs.
    pub(super) interrupted: bool,
    /// (Message-ID digest, size) of the messages received in this poll, for
    /// `dedupe_message_id`.
    pub(super) batch_ids: HashSet<(String, u64)>,
    /// The server gives no UIDL: a delivered message is recognised by its Message-ID and size
    /// (as with `dedupe_message_id`), so that a refused QUIT does not deliver a session twice.
    pub(super) by_message_id: bool,
    /// How many announced bytes of RETRs may be in flight.
    pub(super) window: Window,
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
                "the session failed: committed the {n} messages that had arrived whole"
            ),
            Err(e) => tracing::warn!(
                account = self.account.name,
                messages = n,
                error = %crate::text::error_chain(&e),
                "the session failed, and committing the {n} messages that had arrived whole \
                 failed too: {}; they stay on the server",
                crate::text::error_chain(&e)
            ),
        }
    }

    /// Commits the batch (see [`Batch::commit`]) and counts its messages delivered.
    pub(super) async fn commit_batch(&mut self) -> Result<(), FetchError> {
        let t = Instant::now();
        let batch = std::mem::take(&mut self.batch);
        let done = batch.commit(self.backend, self.state, &self.todo).await?;
        for (i, bytes) in done {
            let item = self.todo[i].clone();
            self.delivered(&item, bytes, t);
        }
        Ok(())
    }

    pub(super) fn stopping(&self) -> bool {
        self.unavailable.is_some() || self.interrupted
    }

    pub(super) async fn transfer(&mut self, stop: &CancellationToken) -> Result<(), FetchError> {
        let mut next = 0;
        let mut retrs = 0usize;
        let mut ahead = 0u64;
        loop {
            // Fill the pipeline: DELEs first (tiny), then RETRs within the window. Once it is
            // full it is topped up only when a quarter of it has drained, so that RETRs leave
            // in flights of many, not one write (and one TLS record) per message read.
            let mut refilling = false;
            while self.pipelining || self.session.in_flight() == 0 {
                if self.dele_sent.len() < MAX_DELE_AHEAD
                    && let Some((num, uidl)) = self.dele_wait.pop_front()
                {
                    self.session.queue(Command::Dele(num), Tag::Dele(num));
                    self.dele_sent.push_back((num, uidl));
                    continue;
                }
                if stop.is_cancelled() && !self.interrupted {
                    self.interrupted = true;
                    self.report.interrupted = true;
                    tracing::info!(
                        account = self.account.name,
                        "shutting down: ending the poll after the message in flight"
                    );
                }
                let window = self.window.bytes(self.session.min_rtt());
                let drained = ahead <= window - window / 4 && retrs <= MAX_AHEAD - MAX_AHEAD / 4;
                let room =
                    retrs == 0 || (retrs < MAX_AHEAD && ahead < window && (refilling || drained));
                let no_more_retrs = self.stopping() || next >= self.todo.len();
                if no_more_retrs || !room {
                    // The last DELEs are on their way and nothing can follow them (no RETR
                    // answer due, nothing waiting to be committed): QUIT goes in their flight.
                    if no_more_retrs
                        && self.pipelining
                        && retrs == 0
                        && !self.dele_sent.is_empty()
                        && self.dele_wait.is_empty()
                        && self.batch.sinks.is_empty()
                        && !self.session.quit_queued()
                    {
                        self.session.queue_quit();
                    }
                    break;
                }
                self.session
                    .queue(Command::Retr(self.todo[next].num), Tag::Retr(next));
                self.window.sent();
                refilling = true;
                retrs += 1;
                // A server may announce any size: saturate, never overflow.
                ahead = ahead.saturating_add(self.todo[next].listed);
                next += 1;
                if !self.pipelining {
                    break;
                }
            }
            if self.batch.is_due() {
                // Committed once the next commands are on the wire: the server streams the next
                // messages while this batch is made durable (its files' fsyncs started as each
                // message ended). The commands are small: sending them cannot wait on reading.
                self.session.flush().await?;
                self.commit_batch().await?;
                continue;
            }
            if retrs == 0
                && !self.batch.sinks.is_empty()
                && (self.stopping() || next >= self.todo.len())
            {
                // No RETR answer is due, so nothing more can join the batch: commit it now,
                // not after the answers of DELEs still in flight, so that its DELEs and the
                // QUIT go out while those answers travel (one round trip, not two).
                self.session.flush().await?;
                self.commit_batch().await?;
                continue;
            }
            if self.session.in_flight() == 0 {
                // Nothing in flight: commit what is batched, which may queue more DELEs.
                if !self.batch.sinks.is_empty() {
                    self.commit_batch().await?;
                    continue;
                }
                if !self.dele_wait.is_empty() {
                    continue;
                }
                break;
            }
            if self.batch.sinks.len() >= super::commit::WAIT_COMMIT_MIN
                && !self.session.answer_ready()
            {
                // The next answer is still on its way: commit what has arrived while it
                // travels, rather than after it (a batch then grows to its bound only while
                // messages arrive faster than they are read). Not for a handful: a server
                // without PIPELINING answers one RETR a round trip, and a commit (a `syncfs`,
                // which writes back the whole file system) per message would be its cost.
                self.session.flush().await?;
                self.commit_batch().await?;
                continue;
            }
            let (tag, st) = self.session.next_answer().await?;
            match tag {
                Tag::Dele(_) => {
                    let (num, uidl) = self
                        .dele_sent
                        .pop_front()
                        .ok_or_else(|| SessionError::protocol("internal: DELE out of order"))?;
                    if !st.is_ok() {
                        return Err(SessionError::refused("DELE", &st).into());
                    }
                    self.deleted.push((num, uidl));
                }
                Tag::Retr(i) => {
                    retrs -= 1;
                    ahead = ahead.saturating_sub(self.todo[i].listed);
                    self.window.answered(self.todo[i].listed);
                    if !st.is_ok() {
                        self.report.failed += 1;
                        self.report.delivery_error.get_or_insert_with(|| {
                            format!(
                                "message {}: the server refused RETR: {}",
                                self.todo[i].num,
                                st.text_lossy()
                            )
                        });
                        tracing::warn!(account = self.account.name, num = %self.todo[i].num,
                            error = %st.text_lossy(),
                            "message {}: the server refused RETR: {}; it stays on the server",
                            self.todo[i].num, crate::text::reason(&st.text_lossy()));
                        continue;
                    }
                    if self.stopping() {
                        // Sent before the stop: read it, deliver nothing.
                        self.session
                            .skip_body(size_cap(self.todo[i].listed))
                            .await?;
                        self.report.unreached += 1;
                        continue;
                    }
                    self.receive(i).await?;
                }
            }
        }
        self.report.unreached += self.todo.len() - next;
        Ok(())
    }

    /// Reads the header of item `i` (up to [`MAX_PEEK`]) and notes its Message-ID digest.
    /// Returns what was read and whether the message ended in it, or `None` when a message
    /// with its Message-ID and size was delivered before (its body is then read and dropped).
    async fn peek(
        &mut self,
        i: usize,
        dedupe: bool,
    ) -> Result<Option<(Vec<u8>, bool)>, FetchError> {
        let mut head = Vec::new();
        let mut ended = false;
        let listed = self.todo[i].listed;
        while crate::deliver::envelope::header_end(&head).is_none() && head.len() < MAX_PEEK {
            match self.session.body_chunk().await? {
                Some(chunk) => head.extend_from_slice(&chunk),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if head.len() as u64 > size_cap(listed) {
            return Err(FetchError::Oversize {
                num: self.todo[i].num,
                listed,
            });
        }
        if !dedupe {
            return Ok(Some((head, ended)));
        }
        let digest = message_id(&head).map(|id| message_id_digest(&id));
        if let Some(d) = &digest {
            let key = (d.clone(), listed);
            if self.state.seen_message_id(d, listed) || self.batch_ids.contains(&key) {
                if !ended {
                    self.session.skip_body(size_cap(listed)).await?;
                }
                return Ok(None);
            }
            self.batch_ids.insert(key);
        }
        self.todo[i].message_id = digest;
        Ok(Some((head, ended)))
    }

    /// Streams the body of item `i` into its target and handles the result.
    pub(super) async fn receive(&mut self, i: usize) -> Result<(), FetchError> {
        // With dedupe_message_id the header is read first: a message with the Message-ID and
        // size of one delivered before is recorded, not delivered again.
        // A routed message is read up to its header too: the header says who it is for.
        let dedupe = self.account.dedupe_message_id || self.by_message_id;
        let route = self
            .account
            .route
            .as_ref()
            .filter(|_| !self.todo[i].quarantine);
        let (head, ended) = if (dedupe || route.is_some()) && !self.todo[i].quarantine {
            match self.peek(i, dedupe).await? {
                Some(peeked) => peeked,
                None => return self.duplicate(i),
            }
        } else {
            (Vec::new(), false)
        };
        let mailbox = format!("{}@{}", self.account.user, self.account.host);
        let mut routed: Option<Vec<String>> = None;
        if let Some(route) = route {
            match crate::route::decide(route, &head, &mailbox) {
                crate::route::Decision::To(r) => routed = Some(r),
                crate::route::Decision::Hold(why) => {
                    if !ended {
                        self.session
                            .skip_body(size_cap(self.todo[i].listed))
                            .await?;
                    }
                    self.unroutable(i, why);
                    return Ok(());
                }
            }
        }
        let item = self.todo[i].clone();
        let target = match (item.quarantine, self.quarantine) {
            (true, Some(q)) => q,
            _ => self.backend,
        };
        let t = Instant::now();
        let what = || match &item.uidl {
            Some(u) => format!("message {} (uidl {u})", item.num),
            None => format!("message {}", item.num),
        };
        // What arrived, counted as LIST counts it, to tell a message cut short.
        let mut wire = wire_len(&head);
        // Recipients that have it from an earlier try, and those that get it in this one
        // although the delivery as a whole fails (per-recipient LMTP replies).
        let reached_before = item
            .uidl
            .as_ref()
            .map(|u| self.state.reached(u))
            .unwrap_or_default();
        let mut reached_now: Vec<String> = Vec::new();
        if let Some(r) = &mut routed {
            // Those that have it from an earlier try are left out (a relay's RCPT addresses are
            // left out by its sink).
            r.retain(|r| !reached_before.contains(r));
        }
        let r = async {
            let info = MessageInfo {
                account: &self.account.name,
                server: &self.account.host,
                uidl: item.uidl.as_ref(),
                tls: self.account.tls,
                received_header: self.account.received_header,
                routed: routed.as_deref().map(|r| (r, mailbox.as_str())),
            };
            let deliver_err = |source| FetchError::Deliver {
                what: what(),
                source,
            };
            let mut sink = target.begin(&info).map_err(deliver_err)?;
            sink.skip_recipients(reached_before);
            let header_len = sink.bytes();
            if !head.is_empty() {
                sink.write(&head).await.map_err(deliver_err)?;
            }
            while !ended && let Some(chunk) = self.session.body_chunk().await? {
                wire += wire_len(&chunk);
                sink.write(&chunk).await.map_err(deliver_err)?;
                if sink.bytes() - header_len > size_cap(item.listed) {
                    return Err(FetchError::Oversize {
                        num: item.num,
                        listed: item.listed,
                    });
                }
            }
            if far_short(wire, item.listed) {
                // Abandoned: dropped before `finish`, the sink leaves nothing behind.
                return Ok(None);
            }
            if let Err(e) = sink.finish().await {
                reached_now = sink.reached().to_vec();
                return Err(deliver_err(e));
            }
            Ok(Some(sink))
        }
        .await;
        if let Some(u) = &item.uidl
            && !reached_now.is_empty()
        {
            // Durable before the message can be tried again, so that no one gets it twice.
            for rcpt in &reached_now {
                self.state.record_reached(u, rcpt);
            }
            self.state.sync()?;
        }
        match r {
            Ok(None) => {
                self.short(i, wire);
                Ok(())
            }
            Ok(Some(sink)) if sink.key().is_some() || sink.group_commit() => {
                // A Maildir delivery: durable and visible with the rest of its batch. An LMTP
                // delivery is durable already (the server's 2xx): its record joins the batch's.
                self.batch.bytes += sink.bytes();
                self.batch.started.get_or_insert_with(Instant::now);
                self.batch.repeatable |= sink.group_commit() || item.uidl.is_none();
                self.batch.sinks.push((i, sink));
                Ok(())
            }
            Ok(Some(sink)) => {
                // Delivered already, by a backend that cannot be asked later: record it now,
                // so a crash can duplicate at most this message.
                if let Some(u) = &item.uidl {
                    self.state.record_delivered(u);
                }
                if let Some(d) = &item.message_id {
                    self.state.record_message_id(d, item.listed);
                }
                self.state.sync()?;
                self.delivered(&item, sink.bytes(), t);
                Ok(())
            }
            Err(FetchError::Deliver { what, source }) => {
                // The failure may have come mid-message: read the rest so the session goes on.
                self.session.skip_body(size_cap(item.listed)).await?;
                self.refused(i, what, source);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Item `i` of a routed account has no recipient the route accepts (or is a loop): held on
    /// the server and reported, never delivered elsewhere or dropped. A config change to the
    /// route or `popfetch retry` releases it.
    pub(super) fn unroutable(&mut self, i: usize, why: String) {
        let item = self.todo[i].clone();
        if let Some(d) = &item.message_id {
            self.batch_ids.remove(&(d.clone(), item.listed));
        }
        let what = match &item.uidl {
            Some(u) => format!("message {} (uidl {u})", item.num),
            None => format!("message {}", item.num),
        };
        let name = &self.account.name;
        let uidl = item.uidl.as_ref().map(Uidl::as_str);
        match &item.uidl {
            Some(u) => {
                self.state.record_held(u);
                self.report.newly_held += 1;
                self.report.held_error = Some(format!("{what} not routed: {why}"));
                tracing::error!(account = name, uidl, reason = %why,
                    "{what} held: not routed: {why}; it stays on the server and is not tried \
                     again until the route changes or `popfetch retry {name}` runs");
            }
            None => {
                // Nothing to hold it by: it stays on the server and is tried at the next poll.
                self.report.failed += 1;
                self.report
                    .delivery_error
                    .get_or_insert_with(|| format!("{what} not routed: {why}"));
                tracing::error!(account = name, reason = %why,
                    "{what} not routed: {why}; it stays on the server");
            }
        }
    }

    /// Item `i` arrived whole but far short of its LIST size: not delivered, not deleted, held on
    /// the server (whatever `on_permanent_failure` says: a truncated copy is no copy), reported
    /// with both sizes. `popfetch retry` releases it like any held message.
    pub(super) fn short(&mut self, i: usize, received: u64) {
        let item = self.todo[i].clone();
        if let Some(d) = &item.message_id {
            // Not delivered: a copy later in this poll must not count as a duplicate of it.
            self.batch_ids.remove(&(d.clone(), item.listed));
        }
        let short = ShortMessage {
            num: u64::from(item.num.get()),
            uidl: item.uidl.as_ref().map(|u| u.as_str().to_string()),
            listed: item.listed,
            received,
        };
        match &item.uidl {
            Some(u) => {
                self.state.record_held(u);
                self.report.newly_held += 1;
                tracing::error!(
                    account = self.account.name,
                    num = short.num,
                    uidl = u.as_str(),
                    listed = item.listed,
                    received,
                    "{short}: part of it may have been lost on the way; not delivered, held on \
                     the server, not tried again until the config changes or `popfetch retry {}` \
                     runs",
                    self.account.name
                );
            }
            None => {
                // Nothing to hold it by: it stays on the server and is tried at the next poll.
                self.report.failed += 1;
                self.report
                    .delivery_error
                    .get_or_insert_with(|| short.to_string());
                tracing::error!(
                    account = self.account.name,
                    num = short.num,
                    listed = item.listed,
                    received,
                    "{short}: part of it may have been lost on the way; not delivered, left on \
                     the server"
                );
            }
        }
        self.report.short.push(short);
    }

    /// Item `i` has the Message-ID and size of a message delivered before: recorded as
    /// delivered (durably, before its DELE), not delivered again.
    pub(super) fn duplicate(&mut self, i: usize) -> Result<(), FetchError> {
        let item = &self.todo[i];
        if let Some(u) = &item.uidl {
            self.state.record_delivered(u);
            self.state.sync()?;
        }
        self.report.duplicates += 1;
        tracing::info!(
            account = self.account.name,
            uidl = item.uidl.as_ref().map(Uidl::as_str),
            "a message with the same Message-ID and size was delivered before: recorded, not \
             delivered again"
        );
        if !self.account.keep {
            self.dele_wait.push_back((item.num, item.uidl.clone()));
        }
        Ok(())
    }

    pub(super) fn delivered(&mut self, item: &Item, bytes: u64, t: Instant) {
        if let Some(p) = self.progress {
            p.add(bytes);
        }
        if item.quarantine {
            self.report.quarantined += 1;
        } else {
            self.report.delivered += 1;
            self.report.bytes += bytes;
        }
        tracing::debug!(
            account = self.account.name,
            uidl = item.uidl.as_ref().map(Uidl::as_str),
            bytes,
            elapsed_ms = t.elapsed().as_millis() as u64,
            "message {} delivered ({} in {} ms)",
            item.uidl.as_ref().map_or("-", Uidl::as_str),
            crate::text::human_bytes(bytes),
            t.elapsed().as_millis()
        );
        if !self.account.keep {
            self.dele_wait.push_back((item.num, item.uidl.clone()));
        }
    }

    /// A delivery failed: apply what its kind calls for.
    pub(super) fn refused(&mut self, i: usize, what: String, source: DeliverError) {
        let item = self.todo[i].clone();
        if let Some(d) = &item.message_id {
            // Not delivered: a copy later in this poll must not count as a duplicate of it.
            self.batch_ids.remove(&(d.clone(), item.listed));
        }
        let uidl = item.uidl.as_ref().map(Uidl::as_str);
        let name = &self.account.name;
        match source.kind {
            ErrorKind::Transient => {
                self.report.failed += 1;
                // Said once per poll in its summary (and by the daemon once per change), not
                // once per message at every poll.
                tracing::debug!(account = name, uidl, error = %source,
                    "message {}: delivery failed for now: {source}; it stays on the server",
                    uidl.unwrap_or("-"));
                self.report
                    .delivery_error
                    .get_or_insert_with(|| format!("{what}: {source}"));
            }
            ErrorKind::Unavailable => {
                self.report.unreached += 1;
                self.unavailable = Some(FetchError::Deliver { what, source });
            }
            ErrorKind::Permanent if item.quarantine => {
                self.report.failed += 1;
                tracing::warn!(account = name, uidl, error = %source,
                    "message {}: quarantine failed: {source}; it stays on the server",
                    uidl.unwrap_or("-"));
                self.report
                    .delivery_error
                    .get_or_insert_with(|| format!("the quarantine: {source}"));
            }
            ErrorKind::Permanent if self.quarantine.is_some() => {
                tracing::error!(account = name, uidl, error = %source,
                    "message {}: delivery refused for good: {source}; storing it in quarantine",
                    uidl.unwrap_or("-"));
                self.todo.push(Item {
                    quarantine: true,
                    ..item
                });
            }
            ErrorKind::Permanent => {
                if let Some(u) = &item.uidl {
                    self.state.record_held(u);
                }
                self.report.newly_held += 1;
                self.report.held_error = Some(format!("delivery of {what} failed: {source}"));
                tracing::error!(account = name, uidl, error = %source,
                    "message {} held: delivery refused for good: {source}; it stays on the \
                     server and is not tried again until the config changes or `popfetch retry` \
                     runs", uidl.unwrap_or("-"));
            }
        }
    }
}

/// The most of a message's start read to find its Message-ID before delivering it.
pub(super) const MAX_PEEK: usize = 64 * 1024;

/// The Message-ID field's value (unfolded, whitespace removed) from the start of a message, if
/// the header has one within what was read.
pub(super) fn message_id(head: &[u8]) -> Option<Vec<u8>> {
    let mut value = crate::deliver::envelope::header_value_bytes(head, "message-id")?;
    value.retain(|b| !b.is_ascii_whitespace());
    (!value.is_empty()).then_some(value)
}

/// A digest of a Message-ID for the journal: hex, never the ID itself.
pub(super) fn message_id_digest(id: &[u8]) -> String {
    use md5::Digest as _;
    crate::text::hex(&md5::Md5::digest(id))
}
