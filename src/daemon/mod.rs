//! The daemon: one task per account, each polling on its own schedule ([`crate::scheduler`]),
//! at most `max_parallel` polls at once; hot reload on config change or SIGHUP; SIGUSR1 polls
//! every account now; SIGTERM/SIGINT let polls in flight finish their message and QUIT, then exit
//! within `shutdown_timeout`; systemd readiness and watchdog.
//!
//! Reload keeps what did not change: an account whose settings are equal keeps its task and its
//! schedule and backoff; a changed one is retired (after its current poll) and started anew once
//! the old task is gone, so two polls of one account never overlap; a removed one is retired;
//! a new one is started, after the removed one's poll when it is the same mailbox under a new
//! name (the mailbox's lock would refuse it anyway, see [`crate::state`]). An invalid config is logged with its file, line and key, and the old one
//! keeps running.

pub mod limits;
pub mod signals;
pub mod systemd;
mod told;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Account, Config};
use crate::fetch::{self, FetchError};
use crate::metrics::{Metrics, PollResult, serve};
use crate::scheduler::{self, Next, Outcome, Schedule, Why};
use told::{Say, Told};

/// Time to let a burst of file events settle before reading the config.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Wait before restarting an account task that panicked, doubled for each panic in a row (at
/// most [`scheduler::BACKOFF_CAP`]), so a panic that recurs on every poll does not spin.
const RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// What the daemon shares with its account tasks.
struct Shared {
    state_dir: PathBuf,
    permits: Arc<Semaphore>,
    /// `max_parallel_per_server`'s semaphores.
    servers: limits::ServerLimits,
    /// Cancelled at shutdown: polls end after the message in flight.
    shutdown: CancellationToken,
    /// Per account: when its last poll ended and whether it succeeded.
    summary: Mutex<HashMap<String, (std::time::SystemTime, bool)>>,
    /// For the daemon's whole life, across reloads.
    metrics: Arc<Metrics>,
}

/// The metrics endpoint in force, with the address the config asked for.
type Endpoint = Option<(std::net::SocketAddr, serve::Server)>;

/// A running account task.
struct Running {
    account: Arc<Account>,
    /// Cancelled when the account is removed or changed: the task ends after its current poll.
    retire: CancellationToken,
    poke: Arc<Notify>,
    handle: JoinHandle<()>,
}

