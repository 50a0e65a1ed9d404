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
//!
//! What to fetch, skip, hold, expire and delete is worked out without a socket in [`plan`];
//! the RETRs, deliveries and DELEs run in [`transfer`]; the group commit of Maildir deliveries
//! and the recovery of step 1 live in [`commit`]. [`poll`] is the one entry point.

mod commit;
mod plan;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher as _;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{Account, Credentials, Deliver, PermanentFailure};
use crate::deliver::{Backend, DeliverError, ErrorKind};
use crate::pop3::login::Method;
use crate::pop3::{MsgNum, Uidl};
use crate::progress::Progress;
pub use crate::report::{Report, ShortMessage};
use crate::session::{ConnectParams, Credential, Session, SessionError};
use crate::state::{AccountState, StateError};
use plan::{Plan, Work};
use transfer::Run;

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

/// Polls `account` once, counting what is done into `progress` (when given) for a live display.
/// When `stop` is cancelled the poll finishes the message in flight, sends the DELEs it owes and
/// QUITs. The report says what the poll did also when it ended in error: the deliveries made
/// before the error count.
pub async fn poll(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
    progress: Option<&Progress>,
) -> (Report, Result<(), FetchError>) {
    let mut report = Report::default();
    // Every line logged on the way names the account (see `crate::logging`); the span is at
    // the error level so that it is there whatever the filter lets through.
    let span = tracing::error_span!("poll", account = %account.name);
    let started = Instant::now();
    let r = poll_once(account, state_dir, stop, progress, &mut report)
        .instrument(span)
        .await;
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
        let error = crate::text::error_chain(e);
        tracing::warn!(
            account = account.name,
            delivered = report.delivered,
            quarantined = report.quarantined,
            error,
            "poll failed after delivering {} messages: {error}; they are recorded as delivered \
             and their DELE follows at the next poll",
            report.delivered + report.quarantined
        );
    }
    if let Err(FetchError::State(StateError::Locked { .. })) = &r {
        // Another run holds the mailbox and records its own poll: this one did nothing, and
        // says nothing about the account's health.
        return (report, r);
    }
    report.cert_warned = warn_of_expiry(account, state_dir, &report);
    let error = r.as_ref().err().map(|e| crate::text::error_chain(e));
    crate::status::record(state_dir, &account.name, &report, error, started.elapsed());
    (report, r)
}

