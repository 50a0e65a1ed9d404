//! Signal handling shared by `fetch` and `daemon`: the first SIGINT or SIGTERM asks polls to end
//! after the message in flight; a second one exits at once. That is safe by design: nothing is
//! deleted on the server before it is delivered and recorded.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status when a second signal cuts the shutdown short.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Cancels `stop` at the first SIGINT/SIGTERM and exits the process at the second.
pub fn stop_on_signal(stop: CancellationToken) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; SIGINT/SIGTERM end the process at once");
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!(
            "signal received: finishing the messages in flight (a second signal exits at once)"
        );
        stop.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(EXIT_INTERRUPTED);
    });
}
