//! The plan of a poll: what to fetch, skip, hold, expire and delete, worked out from the
//! account, its journal, the listings and the time, without a socket. The listings are fed line
//! by line ([`Plan::uidl`], [`Plan::list`]) so that only what the poll acts on is held; the
//! transfer ([`super::transfer`]) carries it out.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher as _;

use crate::config::{Account, SizeAction};
use crate::pop3::{MsgNum, Uidl};
use crate::report::Report;
use crate::session::SessionError;
use crate::state::AccountState;

/// A message to fetch.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) num: MsgNum,
    pub(super) uidl: Option<Uidl>,
    pub(super) listed: u64,
    /// Fetch it again into the quarantine Maildir (its delivery was refused for good).
    pub(super) quarantine: bool,
    /// The digest of its Message-ID, when `dedupe_message_id` is on and it has one.
    pub(super) message_id: Option<String>,
}

/// A message over `max_size`: left on the server and reported once, or deleted unread.
#[allow(clippy::too_many_arguments)]
pub(super) fn too_large(
    account: &Account,
    state: &mut AccountState,
    report: &mut Report,
    dele_wait: &mut VecDeque<(MsgNum, Option<Uidl>)>,
    num: MsgNum,
    uidl: Option<&Uidl>,
    listed: u64,
    max: u64,
) {
    let uidl_str = uidl.map(Uidl::as_str);
    let size = crate::text::human_bytes(listed);
    let max = crate::text::human_bytes(max);
    match account.max_size_action {
        SizeAction::Delete => {
            report.too_large_deleted += 1;
            tracing::warn!(account = account.name, %num, uidl = uidl_str, size,
                max_size = max,
                "message {num} ({size}) is over max_size ({max}): deleting it from the server \
                 unread");
            dele_wait.push_back((num, uidl.cloned()));
        }
        SizeAction::Keep => {
            report.too_large += 1;
            // Reported once: a message that stays for months must not fill the log.
            if uidl.is_some_and(|u| state.is_oversize(u)) {
                return;
            }
            tracing::warn!(account = account.name, %num, uidl = uidl_str, size,
                max_size = max,
                "message {num} ({size}) is over max_size ({max}): left on the server, not \
                 fetched");
            if let Some(u) = uidl {
                state.record_oversize(u);
            }
        }
    }
}

/// Applies `max_messages_per_poll` and `max_bytes_per_poll` to the messages to fetch, in
/// server order; at least one is always fetched, so a large message cannot block the rest.
/// Returns how many were left for a later poll.
pub(super) fn limit_poll(account: &Account, todo: &mut Vec<Item>) -> usize {
    let max_count = account.max_messages_per_poll.unwrap_or(usize::MAX);
    let max_bytes = account.max_bytes_per_poll.unwrap_or(u64::MAX);
    let mut bytes = 0u64;
    let mut keep = 0;
    for item in todo.iter() {
        let next = bytes.saturating_add(item.listed);
        if keep >= max_count || (keep > 0 && next > max_bytes) {
            break;
        }
        bytes = next;
        keep += 1;
    }
    let deferred = todo.len() - keep;
    if deferred > 0 {
        tracing::info!(
            account = account.name,
            fetching = keep,
            deferred,
            "per-poll limit reached: fetching {keep}, {deferred} wait for the next poll"
        );
    }
    todo.truncate(keep);
    deferred
}

/// Octets of bookkeeping the new messages taken in one poll may cost (each one's UIDL, its
/// `Item`, its index entry): a server may list millions of new messages (or claim to), and
/// memory must stay flat whatever it lists. The new messages past it wait for the next poll,
/// counted as deferred, as with `max_messages_per_poll`; 16 MiB hold about 100,000 messages.
pub(super) const TAKE_BUDGET: usize = 16 << 20;
/// Most new messages taken in one poll, whatever their UIDLs' length.
pub(super) const TAKE_MAX: usize = 100_000;
/// What one taken message costs beyond its UIDL: its `Item`, its index entry, and the
/// allocator's overhead.
pub(super) const TAKE_OVERHEAD: usize = std::mem::size_of::<Item>() + 48;

