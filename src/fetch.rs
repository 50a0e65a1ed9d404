//! One poll of one account: the only module that knows both [`crate::session`] and
//! [`crate::deliver`], and the one that orders their steps so that no message is ever lost:
//!
//! 1. finish what a crashed run left pending (ask the backend whether it was delivered);
//! 2. log in, read the UIDL and LIST listings line by line into a `Plan` that holds only
//!    what this poll acts on (new messages within [`TAKE_BUDGET`], message numbers to DELE);
//! 3. for each message not delivered before: RETR streamed into the backend's sink, `finish`;
//!    for a Maildir, per batch: `sync_batch` (durable, invisible), journal `P uidl key` + fsync,
//!    `publish_batch` (visible, durable); then journal `D uidl` (other backends: at `finish`);
//! 4. in delete mode: fsync the journal, then DELE the delivered messages;
//! 5. QUIT; only on `+OK` are the deleted UIDLs forgotten.
//!
//! A crash between any two steps loses nothing, and with a backend that can answer
//! `was_delivered` (Maildir) it duplicates nothing either.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{Account, Credentials, Deliver, PermanentFailure, SizeAction};
use crate::deliver::{Backend, DeliverError, ErrorKind, MessageInfo, Sink};
use crate::pop3::{Command, MsgNum, Uidl};
use crate::progress::Progress;
pub use crate::report::{Report, ShortMessage};
use crate::session::{ConnectParams, Credential, Session, SessionError, Tag};
use crate::state::{AccountState, StateError};

/// How much larger than its LIST size a message may turn out before the session is abandoned: a
/// server that streams without end must not fill the disk. Some servers' sizes are estimates.
fn size_cap(listed: u64) -> u64 {
    listed.saturating_mul(2).max(listed.saturating_add(1 << 20))
}

/// The least shortfall below its LIST size that makes a message suspect, whatever its size: small
/// messages are listed with overheads a server adds (a store's own records, an estimate).
const SHORT_SLACK: u64 = 64 * 1024;

/// Whether a message that arrived whole with `received` octets (counted with CRLF line endings,
/// as RFC 1939 §11 counts sizes) falls so far short of its LIST size that part of it was likely
/// lost on the way (a terminator seen where there was none): short by more than half its LIST
/// size and by more than [`SHORT_SLACK`]. Honest servers stay clear of it: Dovecot's sizes are
/// exact; a server counting LF line endings lists less than arrives; servers whose sizes are
/// estimates over-report by a little, not by half and 64 KiB.
fn far_short(received: u64, listed: u64) -> bool {
    listed.saturating_sub(received) > SHORT_SLACK.max(listed / 2)
}

/// Octets of a body chunk (line endings as `\n`) with CRLF line endings, as LIST counts them.
fn wire_len(chunk: &[u8]) -> u64 {
    let lines = chunk.iter().filter(|&&b| b == b'\n').count();
    (chunk.len() + lines) as u64
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Password(crate::password::PasswordError),
    #[error("OAuth2: {0}")]
    OAuth2(crate::oauth2::OAuth2Error),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("delivery of {what} failed: {source}")]
    Deliver {
        what: String,
        #[source]
        source: DeliverError,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("message {num} is larger than the {listed} octets its LIST size announced; stopping")]
    Oversize { num: MsgNum, listed: u64 },
}

impl FetchError {
    /// Whether the next poll may succeed without a change of config.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Session(e) => e.is_transient(),
            FetchError::OAuth2(e) => e.is_transient(),
            FetchError::Deliver { source, .. } => source.kind != ErrorKind::Permanent,
            FetchError::State(StateError::Locked { .. }) => true,
            _ => false,
        }
    }
}

/// Polls `account` once. When `stop` is cancelled the poll finishes the message in flight, sends
/// the DELEs it owes and QUITs.
pub async fn poll(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
) -> Result<Report, FetchError> {
    let (report, r) = poll_with_progress(account, state_dir, stop, None).await;
    r.map(|()| report)
}

/// [`poll`], counting what is done into `progress` for a live display. The report says what the
/// poll did also when it ended in error: the deliveries made before the error count.
pub async fn poll_with_progress(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
    progress: Option<&Progress>,
) -> (Report, Result<(), FetchError>) {
    let mut report = Report::default();
    let r = poll_once(account, state_dir, stop, progress, &mut report).await;
    if let Err(FetchError::Session(SessionError::Cancelled)) = &r {
        // Stopped before anything was fetched: no failure, and nothing to record.
        tracing::info!(
            account = account.name,
            "shutting down: the poll ended before its transfer began"
        );
        return (Report::stopped_before_transfer(), Ok(()));
    }
    if let Err(e) = &r
        && report.delivered + report.quarantined > 0
    {
        // Said once here, for `fetch` and the daemon alike: the error line alone would hide them.
        tracing::warn!(
            account = account.name,
            delivered = report.delivered,
            quarantined = report.quarantined,
            error = %crate::text::error_chain(e),
            "poll failed after delivering some messages; they are recorded as delivered and \
             their DELE follows at the next poll"
        );
    }
    let error = r.as_ref().err().map(|e| crate::text::error_chain(e));
    crate::status::record(state_dir, &account.name, &report, error);
    (report, r)
}

