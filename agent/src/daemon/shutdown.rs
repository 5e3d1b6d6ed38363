//! Ordered shutdown: the agent stops on SIGINT, SIGTERM or at the end of `--duration`.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

/// Why the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopReason {
    Interrupt,
    Terminate,
    DurationElapsed,
}

/// Resolves when the agent should stop.
pub(super) async fn stop_requested(duration: Option<Duration>) -> anyhow::Result<StopReason> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    Ok(tokio::select! {
        _ = sigint.recv() => StopReason::Interrupt,
        _ = sigterm.recv() => StopReason::Terminate,
        () = deadline => StopReason::DurationElapsed,
    })
}