/// Runs until a signal asks to stop. `config` was loaded from `path` by the caller.
pub async fn run(path: PathBuf, mut config: Config) -> std::process::ExitCode {
    let shutdown = CancellationToken::new();
    signals::stop_on_signal(shutdown.clone());
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel();
    let mut watcher = watch_config(&path, &config, &reload_tx);
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut usr1 = signal(SignalKind::user_defined1()).ok();

    let metrics = Arc::new(Metrics::new());
    metrics.set_accounts(config.accounts.iter().map(|a| a.name.as_str()));
    metrics.set_textfile(config.metrics_textfile.clone());
    // Written now too, so that it exists (with the accounts and the build) before any poll.
    metrics.write_textfile();
    // An endpoint the config asks for and the daemon cannot open is a failed start, so that
    // the supervisor says so; on reload the old one stays instead.
    let mut endpoint: Endpoint = None;
    if let Some(addr) = config.metrics_listen {
        match serve::Server::bind(addr, metrics.clone()) {
            Ok(server) => {
                tracing::info!(addr = %server.addr(), "metrics endpoint listening on http://{}/metrics", server.addr());
                endpoint = Some((addr, server));
            }
            Err(e) => {
                tracing::error!(addr = %addr, error = %e, "cannot listen on metrics_listen = \"{addr}\": {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let mut shared = new_shared(&config, shutdown.clone(), metrics);
    let mut running: HashMap<String, Running> = HashMap::new();
    let window = scheduler::start_window(config.accounts.len(), config.start_spread);
    for a in &config.accounts {
        start(&shared, &mut running, a.clone(), None, window);
    }
    tracing::info!(accounts = config.accounts.len(), path = %path.display(), "daemon started");
    systemd::ready(&status_line(&shared, running.len()));

    let mut watchdog =
        tokio::time::interval(systemd::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    let watchdog_on = systemd::watchdog_interval().is_some();
    let status_every = Duration::from_secs(10);
    let mut status_tick = tokio::time::interval_at(Instant::now() + status_every, status_every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = reload_rx.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while reload_rx.try_recv().is_ok() {}
                if reload(&path, &mut config, &mut shared, &mut running, &mut endpoint, Reload::IfChanged) {
                    watcher = watch_config(&path, &config, &reload_tx).or(watcher);
                }
            }
            Some(_) = recv(&mut hup) => {
                if reload(&path, &mut config, &mut shared, &mut running, &mut endpoint, Reload::Always) {
                    watcher = watch_config(&path, &config, &reload_tx).or(watcher);
                }
            }
            Some(_) = recv(&mut usr1) => {
                tracing::info!("SIGUSR1: polling every account now");
                for r in running.values() {
                    r.poke.notify_one();
                }
            }
            _ = watchdog.tick(), if watchdog_on => systemd::watchdog(),
            _ = status_tick.tick() => systemd::status(&status_line(&shared, running.len())),
        }
        running.retain(|_, r| !r.handle.is_finished());
    }

    systemd::stopping();
    tracing::info!(
        timeout_s = config.shutdown_timeout.as_secs(),
        "shutting down"
    );
    let handles: Vec<JoinHandle<()>> = running.into_values().map(|r| r.handle).collect();
    let all = futures_join(handles);
    if tokio::time::timeout(config.shutdown_timeout, all)
        .await
        .is_err()
    {
        tracing::warn!(
            "polls still running at the shutdown deadline; exiting anyway (nothing undelivered was deleted)"
        );
    }
    std::process::ExitCode::SUCCESS
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

fn new_shared(config: &Config, shutdown: CancellationToken, metrics: Arc<Metrics>) -> Arc<Shared> {
    Arc::new(Shared {
        state_dir: config.state_dir.clone(),
        permits: Arc::new(Semaphore::new(config.max_parallel)),
        servers: limits::ServerLimits::new(config.max_parallel_per_server),
        shutdown,
        summary: Mutex::new(HashMap::new()),
        metrics,
    })
}

/// Opens the metrics endpoint a reloaded config asks for, when it differs from the one in
/// force: the old one is closed first (the new address may share its port), and put back
/// when the new one cannot be opened.
fn rebind(endpoint: &mut Endpoint, want: Option<std::net::SocketAddr>, metrics: &Arc<Metrics>) {
    if endpoint.as_ref().map(|(a, _)| *a) == want {
        return;
    }
    let old = endpoint.take().map(|(a, server)| {
        drop(server);
        a
    });
    let Some(addr) = want else {
        tracing::info!("metrics endpoint closed");
        return;
    };
    match serve::Server::bind(addr, metrics.clone()) {
        Ok(server) => {
            tracing::info!(addr = %server.addr(), "metrics endpoint listening on http://{}/metrics", server.addr());
            *endpoint = Some((addr, server));
        }
        Err(e) => {
            tracing::error!(addr = %addr, error = %e, "cannot listen on metrics_listen = \"{addr}\": {e}; a later reload tries again");
            if let Some(a) = old
                && let Ok(server) = serve::Server::bind(a, metrics.clone())
            {
                tracing::info!(addr = %a, "metrics endpoint still on the previous address");
                *endpoint = Some((a, server));
            }
        }
    }
}

/// Watches the config file and what it includes (see [`watch`]); `None`, said in the log, when
/// it cannot.
fn watch_config(
    path: &Path,
    config: &Config,
    tx: &mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let files: Vec<&Path> = config.included.iter().map(|i| i.path.as_path()).collect();
    match watch::watch(path, &config.include, &files, tx.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot watch the config file {}: {e}; reload with SIGHUP", path.display());
            None
        }
    }
}

/// When a reload applies what it read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reload {
    /// SIGHUP: always, and said in the log.
    Always,
    /// A file event: only when a file's text changed (notify also reports a mere touch).
    IfChanged,
}

/// The config at `path` for a reload, or `None` (said in the log) when it must not replace the
/// one in force: the main file invalid, or no accounts left (emptied by mistake, or half
/// written by a tool, it would stop every account; a start with it is refused too). An
/// included file that is refused keeps its accounts of `previous`; said in the log, with its
/// file and line.
fn load_for_reload(path: &Path, previous: &Config, when: Reload) -> Option<Config> {
    let reloaded = match config::load_keeping(path, previous) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(
                file = %e.path.display(),
                error = %e,
                "config reload failed: {}; the previous config stays in force",
                crate::text::error_chain(&e)
            );
            return None;
        }
    };
    if when == Reload::IfChanged
        && reloaded.refused.is_empty()
        && reloaded.config.same_files(previous)
    {
        return None;
    }
    for e in &reloaded.refused {
        tracing::error!(
            file = %e.path.display(),
            error = %e,
            "config reload: {}; the accounts that file had stay as they were",
            crate::text::error_chain(e)
        );
    }
    if reloaded.config.accounts.is_empty() {
        tracing::error!(
            "config reload failed: no accounts in {}; the previous config stays in force",
            path.display()
        );
        return None;
    }
    Some(reloaded.config)
}

