//! The schedule under paused tokio time: pace, backoff, LOGIN-DELAY, SYS/PERM, the parallel
//! limit, pokes and retirement, with polls replaced by closures that record when they ran.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Timing, run_schedule};
use crate::pop3::ResponseCode;
use crate::scheduler::{BACKOFF_CAP, Next, Outcome, Schedule};

fn timing(permits: &Arc<Semaphore>, seed: u64) -> Timing {
    Timing {
        shutdown: CancellationToken::new(),
        retire: CancellationToken::new(),
        poke: Arc::new(Notify::new()),
        permits: permits.clone(),
        server_permits: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        seed,
        first: Duration::from_millis(seed % 2000),
        next_poll: Box::new(|_, _| {}),
        status: None,
    }
}

const S: Duration = Duration::from_secs(1);

/// Runs a schedule whose polls take `work` and end with `outcome(n)`, for `span` of paused time;
/// returns the instants (from the start) at which polls began.
async fn record(
    interval: Duration,
    span: Duration,
    work: Duration,
    outcome: impl Fn(usize) -> Outcome,
) -> Vec<Duration> {
    let start = Instant::now();
    let permits = Arc::new(Semaphore::new(8));
    let t = timing(&permits, 7);
    let log = Arc::new(Mutex::new(Vec::new()));
    let shutdown = t.shutdown.clone();
    let l = log.clone();
    let run = run_schedule(&t, Schedule::new(interval), move || {
        let l = l.clone();
        let n = {
            let mut g = l.lock().unwrap();
            g.push(start.elapsed());
            g.len() - 1
        };
        let o = outcome(n);
        async move {
            tokio::time::sleep(work).await;
            o
        }
    });
    tokio::select! {
        _ = run => {}
        _ = async { tokio::time::sleep(span).await; shutdown.cancel(); std::future::pending::<()>().await } => {}
    }
    log.lock().unwrap().clone()
}

