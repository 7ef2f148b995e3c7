//! Writing one lifecycle step of a request on its issue: the status comment
//! (edited in place), the reactions, the state label, and closing the issue on
//! success when the op asks for it.

use youops_core::frontend::FrontendContext;
use youops_core::model::{RequestRecord, State};

use super::markers::status_marker;
use super::render::render_status;
use super::state::{accepted, end_reaction, state_label, STATE_LABELS};
use crate::config::RepoName;
use crate::github::{self, ApiError};
use crate::origin::{origin_refs, NAME};
use crate::shared::{lock, Shared, RECENT};

impl Shared {
    /// Render one lifecycle step of one of our requests on the issue.
    /// Write a request's feedback on its issue. `false` when the status comment
    /// could not be written (the caller retries).
    pub(crate) async fn render(&self, ctx: &FrontendContext, rec: &RequestRecord) -> bool {
        let Some((repo_text, issue, comment_id)) = origin_refs(rec) else {
            return true;
        };
        let Some(repo) = self.cfg.repo(&repo_text).cloned() else {
            return true;
        };
        let id = rec.request.id;
        let Some(first_accept) = self.note_rendered(rec) else {
            return true;
        };
        let status_written = self.write_status(ctx, rec, &repo, issue, comment_id).await;
        if first_accept {
            self.react(&repo, issue, comment_id, github::reaction::EYES)
                .await;
        }
        if let Some(r) = end_reaction(rec.state) {
            self.react(&repo, issue, comment_id, r).await;
        }
        if rec.state != State::Received {
            if let Err(e) = self.set_state_label(&repo, issue, rec.state).await {
                tracing::warn!(request_id = %id, error = %e, "could not set labels");
            }
        }
        if rec.state == State::Succeeded && comment_id.is_none() && close_on_success(ctx, rec) {
            if let Err(e) = self.api.close_issue(&repo, issue).await {
                tracing::warn!(request_id = %id, error = %e, "could not close the issue");
            }
        }
        status_written
    }

    /// Remember that `rec` is being rendered. `None` when this record (or a
    /// later one) was rendered already; otherwise whether this is the first
    /// accepted state of the request (time for 👀).
    fn note_rendered(&self, rec: &RequestRecord) -> Option<bool> {
        let mut r = lock(&self.rendered);
        let entry = r.entry(rec.request.id).or_insert((0, false));
        if rec.last_seq <= entry.0 {
            return None;
        }
        entry.0 = rec.last_seq;
        let first = accepted(rec.state) && !entry.1;
        if first {
            entry.1 = true;
        }
        if r.len() > RECENT {
            // Keep it bounded: forget every other request (at worst one is rendered again).
            r.retain(|_, (seq, _)| *seq == rec.last_seq);
        }
        Some(first)
    }

    /// Create or update the request's status comment; `false` when it could
    /// not be written.
    async fn write_status(
        &self,
        ctx: &FrontendContext,
        rec: &RequestRecord,
        repo: &RepoName,
        issue: u64,
        comment_id: Option<u64>,
    ) -> bool {
        let id = rec.request.id;
        let key = if comment_id.is_none() {
            "issue".to_string()
        } else {
            format!("request-{id}")
        };
        let url = ctx.request_url(id);
        let body = render_status(
            rec,
            &key,
            url.as_deref(),
            self.cfg.output_limit,
            &self.cfg.command_prefix,
        );
        let cache_key = (repo.key(), issue, key.clone());
        let cached = lock(&self.status_comments).get(&cache_key).copied();
        let posted = match cached {
            Some(cid) => self
                .api
                .update_comment(repo, cid, &body)
                .await
                .map(|c| c.id),
            None => {
                self.api
                    .upsert_marked_comment(repo, issue, &status_marker(&key), &body, true)
                    .await
            }
        };
        match posted {
            Ok(cid) => {
                // Remembered while the request lives; once it ended, later
                // updates (rare) find the comment again by its marker, and the
                // cache stays bounded by the requests in flight.
                if rec.state.is_terminal() {
                    lock(&self.status_comments).remove(&cache_key);
                } else {
                    lock(&self.status_comments).insert(cache_key, cid);
                }
                true
            }
            Err(e) => {
                lock(&self.status_comments).remove(&cache_key);
                // Let a retry render this same record again.
                if let Some(entry) = lock(&self.rendered).get_mut(&id) {
                    entry.0 = 0;
                }
                tracing::warn!(request_id = %id, error = %e, "could not write the status comment");
                false
            }
        }
    }

    async fn react(&self, repo: &RepoName, issue: u64, comment_id: Option<u64>, content: &str) {
        let r = match comment_id {
            Some(c) => self.api.react_comment(repo, c, content).await,
            None => self.api.react_issue(repo, issue, content).await,
        };
        if let Err(e) = r {
            tracing::warn!(repo = %repo, issue, error = %e, "could not react");
        }
    }

    async fn set_state_label(
        &self,
        repo: &RepoName,
        issue: u64,
        state: State,
    ) -> Result<(), ApiError> {
        let want = state_label(state);
        let have = self.api.labels(repo, issue).await?;
        for l in STATE_LABELS {
            if Some(l) != want && have.iter().any(|h| h == l) {
                self.api.remove_label(repo, issue, l).await?;
            }
        }
        if let Some(w) = want {
            if !have.iter().any(|h| h == w) {
                self.api.add_labels(repo, issue, &[w]).await?;
            }
        }
        Ok(())
    }
}

fn close_on_success(ctx: &FrontendContext, rec: &RequestRecord) -> bool {
    ctx.executor
        .loaded()
        .catalog
        .get(&rec.request.op)
        .and_then(|op| op.frontend.get(NAME))
        .and_then(|t| t.get("close_on_success"))
        .and_then(toml::Value::as_bool)
        .unwrap_or(false)
}
