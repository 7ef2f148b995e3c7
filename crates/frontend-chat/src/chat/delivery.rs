//! Pacing of every outbound chat call, per channel, around core's delivery
//! loop ([`Delivery::run`]): each attempt waits for the channel's next slot,
//! is bounded by the request timeout and retried with backoff (honouring
//! `Retry-After`, which also pushes the channel's next slot back); retries and
//! give-ups are core's `feedback_retry` / `feedback_failed` audit notices, and
//! all of it is cut short when the shutdown grace is over.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use youops_core::frontend::delivery::{Delivery, DeliveryError, FailureKind, RetryPolicy};
use youops_core::{Executor, RequestId};

use super::{lock, Chat};
use crate::chat::adapter::{ChatError, ChatErrorKind};

/// Longest `Retry-After` honoured: a larger (or bogus) value would park a
/// channel's deliveries for that long; past it, one more attempt is spent and a
/// second 429 waits again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Longest wait between two attempts (the backoff doubles up to it).
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A chat error as core's delivery loop sees it.
fn delivery_error(e: ChatError) -> DeliveryError {
    match e.kind {
        ChatErrorKind::Transient => DeliveryError::transient(e.message),
        ChatErrorKind::RateLimited(after) => DeliveryError::rate_limited(after, e.message),
        ChatErrorKind::Permanent => DeliveryError::permanent(e.message),
    }
}

impl Chat {
    /// How an outbound call is retried. No deadline here: core's would bound
    /// the whole attempt, the wait for the channel's slot included, and a busy
    /// (or rate-limited) channel must not turn a queued message into a
    /// timeout. The request timeout is kept by `attempt`, around the call.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            timeout: None,
            max_attempts: self.settings.max_attempts,
            first_backoff: self.settings.backoff,
            max_backoff: MAX_BACKOFF,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

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

    /// One attempt: wait for the channel's slot, then make the call within
    /// the request timeout. A rate limit pushes the channel's next slot back
    /// by the wait it asks for, so other calls to that channel wait it out too.
    async fn attempt<T>(
        &self,
        policy: &RetryPolicy,
        channel: &str,
        call: impl Future<Output = Result<T, ChatError>>,
    ) -> Result<T, DeliveryError> {
        self.pace(channel).await;
        let limit = self.settings.request_timeout;
        let error = match tokio::time::timeout(limit, call).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => delivery_error(e),
            Err(_) => {
                DeliveryError::transient(format!("no answer within {} ms", limit.as_millis()))
            }
        };
        if matches!(error.kind, FailureKind::RateLimited(_)) {
            if let Some(wait) = policy.wait_for(&error, 1) {
                self.push_back(channel, wait);
            }
        }
        Err(error)
    }

    /// One outbound call: paced per channel (`"-"`: not a channel call), each
    /// attempt bounded by the request timeout, retried with backoff (honouring
    /// `Retry-After`), every retry and give-up recorded as an audit notice
    /// naming `what` and the channel. Returns `None` when it did not get
    /// through.
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
        let policy = self.retry_policy();
        let delivery = Delivery {
            executor: exec,
            frontend: self.name(),
            request,
            what: format!("{what} in {channel}"),
            shutdown: &self.abandon,
        };
        let policy = &policy;
        delivery
            .run(policy, || self.attempt(policy, channel, call()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_errors_keep_their_kind_and_retry_after_is_honoured_up_to_a_cap() {
        let policy = RetryPolicy {
            max_retry_after: MAX_RETRY_AFTER,
            ..RetryPolicy::default()
        };
        let limited = |after| {
            delivery_error(ChatError {
                kind: ChatErrorKind::RateLimited(after),
                message: "rate limited (429)".into(),
            })
        };
        assert_eq!(
            policy.wait_for(&limited(None), 1),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            policy.wait_for(&limited(Some(Duration::from_secs(30))), 1),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            policy.wait_for(&limited(Some(Duration::from_secs(86_400))), 1),
            Some(MAX_RETRY_AFTER)
        );
        let e = delivery_error(ChatError::transient("HTTP 500"));
        assert_eq!(
            (e.kind, e.message.as_str()),
            (FailureKind::Transient, "HTTP 500")
        );
        let e = delivery_error(ChatError::permanent("channel_not_found"));
        assert_eq!(e.kind, FailureKind::Permanent);
    }
}