async fn poll_once(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
    progress: Option<&Progress>,
    report: &mut Report,
) -> Result<(), FetchError> {
    let backend =
        Backend::open(&account.deliver, account).map_err(|source| FetchError::Deliver {
            what: "the target".into(),
            source,
        })?;
    let mut state = AccountState::open(
        state_dir,
        &crate::state::Mailbox::of(account),
        &account.name,
    )?;
    let r = poll_with(account, &backend, &mut state, stop, progress, report).await;
    backend.close().await;
    // Whatever happened, what was recorded reaches the file. Everything a DELE depended on was
    // fsync'd before that DELE; what is left can be lost without harm (see `flush`).
    let synced = state.flush();
    r?;
    synced?;
    Ok(())
}

async fn poll_with(
    account: &Account,
    backend: &Backend,
    state: &mut AccountState,
    stop: &CancellationToken,
    progress: Option<&Progress>,
    report: &mut Report,
) -> Result<(), FetchError> {
    let started = Instant::now();
    let released = state.set_fingerprint(&account.delivery_fingerprint());
    if released > 0 {
        tracing::info!(
            account = account.name,
            released,
            "delivery settings changed: held messages will be tried again"
        );
    }
    report.recovered = recover(backend, state, &account.name)?;

    // The credential is obtained before connecting: a token source that fails (or yields
    // nothing) never leads to a login attempt. The account's lock, held here, keeps two
    // processes from refreshing (and rotating) one token at once.
    let credential = match &account.credentials {
        Credentials::Password(source) => Credential::Password(
            crate::password::resolve(source, account.timeout)
                .await
                .map_err(FetchError::Password)?,
        ),
        Credentials::OAuth2(_) => Credential::Token(
            crate::oauth2::access_token(account, state.dir())
                .await
                .map_err(FetchError::OAuth2)?,
        ),
    };
    let params = ConnectParams {
        host: &account.host,
        port: account.port,
        tls: account.tls,
        ca_file: account.ca_file.as_deref(),
        tls_verify: account.tls_verify,
        timeout: account.timeout,
    };
    let mut session = Session::connect(&params, stop).await?;
    let login = session
        .login(
            &account.user,
            &credential,
            account.auth,
            account.allow_plaintext_auth,
        )
        .await;
    if let (Err(SessionError::Refused { .. }), Credential::Token(_)) = (&login, &credential) {
        // The server refused the token: the next login gets a fresh one.
        crate::oauth2::invalidate(account, state.dir());
    }
    let method = login?;
    drop(credential);
    tracing::debug!(
        account = account.name,
        method = crate::session::method_name(method),
        "logged in"
    );

    session.reread_login_delay().await?;
    let session_pipelining = session.capabilities().is_some_and(|c| c.pipelining);
    if let Some(caps) = session.capabilities() {
        report.login_delay = caps.login_delay.map(Duration::from_secs);
        if account.keep && caps.expire == Some(Some(0)) {
            tracing::error!(
                account = account.name,
                "config error: keep = true, but the server announces EXPIRE 0: it deletes every \
                 message once retrieved, whatever popfetch does"
            );
        }
    }
    // The listings are read as they arrive, each line checked against the journal at once:
    // a server may list millions of messages, and only the ones this poll acts on are held.
    let now = crate::state::now_secs();
    let mut plan = Plan::new(account, state, now);
    let has_uidl = session.uidl_each(|num, uidl| plan.uidl(num, uidl)).await?;
    plan.finish()?;
    if !has_uidl && account.keep {
        return Err(FetchError::Unsupported(
            "the server does not support UIDL, so popfetch cannot tell old messages from new; \
             keep = true needs it (with keep = false every message is fetched and deleted)"
                .into(),
        ));
    }
    // With UIDL, a poll that finds nothing new needs no LIST: it costs one connection, login,
    // UIDL and QUIT. The sizes are read only when something is to be fetched.
    if !has_uidl {
        session.list_each(|num, size| plan.list(num, size)).await?;
    } else if !plan.todo.is_empty() {
        plan.sort();
        let todo = &mut plan.todo;
        session
            .list_each(|num, size| {
                if let Ok(i) = todo.binary_search_by_key(&num, |item| item.num) {
                    todo[i].listed = size;
                }
                Ok(())
            })
            .await?;
    }
    plan.sort();
    let Plan {
        mut todo,
        mut dele_wait,
        on_server,
        over_budget,
        held,
        expired,
        known,
        hasher,
        ..
    } = plan;
    // Only the hashes of the UIDLs fetched are kept, for `retain_only_by` after QUIT.
    let fetched: HashSet<u64> = todo
        .iter()
        .filter_map(|item| item.uidl.as_ref())
        .map(|u| hasher.hash_one(u.as_str()))
        .collect();
    report.on_server = on_server;
    report.held = held;
    report.expired = expired;
    let quarantine = match (&account.on_permanent_failure, &account.quarantine) {
        (PermanentFailure::Quarantine, Some(dir)) => Some(
            Backend::open(&Deliver::Maildir(dir.clone()), account).map_err(|source| {
                FetchError::Deliver {
                    what: "the quarantine Maildir".into(),
                    source,
                }
            })?,
        ),
        _ => None,
    };

    // Messages over `max_size` are not fetched: left on the server and reported once, or
    // deleted unread.
    todo.retain(|item| match account.max_size.filter(|&m| item.listed > m) {
        Some(max) => {
            too_large(
                account,
                state,
                report,
                &mut dele_wait,
                item.num,
                item.uidl.as_ref(),
                item.listed,
                max,
            );
            false
        }
        None => true,
    });
    dele_wait.make_contiguous().sort_by_key(|(num, _)| *num);
    report.new = todo.len() + report.too_large + over_budget;
    report.deferred = limit_poll(account, &mut todo) + over_budget;
    report.waiting += report.deferred + report.too_large;
    if let Some(p) = progress {
        let bytes = todo.iter().fold(0u64, |b, i| b.saturating_add(i.listed));
        p.set_total(todo.len(), bytes);
    }

    let mut run = Run {
        session,
        backend,
        quarantine: quarantine.as_ref(),
        state,
        account,
        pipelining: session_pipelining,
        progress,
        todo,
        report: std::mem::take(report),
        dele_wait,
        dele_sent: VecDeque::new(),
        deleted: Vec::new(),
        batch: Batch::default(),
        unavailable: None,
        interrupted: false,
        batch_ids: HashSet::new(),
        by_message_id: !has_uidl,
    };
    let transferred = run.transfer(stop).await;
    if let Err(e) = transferred {
        // The session is lost (reset, timeout, garbage, a lying size), but the messages that
        // arrived whole before it are good: commit them, so that the next poll only DELEs them
        // and a link that always drops at the same point still makes progress.
        run.salvage().await;
        *report = run.report;
        return Err(e);
    }
    let Run {
        session,
        state,
        report: done,
        deleted,
        unavailable,
        ..
    } = run;
    *report = done;

    // QUIT: only on +OK are the DELE'd messages gone for good (RFC 1939 §6). Without UIDL, a
    // refused QUIT leaves the delivered messages on the server under no name the journal
    // knows: their Message-ID and size (recorded with each delivery) recognise them next time.
    session.quit().await?;
    report.deleted = deleted.len();
    for u in deleted.iter().filter_map(|(_, u)| u.as_ref()) {
        state.forget(u);
    }
    if has_uidl {
        // What the journal knows is forgotten once it is gone: deleted now, or no longer listed.
        let mut gone: Vec<MsgNum> = deleted.iter().map(|(num, _)| *num).collect();
        gone.sort();
        state.retain_only_by(|u| {
            let h = hasher.hash_one(u.as_str());
            fetched.contains(&h)
                || Plan::known_as(&known, h).is_some_and(|num| gone.binary_search(&num).is_err())
        });
    }
    state.flush()?;
    // Even when the target became unavailable, the messages delivered before were deleted.
    if let Some(e) = unavailable {
        return Err(e);
    }
    report.waiting += report.failed + report.held + report.newly_held;
    tracing::info!(
        account = account.name,
        server = account.host,
        on_server = report.on_server,
        new = report.new,
        delivered = report.delivered,
        bytes = report.bytes,
        deleted = report.deleted,
        failed = report.failed,
        held = report.held + report.newly_held,
        too_large = report.too_large + report.too_large_deleted,
        expired = report.expired,
        duplicates = report.duplicates,
        deferred = report.deferred,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "poll done"
    );
    Ok(())
}