/// What a poll does with each listed message, worked out line by line as the listings arrive,
/// so that only what the poll acts on is held: the new messages it takes (within
/// [`TAKE_BUDGET`], in server order, at least one), the message numbers of the delivered ones
/// whose DELE is due, and a hash and number of each UIDL the journal knows.
pub(super) struct Plan<'a> {
    pub(super) account: &'a Account,
    pub(super) state: &'a AccountState,
    pub(super) now: u64,
    /// Keyed afresh by each process: a server cannot aim at collisions.
    pub(super) hasher: std::hash::RandomState,
    pub(super) on_server: usize,
    /// The messages to fetch: the new ones taken, and the ones found over `max_size` before
    /// (bounded by the journal, they are checked against their size again).
    pub(super) todo: Vec<Item>,
    /// Index in `todo` (until it is sorted) by UIDL hash, to find a UIDL listed twice.
    pub(super) taken: HashMap<u64, usize>,
    pub(super) taken_cost: usize,
    /// The budget ran out: every new message after it waits for the next poll.
    pub(super) full: bool,
    pub(super) over_budget: usize,
    /// Listed UIDLs the journal knows (delivered, held, over `max_size`): hash and message
    /// number, 16 octets each, bounded by the journal (a UIDL listed twice is refused at
    /// [`Plan::finish`]); sorted by hash there.
    pub(super) known: Vec<(u64, MsgNum)>,
    pub(super) dele_wait: VecDeque<(MsgNum, Option<Uidl>)>,
    pub(super) held: usize,
    pub(super) expired: usize,
    /// Whether `todo` is in message-number order.
    pub(super) sorted: bool,
}

impl<'a> Plan<'a> {
    pub(super) fn new(account: &'a Account, state: &'a AccountState, now: u64) -> Plan<'a> {
        Plan {
            account,
            state,
            now,
            hasher: std::hash::RandomState::new(),
            on_server: 0,
            todo: Vec::new(),
            taken: HashMap::new(),
            taken_cost: 0,
            full: false,
            over_budget: 0,
            known: Vec::new(),
            dele_wait: VecDeque::new(),
            held: 0,
            expired: 0,
            sorted: true,
        }
    }

    /// One line of the UIDL listing.
    pub(super) fn uidl(&mut self, num: MsgNum, uidl: &Uidl) -> Result<(), SessionError> {
        self.on_server += 1;
        let (account, state) = (self.account, self.state);
        let h = self.hasher.hash_one(uidl.as_str());
        let twice = || {
            SessionError::bad_listing(
                "UIDL",
                format!("{num} {uidl}").as_bytes(),
                "the same unique-id is listed twice",
            )
        };
        let delivered = state.delivered_at(uidl);
        let oversize = state.is_oversize(uidl);
        if delivered.is_some() || oversize || state.is_held(uidl) {
            self.known.push((h, num));
        }
        if let Some(at) = delivered {
            if !account.keep {
                self.dele_wait.push_back((num, None));
            } else if account
                .delete_after
                .is_some_and(|d| self.now.saturating_sub(at) >= d.as_secs())
            {
                self.expired += 1;
                self.dele_wait.push_back((num, None));
            }
            return Ok(());
        }
        if state.is_held(uidl) {
            self.held += 1;
            // Said when it became held; from then on the poll's summary counts it.
            tracing::debug!(
                account = account.name,
                uidl = uidl.as_str(),
                "message {} stays held on the server; `popfetch retry {}` tries it again",
                uidl.as_str(),
                account.name
            );
            return Ok(());
        }
        if !oversize {
            // A new message: taken within the budget, in server order, at least one.
            let cost = uidl.as_str().len() + TAKE_OVERHEAD;
            self.full |= !self.taken.is_empty()
                && (self.taken.len() >= TAKE_MAX
                    || self.taken_cost.saturating_add(cost) > TAKE_BUDGET);
            if self.full {
                self.over_budget += 1;
                return Ok(());
            }
            self.taken_cost += cost;
            match self.taken.entry(h) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    if self.todo[*e.get()].uidl.as_ref() == Some(uidl) {
                        return Err(twice());
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.todo.len());
                }
            }
        }
        self.push(num, Some(uidl.clone()), 0);
        Ok(())
    }

    /// One line of the LIST listing, from a server without UIDL: every message is new.
    pub(super) fn list(&mut self, num: MsgNum, size: u64) -> Result<(), SessionError> {
        self.on_server += 1;
        self.full |= !self.todo.is_empty()
            && (self.todo.len() >= TAKE_MAX
                || (self.todo.len() + 1).saturating_mul(TAKE_OVERHEAD) > TAKE_BUDGET);
        if self.full {
            self.over_budget += 1;
        } else {
            self.push(num, None, size);
        }
        Ok(())
    }

    pub(super) fn push(&mut self, num: MsgNum, uidl: Option<Uidl>, listed: u64) {
        self.sorted &= self.todo.last().is_none_or(|last| last.num < num);
        self.todo.push(Item {
            num,
            uidl,
            listed,
            quarantine: false,
            message_id: None,
        });
    }

    /// After the whole UIDL listing: refuses a UIDL the journal knows listed twice (both would
    /// count as delivered: in delete mode both would be deleted, one unread), and sorts what
    /// the checks after QUIT look up. Two UIDLs of equal hash count as one: a 2^-64 chance per
    /// pair, under a key the server cannot know.
    pub(super) fn finish(&mut self) -> Result<(), SessionError> {
        self.known.sort_unstable();
        if let Some(w) = self.known.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(SessionError::protocol(&format!(
                "bad UIDL listing: messages {} and {} have the same unique-id, one the journal \
                 knows (the same unique-id is listed twice)",
                w[0].1, w[1].1
            )));
        }
        Ok(())
    }

    /// One line of the LIST listing, from a server with UIDL: the size of a message taken (the
    /// plan is sorted).
    pub(super) fn size(&mut self, num: MsgNum, size: u64) {
        if let Ok(i) = self.todo.binary_search_by_key(&num, |item| item.num) {
            self.todo[i].listed = size;
        }
    }

    /// The plan, the listings read (and sorted): what the transfer acts on, with the counts of
    /// the messages it leaves alone put into `report`.
    pub(super) fn into_work(mut self, report: &mut Report) -> Work {
        self.sort();
        report.on_server = self.on_server;
        report.held = self.held;
        report.expired = self.expired;
        Work {
            todo: self.todo,
            dele_wait: self.dele_wait,
            known: self.known,
            hasher: self.hasher,
            over_budget: self.over_budget,
        }
    }

    /// The message number a UIDL of hash `h` that the journal knows was listed under.
    pub(super) fn known_as(known: &[(u64, MsgNum)], h: u64) -> Option<MsgNum> {
        let i = known.partition_point(|&(k, _)| k < h);
        known.get(i).filter(|&&(k, _)| k == h).map(|&(_, num)| num)
    }

    /// Puts `todo` in message-number order (a listing from every server known is in it
    /// already); `taken`'s indexes are stale after it.
    pub(super) fn sort(&mut self) {
        if !self.sorted {
            self.todo.sort_by_key(|item| item.num);
            self.sorted = true;
        }
    }
}

