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

use tokio::io::AsyncReadExt;

use crate::config::{Account, PasswordSource};
use crate::deliver::{Backend, DeliverError, MessageInfo};
use crate::pop3::{MsgNum, Uidl};
use crate::secret::Secret;
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

/// Longest password a file or command may yield.
const MAX_PASSWORD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("password: {0}")]
    Password(String),
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
            FetchError::Deliver { source, .. } => {
                source.kind == crate::deliver::ErrorKind::Transient
            }
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
    /// Messages delivered in this poll.
    pub delivered: usize,
    pub bytes: u64,
    /// Messages removed from the server (QUIT answered +OK).
    pub deleted: usize,
    /// Deliveries a crashed run left pending that were found complete.
    pub recovered: usize,
}

/// Polls `account` once.
pub async fn poll(account: &Account, state_dir: &Path) -> Result<Report, FetchError> {
    let started = Instant::now();
    let backend = Backend::open(&account.deliver).map_err(|source| FetchError::Deliver {
        what: "the target".into(),
        source,
    })?;
    let mut state = AccountState::open(state_dir, &account.name)?;
    let mut report = Report {
        recovered: recover(&backend, &mut state, &account.name)?,
        ..Report::default()
    };

    let password = resolve_password(&account.password, account.timeout).await?;
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

    let mut to_delete = ToDelete::default();
    let mut failure = None;
    for &num in &nums {
        let uidl = by_num.get(&num);
        if uidls.is_some() && uidl.is_none() {
            // Listed by LIST but absent from UIDL: the server is confused; leave it alone.
            tracing::warn!(account = account.name, %num, "message has no unique-id; skipped");
            continue;
        }
        if let Some(u) = uidl
            && state.is_delivered(u)
        {
            if !account.keep {
                to_delete.list.push((num, Some(u.clone())));
            }
            continue;
        }
        let listed = sizes.get(&num).copied().unwrap_or(0);
        let t = Instant::now();
        match fetch_one(
            &mut session,
            &backend,
            &mut state,
            account,
            num,
            uidl,
            listed,
        )
        .await
        {
            Ok(bytes) => {
                report.delivered += 1;
                report.bytes += bytes;
                tracing::info!(
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
            Err(e) => {
                failure = Some((e, listed));
                break;
            }
        }
        if to_delete.list.len() - to_delete.marked >= DELETE_BATCH {
            send_deletes(&mut session, &mut state, &mut to_delete).await?;
        }
    }
    if let Some((e, listed)) = failure {
        // A delivery failed. When the connection is still sound, finish the message in flight
        // and QUIT, so that the messages delivered before it are deleted now; otherwise they are
        // recorded as delivered and get deleted at the next poll.
        if matches!(e, FetchError::Deliver { .. })
            && session.skip_body(size_cap(listed)).await.is_ok()
            && let Err(e2) = finish(session, &mut state, to_delete, uidls.as_deref()).await
        {
            tracing::warn!(account = account.name, error = %e2, "could not end the session cleanly");
        }
        return Err(e);
    }
    report.deleted = finish(session, &mut state, to_delete, uidls.as_deref()).await?;
    tracing::info!(
        account = account.name,
        on_server = report.on_server,
        delivered = report.delivered,
        bytes = report.bytes,
        deleted = report.deleted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "poll done"
    );
    Ok(report)
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
    if let Some(u) = uidl {
        state.record_pending(u, sink.key());
        state.sync()?;
    }
    let bytes = sink.bytes();
    sink.commit().await.map_err(deliver_err)?;
    if let Some(u) = uidl {
        state.record_delivered(u);
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

/// Reads the password from its source. The value is never logged; errors name the source only.
pub async fn resolve_password(
    source: &PasswordSource,
    timeout: Duration,
) -> Result<Secret<String>, FetchError> {
    match source {
        PasswordSource::Inline(p) => Ok(p.clone()),
        PasswordSource::File(path) => {
            let text = tokio::fs::read(path).await.map_err(|e| {
                FetchError::Password(format!("cannot read {}: {e}", path.display()))
            })?;
            first_line(&text).ok_or_else(|| {
                FetchError::Password(format!("{} is empty or not UTF-8 text", path.display()))
            })
        }
        PasswordSource::Command(argv) => {
            let err = |why: String| {
                FetchError::Password(format!("password_command {:?}: {why}", argv[0]))
            };
            let mut child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| err(format!("cannot run it: {e}")))?;
            let mut out = Vec::new();
            let mut stdout = child.stdout.take().ok_or_else(|| err("no stdout".into()))?;
            let run = async {
                (&mut stdout)
                    .take(MAX_PASSWORD as u64)
                    .read_to_end(&mut out)
                    .await?;
                drop(stdout);
                child.wait().await
            };
            let status = match tokio::time::timeout(timeout, run).await {
                Ok(r) => r.map_err(|e| err(e.to_string()))?,
                Err(_) => return Err(err(format!("no answer within {}s", timeout.as_secs()))),
            };
            if !status.success() {
                return Err(err(format!("it failed ({status})")));
            }
            let pw = first_line(&out).ok_or_else(|| err("it printed no password".into()));
            out.iter_mut().for_each(|b| *b = 0);
            pw
        }
    }
}

fn first_line(bytes: &[u8]) -> Option<Secret<String>> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() || line.len() > MAX_PASSWORD {
        return None;
    }
    std::str::from_utf8(line)
        .ok()
        .map(|s| Secret::new(s.to_string()))
}
