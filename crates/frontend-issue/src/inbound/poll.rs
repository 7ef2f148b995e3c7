//! Polling the managed repositories: a daemon that was down catches up on
//! issues and comments, sharing the webhook's dedup keys so nothing runs twice.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use youops_core::frontend::FrontendContext;
use youops_core::Executor;

use super::Via;
use crate::config::RepoName;
use crate::feedback::{is_ours, replied_comment};
use crate::github::ApiError;
use crate::shared::{lock, Shared};

impl Shared {
    /// One poll of one repository.
    pub(crate) async fn poll_repo(
        &self,
        exec: &Executor,
        repo: &RepoName,
        since: chrono::DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let via = Via {
            path: "poll",
            delivery: None,
        };
        for issue in self.api.issues_since(repo, since).await? {
            self.reconcile_issue(exec, repo, &issue, None, &via).await;
        }
        let comments = self.api.repo_comments_since(repo, since).await?;
        let replied: HashSet<u64> = comments
            .iter()
            .filter_map(|c| replied_comment(c.body_text()))
            .collect();
        for c in &comments {
            if is_ours(c.body_text()) {
                continue;
            }
            let Some(issue) = c.issue_number() else {
                continue;
            };
            let edited = c.updated_at > c.created_at + chrono::Duration::seconds(2);
            if replied.contains(&c.id) {
                lock(&self.comments).insert(c.id);
            } else {
                self.comment_created(exec, repo, issue, c, &via).await;
            }
            if edited && c.updated_at >= since {
                self.comment_changed(exec, repo, c, "edit", None, true)
                    .await;
            }
        }
        Ok(())
    }

    /// Poll every managed repository every `poll_interval` until shutdown.
    pub(crate) async fn poll_loop(self: Arc<Self>, ctx: FrontendContext) {
        let mut since = Utc::now()
            - chrono::Duration::from_std(self.cfg.poll_lookback)
                .unwrap_or(chrono::Duration::days(1));
        loop {
            let started = Utc::now();
            let mut ok = true;
            for repo in self.cfg.repos.values() {
                if ctx.shutdown.is_cancelled() {
                    return;
                }
                if let Err(e) = self.poll_repo(&ctx.executor, repo, since).await {
                    ok = false;
                    tracing::warn!(repo = %repo, error = %e, "polling GitHub failed; will retry");
                }
            }
            if ok {
                // Overlap a little: clocks differ and `since` is inclusive.
                since = started - chrono::Duration::minutes(2);
            }
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }
}