/// What a poll acts on once the listings are read: the messages to fetch (in message-number
/// order) and the DELEs owed, with what the checks after QUIT need.
pub(super) struct Work {
    pub(super) todo: Vec<Item>,
    pub(super) dele_wait: VecDeque<(MsgNum, Option<Uidl>)>,
    /// See [`Plan::known`].
    pub(super) known: Vec<(u64, MsgNum)>,
    pub(super) hasher: std::hash::RandomState,
    /// New messages left for a later poll by [`TAKE_BUDGET`].
    pub(super) over_budget: usize,
}

impl Work {
    /// Applies `max_size` (left on the server and reported once, or deleted unread) and the
    /// per-poll limits, and counts the new, deferred and waiting messages into `report`.
    pub(super) fn limit(
        &mut self,
        account: &Account,
        state: &mut AccountState,
        report: &mut Report,
    ) {
        let dele_wait = &mut self.dele_wait;
        self.todo
            .retain(|item| match account.max_size.filter(|&m| item.listed > m) {
                Some(max) => {
                    too_large(
                        account,
                        state,
                        report,
                        dele_wait,
                        item.num,
                        item.uidl.as_ref(),
                        item.listed,
                        max,
                    );
                    false
                }
                None => true,
            });
        self.dele_wait
            .make_contiguous()
            .sort_by_key(|(num, _)| *num);
        report.new = self.todo.len() + report.too_large + self.over_budget;
        report.deferred = limit_poll(account, &mut self.todo) + self.over_budget;
    }
}
