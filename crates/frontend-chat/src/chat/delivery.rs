//! Pacing, timeouts and retries of every outbound chat call: paced per
//! channel, each attempt bounded by the request timeout, retried with backoff
//! (honouring `Retry-After`), every retry and give-up recorded as an audit
//! notice, and all of it cut short when the shutdown grace is over.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use youops_core::{Executor, RequestId};

use super::{lock, Chat};
use crate::chat::adapter::{ChatError, ChatErrorKind};

impl Chat {
    async fn pace(&self, channel: &str) {
        if channel == "-" {
            return;
        }
        let wait = {
            let mut m = lock(&self.pace);
            let now = Instant::now();
            let next = m.get(channel).copied().unwrap_or(now).max(now);
            m.insert(channel.to_string(), next + self.settings.channel_interval);
            next - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn push_back(&self, channel: &str, wait: Duration) {
        let mut m = lock(&self.pace);
        let until = Instant::now() + wait;
        let e = m.entry(channel.to_string()).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    /// One outbound call: paced per channel (`"-"`: not a channel call), each
    /// attempt bounded by the request timeout, retried with backoff (honouring
    /// `Retry-After`), every retry and give-up recorded as an audit notice.
    /// Returns `None` when it did not get through.
    pub async fn deliver<T, F, Fut>(
        &self,
        exec: &Executor,
        request: Option<RequestId>,
        channel: &str,
        what: &str,
        call: F,
    ) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ChatError>>,
    {
        let max = self.settings.max_attempts.max(1);
        let mut backoff = self.settings.backoff;
        let limit = self.settings.request_timeout;
        for attempt in 1..=max {
            let result = tokio::select! {
                biased;
                _ = self.abandon.cancelled() => None,
                r = async {
                    self.pace(channel).await;
                    tokio::time::timeout(limit, call()).await
                } => Some(r),
            };
            let e = match result {
                Some(Ok(Ok(v))) => return Some(v),
                Some(Ok(Err(e))) => e,
                Some(Err(_)) => {
                    ChatError::transient(format!("no answer within {} ms", limit.as_millis()))
                }
                None => {
                    self.abandoned(exec, request, channel, what, attempt).await;
                    return None;
                }
            };
            let wait = match e.kind {
                ChatErrorKind::RateLimited(after) => {
                    let w = rate_limit_wait(after);
                    self.push_back(channel, w);
                    w
                }
                ChatErrorKind::Transient => {
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    w
                }
                ChatErrorKind::Permanent => {
                    tracing::warn!(call = what, channel, error = %e.message, "chat call failed; not retrying");
                    self.note(
                        exec,
                        request,
                        "chat_failed",
                        format!("{what} in {channel} failed: {}; not retried", e.message),
                        attempt,
                    )
                    .await;
                    return None;
                }
            };
            if attempt == max {
                tracing::warn!(call = what, channel, error = %e.message, attempts = max, "chat call gave up");
                self.note(
                    exec,
                    request,
                    "chat_failed",
                    format!(
                        "{what} in {channel} failed {max} times (last: {}); gave up",
                        e.message
                    ),
                    attempt,
                )
                .await;
                return None;
            }
            self.note(
                exec,
                request,
                "chat_retry",
                format!(
                    "{what} in {channel} failed ({}); retrying in {} ms (attempt {attempt}/{max})",
                    e.message,
                    wait.as_millis()
                ),
                attempt,
            )
            .await;
            tokio::select! {
                biased;
                _ = self.abandon.cancelled() => {
                    self.abandoned(exec, request, channel, what, attempt).await;
                    return None;
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        None
    }

    async fn abandoned(
        &self,
        exec: &Executor,
        request: Option<RequestId>,
        channel: &str,
        what: &str,
        attempt: u32,
    ) {
        tracing::warn!(call = what, channel, "chat call abandoned at shutdown");
        self.note(
            exec,
            request,
            "chat_failed",
            format!("{what} in {channel} abandoned at shutdown (attempt {attempt}); not delivered"),
            attempt,
        )
        .await;
    }

    async fn note(
        &self,
        exec: &Executor,
        request: Option<RequestId>,
        kind: &str,
        message: String,
        attempt: u32,
    ) {
        if let Err(e) = exec
            .notice(
                request,
                self.name(),
                kind,
                message,
                serde_json::json!({ "attempt": attempt }),
            )
            .await
        {
            tracing::warn!(error = %e, "could not record a chat delivery notice");
        }
    }
}

/// Longest `Retry-After` honoured: a larger (or bogus) value would park a
/// channel's deliveries for that long; past it, one more attempt is spent and a
/// second 429 waits again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long to wait after a 429: its `Retry-After` (1 s if it gave none), at most
/// [`MAX_RETRY_AFTER`].
fn rate_limit_wait(after: Option<Duration>) -> Duration {
    after.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER)
}

#[cfg(test)]
mod tests {

    #[test]
    fn retry_after_is_honoured_up_to_a_cap() {
        use std::time::Duration;
        assert_eq!(super::rate_limit_wait(None), Duration::from_secs(1));
        assert_eq!(
            super::rate_limit_wait(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            super::rate_limit_wait(Some(Duration::from_secs(86_400))),
            super::MAX_RETRY_AFTER
        );
    }
}
