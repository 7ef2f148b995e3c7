//! The webhook endpoint (`POST /github/webhook`): signature check, decoding,
//! delivery dedup, and dispatch of each event to what it does.

use std::sync::Arc;

use youops_core::frontend::{
    json_response, simple_response, FrontendContext, HttpRequest, HttpResponse,
};
use youops_core::Executor;

use super::webhook::{decode, payload_json, verify, Event};
use super::Via;
use crate::config::RepoName;
use crate::shared::{lock, Shared};

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

impl Shared {
    /// Answer one webhook delivery: verify, decode, deduplicate, then process
    /// it (within `ack_timeout`; it goes on in the background after that).
    pub(crate) async fn handle_webhook(
        self: &Arc<Self>,
        ctx: &FrontendContext,
        req: HttpRequest,
    ) -> HttpResponse {
        use http::StatusCode;
        if req.method() != http::Method::POST {
            return simple_response(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        if let Err(e) = verify(
            self.cfg.webhook_secret.as_bytes(),
            req.headers(),
            req.body(),
        ) {
            tracing::info!(reason = %e, "refused a GitHub delivery");
            return simple_response(StatusCode::UNAUTHORIZED, &e.to_string());
        }
        let Some(event) = header(&req, "x-github-event").map(str::to_string) else {
            return simple_response(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
        };
        let Some(delivery) = header(&req, "x-github-delivery").map(str::to_string) else {
            return simple_response(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header");
        };
        let json = match payload_json(header(&req, "content-type"), req.body()) {
            Ok(j) => j,
            Err(e) => return simple_response(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let decoded = match decode(&event, &json) {
            Ok(d) => d,
            Err(e) => return simple_response(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let answer = |status: StatusCode, result: &str| {
            json_response(
                status,
                &serde_json::json!({ "delivery": delivery, "event": event, "result": result }),
            )
        };
        let repo_name = match &decoded {
            Event::Ping(p) => {
                return json_response(
                    StatusCode::OK,
                    &serde_json::json!({ "ok": true, "zen": p.zen, "hook_id": p.hook_id }),
                )
            }
            Event::Ignored(ignored) => {
                // Before the repository check and the delivery id: nothing is
                // recorded for a delivery YouOps does not act on.
                tracing::debug!(delivery = %delivery, event = %ignored.event,
                    action = ignored.action.as_deref().unwrap_or(""), "ignored a GitHub delivery");
                return answer(StatusCode::ACCEPTED, &ignored.to_string());
            }
            Event::Issues(e) => e.repository.full_name.clone(),
            Event::IssueComment(e) => e.repository.full_name.clone(),
        };
        let Some(repo) = self.cfg.repo(&repo_name).cloned() else {
            return answer(
                StatusCode::ACCEPTED,
                &format!("repository `{repo_name}` is not managed by YouOps: ignored"),
            );
        };
        if !lock(&self.deliveries).insert(delivery.clone()) {
            return answer(StatusCode::OK, "duplicate delivery: already handled");
        }
        let via = Via {
            path: "webhook",
            delivery: Some(delivery.clone()),
        };
        let this = self.clone();
        let exec = ctx.executor.clone();
        let work =
            tokio::spawn(async move { this.process_event(&exec, &repo, decoded, &via).await });
        match tokio::time::timeout(self.cfg.ack_timeout, work).await {
            Ok(Ok(Ok(result))) => answer(StatusCode::OK, &result),
            Ok(Ok(Err(e))) => {
                // The system's fault (store, shutdown): let the delivery be redelivered.
                lock(&self.deliveries).remove(&delivery);
                tracing::warn!(delivery = %delivery, error = %e, "delivery not processed");
                answer(StatusCode::SERVICE_UNAVAILABLE, &e)
            }
            Ok(Err(_)) => {
                lock(&self.deliveries).remove(&delivery);
                answer(StatusCode::SERVICE_UNAVAILABLE, "processing failed")
            }
            Err(_) => answer(StatusCode::ACCEPTED, "accepted; still processing"),
        }
    }

    /// What a decoded delivery does; `Err` when YouOps cannot take it now.
    async fn process_event(
        &self,
        exec: &Executor,
        repo: &RepoName,
        event: Event,
        via: &Via,
    ) -> Result<String, String> {
        if !exec.is_accepting() {
            return Err("YouOps is shutting down".into());
        }
        Ok(match event {
            Event::Issues(mut e) => match e.action.as_str() {
                "opened" | "reopened" | "labeled" => {
                    if e.issue.state.is_none() && e.action != "labeled" {
                        // Opening or reopening leaves the issue open.
                        e.issue.state = Some("open".into());
                    }
                    if e.issue.user.is_none() && e.action == "opened" {
                        // Who opened it is its author.
                        e.issue.user = Some(e.sender.clone());
                    }
                    self.reconcile_issue(exec, repo, &e.issue, Some(&e.sender), via)
                        .await
                }
                "edited" => {
                    if e.changes.as_ref().is_some_and(|c| c.body.is_none()) {
                        "title edit: nothing to do".into()
                    } else {
                        self.reconcile_issue(exec, repo, &e.issue, Some(&e.sender), via)
                            .await
                    }
                }
                "deleted" => self.issue_deleted(exec, repo, &e.issue, &e.sender).await,
                other => format!("issues action `{other}` ignored"),
            },
            Event::IssueComment(e) => match e.action.as_str() {
                "created" => {
                    self.comment_created(exec, repo, e.issue.number, &e.comment, via)
                        .await
                }
                "edited" => {
                    if e.changes.as_ref().is_some_and(|c| c.body.is_none()) {
                        "comment edit without a body change: nothing to do".into()
                    } else {
                        self.comment_changed(exec, repo, &e.comment, "edit", Some(&e.sender), false)
                            .await
                    }
                }
                "deleted" => {
                    self.comment_changed(exec, repo, &e.comment, "delete", Some(&e.sender), false)
                        .await
                }
                other => format!("issue_comment action `{other}` ignored"),
            },
            Event::Ping(_) => "ignored".into(),
            Event::Ignored(i) => i.to_string(),
        })
    }
}