/// Reads the config again and applies it; whether it did.
fn reload(
    path: &Path,
    config: &mut Config,
    shared: &mut Arc<Shared>,
    running: &mut HashMap<String, Running>,
    endpoint: &mut Endpoint,
    when: Reload,
) -> bool {
    let began = Instant::now();
    let Some(new) = load_for_reload(path, config, when) else {
        return false;
    };
    systemd::reloading();
    // Global settings changed: every account restarts under the new ones.
    let global_changed = new.state_dir != config.state_dir
        || new.max_parallel != config.max_parallel
        || new.max_parallel_per_server != config.max_parallel_per_server;
    if global_changed {
        *shared = new_shared(&new, shared.shutdown.clone(), shared.metrics.clone());
    }
    let metrics = &shared.metrics;
    metrics.set_accounts(new.accounts.iter().map(|a| a.name.as_str()));
    metrics.set_textfile(new.metrics_textfile.clone());
    metrics.write_textfile();
    rebind(endpoint, new.metrics_listen, metrics);
    let mut kept = 0;
    let mut started: Vec<(Arc<Account>, Option<JoinHandle<()>>)> = Vec::new();
    let mut old: HashMap<String, Running> = std::mem::take(running);
    // An account under a new name on a mailbox whose old name is gone is a rename: it starts
    // once the old name's poll is over (state and lock follow the mailbox).
    let new_names: std::collections::HashSet<&str> =
        new.accounts.iter().map(|a| a.name.as_str()).collect();
    let gone: Vec<String> = old
        .keys()
        .filter(|n| !new_names.contains(n.as_str()))
        .cloned()
        .collect();
    let mut renamed: HashMap<crate::state::Mailbox, Running> = HashMap::new();
    for name in gone {
        if let Some(r) = old.remove(&name) {
            let mailbox = crate::state::Mailbox::of(&r.account);
            if let Some(other) = renamed.insert(mailbox, r) {
                old.insert(other.account.name.clone(), other);
            }
        }
    }
    for a in &new.accounts {
        match old.remove(&a.name) {
            Some(r) if !global_changed && r.account == *a => {
                kept += 1;
                running.insert(a.name.clone(), r);
            }
            Some(r) => {
                tracing::info!(
                    account = a.name,
                    "account changed: restarting it after its current poll"
                );
                r.retire.cancel();
                started.push((a.clone(), Some(r.handle)));
            }
            None => match renamed.remove(&crate::state::Mailbox::of(a)) {
                Some(r) => {
                    tracing::info!(
                        account = a.name,
                        was = r.account.name,
                        "account renamed: it starts after the old name's current poll"
                    );
                    r.retire.cancel();
                    started.push((a.clone(), Some(r.handle)));
                }
                None => {
                    tracing::info!(account = a.name, "account added");
                    started.push((a.clone(), None));
                }
            },
        }
    }
    // Accounts a reload starts are spread like those of a start, over a window for their number.
    let window = scheduler::reload_window(started.len(), new.start_spread);
    for (a, previous) in started {
        start(shared, running, a, previous, window);
    }
    old.extend(renamed.into_values().map(|r| (r.account.name.clone(), r)));
    for (name, r) in old {
        tracing::info!(
            account = name,
            "account removed: it stops after its current poll"
        );
        r.retire.cancel();
    }
    tracing::info!(
        accounts = new.accounts.len(),
        unchanged = kept,
        elapsed_ms = began.elapsed().as_millis() as u64,
        "config reloaded"
    );
    *config = new;
    trim_heap();
    systemd::ready(&status_line(shared, running.len()));
    true
}

