//! Outbound calls a frontend makes to its platform (post a Slack message,
//! write a GitHub status comment): each attempt bounded by a timeout,
//! retried with capped exponential backoff, a rate limit's `Retry-After`
//! honoured up to a cap, and every retry and give-up recorded as an audit
//! notice of one of the [`DeliveryNotice`] kinds (`feedback_retry`,
//! `feedback_failed`), so "why did the result
//! never show up in Slack" is answered by the audit log.
//!
//! ```
//! use std::time::Duration;
//! use youops_core::frontend::delivery::{DeliveryError, RetryPolicy};
//!
//! let policy = RetryPolicy::default();
//! // A 429 that asks for 2 s waits 2 s; one that asks for a day waits the cap.
//! assert_eq!(policy.wait_for(&DeliveryError::rate_limited(Some(Duration::from_secs(2)), "429"), 1),
//!            Some(Duration::from_secs(2)));
//! assert_eq!(policy.wait_for(&DeliveryError::rate_limited(Some(Duration::from_secs(86_400)), "429"), 1),
//!            Some(policy.max_retry_after));
//! assert_eq!(policy.wait_for(&DeliveryError::permanent("404"), 1), None);
//! ```

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::executor::Executor;
use crate::model::RequestId;

/// The audit notices of outbound calls (feedback to the platform): one kind
/// per outcome, for every frontend (the notice's `source` says which one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryNotice {
    /// An attempt failed and another one is scheduled.
    Retry,
    /// The call did not get through: a permanent error, every attempt used,
    /// or abandoned at shutdown.
    Failed,
}

impl DeliveryNotice {
    /// The notice's `kind` in the audit log.
    pub fn kind(self) -> &'static str {
        match self {
            DeliveryNotice::Retry => "feedback_retry",
            DeliveryNotice::Failed => "feedback_failed",
        }
    }
}

/// How a failed attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth another attempt after a backoff (a 5xx, a timeout, a reset).
    Transient,
    /// Rate limited; the platform's `Retry-After`, if it gave one.
    RateLimited(Option<Duration>),
    /// Retrying cannot help (a 4xx other than 429, a bad token).
    Permanent,
}

/// A failed attempt: its kind and what happened (no secrets: it goes into
/// the audit log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// How it failed.
    pub kind: FailureKind,
    /// What happened.
    pub message: String,
}

impl DeliveryError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        DeliveryError {
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }

    /// A rate limit, with the platform's `Retry-After` if any.
    pub fn rate_limited(after: Option<Duration>, message: impl Into<String>) -> Self {
        DeliveryError {
            kind: FailureKind::RateLimited(after),
            message: message.into(),
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError {
            kind: FailureKind::Permanent,
            message: message.into(),
        }
    }
}

/// Timeout, attempts and backoff of one kind of call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Each attempt gets at most this long. `None`: the call bounds itself
    /// (a call that waits for its turn first, or that must not be cut short
    /// halfway).
    pub timeout: Option<Duration>,
    /// Attempts in all (at least one).
    pub max_attempts: u32,
    /// The wait after the first transient failure; it doubles each time.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured: a larger (or bogus) one would park
    /// the call that long; past it, one more attempt is spent and a second
    /// rate limit waits again.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Some(Duration::from_secs(10)),
            max_attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after `error` failed attempt `attempt` (from 1),
    /// or `None` if it is not worth another one.
    pub fn wait_for(&self, error: &DeliveryError, attempt: u32) -> Option<Duration> {
        match error.kind {
            FailureKind::Permanent => None,
            FailureKind::RateLimited(after) => Some(
                after
                    .unwrap_or(Duration::from_secs(1))
                    .min(self.max_retry_after),
            ),
            FailureKind::Transient => {
                let doublings = attempt.saturating_sub(1).min(30);
                Some(
                    self.first_backoff
                        .saturating_mul(1u32 << doublings)
                        .min(self.max_backoff),
                )
            }
        }
    }
}

/// One outbound call to deliver: who makes it, for which request, and what
/// it is (for the notices: `"chat.postMessage in #ops"`).
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    /// Records the notices.
    pub executor: &'a Executor,
    /// The frontend making the call: the notices' `source`.
    pub frontend: &'a str,
    /// The request it is about, if any.
    pub request: Option<RequestId>,
    /// What the call is, as the notices name it.
    pub what: String,
    /// Cancelled at shutdown: the wait and the attempt in flight stop, and the
    /// call is recorded as abandoned.
    pub shutdown: &'a CancellationToken,
}

/// One attempt, within `timeout` if there is one.
async fn attempt_within<T>(
    timeout: Option<Duration>,
    call: impl Future<Output = Result<T, DeliveryError>>,
) -> Result<T, DeliveryError> {
    let Some(limit) = timeout else {
        return call.await;
    };
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(DeliveryError::transient(format!(
            "no answer within {} ms",
            limit.as_millis()
        )))
    })
}

