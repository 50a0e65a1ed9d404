//! What the log has said of an account's trouble, so that a failure repeating at every poll is
//! said once when it begins or changes, then reminded at most every [`REMINDER`], and its end is
//! said once too. Pure: the caller passes the time.

use std::time::{Duration, Instant};

/// Least time between two lines about the same failure.
pub const REMINDER: Duration = Duration::from_secs(3600);

/// What to log after a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    Nothing,
    /// A failure began, or is not the one said last.
    Failing(String),
    /// The same failure, still: `polls` in a row since it was first said, at `since`.
    Still {
        text: String,
        polls: u32,
        since: Instant,
    },
    /// The trouble ended after `polls` polls; `last` was the failure said last.
    Recovered {
        polls: u32,
        last: String,
    },
}

/// The failure said last, when, and since when it lasts.
#[derive(Debug, Default)]
pub struct Told {
    last: Option<(String, Instant, Instant)>,
    polls: u32,
}

impl Told {
    /// After a poll at `now` that failed with `failure`, or succeeded with `None`.
    pub fn after(&mut self, now: Instant, failure: Option<&str>) -> Say {
        let Some(text) = failure else {
            let polls = std::mem::take(&mut self.polls);
            return match self.last.take() {
                Some((last, ..)) => Say::Recovered { polls, last },
                None => Say::Nothing,
            };
        };
        self.polls = self.polls.saturating_add(1);
        match &mut self.last {
            Some((said, at, since)) if said == text => {
                if now.saturating_duration_since(*at) < REMINDER {
                    return Say::Nothing;
                }
                *at = now;
                Say::Still {
                    text: text.to_string(),
                    polls: self.polls,
                    since: *since,
                }
            }
            _ => {
                let since = self.last.as_ref().map_or(now, |(_, _, s)| *s);
                self.last = Some((text.to_string(), now, since));
                Say::Failing(text.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_said_once_then_hourly_and_its_end_once() {
        let t0 = Instant::now();
        let m = Duration::from_secs(60);
        let mut t = Told::default();
        assert_eq!(t.after(t0, None), Say::Nothing);
        assert_eq!(t.after(t0, Some("down")), Say::Failing("down".into()));
        for i in 1..60 {
            assert_eq!(t.after(t0 + m * i, Some("down")), Say::Nothing, "poll {i}");
        }
        assert_eq!(
            t.after(t0 + m * 60, Some("down")),
            Say::Still {
                text: "down".into(),
                polls: 61,
                since: t0
            }
        );
        assert_eq!(t.after(t0 + m * 61, Some("down")), Say::Nothing);
        assert_eq!(
            t.after(t0 + m * 62, None),
            Say::Recovered {
                polls: 62,
                last: "down".into()
            }
        );
        assert_eq!(t.after(t0 + m * 63, None), Say::Nothing);
    }

    #[test]
    fn a_changed_failure_is_said_at_once_and_keeps_its_start() {
        let t0 = Instant::now();
        let mut t = Told::default();
        t.after(t0, Some("refused"));
        let s = Duration::from_secs(1);
        assert_eq!(
            t.after(t0 + s, Some("timeout")),
            Say::Failing("timeout".into())
        );
        let hour = REMINDER + s;
        assert!(matches!(
            t.after(t0 + hour + s, Some("timeout")),
            Say::Still { since, polls: 3, .. } if since == t0
        ));
    }
}
