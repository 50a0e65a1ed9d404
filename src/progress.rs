//! Live progress of `fetch` at a terminal: per account, messages and bytes done of those
//! waiting, the rate and the time left, redrawn in place a few times a second on stderr. Nothing
//! is drawn when stderr is not a terminal, under the daemon, or with `--quiet`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One account's counters, updated by [`crate::fetch`] as it goes.
#[derive(Debug)]
pub struct Progress {
    pub account: String,
    pub total_msgs: AtomicU64,
    pub total_bytes: AtomicU64,
    pub done_msgs: AtomicU64,
    pub done_bytes: AtomicU64,
    pub finished: AtomicBool,
    /// Set with `finished` when the poll failed.
    pub failed: AtomicBool,
    started: Instant,
}

impl Progress {
    pub fn new(account: &str) -> Arc<Progress> {
        Arc::new(Progress {
            account: account.to_string(),
            total_msgs: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            done_msgs: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            started: Instant::now(),
        })
    }

    /// What is waiting, once the listing is known.
    pub fn set_total(&self, msgs: usize, bytes: u64) {
        self.total_msgs.store(msgs as u64, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn add(&self, bytes: u64) {
        self.done_msgs.fetch_add(1, Ordering::Relaxed);
        self.done_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One line: `alice: 1200/30000 messages, 4.5 MiB/120.0 MiB, 2.1 MiB/s, 0:52 left`.
    pub fn line(&self) -> String {
        let (m, tm) = (
            self.done_msgs.load(Ordering::Relaxed),
            self.total_msgs.load(Ordering::Relaxed),
        );
        let b = self.done_bytes.load(Ordering::Relaxed);
        // Done never shows above the total: sizes as listed are estimates (a server may count
        // a message smaller than it sends it).
        let tb = self.total_bytes.load(Ordering::Relaxed).max(b);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = b as f64 / secs;
        let mut s = format!(
            "{}: {m}/{tm} messages, {}/{}",
            self.account,
            crate::text::human_bytes(b),
            crate::text::human_bytes(tb)
        );
        if self.failed.load(Ordering::Relaxed) {
            s.push_str(", failed");
        } else if self.finished.load(Ordering::Relaxed) {
            s.push_str(", done");
        } else if b > 0 {
            s.push_str(&format!(", {}/s", crate::text::human_bytes(rate as u64)));
            // Sizes as listed are CRLF octets, a little above what is written: a fair estimate.
            let left = tb.saturating_sub(b) as f64 / rate.max(1.0);
            s.push_str(&format!(", {} left", clock(Duration::from_secs_f64(left))));
        }
        s
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Redraws the lines of `all` on stderr every quarter second until `done` is set, then clears
/// them (the summary lines follow on stdout). Log lines printed meanwhile stay on screen above
/// them ([`crate::logging::terminal`]).
pub async fn render(all: Vec<Arc<Progress>>, done: Arc<AtomicBool>) {
    loop {
        if done.load(Ordering::Relaxed) {
            crate::logging::terminal::draw(&[]);
            return;
        }
        let lines: Vec<String> = all.iter().map(|p| format!("\x1b[2K{}", p.line())).collect();
        crate::logging::terminal::draw(&lines);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_counts_rate_and_time_left() {
        let p = Progress::new("alice");
        p.set_total(3, 3 * 1024 * 1024);
        assert_eq!(p.line(), "alice: 0/3 messages, 0 B/3.0 MiB");
        p.add(1024 * 1024);
        let l = p.line();
        assert!(
            l.starts_with("alice: 1/3 messages, 1.0 MiB/3.0 MiB, "),
            "{l}"
        );
        assert!(l.contains("/s, ") && l.ends_with(" left"), "{l}");
        p.finished.store(true, Ordering::Relaxed);
        assert!(p.line().ends_with(", done"));
        p.failed.store(true, Ordering::Relaxed);
        assert!(p.line().ends_with(", failed"));
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(clock(Duration::from_secs(65)), "1:05");
    }

    #[test]
    fn bytes_done_never_show_above_the_total() {
        let p = Progress::new("bob");
        p.set_total(1, 100);
        p.add(150);
        assert!(
            p.line().starts_with("bob: 1/1 messages, 150 B/150 B"),
            "{}",
            p.line()
        );
    }
}
