//! The agent's long-running tasks (OTLP receivers, the local API, the exporter), supervised: each
//! runs in one `JoinSet` under a cancellation token of its stage, a task that ends before it was
//! asked to is logged and reported (the live view's health shows it), and shutdown stops the
//! stages in order, waiting for each.

use std::{future::Future, time::Duration};

use tokio::task::{AbortHandle, Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// How long aborted tasks get to reach their next await point and end.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// A stage of the pipeline, stopped as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// OTLP receivers and the local API: stopped first, so that nothing new comes in.
    Inbound,
    /// The exporter: stopped last, once the queue is drained or the deadline passed.
    Outbound,
}

struct Task {
    id: Id,
    abort: AbortHandle,
    name: &'static str,
    stage: Stage,
}

/// A task that ended without being asked to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) task: &'static str,
    pub(crate) error: String,
}

pub(crate) struct Supervisor {
    set: JoinSet<anyhow::Result<()>>,
    tasks: Vec<Task>,
    inbound: CancellationToken,
    outbound: CancellationToken,
}

impl Supervisor {
    pub(crate) fn new() -> Self {
        Self {
            set: JoinSet::new(),
            tasks: Vec::new(),
            inbound: CancellationToken::new(),
            outbound: CancellationToken::new(),
        }
    }

    fn token(&self, stage: Stage) -> &CancellationToken {
        match stage {
            Stage::Inbound => &self.inbound,
            Stage::Outbound => &self.outbound,
        }
    }

    /// Starts `task` in `stage`; it is handed the future that resolves when its stage stops.
    pub(crate) fn spawn<F, Fut>(&mut self, name: &'static str, stage: Stage, task: F)
    where
        F: FnOnce(StopSignal) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = StopSignal(self.token(stage).clone());
        let handle = self.set.spawn(task(stop));
        self.tasks.push(Task {
            id: handle.id(),
            abort: handle,
            name,
            stage,
        });
    }

    /// Waits for the next task to end on its own (an error, a panic, or an early return); never
    /// resolves while all run. For the event loop's `select!`.
    pub(crate) async fn next_ended(&mut self) -> Ended {
        loop {
            let Some(joined) = self.set.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, error) = match joined {
                Ok((id, Ok(()))) => (id, "ended".to_string()),
                Ok((id, Err(err))) => (id, format!("{err:#}")),
                Err(err) => (err.id(), format!("panicked or was aborted: {err}")),
            };
            if let Some(at) = self.tasks.iter().position(|t| t.id == id) {
                let task = self.tasks.remove(at);
                log::error!("task {} stopped: {error}", task.name);
                return Ended {
                    task: task.name,
                    error,
                };
            }
        }
    }

    /// Stops `stage` and waits up to `deadline` for its tasks; those still running are
    /// aborted, naming them. A task of another stage that happens to end meanwhile is only
    /// logged: at shutdown, health has no reader left.
    pub(crate) async fn stop(&mut self, stage: Stage, deadline: Duration) {
        self.token(stage).cancel();
        let mut until = tokio::time::Instant::now() + deadline;
        let mut aborted = false;
        while self.tasks.iter().any(|t| t.stage == stage) {
            let joined = tokio::time::timeout_at(until, self.set.join_next_with_id()).await;
            let id = match joined {
                Ok(Some(Ok((id, result)))) => {
                    if let Err(err) = result {
                        log::warn!("{err:#}");
                    }
                    id
                }
                Ok(Some(Err(err))) => {
                    if err.is_panic() {
                        log::warn!("a task panicked while stopping: {err}");
                    }
                    err.id()
                }
                Ok(None) => break,
                Err(_) if !aborted => {
                    for t in self.tasks.iter().filter(|t| t.stage == stage) {
                        log::warn!("task {} did not stop within {deadline:?}: aborted", t.name);
                        t.abort.abort();
                    }
                    aborted = true;
                    until = tokio::time::Instant::now() + ABORT_GRACE;
                    continue;
                }
                // An aborted task ends at its next await point; one that never yields is lost.
                Err(_) => break,
            };
            self.tasks.retain(|t| t.id != id);
        }
    }
}

/// Resolves when the task's stage is stopped.
pub(crate) struct StopSignal(CancellationToken);

impl StopSignal {
    pub(crate) async fn stopped(self) {
        self.0.cancelled_owned().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_task_is_reported_with_its_error() {
        let mut s = Supervisor::new();
        s.spawn("waits", Stage::Inbound, |stop| async move {
            stop.stopped().await;
            Ok(())
        });
        s.spawn("fails", Stage::Inbound, |_| async {
            anyhow::bail!("port taken")
        });
        let ended = s.next_ended().await;
        assert_eq!(
            ended,
            Ended {
                task: "fails",
                error: "port taken".into()
            }
        );
        s.stop(Stage::Inbound, Duration::from_secs(5)).await;
        assert!(s.tasks.is_empty());
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported() {
        let mut s = Supervisor::new();
        s.spawn("panics", Stage::Outbound, |_| async { panic!("bug") });
        let ended = s.next_ended().await;
        assert_eq!(ended.task, "panics");
        assert!(ended.error.contains("panicked"), "{}", ended.error);
    }

    #[tokio::test]
    async fn stages_stop_in_order_and_stragglers_are_aborted() {
        let mut s = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (name, stage) in [("in", Stage::Inbound), ("out", Stage::Outbound)] {
            let tx = tx.clone();
            s.spawn(name, stage, move |stop| async move {
                stop.stopped().await;
                tx.send(name).unwrap();
                Ok(())
            });
        }
        s.spawn("stuck", Stage::Inbound, |_| std::future::pending());
        s.stop(Stage::Inbound, Duration::from_millis(50)).await;
        assert_eq!(rx.try_recv().ok(), Some("in"));
        assert!(rx.try_recv().is_err(), "the outbound stage still runs");
        assert_eq!(s.tasks.len(), 1);
        s.stop(Stage::Outbound, Duration::from_secs(5)).await;
        assert!(s.tasks.is_empty());
    }
}