/// Most RETRs sent ahead of the one being read (with PIPELINING).
const MAX_AHEAD: usize = 32;
/// Most announced bytes of RETRs sent ahead: large messages go one at a time, so that a stop
/// never has much in flight to drain.
const MAX_AHEAD_BYTES: u64 = 1 << 20;
/// Most DELEs sent ahead of their answers (with PIPELINING). A poll may owe a DELE for every
/// message of a large mailbox (all delivered before, or past `delete_after`): queued all at
/// once they would cost memory per message, and their answers could fill the socket buffers
/// while the commands are still being written.
const MAX_DELE_AHEAD: usize = 1024;
/// A group commit covers at most this many messages ...
const BATCH_COUNT: usize = 64;
/// ... or bytes ...
const BATCH_BYTES: u64 = 8 << 20;
/// ... or this much time since its first message.
const BATCH_AGE: Duration = Duration::from_millis(500);

/// A message to fetch.
#[derive(Debug, Clone)]
struct Item {
    num: MsgNum,
    uidl: Option<Uidl>,
    listed: u64,
    /// Fetch it again into the quarantine Maildir (its delivery was refused for good).
    quarantine: bool,
    /// The digest of its Message-ID, when `dedupe_message_id` is on and it has one.
    message_id: Option<String>,
}