/// When the session's server certificate ends (Unix seconds); `None` in clear text.
fn cert_expiry(session: &Session) -> Option<u64> {
    session
        .certificate()
        .and_then(|c| c.not_after)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// Warns when the server's certificate ends within `tls_expiry_warning`, at most once a day
/// (the status file remembers when it last did); whether it did.
fn warn_of_expiry(account: &Account, state_dir: &Path, report: &Report) -> bool {
    let Some(ends) = report.cert_expires else {
        return false;
    };
    let now = crate::state::now_secs();
    let left = ends.saturating_sub(now);
    if left > account.tls_expiry_warning.as_secs() {
        return false;
    }
    let last = crate::status::read(state_dir, &account.name).tls_expiry_warned;
    if last.is_some_and(|t| now.saturating_sub(t) < 86_400) {
        return false;
    }
    let when = crate::deliver::rfc5322_date(std::time::UNIX_EPOCH + Duration::from_secs(ends));
    if left == 0 {
        tracing::error!(
            account = account.name,
            "the certificate of {} ended on {when}; its administrator must renew it",
            account.host
        );
    } else {
        tracing::warn!(
            account = account.name,
            days_left = left / 86_400,
            "the certificate of {} ends in {} days ({when}); its administrator should renew it \
             (a pinned certificate needs its new tls_fingerprint too)",
            account.host,
            left / 86_400
        );
    }
    true
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
    // fsync'd before that DELE; what is left can be lost without harm (see `flush`). What later
    // records superseded is compacted away (see `finish`).
    let synced = state.finish();
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
    report.recovered = commit::recover(backend, state, &account.name)?;
    let (mut session, _, hint) = log_in(account, state.dir(), stop).await?;
    if let Some(caps) = session.capabilities()
        && hint.is_none_or(|h| h.advertised != caps.advertised)
    {
        crate::state::store_capa_hint(
            state.dir(),
            &crate::state::Mailbox::of(account),
            &caps.advertised,
        );
    }
    report.cert_expires = cert_expiry(&session);
    let pipelining = read_capabilities(account, &mut session, report).await?;
    let (plan, has_uidl) = read_listings(account, state, &mut session).await?;
    let mut work = plan.into_work(report);
    // Only the hashes of the UIDLs fetched are kept, for `retain_only_by` after QUIT.
    let fetched: HashSet<u64> = work
        .todo
        .iter()
        .filter_map(|item| item.uidl.as_ref())
        .map(|u| work.hasher.hash_one(u.as_str()))
        .collect();
    let quarantine = open_quarantine(account)?;
    work.limit(account, state, report);
    if let Some(p) = progress {
        let bytes = work
            .todo
            .iter()
            .fold(0u64, |b, i| b.saturating_add(i.listed));
        p.set_total(work.todo.len(), bytes);
    }
    let Work {
        todo,
        dele_wait,
        known,
        hasher,
        ..
    } = work;

    let mut run = Run {
        session,
        backend,
        quarantine: quarantine.as_ref(),
        state,
        account,
        pipelining,
        progress,
        todo,
        report: std::mem::take(report),
        dele_wait,
        dele_sent: VecDeque::new(),
        deleted: Vec::new(),
        batch: commit::Batch::default(),
        unavailable: None,
        interrupted: false,
        batch_ids: HashSet::new(),
        by_message_id: !has_uidl,
        window: transfer::Window::default(),
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

    let listed = has_uidl.then_some(Listed {
        hasher,
        fetched,
        known,
    });
    // The QUIT waited for, when something was deleted, is the last round trip, unless it
    // went in the flight of the last DELEs.
    report.round_trips =
        session.round_trips() + u32::from(!deleted.is_empty() && !session.quit_queued());
    quit(session, state, &deleted, listed.as_ref()).await?;
    report.deleted = deleted.len();
    state.flush()?;
    // Even when the target became unavailable, the messages delivered before were deleted.
    if let Some(e) = unavailable {
        return Err(e);
    }
    log_done(account, report, started);
    Ok(())
}

/// What the journal may keep after QUIT, from a listing with UIDLs: the UIDLs fetched (as
/// hashes) and the ones the journal knows ([`Plan::known`]), hashed by the plan's `hasher`.
struct Listed {
    hasher: std::hash::RandomState,
    fetched: HashSet<u64>,
    known: Vec<(u64, MsgNum)>,
}

/// QUIT: only on +OK are the DELE'd messages gone for good (RFC 1939 §6), and forgotten by the
/// journal. Without UIDL (`listed` is `None`), a refused QUIT leaves the delivered messages on
/// the server under no name the journal knows: their Message-ID and size (recorded with each
/// delivery) recognise them next time. With UIDL, what the journal knows is forgotten once it
/// is gone: deleted now, or no longer listed.
async fn quit(
    session: Session,
    state: &mut AccountState,
    deleted: &[(MsgNum, Option<Uidl>)],
    listed: Option<&Listed>,
) -> Result<(), FetchError> {
    if deleted.is_empty() {
        // Nothing was marked for deletion: QUIT's answer decides nothing.
        session.quit_unanswered().await;
    } else {
        session.quit().await?;
    }
    for u in deleted.iter().filter_map(|(_, u)| u.as_ref()) {
        state.forget(u);
    }
    if let Some(Listed {
        hasher,
        fetched,
        known,
    }) = listed
    {
        let mut gone: Vec<MsgNum> = deleted.iter().map(|(num, _)| *num).collect();
        gone.sort();
        state.retain_only_by(|u| {
            let h = hasher.hash_one(u);
            fetched.contains(&h)
                || Plan::known_as(known, h).is_some_and(|num| gone.binary_search(&num).is_err())
        });
    }
    Ok(())
}

/// Obtains the credential, connects and logs in; returns the session, the method used and the
/// capabilities the state directory kept from the last session (the hint it logged in on). The
/// credential is obtained before connecting: a token source that fails (or yields nothing)
/// never leads to a login attempt. The account's lock, held by the caller, keeps two processes
/// from refreshing (and rotating) one token at once. `state_dir` holds the OAuth2 cache.
pub(crate) async fn log_in(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
) -> Result<(Session, Method, Option<crate::pop3::Capabilities>), FetchError> {
    let credential = match &account.credentials {
        Credentials::Password(source) => Credential::Password(
            crate::password::resolve(source, account.timeout)
                .await
                .map_err(FetchError::Password)?,
        ),
        Credentials::OAuth2(_) => Credential::Token(
            crate::oauth2::access_token(account, state_dir)
                .await
                .map_err(FetchError::OAuth2)?,
        ),
        Credentials::Certificate => Credential::Certificate,
    };
    let hint = crate::state::capa_hint(state_dir, &crate::state::Mailbox::of(account))
        .map(|lines| crate::pop3::Capabilities::from_lines(lines.iter().map(|l| l.as_bytes())));
    let params = ConnectParams {
        capa_hint: hint.as_ref(),
        host: &account.host,
        port: account.port,
        tls: account.tls,
        ca_file: account.ca_file.as_deref(),
        tls_verify: account.tls_verify,
        pins: &account.tls_fingerprint,
        min_version: account.tls_min_version,
        client: account
            .tls_client
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
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
        crate::oauth2::invalidate(account, state_dir);
    }
    let method = login?;
    drop(credential);
    tracing::debug!(
        account = account.name,
        method = method.name(),
        "logged in with {}",
        method.name()
    );
    Ok((session, method, hint))
}

/// Reads the capabilities after login: the LOGIN-DELAY into the report, a warning for an EXPIRE
/// 0 server with `keep = true`. Returns whether the server allows pipelining.
async fn read_capabilities(
    account: &Account,
    session: &mut Session,
    report: &mut Report,
) -> Result<bool, FetchError> {
    session.reread_login_delay().await?;
    let pipelining = session.capabilities().is_some_and(|c| c.pipelining);
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
    Ok(pipelining)
}

/// Most messages the journal knows for LIST to be sent ahead with UIDL (about 15 KiB of
/// listing).
const LIST_AHEAD_MAX: usize = 1000;

/// Reads the listings into a [`Plan`], each line checked against the journal at once: a server
/// may list millions of messages, and only the ones this poll acts on are held. Returns the
/// plan, sorted, and whether the server gives UIDLs.
async fn read_listings<'a>(
    account: &'a Account,
    state: &'a AccountState,
    session: &mut Session,
) -> Result<(Plan<'a>, bool), FetchError> {
    let now = crate::state::now_secs();
    // LIST rides with STAT and UIDL when the journal says the mailbox is small (its listing
    // then costs a few KiB even when nothing is new), saving a round trip to every poll that
    // fetches; a large kept mailbox is not listed twice at every poll.
    if state.delivered_count() <= LIST_AHEAD_MAX {
        session.queue_list();
    }
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
        session
            .list_each(|num, size| {
                plan.size(num, size);
                Ok(())
            })
            .await?;
    } else {
        session.skip_list().await?;
    }
    plan.sort();
    Ok((plan, has_uidl))
}

/// The quarantine Maildir, when permanent failures go there.
fn open_quarantine(account: &Account) -> Result<Option<Backend>, FetchError> {
    match (&account.on_permanent_failure, &account.quarantine) {
        (PermanentFailure::Quarantine, Some(dir)) => {
            Backend::open(&Deliver::Maildir(dir.clone()), account)
                .map(Some)
                .map_err(|source| FetchError::Deliver {
                    what: "the quarantine Maildir".into(),
                    source,
                })
        }
        _ => Ok(None),
    }
}

fn log_done(account: &Account, report: &Report, started: Instant) {
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let text = report.summary();
    if report.eventful() {
        tracing::info!(
            account = account.name,
            delivered = report.delivered,
            bytes = report.bytes,
            deleted = report.deleted,
            failed = report.failed,
            held = report.held + report.newly_held,
            elapsed_ms,
            round_trips = report.round_trips,
            "poll done: {text} ({} round trips, {elapsed_ms} ms)",
            report.round_trips
        );
    } else {
        tracing::debug!(
            account = account.name,
            elapsed_ms,
            round_trips = report.round_trips,
            "poll done: {text} ({} round trips, {elapsed_ms} ms)",
            report.round_trips
        );
    }
}
