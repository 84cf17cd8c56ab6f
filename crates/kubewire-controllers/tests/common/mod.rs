//! What the controllers' integration tests share.

use std::future::Future;
use std::time::Duration;

/// How long a test waits for the controller to act.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `probe` until it yields a value (or panics after [`TIMEOUT`]).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
