//! Runs a source under supervision: when it fails, ends or panics, its health says so and it
//! starts again after a backoff with jitter ([`Backoff`], from the core). Nothing a source
//! does reaches the hub's tasks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use statecast_core::backoff::Backoff;

use crate::health::Health;

/// A run that lasted this long was healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// Runs `run` again and again: each run on its own task (a panic ends only that run), each
/// end recorded in `health`, each restart after `backoff`.
pub async fn supervise<F, Fut>(health: Arc<Health>, mut backoff: Backoff, run: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    loop {
        let started = Instant::now();
        let task = tokio::spawn(run());
        // Stopping the supervisor stops the run too.
        let _abort = AbortOnDrop(task.abort_handle());
        let ended = match task.await {
            Ok(Ok(())) => "ended".to_string(),
            Ok(Err(e)) => e,
            Err(e) if e.is_panic() => "the source panicked; restarting it".to_string(),
            Err(_) => return, // cancelled: the bridge is stopping
        };
        health.failed(&ended).await;
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
