//! One poll of one account: the only module that knows both [`crate::session`] and
//! [`crate::deliver`], and the one that orders their steps so that no message is ever lost:
//!
//! 1. finish what a crashed run left pending (ask the backend whether it was delivered);
//! 2. log in, list UIDLs and sizes;
//! 3. for each message not delivered before: RETR streamed into the backend, `prepare` (durable,
//!    invisible), journal `P uidl key` + fsync, `commit` (visible, durable), journal `D uidl`;
//! 4. in delete mode: fsync the journal, then DELE the delivered messages;
//! 5. QUIT; only on `+OK` are the deleted UIDLs forgotten.
//!
//! A crash between any two steps loses nothing, and with a backend that can answer
//! `was_delivered` (Maildir) it duplicates nothing either.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{Account, Deliver, PermanentFailure};
use crate::deliver::{Backend, DeliverError, ErrorKind, MessageInfo};
use crate::pop3::{MsgNum, Uidl};
use crate::session::{ConnectParams, Session, SessionError};
use crate::state::{AccountState, StateError};

/// Send DELEs (and fsync the journal before them) at least this often, so that a long first fetch
/// that breaks off late still has most of its deletions queued at the server.
const DELETE_BATCH: usize = 100;

/// How much larger than its LIST size a message may turn out before the session is abandoned: a
/// server that streams without end must not fill the disk. Some servers' sizes are estimates.
fn size_cap(listed: u64) -> u64 {
    listed.saturating_mul(2).max(listed.saturating_add(1 << 20))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Password(crate::password::PasswordError),
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
            FetchError::Deliver { source, .. } => source.kind != ErrorKind::Permanent,
            FetchError::State(StateError::Locked { .. }) => true,
            _ => false,
        }
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Messages on the server at login.
    pub on_server: usize,
    /// Of those, the ones not delivered before this poll.
    pub new: usize,
    /// Messages delivered in this poll.
    pub delivered: usize,
    pub bytes: u64,
    /// Messages removed from the server (QUIT answered +OK).
    pub deleted: usize,
    /// Deliveries a crashed run left pending that were found complete.
    pub recovered: usize,
    /// Messages whose delivery failed for now; they stay on the server for the next poll.
    pub failed: usize,
    /// Messages the backend refused for good in this poll, now held on the server.
    pub newly_held: usize,
    /// Messages held from earlier polls, skipped.
    pub held: usize,
    /// Messages the backend refused for good that went to the quarantine Maildir.
    pub quarantined: usize,
    /// Messages left undelivered on the server: failed, held, or not reached.
    pub waiting: usize,
    /// The poll stopped early because shutdown was requested.
    pub interrupted: bool,
    /// The server's `LOGIN-DELAY` capability: the least time between two logins.
    pub login_delay: Option<Duration>,
}

impl Report {
    /// Whether something in this poll needs the administrator's attention.
    pub fn has_failures(&self) -> bool {
        self.failed > 0 || self.newly_held > 0
    }
}

/// Polls `account` once. When `stop` is cancelled the poll finishes the message in flight, sends
/// the DELEs it owes and QUITs.
pub async fn poll(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
) -> Result<Report, FetchError> {
    let r = poll_once(account, state_dir, stop).await;
    let summary = match &r {
        Ok(rep) => Ok((rep.delivered as u64, rep.waiting as u64)),
        Err(e) => Err(crate::cli::error_chain(e)),
    };
    crate::status::record(state_dir, &account.name, summary);
    r
}

async fn poll_once(
    account: &Account,
    state_dir: &Path,
    stop: &CancellationToken,
) -> Result<Report, FetchError> {
    let backend =
        Backend::open(&account.deliver, account).map_err(|source| FetchError::Deliver {
            what: "the target".into(),
            source,
        })?;
    let mut state = AccountState::open(state_dir, &account.name)?;
    let r = poll_with(account, &backend, &mut state, stop).await;
    backend.close().await;
    // Whatever happened, what was recorded reaches the disk.
    let synced = state.sync();
    let report = r?;
    synced?;
    Ok(report)
}

