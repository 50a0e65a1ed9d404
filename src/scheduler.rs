//! When an account is polled next: its interval, capped exponential backoff after failures, the
//! floor a server sets with `LOGIN-DELAY`, and what its response codes mean for the schedule.
//! Pure logic: no clock, no tasks; [`crate::daemon`] sleeps for what [`Schedule::next`] says.

use std::time::Duration;

use crate::pop3::ResponseCode;

/// Longest wait after repeated transient failures (unless the interval itself is longer).
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);
/// Wait after the server rejected the credentials: they will not fix themselves soon, and
/// retrying fast can get an account locked.
pub const AUTH_BACKOFF: Duration = Duration::from_secs(3600);
/// Largest random spread added to a wait, so accounts do not all fire together.
pub const MAX_JITTER: Duration = Duration::from_secs(30);
/// Longest `LOGIN-DELAY` obeyed. RFC 2449 §6.5 sets no limit, but a server asking for more than
/// a day between logins is broken or hostile (Courier asks for 10 s, providers for minutes);
/// obeying it would silence the account for good.
pub const MAX_LOGIN_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Longest wait [`Schedule::next`] ever returns: far beyond any sane interval, and far from the
/// overflow of `Instant + Duration` (which panics).
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// How a poll ended, as far as scheduling cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok {
        /// The server's `LOGIN-DELAY`, if it announced one.
        login_delay: Option<Duration>,
    },
    /// The poll finished but a delivery failed for now (an MDA's exit 75, an SMTP 4xx): the mail
    /// waits on the server, so the account backs off as after any transient failure rather than
    /// knocking again at full pace.
    Partial {
        /// The server's `LOGIN-DELAY`, if it announced one.
        login_delay: Option<Duration>,
    },
    Failed {
        /// The server's response code, if the failure carried one.
        code: Option<ResponseCode>,
    },
}

/// What to do after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Poll again after this long (before jitter).
    After(Duration),
    /// Do not poll until the account's config changes (`[SYS/PERM]`).
    Suspended,
}

/// Why the next poll comes when it does; `popfetch status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The account's `interval`.
    Interval,
    /// The server's `LOGIN-DELAY`, longer than the wait would be otherwise.
    LoginDelay,
    /// Exponential backoff after failures in a row.
    Backoff,
    /// The long wait after the server refused the credentials (`[AUTH]`).
    Auth,
    /// No poll until the account's config changes (`[SYS/PERM]`).
    Suspended,
}

impl Why {
    /// The word the status file and `popfetch status` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Interval => "interval",
            Why::LoginDelay => "login-delay",
            Why::Backoff => "backoff",
            Why::Auth => "auth",
            Why::Suspended => "suspended",
        }
    }
}

/// One account's schedule state; kept across reloads when the account did not change.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    failures: u32,
    /// The server's LOGIN-DELAY: the least time between logins.
    floor: Duration,
}