fn gaps(v: &[Duration]) -> Vec<Duration> {
    v.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn polls_keep_their_interval_with_bounded_jitter() {
    let starts = record(60 * S, 600 * S, S, |_| Outcome::Ok { login_delay: None }).await;
    assert!(
        starts[0] < 2 * S,
        "first poll within the start spread: {starts:?}"
    );
    assert!((9..=10).contains(&starts.len()), "{starts:?}");
    for g in gaps(&starts) {
        // interval + poll time + jitter (at most a tenth of the interval).
        assert!(g >= 61 * S && g <= 67 * S, "{g:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_to_the_cap_and_recover() {
    let starts = record(60 * S, 6 * 3600 * S, Duration::ZERO, |n| {
        if n < 7 {
            Outcome::Failed {
                code: Some(ResponseCode::InUse),
            }
        } else {
            Outcome::Ok { login_delay: None }
        }
    })
    .await;
    let g = gaps(&starts);
    let mins: Vec<u64> = g.iter().take(8).map(|d| d.as_secs() / 60).collect();
    // 2, 4, 8, 16, 32 minutes, then the one-hour cap, then back to the interval.
    assert_eq!(&mins[..5], &[2, 4, 8, 16, 32], "{g:?}");
    assert_eq!(g[5].as_secs() / 60, BACKOFF_CAP.as_secs() / 60, "{g:?}");
    assert_eq!(g[6].as_secs() / 60, BACKOFF_CAP.as_secs() / 60, "{g:?}");
    assert_eq!(
        g[7].as_secs() / 60,
        1,
        "after a success the interval again: {g:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn mail_left_for_now_backs_off_and_a_clean_poll_recovers() {
    let starts = record(60 * S, 3600 * S, Duration::ZERO, |n| {
        if n < 3 {
            Outcome::Partial { login_delay: None }
        } else {
            Outcome::Ok { login_delay: None }
        }
    })
    .await;
    let mins: Vec<u64> = gaps(&starts)
        .iter()
        .take(4)
        .map(|d| d.as_secs() / 60)
        .collect();
    assert_eq!(mins, [2, 4, 8, 1], "{starts:?}");
}

#[tokio::test(start_paused = true)]
async fn login_delay_is_a_floor_and_sys_perm_suspends() {
    let starts = record(10 * S, 3600 * S, Duration::ZERO, |_| Outcome::Ok {
        login_delay: Some(300 * S),
    })
    .await;
    for g in gaps(&starts) {
        assert!(g >= 300 * S, "{g:?}");
    }
    let starts = record(10 * S, 3600 * S, Duration::ZERO, |_| Outcome::Failed {
        code: Some(ResponseCode::SysPerm),
    })
    .await;
    assert_eq!(starts.len(), 1, "suspended after [SYS/PERM]");
}

#[tokio::test(start_paused = true)]
async fn max_parallel_bounds_polls_across_accounts_and_pokes_poll_now() {
    let permits = Arc::new(Semaphore::new(2));
    let running = Arc::new(Mutex::new((0usize, 0usize))); // (now, most)
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let pokes: Vec<Arc<Notify>> = (0..5).map(|_| Arc::new(Notify::new())).collect();
    let count = Arc::new(Mutex::new(0usize));
    for (i, poke) in pokes.iter().enumerate() {
        let mut t = timing(&permits, i as u64);
        t.shutdown = shutdown.clone();
        t.poke = poke.clone();
        let running = running.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            run_schedule(&t, Schedule::new(3600 * S), move || {
                let running = running.clone();
                let count = count.clone();
                async move {
                    {
                        let mut r = running.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.1.max(r.0);
                    }
                    tokio::time::sleep(10 * S).await;
                    running.lock().unwrap().0 -= 1;
                    *count.lock().unwrap() += 1;
                    Outcome::Ok { login_delay: None }
                }
            })
            .await
        }));
    }
    tokio::time::sleep(60 * S).await;
    assert_eq!(
        *count.lock().unwrap(),
        5,
        "each account polled once at start"
    );
    assert_eq!(
        running.lock().unwrap().1,
        2,
        "never more than max_parallel at once"
    );
    // A poke polls at once, long before the hour is up.
    pokes[3].notify_one();
    tokio::time::sleep(11 * S).await;
    assert_eq!(*count.lock().unwrap(), 6);
    shutdown.cancel();
    for t in tasks {
        assert_eq!(t.await.unwrap(), Next::After(Duration::ZERO));
    }
}

/// Runs `supervise` over a task that panics on its first `panics` runs and then returns;
/// gives the instants (from the start) at which each run began.
async fn supervised(panics: usize, retire: &CancellationToken) -> Vec<Duration> {
    let start = Instant::now();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let r = runs.clone();
    super::supervise("alice", retire, &CancellationToken::new(), move || {
        let r = r.clone();
        async move {
            let n = {
                let mut g = r.lock().unwrap();
                g.push(start.elapsed());
                g.len()
            };
            tokio::time::sleep(S).await;
            if n <= panics {
                panic!("run {n} broke");
            }
        }
    })
    .await;
    runs.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_panicking_account_task_is_restarted_with_backoff() {
    let runs = supervised(3, &CancellationToken::new()).await;
    assert_eq!(runs.len(), 4, "restarted after each panic: {runs:?}");
    // Each run takes 1 s; the waits double from RESTART_BACKOFF: no spinning.
    let waits: Vec<Duration> = gaps(&runs).into_iter().map(|g| g - S).collect();
    assert_eq!(
        waits,
        vec![
            super::RESTART_BACKOFF,
            2 * super::RESTART_BACKOFF,
            4 * super::RESTART_BACKOFF
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_retired_account_is_not_restarted_after_a_panic() {
    let retire = CancellationToken::new();
    let r = retire.clone();
    tokio::spawn(async move {
        tokio::time::sleep(3 * S).await;
        r.cancel();
    });
    let runs = supervised(usize::MAX, &retire).await;
    assert_eq!(runs, vec![Duration::ZERO], "stopped during the backoff");
}

#[tokio::test(start_paused = true)]
async fn the_next_poll_is_told_at_start_after_each_poll_and_at_suspension() {
    let permits = Arc::new(Semaphore::new(1));
    let told = Arc::new(Mutex::new(Vec::new()));
    let mut t = timing(&permits, 3);
    let tl = told.clone();
    // How far ahead each told time was when it was told (None: suspended).
    t.next_poll = Box::new(move |at, _| {
        let ahead = at.map(|at| {
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
        });
        tl.lock().unwrap().push(ahead);
    });
    let polls = Arc::new(Mutex::new(0));
    let p = polls.clone();
    let next = run_schedule(&t, Schedule::new(60 * S), move || {
        let n = {
            let mut g = p.lock().unwrap();
            *g += 1;
            *g
        };
        async move {
            if n < 3 {
                Outcome::Ok { login_delay: None }
            } else {
                Outcome::Failed {
                    code: Some(ResponseCode::SysPerm),
                }
            }
        }
    });
    let shutdown = t.shutdown.clone();
    tokio::select! {
        n = next => panic!("ended by itself: {n:?}"),
        _ = tokio::time::sleep(3600 * S) => shutdown.cancel(),
    }
    let told = told.lock().unwrap().clone();
    assert_eq!(told.len(), 4, "{told:?}");
    assert!(
        told[0].unwrap() <= 2 * S,
        "within the start spread: {told:?}"
    );
    for ahead in &told[1..3] {
        let ahead = ahead.unwrap();
        // The interval plus jitter, told right after the poll.
        assert!(ahead >= 59 * S && ahead <= 67 * S, "{told:?}");
    }
    assert_eq!(told[3], None, "suspended: no next poll");
}

/// An idle account costs its task and what its wait holds: the poll's future (the session, the
/// delivery, the state, tens of kilobytes) is boxed while a poll runs, never part of the task.
/// At 10,000 accounts in one daemon, every kilobyte here is 10 MB.
#[tokio::test]
async fn an_idle_accounts_future_is_small() {
    let cfg = crate::config::parse(
        std::path::Path::new("/x/config.toml"),
        "state_dir = \"/x/state\"\n[[account]]\nname = \"a\"\nhost = \"h\"\nuser = \"u\"\n\
         password_file = \"p\"\ndeliver = { maildir = \"/m\" }\n",
    )
    .unwrap();
    let account = cfg.accounts[0].clone();
    let shared = super::new_shared(
        &cfg,
        CancellationToken::new(),
        Arc::new(crate::metrics::Metrics::new()),
    );
    let idle = super::account_loop(
        shared,
        account.clone(),
        CancellationToken::new(),
        Arc::new(Notify::new()),
        Schedule::new(account.interval),
        Duration::from_secs(3600),
    );
    let size = std::mem::size_of_val(&idle);
    // 912 bytes when written (56,784 with the poll inline).
    assert!(size <= 2048, "an idle account's future takes {size} bytes");
}
