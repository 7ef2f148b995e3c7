//! The per-principal rate limit on submissions.

use super::{lock, Executor, Loaded};
use crate::error::{Error, Result};
use crate::model::Actor;

impl Executor {
    /// Per-principal token bucket: floods are refused before they reach the store.
    pub(super) fn take_token(&self, loaded: &Loaded, actor: &Actor) -> Result<()> {
        let per_minute = loaded.settings.rate_limit_per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        let key = match &actor.principal {
            Some(p) => p.clone(),
            None => format!("unmapped identities on {}", actor.frontend),
        };
        let capacity = f64::from(per_minute);
        let per_sec = capacity / 60.0;
        let now = std::time::Instant::now();
        let mut buckets = lock(&self.inner.buckets);
        if buckets.len() > 10_000 {
            buckets.retain(|_, (tokens, at)| {
                *tokens + at.elapsed().as_secs_f64() * per_sec < capacity
            });
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / per_sec).ceil();
            Err(Error::RateLimited(format!(
                "{key} submitted more than {per_minute} requests in a minute; try again in {wait}s (limit: [executor] rate_limit_per_minute)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::audit::{AuditStore, MemoryStore};
    use crate::config::Config;
    use crate::runner;
    use crate::{Actor, Executor, Origin, Submission};

    #[tokio::test]
    async fn floods_are_refused_per_principal_before_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::parse(
            r#"
[executor]
rate_limit_per_minute = 5
[[ops]]
name = "noop"
runner = { type = "builtin", name = "noop" }
roles = ["ops"]
[principals.a]
roles = ["ops"]
identities = { t = ["a"] }
[principals.b]
roles = ["ops"]
identities = { t = ["b"] }
"#,
            dir.path(),
            "t",
            &|_| None,
        )
        .unwrap();
        let store = Arc::new(MemoryStore::new());
        let exec = Executor::builder(&cfg, store.clone())
            .builtin("noop", |_c: runner::BuiltinCall| async {
                Ok(String::new())
            })
            .build()
            .await
            .unwrap();
        let sub = |who: &str| Submission::new("noop", Actor::new("t", who), Origin::new("t"));
        for _ in 0..5 {
            let t = exec.submit(sub("a")).await.unwrap();
            exec.wait(t.record.request.id).await.unwrap();
        }
        let (head_before, _) = store.head().await.unwrap();
        let err = exec.submit(sub("a")).await.unwrap_err();
        assert_eq!(err.code(), "rate_limited", "{err}");
        assert!(err.to_string().contains("rate_limit_per_minute"), "{err}");
        // Refused before the store: nothing was appended for it.
        let (head_after, _) = store.head().await.unwrap();
        assert_eq!(head_after, head_before);
        // Another principal has its own budget; unmapped identities share one per frontend.
        exec.submit(sub("b")).await.unwrap();
        for i in 0..5 {
            exec.submit(sub(&format!("stranger-{i}"))).await.unwrap();
        }
        assert_eq!(
            exec.submit(sub("stranger-x")).await.unwrap_err().code(),
            "rate_limited"
        );
    }
}
