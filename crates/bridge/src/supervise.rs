//! Runs a source under supervision: when it fails, ends or panics, its health says so and it
//! starts again after a backoff with jitter. Nothing a source does reaches the hub's tasks.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::health::Health;

/// A run that lasted this long was healthy: the next failure starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(10);

/// Exponential backoff between `min` and `max`, each wait jittered by ±20% so sources that
/// failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The wait before the next attempt; each call doubles the one after, up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(base)
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `d` scaled by a random factor in 0.8..1.2.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        for (wait, base) in waits.iter().zip([100u128, 200, 350, 350]) {
            assert!(
                *wait >= base * 8 / 10 && *wait <= base * 12 / 10,
                "{waits:?}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(120));
    }
}