async fn poll_with(
    account: &Account,
    backend: &Backend,
    state: &mut AccountState,
    stop: &CancellationToken,
) -> Result<Report, FetchError> {
    let started = Instant::now();
    let released = state.set_fingerprint(&fingerprint(account));
    if released > 0 {
        tracing::info!(
            account = account.name,
            released,
            "config changed: held messages will be tried again"
        );
    }
    let mut report = Report {
        recovered: recover(backend, state, &account.name)?,
        ..Report::default()
    };

    let password = crate::password::resolve(&account.password, account.timeout)
        .await
        .map_err(FetchError::Password)?;
    let params = ConnectParams {
        host: &account.host,
        port: account.port,
        tls: account.tls,
        ca_file: account.ca_file.as_deref(),
        tls_verify: account.tls_verify,
        timeout: account.timeout,
    };
    let mut session = Session::connect(&params).await?;
    let method = session
        .login(
            &account.user,
            &password,
            account.auth,
            account.allow_plaintext_auth,
        )
        .await?;
    drop(password);
    tracing::debug!(
        account = account.name,
        method = crate::session::method_name(method),
        "logged in"
    );

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
    let uidls = session.uidl_all().await?;
    if uidls.is_none() && account.keep {
        return Err(FetchError::Unsupported(
            "the server does not support UIDL, so popfetch cannot tell old messages from new; \
             keep = true needs it (with keep = false every message is fetched and deleted)"
                .into(),
        ));
    }
    let sizes: HashMap<MsgNum, u64> = session.list_all().await?.into_iter().collect();
    let mut nums: Vec<MsgNum> = sizes.keys().copied().collect();
    nums.sort();
    report.on_server = nums.len();
    let by_num: HashMap<MsgNum, Uidl> = uidls.iter().flatten().cloned().collect();
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

    let mut to_delete = ToDelete::default();
    let mut unavailable = None;
    for (i, &num) in nums.iter().enumerate() {
        if stop.is_cancelled() {
            report.interrupted = true;
            report.waiting += nums.len() - i;
            tracing::info!(
                account = account.name,
                "shutting down: ending the poll after the message in flight"
            );
            break;
        }
        let uidl = by_num.get(&num);
        if uidls.is_some() && uidl.is_none() {
            // Listed by LIST but absent from UIDL: the server is confused; leave it alone.
            tracing::warn!(account = account.name, %num, "message has no unique-id; skipped");
            continue;
        }
        if let Some(u) = uidl {
            if state.is_delivered(u) {
                if !account.keep {
                    to_delete.list.push((num, Some(u.clone())));
                }
                continue;
            }
            if state.is_held(u) {
                report.held += 1;
                tracing::warn!(
                    account = account.name,
                    uidl = u.as_str(),
                    "message held on the server after a permanent delivery failure; \
                     `popfetch retry {}` tries it again",
                    account.name
                );
                continue;
            }
        }
        report.new += 1;
        let listed = sizes.get(&num).copied().unwrap_or(0);
        let t = Instant::now();
        match fetch_one(&mut session, backend, state, account, num, uidl, listed).await {
            Ok(bytes) => {
                report.delivered += 1;
                report.bytes += bytes;
                tracing::debug!(
                    account = account.name,
                    uidl = uidl.map(Uidl::as_str),
                    bytes,
                    elapsed_ms = t.elapsed().as_millis() as u64,
                    "delivered"
                );
                if !account.keep {
                    to_delete.list.push((num, uidl.cloned()));
                }
            }
            Err(FetchError::Deliver { what, source }) => {
                // The failure may have come mid-message: read the rest so the session goes on.
                session.skip_body(size_cap(listed)).await?;
                let uidl_str = uidl.map(Uidl::as_str);
                match source.kind {
                    ErrorKind::Transient => {
                        report.failed += 1;
                        tracing::warn!(account = account.name, uidl = uidl_str, error = %source,
                            "delivery failed for now; the message stays on the server");
                    }
                    ErrorKind::Unavailable => {
                        report.waiting += nums.len() - i;
                        unavailable = Some(FetchError::Deliver { what, source });
                        break;
                    }
                    ErrorKind::Permanent => match &quarantine {
                        None => {
                            if let Some(u) = uidl {
                                state.record_held(u);
                            }
                            report.newly_held += 1;
                            tracing::error!(account = account.name, uidl = uidl_str, error = %source,
                                "delivery refused for good; the message stays on the server and is \
                                 not tried again until the config changes or `popfetch retry` runs");
                        }
                        Some(q) => {
                            tracing::error!(account = account.name, uidl = uidl_str, error = %source,
                                "delivery refused for good; storing the message in quarantine");
                            match fetch_one(&mut session, q, state, account, num, uidl, listed)
                                .await
                            {
                                Ok(_) => {
                                    report.quarantined += 1;
                                    if !account.keep {
                                        to_delete.list.push((num, uidl.cloned()));
                                    }
                                }
                                Err(FetchError::Deliver { source, .. }) => {
                                    session.skip_body(size_cap(listed)).await?;
                                    report.failed += 1;
                                    tracing::warn!(account = account.name, uidl = uidl_str, error = %source,
                                        "quarantine failed; the message stays on the server");
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    },
                }
            }
            // The session or the state cannot be trusted any more: no QUIT, which would apply
            // this session's DELEs; those messages are recorded and get deleted next time.
            Err(e) => return Err(e),
        }
        if to_delete.list.len() - to_delete.marked >= DELETE_BATCH {
            send_deletes(&mut session, state, &mut to_delete).await?;
        }
    }
    // Even when the target became unavailable, the messages delivered before are deleted now.
    report.deleted = finish(session, state, to_delete, uidls.as_deref()).await?;
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
        elapsed_ms = started.elapsed().as_millis() as u64,
        "poll done"
    );
    Ok(report)
}

/// A stable digest of the account's settings (secrets redacted), to notice config changes.
fn fingerprint(account: &Account) -> String {
    // FNV-1a: stable across builds, unlike the standard library's hasher.
    let text = format!("{account:?}");
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Resolves deliveries a previous run left pending: committed ones count as delivered, the
/// others are cleaned up and fetched again.
fn recover(
    backend: &Backend,
    state: &mut AccountState,
    account: &str,
) -> Result<usize, StateError> {
    let mut found = 0;
    for (uidl, key) in state.pending() {
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

/// Retrieves message `num` into the backend and records it. Returns the bytes delivered.
async fn fetch_one(
    session: &mut Session,
    backend: &Backend,
    state: &mut AccountState,
    account: &Account,
    num: MsgNum,
    uidl: Option<&Uidl>,
    listed: u64,
) -> Result<u64, FetchError> {
    let info = MessageInfo {
        account: &account.name,
        server: &account.host,
        uidl,
        tls: session.is_encrypted(),
        received_header: account.received_header,
    };
    let what = || match uidl {
        Some(u) => format!("message {num} (uidl {u})"),
        None => format!("message {num}"),
    };
    let deliver_err = |source| FetchError::Deliver {
        what: what(),
        source,
    };
    let mut sink = backend.begin(&info).map_err(deliver_err)?;
    let header_len = sink.bytes();
    session.retr(num).await?;
    while let Some(chunk) = session.body_chunk().await? {
        sink.write(&chunk).await.map_err(deliver_err)?;
        if sink.bytes() - header_len > size_cap(listed) {
            return Err(FetchError::Oversize { num, listed });
        }
    }
    sink.prepare().await.map_err(deliver_err)?;
    let key = sink.key().map(str::to_string);
    if let (Some(u), Some(key)) = (uidl, &key) {
        // Durable before the delivery becomes visible, so a crash in between can be settled.
        state.record_pending(u, key);
        state.sync()?;
    }
    let bytes = sink.bytes();
    sink.commit().await.map_err(deliver_err)?;
    if let Some(u) = uidl {
        state.record_delivered(u);
        if key.is_none() {
            // The backend cannot be asked later: record it now, so a crash can duplicate at
            // most the message in flight.
            state.sync()?;
        }
    }
    Ok(bytes)
}

/// Makes the journal durable, then marks the delivered messages for deletion. Moves them from
/// `to_delete` to the end of its `marked` part: `to_delete[..marked]` are the DELE'd ones.
async fn send_deletes(
    session: &mut Session,
    state: &mut AccountState,
    to_delete: &mut ToDelete,
) -> Result<(), FetchError> {
    if to_delete.marked == to_delete.list.len() {
        return Ok(());
    }
    state.sync()?;
    while let Some((num, _)) = to_delete.list.get(to_delete.marked) {
        session.dele(*num).await?;
        to_delete.marked += 1;
    }
    Ok(())
}

/// Messages to delete, in order; the first `marked` have had their DELE answered +OK.
#[derive(Default)]
struct ToDelete {
    list: Vec<(MsgNum, Option<Uidl>)>,
    marked: usize,
}

/// Sends the outstanding DELEs and QUIT. When QUIT answers +OK the deleted UIDLs are forgotten,
/// and so are those no longer on the server. Returns how many messages were deleted.
async fn finish(
    mut session: Session,
    state: &mut AccountState,
    mut to_delete: ToDelete,
    uidls: Option<&[(MsgNum, Uidl)]>,
) -> Result<usize, FetchError> {
    send_deletes(&mut session, state, &mut to_delete).await?;
    session.quit().await?;
    // QUIT answered +OK: the DELE'd messages are gone for good (RFC 1939 §6).
    for (_, u) in &to_delete.list {
        if let Some(u) = u {
            state.forget(u);
        }
    }
    if let Some(list) = uidls {
        let on_server: HashSet<&Uidl> = list.iter().map(|(_, u)| u).collect();
        state.retain_only(&on_server);
    }
    state.sync()?;
    Ok(to_delete.marked)
}