impl Delivery<'_> {
    /// Make the call under `policy` until it succeeds, fails permanently,
    /// runs out of attempts or is abandoned at shutdown. `call` makes one
    /// attempt (and may itself wait, e.g. to pace a channel). Returns `None`
    /// when the call did not get through; the audit log says why.
    pub async fn run<T, F, Fut>(&self, policy: &RetryPolicy, mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DeliveryError>>,
    {
        let max = policy.max_attempts.max(1);
        for attempt in 1..=max {
            let result = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => None,
                r = attempt_within(policy.timeout, call()) => Some(r),
            };
            let error = match result {
                Some(Ok(v)) => return Some(v),
                Some(Err(e)) => e,
                None => {
                    self.abandoned(attempt).await;
                    return None;
                }
            };
            let Some(wait) = policy.wait_for(&error, attempt) else {
                tracing::warn!(call = %self.what, error = %error, "delivery failed; not retrying");
                let message = format!("{} failed: {error}; not retried", self.what);
                self.note(DeliveryNotice::Failed, message, attempt).await;
                return None;
            };
            if attempt == max {
                tracing::warn!(call = %self.what, error = %error, attempts = max, "delivery gave up");
                let message = format!("{} failed {max} times (last: {error}); gave up", self.what);
                self.note(DeliveryNotice::Failed, message, attempt).await;
                return None;
            }
            let message = format!(
                "{} failed ({error}); retrying in {} ms (attempt {attempt}/{max})",
                self.what,
                wait.as_millis()
            );
            self.note(DeliveryNotice::Retry, message, attempt).await;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => {
                    self.abandoned(attempt).await;
                    return None;
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        None
    }

    async fn abandoned(&self, attempt: u32) {
        tracing::warn!(call = %self.what, "delivery abandoned at shutdown");
        let message = format!(
            "{} abandoned at shutdown (attempt {attempt}); not delivered",
            self.what
        );
        self.note(DeliveryNotice::Failed, message, attempt).await;
    }

    async fn note(&self, notice: DeliveryNotice, message: String, attempt: u32) {
        if let Err(e) = self
            .executor
            .notice(
                self.request,
                self.frontend,
                notice.kind(),
                message,
                serde_json::json!({ "attempt": attempt }),
            )
            .await
        {
            tracing::warn!(error = %e, "could not record a delivery notice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_exponentially_up_to_the_cap() {
        let p = RetryPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        let e = DeliveryError::transient("503");
        let waits: Vec<u128> = (1..=6)
            .map(|a| p.wait_for(&e, a).unwrap().as_millis())
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500, 500]);
        assert_eq!(
            p.wait_for(&e, u32::MAX),
            Some(Duration::from_millis(500)),
            "no overflow"
        );
    }

    #[test]
    fn a_rate_limit_without_retry_after_waits_a_second() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.wait_for(&DeliveryError::rate_limited(None, "429"), 3),
            Some(Duration::from_secs(1))
        );
    }

    async fn executor() -> Executor {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config::parse(
            "[[ops]]\nname = \"x\"\ndescription = \"x\"\nrunner = { type = \"builtin\", name = \"noop\" }\n",
            dir.path(),
            "delivery-test",
            &|_| None,
        )
        .unwrap();
        let store = std::sync::Arc::new(crate::audit::MemoryStore::new());
        Executor::builder(&cfg, store).build().await.unwrap()
    }

    async fn notices(exec: &Executor) -> Vec<(String, String)> {
        exec.store()
            .events(0, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.body {
                crate::model::EventBody::Notice { kind, message, .. } => Some((kind, message)),
                _ => None,
            })
            .collect()
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            timeout: Some(Duration::from_millis(200)),
            max_attempts: 3,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_retry_after: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn retries_are_noticed_and_a_success_ends_them() {
        let exec = executor().await;
        let shutdown = CancellationToken::new();
        let d = Delivery {
            executor: &exec,
            frontend: "slack",
            request: None,
            what: "chat.postMessage in C1".into(),
            shutdown: &shutdown,
        };
        let mut calls = 0;
        let got = d
            .run(&quick(), || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 => Err(DeliveryError::transient("HTTP 503")),
                        2 => Err(DeliveryError::rate_limited(
                            Some(Duration::from_secs(60)),
                            "HTTP 429",
                        )),
                        _ => Ok(n),
                    }
                }
            })
            .await;
        assert_eq!(got, Some(3));
        let n = notices(&exec).await;
        assert_eq!(n.len(), 2, "{n:?}");
        assert!(n.iter().all(|(k, _)| k == "feedback_retry"));
        assert!(
            n[0].1.contains("chat.postMessage in C1 failed (HTTP 503)"),
            "{n:?}"
        );
        assert!(
            n[1].1.contains("retrying in 5 ms"),
            "capped Retry-After: {n:?}"
        );
    }

    #[tokio::test]
    async fn permanent_errors_timeouts_and_shutdown_are_recorded_as_failed() {
        let exec = executor().await;
        let shutdown = CancellationToken::new();
        let d = Delivery {
            executor: &exec,
            frontend: "github",
            request: None,
            what: "status comment".into(),
            shutdown: &shutdown,
        };
        let got: Option<()> = d
            .run(&quick(), || async {
                Err(DeliveryError::permanent("HTTP 404"))
            })
            .await;
        assert_eq!(got, None);
        let got: Option<()> = d
            .run(&quick(), || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            .await;
        assert_eq!(got, None);
        shutdown.cancel();
        let got: Option<()> = d.run(&quick(), || async { Ok(()) }).await;
        assert_eq!(got, None, "nothing is attempted after shutdown");
        let n = notices(&exec).await;
        let kinds: Vec<&str> = n.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "feedback_failed",
                "feedback_retry",
                "feedback_retry",
                "feedback_failed",
                "feedback_failed"
            ],
            "{n:?}"
        );
        assert!(n[0]
            .1
            .ends_with("status comment failed: HTTP 404; not retried"));
        assert!(n[1].1.contains("no answer within 200 ms"));
        assert!(n[3].1.contains("failed 3 times"));
        assert!(n[4].1.contains("abandoned at shutdown"));
    }
}