/// Polls running in this process: the last one to end hands the memory the polls freed back
/// ([`trim_when_idle`]).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// When [`trim_when_idle`] last trimmed.
static LAST_TRIM: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// [`trim_heap`] once no poll runs, at most every [`TRIM_EVERY`]: hundreds of polls at once
/// (`max_parallel`) leave their buffers' pages scattered through the heap, and at 10,000
/// accounts the idle daemon stayed 15 MB larger after a cycle at 256 than at 16.
fn trim_when_idle() {
    let mut last = LAST_TRIM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_some_and(|t| t.elapsed() < TRIM_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    trim_heap();
}

/// The least time between two trims after polls.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Hands the heap's free pages back to the system after a reload. Reading a config of thousands
/// of accounts frees most of what it allocated (the files' text, the TOML tables, the names seen
/// across files), in chunks between those that stay; glibc's malloc gives back only the top of
/// its heap by itself, so each reload would leave the idle daemon a few megabytes larger.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it works on malloc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts `account`'s task (after `previous`, its old one, has ended); its first poll comes at
/// its phase within `window` (see [`scheduler::phase`]).
fn start(
    shared: &Arc<Shared>,
    running: &mut HashMap<String, Running>,
    account: Arc<Account>,
    previous: Option<JoinHandle<()>>,
    window: Duration,
) {
    let retire = CancellationToken::new();
    let poke = Arc::new(Notify::new());
    let (sh, acc, ret, pk) = (
        shared.clone(),
        account.clone(),
        retire.clone(),
        poke.clone(),
    );
    let first = scheduler::phase(&account.name, window, account.interval);
    let handle = tokio::spawn(async move {
        // Never two polls of one account at once: a changed account waits for its old task.
        if let Some(prev) = previous {
            let _ = prev.await;
        }
        let (name, stop) = (acc.name.clone(), sh.shutdown.clone());
        supervise(&name, &ret.clone(), &stop, move || {
            account_loop(
                sh.clone(),
                acc.clone(),
                ret.clone(),
                pk.clone(),
                // After a panic the schedule starts afresh.
                Schedule::new(acc.interval),
                first,
            )
        })
        .await;
    });
    running.insert(
        account.name.clone(),
        Running {
            account,
            retire,
            poke,
            handle,
        },
    );
}

/// Runs the future `make` builds until it returns. A panic is logged with the account's name and
/// its message, and the future is built and run anew after
/// [`RESTART_BACKOFF`] (doubled for each panic in a row), unless `retire` or `shutdown` is
/// cancelled meanwhile: an account is never silently gone.
async fn supervise<F, Fut>(
    account: &str,
    retire: &CancellationToken,
    shutdown: &CancellationToken,
    mut make: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut in_a_row = 0u32;
    loop {
        let started = Instant::now();
        // Boxed, so that the task holds the account's future once, not a copy per layer.
        let Err(panic) = catch_panic(Box::pin(make())).await else {
            return;
        };
        if started.elapsed() > scheduler::BACKOFF_CAP {
            in_a_row = 0;
        }
        let wait = RESTART_BACKOFF
            .saturating_mul(1 << in_a_row.min(16))
            .min(scheduler::BACKOFF_CAP);
        in_a_row = in_a_row.saturating_add(1);
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        tracing::error!(
            account,
            panic = message,
            restart_in_s = wait.as_secs(),
            "account {account}: its task panicked (a bug; please report it): {message}; \
             restarting it in {}s",
            wait.as_secs()
        );
        tokio::select! {
            _ = retire.cancelled() => return,
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Runs `fut` to its end within the calling task; a panic in it comes back as its payload (the
/// future dropped) instead of unwinding the task. The account's one task catches its own
/// panics this way: a task of its own per run would cost every idle account a second task.
async fn catch_panic<F: std::future::Future<Output = ()>>(
    fut: F,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        move |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        },
    )
    .await
}

/// One account's life: wait, poll, reschedule, until retired or shut down.
async fn account_loop(
    shared: Arc<Shared>,
    account: Arc<Account>,
    retire: CancellationToken,
    poke: Arc<Notify>,
    schedule: Schedule,
    first: Duration,
) {
    let told: Mutex<Told> = Mutex::new(Told::default());
    // What a poll's result changed, said once the next poll is scheduled, with when and why.
    let pending: Arc<Mutex<Option<Pending>>> = Arc::default();
    let said = (pending.clone(), account.name.clone());
    // The LOGIN-DELAY last said to raise the interval: said once, not at every poll.
    let told_delay: Mutex<Option<Duration>> = Mutex::new(None);
    let (metrics, name) = (shared.metrics.clone(), account.name.clone());
    let timing = Timing {
        shutdown: shared.shutdown.clone(),
        retire,
        poke,
        permits: shared.permits.clone(),
        server_permits: shared.servers.of(&account.host, account.port),
        // Set once the next poll is scheduled, so the textfile has it too.
        next_poll: Box::new(move |at, why| {
            metrics.next_poll(&name, at);
            metrics.write_textfile();
            let said_now = lock(&said.0).take();
            if let Some(p) = said_now {
                say(&said.1, p, at, why);
            }
        }),
        seed: account
            .name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b)),
        status: Some((shared.state_dir.clone(), account.name.clone())),
        first,
    };
    let (account, shared, told, told_delay, pending) =
        (&account, &shared, &told, &told_delay, &pending);
    let poll = move || async move {
        let in_flight = shared.metrics.poll_started();
        let started = Instant::now();
        let (rep, r) = fetch::poll(account, &shared.state_dir, &shared.shutdown, None).await;
        drop(in_flight);
        let result = match &r {
            Ok(()) if rep.partial() => PollResult::Partial,
            Ok(()) => PollResult::Ok,
            Err(_) => PollResult::Failed,
        };
        // Shutdown stopped it before its transfer began: not a poll to count.
        if rep != crate::report::Report::stopped_before_transfer() {
            let ended = std::time::SystemTime::now();
            shared
                .metrics
                .poll_done(&account.name, &rep, result, started.elapsed(), ended);
        }
        let r = r.map(|()| rep);
        if let Ok(mut s) = shared.summary.lock() {
            let ok = r.as_ref().is_ok_and(|rep| !rep.partial());
            s.insert(account.name.clone(), (std::time::SystemTime::now(), ok));
        }
        *lock(pending) = tell(told, &r);
        match &r {
            Ok(rep) => {
                if let Some(d) = rep.login_delay {
                    tell_login_delay(account, d, told_delay);
                }
                let login_delay = rep.login_delay;
                // Mail left for now backs off like any transient failure.
                if rep.partial() {
                    Outcome::Partial { login_delay }
                } else {
                    Outcome::Ok { login_delay }
                }
            }
            Err(e) => Outcome::Failed { code: code_of(e) },
        }
    };
    if run_schedule(&timing, schedule, poll).await == Next::Suspended {
        tracing::error!(
            account = account.name,
            "the server reported a permanent failure ([SYS/PERM]); polling stops until the account's config changes"
        );
    }
}

/// Logs what a poll's result changed: a failure when it begins or changes (a login refused at
/// the error level, the rest as warnings), a reminder at most hourly while it lasts, and its
/// end. A poll that delivered nothing because every delivery failed for now counts as failing.
fn tell(told: &Mutex<Told>, r: &Result<crate::fetch::Report, FetchError>) -> Option<Pending> {
    let failure = match r {
        Ok(rep) if rep.failed > 0 => Some(format!(
            "{} message{} not delivered for now: {}",
            rep.failed,
            if rep.failed == 1 { "" } else { "s" },
            rep.delivery_error
                .as_deref()
                .unwrap_or("(no reason recorded)")
        )),
        Ok(_) => None,
        Err(e) => Some(format!("poll failed: {}", crate::text::error_chain(e))),
    };
    let auth = matches!(r, Err(e) if is_auth(e));
    let say = lock(told).after(std::time::Instant::now(), failure.as_deref());
    (say != Say::Nothing).then_some(Pending { say, auth })
}

/// What a poll changed, waiting to be said with the next poll's time.
struct Pending {
    say: Say,
    /// The server refused the credentials.
    auth: bool,
}

/// Logs `p` for `account`, with when the next poll comes and why (`at` is `None` when polling
/// stopped).
fn say(account: &str, p: Pending, at: Option<std::time::SystemTime>, why: Option<Why>) {
    let next = match at {
        Some(at) => {
            let wait = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            let wait = humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)));
            match why {
                Some(Why::Backoff) => format!("retrying in {wait}"),
                Some(Why::Auth) => format!("trying again in {wait}"),
                Some(Why::LoginDelay) => format!("next poll in {wait}, the server's LOGIN-DELAY"),
                _ => format!("next poll in {wait}"),
            }
        }
        None => "polling stops until the account's config changes".into(),
    };
    match p.say {
        Say::Nothing => {}
        Say::Failing(text) if p.auth => tracing::error!(
            account,
            error = text,
            "{text}; the credentials need attention ({next})"
        ),
        Say::Failing(text) => tracing::warn!(account, error = text, "{text} ({next})"),
        Say::Still { text, polls, since } => tracing::warn!(
            account,
            error = text,
            polls,
            "still failing after {polls} polls over {}: {text} ({next})",
            humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
        ),
        Say::Recovered { polls, last } => tracing::info!(
            account,
            polls,
            "recovered after {polls} failed poll{} (last: {last})",
            if polls == 1 { "" } else { "s" }
        ),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Says once (and again only when it changes) that the server's LOGIN-DELAY raises the
/// account's interval, or that it was capped at [`scheduler::MAX_LOGIN_DELAY`].
fn tell_login_delay(account: &Account, delay: Duration, told: &Mutex<Option<Duration>>) {
    let mut told = told
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *told == Some(delay) {
        return;
    }
    *told = Some(delay);
    let obeyed = delay.min(scheduler::MAX_LOGIN_DELAY);
    if delay > scheduler::MAX_LOGIN_DELAY {
        tracing::warn!(
            account = account.name,
            login_delay_s = delay.as_secs(),
            "account {}: the server asks for {}s between logins (LOGIN-DELAY); capped at {}s, \
             the interval is now {}s",
            account.name,
            delay.as_secs(),
            obeyed.as_secs(),
            obeyed.max(account.interval).as_secs()
        );
    } else if obeyed > account.interval {
        tracing::info!(
            account = account.name,
            login_delay_s = delay.as_secs(),
            "account {}: the server asks for {}s between logins (LOGIN-DELAY); the interval is \
             raised from {}s to {}s",
            account.name,
            delay.as_secs(),
            account.interval.as_secs(),
            obeyed.as_secs()
        );
    }
}

/// What an account's schedule waits on.
struct Timing {
    shutdown: CancellationToken,
    retire: CancellationToken,
    poke: Arc<Notify>,
    permits: Arc<Semaphore>,
    /// The account's server's: taken before `permits`.
    server_permits: Arc<Semaphore>,
    seed: u64,
    /// When the first poll comes, from the start.
    first: Duration,
    /// Told when the next poll is due (`None`: polling suspended).
    next_poll: Box<dyn Fn(Option<std::time::SystemTime>, Option<Why>) + Send + Sync>,
    /// The state directory and account whose status file learns each next poll and its reason.
    status: Option<(PathBuf, String)>,
}

/// Waits and polls on `schedule` until retired, shut down, or suspended (then it waits for
/// retirement or shutdown and returns `Next::Suspended`). The first poll comes after
/// `t.first`; each poll holds one of the shared permits.
async fn run_schedule<F, Fut>(t: &Timing, mut schedule: Schedule, mut poll: F) -> Next
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let mut next = Instant::now() + t.first;
    (t.next_poll)(Some(wall_clock(next)), None);
    loop {
        tokio::select! {
            biased;
            _ = t.retire.cancelled() => return Next::After(Duration::ZERO),
            _ = t.shutdown.cancelled() => return Next::After(Duration::ZERO),
            _ = tokio::time::sleep_until(next) => {}
            _ = t.poke.notified() => {}
        }
        let permit = tokio::select! {
            biased;
            _ = t.retire.cancelled() => return Next::After(Duration::ZERO),
            _ = t.shutdown.cancelled() => return Next::After(Duration::ZERO),
            p = async {
                let server = t.server_permits.clone().acquire_owned().await;
                let global = t.permits.clone().acquire_owned().await;
                (server, global)
            } => p,
        };
        // Boxed: a poll's future is large (the session, the delivery, the state), and an idle
        // account's task should hold only its wait.
        RUNNING.fetch_add(1, Ordering::Relaxed);
        let outcome = Box::pin(poll()).await;
        drop(permit);
        if RUNNING.fetch_sub(1, Ordering::Relaxed) == 1 {
            trim_when_idle();
        }
        let (after, why) = schedule.next_why(outcome);
        match after {
            Next::After(d) => {
                let d = d.saturating_add(scheduler::jitter(d, scheduler::random(t.seed)));
                tracing::debug!(next_in_s = d.as_secs(), why = why.as_str(), "scheduled");
                // `Instant + Duration` panics on overflow; `d` is at most MAX_WAIT plus jitter,
                // far from it, and checked all the same.
                let now = Instant::now();
                next = now
                    .checked_add(d)
                    .or_else(|| now.checked_add(scheduler::MAX_WAIT))
                    .unwrap_or(now);
                (t.next_poll)(Some(wall_clock(next)), Some(why));
                if let Some((dir, account)) = &t.status {
                    crate::status::record_next(dir, account, Some(wall_clock(next)), why);
                }
            }
            Next::Suspended => {
                (t.next_poll)(None, Some(why));
                if let Some((dir, account)) = &t.status {
                    crate::status::record_next(dir, account, None, why);
                }
                tokio::select! {
                    _ = t.retire.cancelled() => {}
                    _ = t.shutdown.cancelled() => {}
                }
                return Next::Suspended;
            }
        }
    }
}