impl Schedule {
    pub fn new(interval: Duration) -> Schedule {
        Schedule {
            interval,
            failures: 0,
            floor: Duration::ZERO,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The server's LOGIN-DELAY as obeyed (at most [`MAX_LOGIN_DELAY`]).
    pub fn floor(&self) -> Duration {
        self.floor
    }

    /// The wait after a poll that ended with `outcome`, at most [`MAX_WAIT`].
    pub fn next(&mut self, outcome: Outcome) -> Next {
        self.next_why(outcome).0
    }

    /// [`Schedule::next`], and why the wait is what it is.
    pub fn next_why(&mut self, outcome: Outcome) -> (Next, Why) {
        match self.next_uncapped(outcome) {
            (Next::After(d), why) => (Next::After(d.min(MAX_WAIT)), why),
            (Next::Suspended, why) => (Next::Suspended, why),
        }
    }

    fn next_uncapped(&mut self, outcome: Outcome) -> (Next, Why) {
        // The LOGIN-DELAY floor, when it is what decides the wait.
        let floored = |d: Duration, why: Why, floor: Duration| {
            if floor > d {
                (Next::After(floor), Why::LoginDelay)
            } else {
                (Next::After(d), why)
            }
        };
        match outcome {
            Outcome::Ok { login_delay } => {
                self.failures = 0;
                self.obey(login_delay);
                floored(self.interval, Why::Interval, self.floor)
            }
            Outcome::Partial { login_delay } => {
                self.obey(login_delay);
                self.failures = self.failures.saturating_add(1);
                floored(self.backoff(), Why::Backoff, self.floor)
            }
            Outcome::Failed {
                code: Some(ResponseCode::SysPerm),
            } => (Next::Suspended, Why::Suspended),
            Outcome::Failed {
                code: Some(ResponseCode::Auth),
            } => {
                self.failures = self.failures.saturating_add(1);
                floored(self.interval.max(AUTH_BACKOFF), Why::Auth, self.floor)
            }
            Outcome::Failed { .. } => {
                self.failures = self.failures.saturating_add(1);
                floored(self.backoff(), Why::Backoff, self.floor)
            }
        }
    }

    fn obey(&mut self, login_delay: Option<Duration>) {
        if let Some(d) = login_delay {
            self.floor = d.min(MAX_LOGIN_DELAY);
        }
    }

    /// `interval × 2^failures`, at most `max(interval, BACKOFF_CAP)`.
    fn backoff(&self) -> Duration {
        let cap = self.interval.max(BACKOFF_CAP);
        let factor = 1u32 << self.failures.min(20);
        self.interval.saturating_mul(factor).min(cap)
    }
}

/// A random spread for a wait of `d`: up to a tenth of it, at most [`MAX_JITTER`].
pub fn jitter(d: Duration, random: u64) -> Duration {
    let span = (d / 10).min(MAX_JITTER).as_millis() as u64;
    if span == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(random % span)
}

/// What each account adds to the window its first polls are spread over when the daemon starts
/// (or a reload starts accounts): 10,000 accounts do not all connect in the first second.
pub const START_SLOT: Duration = Duration::from_millis(250);
/// The longest start window unless `start_spread` says otherwise.
pub const START_SPREAD_CAP: Duration = Duration::from_secs(600);

/// The window the first polls of a daemon's `accounts` accounts are spread over when it
/// starts: `start_spread` when set, else [`START_SLOT`] each, at most [`START_SPREAD_CAP`].
pub fn start_window(accounts: usize, start_spread: Option<Duration>) -> Duration {
    start_spread.unwrap_or_else(|| slots(accounts).min(START_SPREAD_CAP))
}

/// The window for the first polls of the `accounts` accounts a reload adds or changes:
/// [`START_SLOT`] each, at most `start_spread` (else [`START_SPREAD_CAP`]), so that an edited
/// account polls within a moment rather than somewhere in the whole start window.
pub fn reload_window(accounts: usize, start_spread: Option<Duration>) -> Duration {
    slots(accounts).min(start_spread.unwrap_or(START_SPREAD_CAP))
}

fn slots(accounts: usize) -> Duration {
    START_SLOT.saturating_mul(u32::try_from(accounts).unwrap_or(u32::MAX))
}

/// Where in a start window of `window` (at most its `interval`) the account `name` polls
/// first: a point fixed by its name, so a restart keeps each account's phase and accounts
/// spread evenly whatever their names.
pub fn phase(name: &str, window: Duration, interval: Duration) -> Duration {
    let window = window.min(interval).as_millis() as u64;
    if window == 0 {
        return Duration::ZERO;
    }
    // FNV-1a, then splitmix64's finaliser: names that differ in one character land apart.
    let mut x = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    Duration::from_millis(x % window)
}

/// A small non-cryptographic random number (xorshift over the clock and a per-caller seed).
pub fn random(seed: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn failed(code: Option<ResponseCode>) -> Outcome {
        Outcome::Failed { code }
    }

    #[test]
    fn success_keeps_the_interval_and_resets_backoff() {
        let mut s = Schedule::new(5 * MIN);
        assert_eq!(
            s.next(Outcome::Ok { login_delay: None }),
            Next::After(5 * MIN)
        );
        assert_eq!(s.next(failed(None)), Next::After(10 * MIN));
        assert_eq!(s.next(failed(None)), Next::After(20 * MIN));
        assert_eq!(
            s.next(failed(Some(ResponseCode::InUse))),
            Next::After(40 * MIN)
        );
        assert_eq!(
            s.next(failed(Some(ResponseCode::SysTemp))),
            Next::After(60 * MIN)
        );
        assert_eq!(s.next(failed(None)), Next::After(60 * MIN), "capped");
        assert_eq!(s.failures(), 5);
        assert_eq!(
            s.next(Outcome::Ok { login_delay: None }),
            Next::After(5 * MIN)
        );
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn a_long_interval_is_never_shortened_by_the_cap() {
        let mut s = Schedule::new(3 * 60 * MIN);
        assert_eq!(s.next(failed(None)), Next::After(3 * 60 * MIN));
    }

    #[test]
    fn login_delay_sets_a_floor() {
        let mut s = Schedule::new(MIN);
        let ok = Outcome::Ok {
            login_delay: Some(15 * MIN),
        };
        assert_eq!(s.next(ok), Next::After(15 * MIN));
        // The floor holds for failures too, such as [LOGIN-DELAY] itself.
        assert_eq!(
            s.next(failed(Some(ResponseCode::LoginDelay))),
            Next::After(15 * MIN)
        );
    }

    #[test]
    fn a_huge_login_delay_is_capped_and_every_wait_is_bounded() {
        let mut s = Schedule::new(MIN);
        let ok = Outcome::Ok {
            login_delay: Some(Duration::from_secs(u64::MAX)),
        };
        assert_eq!(s.next(ok), Next::After(MAX_LOGIN_DELAY));
        assert_eq!(s.floor(), MAX_LOGIN_DELAY);
        let mut s = Schedule::new(Duration::MAX);
        assert_eq!(s.next(failed(None)), Next::After(MAX_WAIT));
        for _ in 0..40 {
            assert!(matches!(s.next(failed(None)), Next::After(d) if d <= MAX_WAIT));
        }
        let d = MAX_WAIT;
        assert!(d.checked_add(jitter(d, u64::MAX)).is_some());
    }

    #[test]
    fn auth_backs_off_long_and_sys_perm_suspends() {
        let mut s = Schedule::new(5 * MIN);
        assert_eq!(
            s.next(failed(Some(ResponseCode::Auth))),
            Next::After(AUTH_BACKOFF)
        );
        assert_eq!(s.next(failed(Some(ResponseCode::SysPerm))), Next::Suspended);
    }

    #[test]
    fn a_poll_that_left_mail_for_now_backs_off_like_a_failure() {
        let mut s = Schedule::new(5 * MIN);
        let partial = Outcome::Partial { login_delay: None };
        assert_eq!(s.next_why(partial), (Next::After(10 * MIN), Why::Backoff));
        assert_eq!(s.next_why(partial), (Next::After(20 * MIN), Why::Backoff));
        assert_eq!(s.failures(), 2);
        // A failure after it continues the same backoff; a clean poll ends it.
        assert_eq!(
            s.next_why(failed(None)),
            (Next::After(40 * MIN), Why::Backoff)
        );
        assert_eq!(
            s.next_why(Outcome::Ok { login_delay: None }),
            (Next::After(5 * MIN), Why::Interval)
        );
        // Its LOGIN-DELAY is obeyed all the same.
        let partial = Outcome::Partial {
            login_delay: Some(60 * MIN),
        };
        assert_eq!(
            s.next_why(partial),
            (Next::After(60 * MIN), Why::LoginDelay)
        );
        assert_eq!(s.floor(), 60 * MIN);
    }

    #[test]
    fn each_wait_says_why() {
        let mut s = Schedule::new(5 * MIN);
        let ok = Outcome::Ok { login_delay: None };
        assert_eq!(s.next_why(ok).1, Why::Interval);
        assert_eq!(s.next_why(failed(None)).1, Why::Backoff);
        assert_eq!(
            s.next_why(failed(Some(ResponseCode::Auth))),
            (Next::After(AUTH_BACKOFF), Why::Auth)
        );
        assert_eq!(
            s.next_why(failed(Some(ResponseCode::SysPerm))),
            (Next::Suspended, Why::Suspended)
        );
        let slow = Outcome::Ok {
            login_delay: Some(2 * 60 * MIN),
        };
        assert_eq!(
            s.next_why(slow),
            (Next::After(2 * 60 * MIN), Why::LoginDelay)
        );
        // The floor outlasts the [AUTH] wait and the backoff too, and then it is the reason.
        assert_eq!(
            s.next_why(failed(Some(ResponseCode::Auth))).1,
            Why::LoginDelay
        );
        assert_eq!(s.next_why(failed(None)).1, Why::LoginDelay);
        let words: Vec<&str> = [
            Why::Interval,
            Why::LoginDelay,
            Why::Backoff,
            Why::Auth,
            Why::Suspended,
        ]
        .map(Why::as_str)
        .to_vec();
        assert_eq!(
            words,
            ["interval", "login-delay", "backoff", "auth", "suspended"]
        );
    }

    #[test]
    fn first_polls_spread_over_the_window_at_fixed_phases() {
        let window = start_window(1000, None);
        assert_eq!(window, Duration::from_secs(250));
        assert_eq!(start_window(100_000, None), START_SPREAD_CAP);
        assert_eq!(start_window(100_000, Some(MIN)), MIN);
        // A `start_spread` is the start's window whatever the number of accounts, and the
        // longest window of a reload's.
        assert_eq!(start_window(16, Some(MIN)), MIN);
        assert_eq!(reload_window(16, Some(MIN)), Duration::from_secs(4));
        assert_eq!(reload_window(1, None), START_SLOT);
        assert_eq!(reload_window(100_000, Some(MIN)), MIN);
        assert_eq!(reload_window(100_000, None), START_SPREAD_CAP);
        let phases: Vec<Duration> = (0..1000)
            .map(|i| phase(&format!("user{i}"), window, Duration::from_secs(3600)))
            .collect();
        assert!(phases.iter().all(|p| *p < window));
        // Evenly: every tenth of the window holds roughly a tenth of the accounts.
        for tenth in 0..10u32 {
            let (lo, hi) = (window * tenth / 10, window * (tenth + 1) / 10);
            let n = phases.iter().filter(|p| **p >= lo && **p < hi).count();
            assert!((60..=140).contains(&n), "tenth {tenth}: {n}");
        }
        assert_eq!(phase("alice", window, MIN), phase("alice", window, MIN));
        assert!(phase("alice", window, MIN) < MIN, "at most the interval");
        assert_eq!(phase("alice", Duration::ZERO, MIN), Duration::ZERO);
    }

    #[test]
    fn jitter_is_bounded() {
        for r in [0, 1, 12345, u64::MAX] {
            assert!(jitter(5 * MIN, r) < Duration::from_secs(30));
            assert!(jitter(Duration::from_secs(10), r) < Duration::from_secs(1));
        }
        assert_eq!(jitter(Duration::from_millis(5), 7), Duration::ZERO);
        assert_ne!(random(1), random(2));
    }
}
