//! Waiting, bounded, for something to become true.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `f` every 20 ms until it gives a value; panics ("timed out waiting
/// for {what}") after 15 s.
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(Duration::from_secs(15), f, || {
        format!("timed out waiting for {what}")
    })
    .await
}

/// Like [`eventually`], giving up after `secs` seconds ("timed out after
/// {secs}s waiting for {what}").
pub async fn eventually_within<T, F, Fut>(what: &str, secs: u64, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(Duration::from_secs(secs), f, || {
        format!("timed out after {secs}s waiting for {what}")
    })
    .await
}

async fn poll<T, F, Fut>(limit: Duration, mut f: F, failure: impl Fn() -> String) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{}", failure());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
