//! Store writes that must not be given up.

use std::time::Duration;

/// Repeats a store write with capped exponential backoff until the store answers: used where
/// giving up would strand a job (recorded nowhere but in a lane that already let it go).
pub(crate) async fn until_stored<T, F, Fut>(what: &str, mut write: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ezt_store::Result<T>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the {what}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}