/// The wall-clock time of `at`, a time on the monotonic clock not in the past.
fn wall_clock(at: Instant) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    now.checked_add(at.saturating_duration_since(Instant::now()))
        .unwrap_or(now)
}

fn code_of(e: &FetchError) -> Option<crate::pop3::ResponseCode> {
    match e {
        FetchError::Session(s) => s.code(),
        _ => None,
    }
}

fn is_auth(e: &FetchError) -> bool {
    matches!(e, FetchError::Session(s) if s.code() == Some(crate::pop3::ResponseCode::Auth)
        || matches!(s, crate::session::SessionError::Auth(_)))
}

fn status_line(shared: &Shared, accounts: usize) -> String {
    let summary = shared.summary.lock().map(|s| s.clone()).unwrap_or_default();
    let failing = summary.values().filter(|(_, ok)| !ok).count();
    let last = summary
        .iter()
        .max_by_key(|(_, (at, _))| *at)
        .map(|(name, (at, ok))| {
            format!(
                "{name} {} at {}",
                if *ok { "ok" } else { "failed" },
                crate::deliver::rfc5322_date(*at)
            )
        })
        .unwrap_or_else(|| "none yet".into());
    format!("{accounts} accounts; last poll: {last}; {failing} failing")
}

#[cfg(test)]
mod tests;