/// A message over `max_size`: left on the server and reported once, or deleted unread.
#[allow(clippy::too_many_arguments)]
fn too_large(
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
                max_size = max, "message over max_size: deleting it from the server unread");
            dele_wait.push_back((num, uidl.cloned()));
        }
        SizeAction::Keep => {
            report.too_large += 1;
            // Reported once: a message that stays for months must not fill the log.
            if uidl.is_some_and(|u| state.is_oversize(u)) {
                return;
            }
            tracing::warn!(account = account.name, %num, uidl = uidl_str, size,
                max_size = max, "message over max_size: left on the server, not fetched");
            if let Some(u) = uidl {
                state.record_oversize(u);
            }
        }
    }
}

/// Applies `max_messages_per_poll` and `max_bytes_per_poll` to the messages to fetch, in
/// server order; at least one is always fetched, so a large message cannot block the rest.
/// Returns how many were left for a later poll.
fn limit_poll(account: &Account, todo: &mut Vec<Item>) -> usize {
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
            "per-poll limit reached: the rest waits for the next poll"
        );
    }
    todo.truncate(keep);
    deferred
}

/// Octets of bookkeeping the new messages taken in one poll may cost (each one's UIDL, its
/// `Item`, its index entry): a server may list millions of new messages (or claim to), and
/// memory must stay flat whatever it lists. The new messages past it wait for the next poll,
/// counted as deferred, as with `max_messages_per_poll`; 16 MiB hold about 100,000 messages.
pub const TAKE_BUDGET: usize = 16 << 20;
/// Most new messages taken in one poll, whatever their UIDLs' length.
pub const TAKE_MAX: usize = 100_000;
/// What one taken message costs beyond its UIDL: its `Item`, its index entry, and the
/// allocator's overhead.
const TAKE_OVERHEAD: usize = std::mem::size_of::<Item>() + 48;

/// What a poll does with each listed message, worked out line by line as the listings arrive,
/// so that only what the poll acts on is held: the new messages it takes (within
/// [`TAKE_BUDGET`], in server order, at least one), the message numbers of the delivered ones
/// whose DELE is due, and a hash and number of each UIDL the journal knows.
struct Plan<'a> {
    account: &'a Account,
    state: &'a AccountState,
    now: u64,
    /// Keyed afresh by each process: a server cannot aim at collisions.
    hasher: std::hash::RandomState,
    on_server: usize,
    /// The messages to fetch: the new ones taken, and the ones found over `max_size` before
    /// (bounded by the journal, they are checked against their size again).
    todo: Vec<Item>,
    /// Index in `todo` (until it is sorted) by UIDL hash, to find a UIDL listed twice.
    taken: HashMap<u64, usize>,
    taken_cost: usize,
    /// The budget ran out: every new message after it waits for the next poll.
    full: bool,
    over_budget: usize,
    /// Listed UIDLs the journal knows (delivered, held, over `max_size`): hash and message
    /// number, 16 octets each, bounded by the journal (a UIDL listed twice is refused at
    /// [`Plan::finish`]); sorted by hash there.
    known: Vec<(u64, MsgNum)>,
    dele_wait: VecDeque<(MsgNum, Option<Uidl>)>,
    held: usize,
    expired: usize,
    /// Whether `todo` is in message-number order.
    sorted: bool,
}

