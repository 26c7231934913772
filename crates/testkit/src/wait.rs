//! Bounded waits: every wait of a test ends within [`TIMEOUT`], so a test that would hang
//! fails instead, saying what it waited for.

use std::future::Future;
use std::time::Duration;

/// The longest any single wait of a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `fut`, failing the test with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}
