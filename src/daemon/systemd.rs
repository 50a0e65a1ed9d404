//! systemd readiness over `NOTIFY_SOCKET` (sd_notify): `READY=1`, `RELOADING=1`, `STOPPING=1`,
//! `STATUS=`, `WATCHDOG=1`. Every call is a no-op outside systemd; send errors are ignored, as a
//! lost notification must never stop mail.

use std::time::Duration;

use sd_notify::NotifyState;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    // Type=notify-reload wants the monotonic time with RELOADING=1.
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    let _ = sd_notify::notify(&states);
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

pub fn status(line: &str) {
    let _ = sd_notify::notify(&[NotifyState::Status(line)]);
}

pub fn watchdog() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// How often to send `WATCHDOG=1`: half the `WATCHDOG_USEC` systemd set, if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