impl<'a> Plan<'a> {
    fn new(account: &'a Account, state: &'a AccountState, now: u64) -> Plan<'a> {
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
    fn uidl(&mut self, num: MsgNum, uidl: &Uidl) -> Result<(), SessionError> {
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
            tracing::warn!(
                account = account.name,
                uidl = uidl.as_str(),
                "message held on the server after a permanent delivery failure (or it arrived \
                 far short of its LIST size); `popfetch retry {}` tries it again",
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
    fn list(&mut self, num: MsgNum, size: u64) -> Result<(), SessionError> {
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

    fn push(&mut self, num: MsgNum, uidl: Option<Uidl>, listed: u64) {
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
    fn finish(&mut self) -> Result<(), SessionError> {
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

    /// The message number a UIDL of hash `h` that the journal knows was listed under.
    fn known_as(known: &[(u64, MsgNum)], h: u64) -> Option<MsgNum> {
        let i = known.partition_point(|&(k, _)| k < h);
        known.get(i).filter(|&&(k, _)| k == h).map(|&(_, num)| num)
    }

    /// Puts `todo` in message-number order (a listing from every server known is in it
    /// already); `taken`'s indexes are stale after it.
    fn sort(&mut self) {
        if !self.sorted {
            self.todo.sort_by_key(|item| item.num);
            self.sorted = true;
        }
    }
}

/// Messages written but not yet durable, committed together.
#[derive(Default)]
struct Batch {
    sinks: Vec<(usize, Sink)>,
    bytes: u64,
    started: Option<Instant>,
}

impl Batch {
    fn is_due(&self) -> bool {
        self.sinks.len() >= BATCH_COUNT
            || self.bytes >= BATCH_BYTES
            || self.started.is_some_and(|t| t.elapsed() >= BATCH_AGE)
    }
}

/// One transfer: RETRs pipelined ahead (when the server allows), each message streamed into its
/// sink, Maildir deliveries group-committed, DELEs sent once their messages are durable.
struct Run<'a> {
    session: Session,
    backend: &'a Backend,
    quarantine: Option<&'a Backend>,
    state: &'a mut AccountState,
    account: &'a Account,
    pipelining: bool,
    progress: Option<&'a Progress>,
    todo: Vec<Item>,
    report: Report,
    /// Durably delivered, DELE not yet sent.
    dele_wait: VecDeque<(MsgNum, Option<Uidl>)>,
    /// DELE sent, answer not yet read.
    dele_sent: VecDeque<(MsgNum, Option<Uidl>)>,
    /// DELE answered +OK: gone once QUIT answers +OK.
    deleted: Vec<(MsgNum, Option<Uidl>)>,
    batch: Batch,
    /// The target became unavailable: no more RETRs; the error is returned after QUIT.
    unavailable: Option<FetchError>,
    /// Shutdown was asked for: no more RETRs.
    interrupted: bool,
    /// (Message-ID digest, size) of the messages received in this poll, for
    /// `dedupe_message_id`.
    batch_ids: HashSet<(String, u64)>,
    /// The server gives no UIDL: a delivered message is recognised by its Message-ID and size
    /// (as with `dedupe_message_id`), so that a refused QUIT does not deliver a session twice.
    by_message_id: bool,
}

impl Run<'_> {
    fn stopping(&self) -> bool {
        self.unavailable.is_some() || self.interrupted
    }

    /// After the session failed: commits the messages that arrived whole and wait in the batch.
    /// Their DELEs go at the next poll. A failure here is logged; the session's error is the one
    /// reported, and the messages stay on the server.
    async fn salvage(&mut self) {
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

    async fn transfer(&mut self, stop: &CancellationToken) -> Result<(), FetchError> {
        let mut next = 0;
        let mut retrs = 0usize;
        let mut ahead = 0u64;
        loop {
            // Fill the pipeline: DELEs first (tiny), then RETRs within the window.
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
                let room = retrs == 0 || (retrs < MAX_AHEAD && ahead < MAX_AHEAD_BYTES);
                if self.stopping() || next >= self.todo.len() || !room {
                    break;
                }
                self.session
                    .queue(Command::Retr(self.todo[next].num), Tag::Retr(next));
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
                    if !st.is_ok() {
                        self.report.failed += 1;
                        tracing::warn!(account = self.account.name, num = %self.todo[i].num,
                            error = %st.text_lossy(), "the server refused RETR; the message stays");
                        continue;
                    }
                    if self.stopping() {
                        // Sent before the stop: read it, deliver nothing.
                        self.session
                            .skip_body(size_cap(self.todo[i].listed))
                            .await?;
                        self.report.waiting += 1;
                        continue;
                    }
                    self.receive(i).await?;
                }
            }
        }
        self.report.waiting += self.todo.len() - next;
        Ok(())
    }

    /// Streams the body of item `i` into its target and handles the result.
    async fn receive(&mut self, i: usize) -> Result<(), FetchError> {
        // With dedupe_message_id the header is read first: a message with the Message-ID and
        // size of one delivered before is recorded, not delivered again.
        let mut head = Vec::new();
        let mut ended = false;
        if (self.account.dedupe_message_id || self.by_message_id) && !self.todo[i].quarantine {
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
            let digest = message_id(&head).map(|id| message_id_digest(&id));
            if let Some(d) = &digest {
                let key = (d.clone(), listed);
                if self.state.seen_message_id(d, listed) || self.batch_ids.contains(&key) {
                    if !ended {
                        self.session.skip_body(size_cap(listed)).await?;
                    }
                    return self.duplicate(i);
                }
                self.batch_ids.insert(key);
            }
            self.todo[i].message_id = digest;
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
        let r = async {
            let info = MessageInfo {
                account: &self.account.name,
                server: &self.account.host,
                uidl: item.uidl.as_ref(),
                tls: self.session.is_encrypted(),
                received_header: self.account.received_header,
            };
            let deliver_err = |source| FetchError::Deliver {
                what: what(),
                source,
            };
            let mut sink = target.begin(&info).map_err(deliver_err)?;
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
            sink.finish().await.map_err(deliver_err)?;
            Ok(Some(sink))
        }
        .await;
        match r {
            Ok(None) => {
                self.short(i, wire);
                Ok(())
            }
            Ok(Some(sink)) if sink.key().is_some() => {
                // A Maildir delivery: durable and visible with the rest of its batch.
                self.batch.bytes += sink.bytes();
                self.batch.started.get_or_insert_with(Instant::now);
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

    /// Item `i` arrived whole but far short of its LIST size: not delivered, not deleted, held on
    /// the server (whatever `on_permanent_failure` says: a truncated copy is no copy), reported
    /// with both sizes. `popfetch retry` releases it like any held message.
    fn short(&mut self, i: usize, received: u64) {
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
    fn duplicate(&mut self, i: usize) -> Result<(), FetchError> {
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

    fn delivered(&mut self, item: &Item, bytes: u64, t: Instant) {
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
            "delivered"
        );
        if !self.account.keep {
            self.dele_wait.push_back((item.num, item.uidl.clone()));
        }
    }

    /// A delivery failed: apply what its kind calls for.
    fn refused(&mut self, i: usize, what: String, source: DeliverError) {
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
                tracing::warn!(account = name, uidl, error = %source,
                    "delivery failed for now; the message stays on the server");
            }
            ErrorKind::Unavailable => {
                self.report.waiting += 1;
                self.unavailable = Some(FetchError::Deliver { what, source });
            }
            ErrorKind::Permanent if item.quarantine => {
                self.report.failed += 1;
                tracing::warn!(account = name, uidl, error = %source,
                    "quarantine failed; the message stays on the server");
            }
            ErrorKind::Permanent if self.quarantine.is_some() => {
                tracing::error!(account = name, uidl, error = %source,
                    "delivery refused for good; storing the message in quarantine");
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
                tracing::error!(account = name, uidl, error = %source,
                    "delivery refused for good; the message stays on the server and is not \
                     tried again until the config changes or `popfetch retry` runs");
            }
        }
    }

    /// Group commit: the batch's files fsync'd together, their pending records fsync'd once, the
    /// renames with one fsync of `new/`, their delivered records fsync'd once; then their DELEs
    /// may go.
    async fn commit_batch(&mut self) -> Result<(), FetchError> {
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

/// The most of a message's start read to find its Message-ID before delivering it.
const MAX_PEEK: usize = 64 * 1024;

/// The Message-ID field's value (unfolded, whitespace removed) from the start of a message, if
/// the header has one within what was read.
fn message_id(head: &[u8]) -> Option<Vec<u8>> {
    let mut value = crate::deliver::envelope::header_value_bytes(head, "message-id")?;
    value.retain(|b| !b.is_ascii_whitespace());
    (!value.is_empty()).then_some(value)
}

/// A digest of a Message-ID for the journal: hex, never the ID itself.
fn message_id_digest(id: &[u8]) -> String {
    use md5::Digest as _;
    crate::text::hex(&md5::Md5::digest(id))
}

/// Resolves deliveries a previous run left pending: committed ones count as delivered, the
/// others are cleaned up and fetched again.
fn recover(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_found_unfolded_in_the_header_only() {
        let m = b"From: a\nMessage-ID:\n <abc@x.example>\nSubject: s\n\nMessage-ID: <body@x>\n";
        assert_eq!(message_id(m).as_deref(), Some(&b"<abc@x.example>"[..]));
        let m = b"message-id:   <Q@Y>  \n\nbody\n";
        assert_eq!(message_id(m).as_deref(), Some(&b"<Q@Y>"[..]));
        assert_eq!(message_id(b"Subject: x\n\nMessage-ID: <body@x>\n"), None);
        assert_eq!(message_id(b"Message-ID:\n\n"), None);
        assert_eq!(message_id(b""), None);
        let d = message_id_digest(b"<abc@x.example>");
        assert_eq!(d.len(), 32);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn far_short_needs_half_the_list_size_and_64_kib_missing() {
        // The case: listed at 100,000 octets, 2 KB arrived.
        assert!(far_short(2_000, 100_000));
        // Exact, LF-counted (less than what arrives CRLF-counted), over-reported a little.
        assert!(!far_short(100_000, 100_000));
        assert!(!far_short(102_000, 100_000));
        assert!(!far_short(70_000, 100_000));
        // Small messages: any shortfall up to 64 KiB passes (overheads, estimates).
        assert!(!far_short(500, 30_000));
        assert!(!far_short(0, 65_536));
        assert!(far_short(0, 65_537));
        // Large ones: more than half missing.
        assert!(!far_short(5 << 20, 10 << 20));
        assert!(far_short((5 << 20) - 1, 10 << 20));
        assert!(far_short(1_000, u64::MAX));
        assert!(!far_short(u64::MAX, 0));
    }

    #[test]
    fn wire_len_counts_crlf_line_endings() {
        assert_eq!(wire_len(b""), 0);
        assert_eq!(wire_len(b"a\n"), 3);
        assert_eq!(wire_len(b"Subject: x\n\nbody\n"), 20);
        assert_eq!(wire_len(b"no newline"), 10);
    }

    fn items(sizes: &[u64]) -> Vec<Item> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &listed)| Item {
                num: MsgNum::parse(format!("{}", i + 1).as_bytes()).unwrap(),
                uidl: None,
                listed,
                quarantine: false,
                message_id: None,
            })
            .collect()
    }

    fn test_account(keep: bool, delete_after: Option<Duration>) -> Account {
        let mut a = crate::config::parse(
            Path::new("/c.toml"),
            "[[account]]\nname='a'\nhost='h'\nuser='u'\npassword_file='p'\n\
             deliver={maildir='/m'}\n",
        )
        .unwrap()
        .accounts[0]
            .as_ref()
            .clone();
        a.keep = keep;
        a.delete_after = delete_after;
        a
    }

    fn num(n: u32) -> MsgNum {
        MsgNum::new(n).unwrap()
    }

    fn uidl(s: &str) -> Uidl {
        Uidl::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_huge_listing_of_new_messages_takes_a_bounded_slice_in_server_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = AccountState::open(
            dir.path(),
            &crate::state::Mailbox::new("pop.example.org", 995, "a"),
            "a",
        )
        .unwrap();
        let account = test_account(true, None);
        for (len, n) in [(70, 300_000u32), (8, 150_000)] {
            let mut plan = Plan::new(&account, &state, 0);
            for i in 1..=n {
                let mut u = format!("u{i}-");
                while u.len() < len {
                    u.push('x');
                }
                plan.uidl(num(i), &uidl(&u)).unwrap();
            }
            let taken = plan.todo.len();
            assert!(taken > 1000 && taken <= TAKE_MAX, "{len}: {taken}");
            assert!(plan.taken_cost <= TAKE_BUDGET);
            assert_eq!(plan.over_budget, n as usize - taken);
            assert_eq!(plan.on_server, n as usize);
            assert!(plan.sorted);
            assert!(
                plan.todo
                    .iter()
                    .zip(1..)
                    .all(|(item, i)| item.num == num(i))
            );
        }
        // Without UIDL the same budget holds.
        let mut plan = Plan::new(&account, &state, 0);
        for i in 1..=200_000 {
            plan.list(num(i), 1000).unwrap();
        }
        assert_eq!(plan.todo.len() + plan.over_budget, 200_000);
        assert!(plan.todo.len() <= TAKE_MAX);
    }

    #[test]
    fn delivered_messages_due_for_dele_are_held_by_number_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = AccountState::open(
            dir.path(),
            &crate::state::Mailbox::new("pop.example.org", 995, "a"),
            "a",
        )
        .unwrap();
        state.record_delivered(&uidl("a"));
        state.record_delivered_at(&uidl("b"), 1);
        state.record_held(&uidl("h"));
        state.record_oversize(&uidl("o"));
        let listing = [(1, "a"), (2, "new"), (3, "b"), (4, "h"), (5, "o")];
        let run = |account: &Account| {
            let mut plan = Plan::new(account, &state, crate::state::now_secs());
            for (n, u) in listing {
                plan.uidl(num(n), &uidl(u)).unwrap();
            }
            let dele: Vec<_> = plan
                .dele_wait
                .iter()
                .map(|(n, u)| (n.get(), u.clone()))
                .collect();
            let todo: Vec<_> = plan.todo.iter().map(|i| i.num.get()).collect();
            (
                dele,
                todo,
                plan.held,
                plan.expired,
                plan.known.len(),
                plan.taken_cost,
            )
        };
        // Delete mode: both delivered ones are deleted; the one over max_size before is looked
        // at again (its size may fit now) without taking from the budget.
        let (dele, todo, held, expired, known, cost) = run(&test_account(false, None));
        assert_eq!(dele, [(1, None), (3, None)]);
        assert_eq!(todo, [2, 5]);
        assert_eq!((held, expired, known), (1, 0, 4));
        assert_eq!(cost, 3 + TAKE_OVERHEAD);
        // Keep mode: only the one past delete_after.
        let (dele, todo, _, expired, _, _) =
            run(&test_account(true, Some(Duration::from_secs(3600))));
        assert_eq!(dele, [(3, None)]);
        assert_eq!(todo, [2, 5]);
        assert_eq!(expired, 1);
        let (dele, ..) = run(&test_account(true, None));
        assert!(dele.is_empty());
    }

    #[test]
    fn a_uidl_listed_twice_is_refused_when_it_is_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = AccountState::open(
            dir.path(),
            &crate::state::Mailbox::new("pop.example.org", 995, "a"),
            "a",
        )
        .unwrap();
        state.record_delivered(&uidl("old"));
        let account = test_account(false, None);
        for listing in [
            [(1, "old"), (2, "x"), (3, "old")],
            [(1, "y"), (2, "x"), (3, "x")],
        ] {
            let mut plan = Plan::new(&account, &state, 0);
            let r: Result<Vec<()>, _> = listing
                .iter()
                .map(|&(n, u)| plan.uidl(num(n), &uidl(u)))
                .collect();
            let e = r.and_then(|_| plan.finish()).unwrap_err().to_string();
            assert!(e.contains("listed twice") && e.contains('3'), "{e}");
        }
        let mut plan = Plan::new(&account, &state, 0);
        plan.uidl(num(2), &uidl("old")).unwrap();
        plan.finish().unwrap();
        let h = plan.known[0].0;
        assert_eq!(Plan::known_as(&plan.known, h), Some(num(2)));
        assert_eq!(Plan::known_as(&plan.known, h ^ 1), None);
        // Out of order, the plan is sorted before the sizes are matched.
        let mut plan = Plan::new(&account, &state, 0);
        for (n, u) in [(3, "c"), (1, "a"), (2, "b")] {
            plan.uidl(num(n), &uidl(u)).unwrap();
        }
        assert!(!plan.sorted);
        plan.sort();
        let nums: Vec<u32> = plan.todo.iter().map(|i| i.num.get()).collect();
        assert_eq!(nums, [1, 2, 3]);
    }

    #[test]
    fn per_poll_limits_keep_server_order_and_always_fetch_one() {
        let account = |count, bytes| {
            let mut a = crate::config::parse(
                Path::new("/c.toml"),
                "[[account]]\nname='a'\nhost='h'\nuser='u'\npassword_file='p'\n\
                 deliver={maildir='/m'}\n",
            )
            .unwrap()
            .accounts[0]
                .as_ref()
                .clone();
            a.max_messages_per_poll = count;
            a.max_bytes_per_poll = bytes;
            a
        };
        let mut t = items(&[10, 20, 30, 40]);
        assert_eq!(limit_poll(&account(None, None), &mut t), 0);
        assert_eq!(t.len(), 4);
        let mut t = items(&[10, 20, 30, 40]);
        assert_eq!(limit_poll(&account(Some(3), None), &mut t), 1);
        assert_eq!(t.iter().map(|i| i.listed).collect::<Vec<_>>(), [10, 20, 30]);
        let mut t = items(&[10, 20, 30, 40]);
        assert_eq!(limit_poll(&account(None, Some(35)), &mut t), 2);
        assert_eq!(t.len(), 2);
        // A message over the byte limit still goes, alone.
        let mut t = items(&[100, 1]);
        assert_eq!(limit_poll(&account(Some(5), Some(50)), &mut t), 1);
        assert_eq!(t[0].listed, 100);
    }
}
