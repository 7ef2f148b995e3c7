//! What an issue or comment does: the shared path of webhooks and polling.
//!
//! Dedup keys are built from GitHub's own ids so that a webhook delivery, its
//! redelivery and the poller finding the same issue or comment all claim the same
//! key, and nothing runs twice:
//!
//! - an issue body: `github:<owner/repo>#<number>:body:<sha256 of the body>` (an
//!   edit that changes the body is a new request; a title edit is not),
//! - a command line in a comment: `github:<owner/repo>:comment:<id>:<line>`.
//!
//! Commands that act on an existing request (approve, deny, cancel) claim their
//! line's key with a `comment_command` notice on that request, which is also how
//! an edit of the comment later finds the approval it voids.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use youops_core::audit::AppendOptions;
use youops_core::executor::Reply;
use youops_core::grammar::{self, Command};
use youops_core::model::{
    Actor, EventBody, NewEvent, Origin, RequestFilter, RequestId, RequestRecord, State, Submission,
};
use youops_core::{DedupKey, Executor};

use crate::config::RepoName;
use crate::feedback::{render_form_problems, reply_marker, status_marker};
use crate::forms::{form_op, parse_issue_form};
use crate::github::{Comment, Issue, User};
use crate::Shared;

/// Most command lines one comment may carry.
pub const MAX_COMMANDS: usize = 10;
/// The frontend name.
pub const NAME: &str = "github";

/// How an item reached us.
#[derive(Debug, Clone)]
pub struct Via {
    /// `webhook` or `poll`.
    pub path: &'static str,
    /// The webhook delivery id.
    pub delivery: Option<String>,
}

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// The dedup key of an issue body.
pub fn body_key(repo: &RepoName, issue: u64, body: &str) -> String {
    format!(
        "github:{}#{issue}:body:{}",
        repo.key(),
        short_hash(&body.replace("\r\n", "\n"))
    )
}

/// The dedup key of command line `line` of a comment.
pub fn comment_key(repo: &RepoName, comment_id: u64, line: usize) -> String {
    format!("github:{}:comment:{comment_id}:{line}", repo.key())
}

/// Whether a comment was written by this frontend.
pub fn is_ours(body: &str) -> bool {
    body.contains("<!-- youops:")
}

/// The command lines of a comment: lines starting with `prefix` (outside code
/// fences), the text after it.
pub fn command_lines(body: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in body.lines() {
        let t = line.trim();
        if t.starts_with("```") || t.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if let Some(rest) = t.strip_prefix(prefix) {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                out.push(rest.trim().to_string());
            }
        }
    }
    out
}

fn actor(user: &User) -> Actor {
    Actor::new(NAME, user.login.clone())
}

fn origin(repo: &RepoName, issue: u64, url: &str) -> Origin {
    Origin::new(NAME)
        .with_location(repo.to_string())
        .with_ref("repo", repo.to_string())
        .with_ref("issue", issue.to_string())
        .with_ref("url", url)
}

/// Repo, issue, source of a request's origin, if it is one of ours.
pub fn origin_refs(rec: &RequestRecord) -> Option<(String, u64, Option<u64>)> {
    let o = &rec.request.origin;
    if o.frontend != NAME {
        return None;
    }
    let repo = o.reference.get("repo")?.clone();
    let issue = o.reference.get("issue")?.parse().ok()?;
    let comment = o.reference.get("comment_id").and_then(|c| c.parse().ok());
    Some((repo, issue, comment))
}

/// Requests made from issue `issue` (its body when `body_only`), newest first.
async fn requests_from_issue(
    exec: &Executor,
    repo: &RepoName,
    issue: &Issue,
    body_only: bool,
) -> Vec<RequestRecord> {
    let filter = RequestFilter {
        frontend: Some(NAME.into()),
        since: Some(issue.created_at - chrono::Duration::minutes(5)),
        ..Default::default()
    };
    let all = exec.list(&filter, None, 1000).await.unwrap_or_default();
    all.into_iter()
        .filter(|r| {
            origin_refs(r).is_some_and(|(rp, n, c)| {
                rp.eq_ignore_ascii_case(&repo.to_string())
                    && n == issue.number
                    && (!body_only || c.is_none())
            })
        })
        .collect()
}

/// Record `what` on request `id` and claim `key` for it, so that the same
/// delivery is recognised later. A key claimed already is fine.
async fn claim(
    exec: &Executor,
    id: RequestId,
    key: &str,
    kind: &str,
    message: String,
    data: serde_json::Value,
) {
    let ev = NewEvent::request(
        id,
        EventBody::Notice {
            source: NAME.into(),
            kind: kind.into(),
            message,
            data,
        },
    );
    let mut opts = AppendOptions::durable();
    opts.dedup_key = Some(key.to_string());
    if let Err(e) = exec.store().append(vec![ev], opts).await {
        if !matches!(e, youops_core::audit::StoreError::Duplicate(_)) {
            tracing::warn!(error = %e, "could not record a comment command in the audit log");
        }
    }
}

/// Void `rec` if it is pending approval: a notice of what changed, then the void.
async fn void_pending(
    exec: &Executor,
    rec: &RequestRecord,
    kind: &str,
    what: &str,
    by: Option<&User>,
    data: serde_json::Value,
) -> bool {
    if rec.state != State::PendingApproval {
        return false;
    }
    let id = rec.request.id;
    let by_text = by.map(|u| format!(" by {}", u.login)).unwrap_or_default();
    let done = past(kind);
    let message = format!("{what} was {done}{by_text}; the pending request is void");
    if let Err(e) = exec.notice(Some(id), NAME, kind, message, data).await {
        tracing::warn!(request_id = %id, error = %e, "could not record an edit notice");
    }
    let who = by.map(actor);
    match exec
        .void(id, who.as_ref(), &format!("{what} was {done}{by_text}"))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::info!(request_id = %id, error = %e, "not voided");
            false
        }
    }
}

impl Shared {
    /// An issue was opened, edited, labeled or reopened, or the poller saw it.
    /// Returns a short summary for the webhook answer.
    pub(crate) async fn reconcile_issue(
        &self,
        exec: &Executor,
        repo: &RepoName,
        issue: &Issue,
        editor: Option<&User>,
        via: &Via,
    ) -> String {
        if issue.pull_request.is_some() {
            return "pull request: ignored".into();
        }
        let body = issue.body_text();
        let op = form_op(body).or_else(|| {
            issue
                .labels
                .iter()
                .find_map(|l| l.name.strip_prefix("youops:op:").map(String::from))
        });
        let Some(op) = op else {
            return "not a YouOps request issue".into();
        };
        let key = body_key(repo, issue.number, body);
        if let Ok(Some(id)) = exec.store().find_dedup(&key).await {
            return format!("already handled as request {id}");
        }
        let prior = requests_from_issue(exec, repo, issue, true).await;
        let editor_user = editor.or(issue.user.as_ref());
        if !prior.is_empty() {
            // The body changed since the last request made from it: an edit.
            let data = serde_json::json!({
                "repo": repo.to_string(), "issue": issue.number, "url": issue.html_url,
                "editor": editor.map(|u| u.login.clone()), "via": via.path,
            });
            for rec in &prior {
                void_pending(
                    exec,
                    rec,
                    "edit",
                    &format!("issue #{}", issue.number),
                    editor,
                    data.clone(),
                )
                .await;
            }
            let ran = prior.iter().find(|r| {
                matches!(
                    r.state,
                    State::Approved
                        | State::Running
                        | State::Succeeded
                        | State::Failed
                        | State::TimedOut
                        | State::Interrupted
                )
            });
            if let Some(ran) = ran {
                claim(
                    exec,
                    ran.request.id,
                    &key,
                    "edit",
                    format!(
                        "issue #{} was edited{} after request {} ran; nothing runs again (use `retry`)",
                        issue.number,
                        editor.map(|u| format!(" by {}", u.login)).unwrap_or_default(),
                        ran.request.id
                    ),
                    data,
                )
                .await;
                return format!("edited after request {} ran: not run again", ran.request.id);
            }
        }
        let open = match issue.is_open() {
            Some(open) => open,
            // A webhook payload without `state`: ask GitHub (the REST API always says).
            None => match self.api.issue(repo, issue.number).await {
                Ok(now) => now.is_open().unwrap_or(false),
                Err(e) => {
                    tracing::warn!(repo = %repo, issue = issue.number, error = %e,
                        "the delivery did not say whether the issue is open, and GitHub could not be asked");
                    return format!(
                        "issue #{} state unknown ({e}): not submitted now; polling picks it up",
                        issue.number
                    );
                }
            },
        };
        if !open {
            return "closed issue: not submitted".into();
        }
        let Some(spec) = exec.loaded().catalog.get(&op).cloned() else {
            // Unknown op: let the executor record it as invalid with a suggestion.
            return self
                .submit_issue(exec, repo, issue, &op, Vec::new(), &key, via)
                .await;
        };
        match parse_issue_form(body, &spec) {
            Ok(args) => {
                self.submit_issue(exec, repo, issue, &op, args, &key, via)
                    .await
            }
            Err(problems) => {
                let text = render_form_problems(&problems);
                let res = self
                    .api
                    .upsert_marked_comment(repo, issue.number, &status_marker("issue"), &text, true)
                    .await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, "could not comment on an unreadable issue form");
                }
                let _ = editor_user;
                format!("unreadable form: {}", problems.join("; "))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn submit_issue(
        &self,
        exec: &Executor,
        repo: &RepoName,
        issue: &Issue,
        op: &str,
        args: Vec<(String, String)>,
        key: &str,
        via: &Via,
    ) -> String {
        let Some(author) = &issue.user else {
            return format!(
                "issue #{} has no author (a deleted account?): not submitted",
                issue.number
            );
        };
        let mut sub = Submission::new(
            op,
            actor(author),
            origin(repo, issue.number, &issue.html_url).with_ref("source", "issue"),
        )
        .dedup(key)
        .provenance("url", issue.html_url.clone())
        .provenance("via", via.path);
        if let Some(d) = &via.delivery {
            sub = sub.provenance("delivery", d.clone());
        }
        sub.args = args;
        match exec.submit(sub).await {
            Ok(t) if t.duplicate => format!("already handled as request {}", t.record.request.id),
            Ok(t) => format!("request {} is {}", t.record.request.id, t.record.state),
            Err(e) => format!("not submitted: {e}"),
        }
    }

    /// A new comment (webhook `created`, or one the poller had not seen).
    pub(crate) async fn comment_created(
        &self,
        exec: &Executor,
        repo: &RepoName,
        issue_number: u64,
        comment: &Comment,
        via: &Via,
    ) -> String {
        let body = comment.body_text();
        if is_ours(body) {
            return "our own comment".into();
        }
        let mut lines = command_lines(body, &self.cfg.command_prefix);
        if lines.is_empty() {
            return "no command".into();
        }
        if !self.claim_comment(comment.id) {
            return "comment already being handled".into();
        }
        for i in 0..lines.len().min(MAX_COMMANDS) {
            if let Ok(Some(id)) = exec
                .store()
                .find_dedup(&comment_key(repo, comment.id, i))
                .await
            {
                return format!("comment already handled (request {id})");
            }
        }
        let mut reply = Vec::new();
        if lines.len() > MAX_COMMANDS {
            reply.push(format!(
                "Only the first {MAX_COMMANDS} commands of a comment are read; the other {} were ignored.",
                lines.len() - MAX_COMMANDS
            ));
            lines.truncate(MAX_COMMANDS);
        }
        let prefix = &self.cfg.command_prefix;
        let who = actor(&comment.user);
        let base = origin(repo, issue_number, &comment.html_url)
            .with_ref("source", "comment")
            .with_ref("comment_id", comment.id.to_string());
        for (i, text) in lines.iter().enumerate() {
            let text = if text.is_empty() {
                "help"
            } else {
                text.as_str()
            };
            let key = comment_key(repo, comment.id, i);
            let shown = format!("`{prefix} {}`", text.replace('`', "'"));
            let cmd = match grammar::parse(text) {
                Ok(c) => c,
                Err(e) => {
                    reply.push(format!("{shown}: ❌ {e}"));
                    continue;
                }
            };
            if let Command::Run { op, args, .. } = &cmd {
                let loaded = exec.loaded();
                let secrets: Vec<&str> = loaded
                    .catalog
                    .get(op)
                    .map(|spec| {
                        args.iter()
                            .filter(|(k, _)| spec.param(k).is_some_and(|p| p.is_secret()))
                            .map(|(k, _)| k.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                if !secrets.is_empty() {
                    let _ = exec
                        .notice(
                            None,
                            NAME,
                            "secret_in_comment",
                            format!(
                                "a secret parameter ({}) was typed in comment {}; the command was not run",
                                secrets.join(", "),
                                comment.html_url
                            ),
                            serde_json::json!({ "repo": repo.to_string(), "comment_id": comment.id, "login": comment.user.login }),
                        )
                        .await;
                    reply.push(format!(
                        "`{prefix} {op} …`: ❌ {} is a secret parameter and secrets are never accepted in GitHub (comments are public and keep their edit history). Nothing was run. **Treat the value as leaked and rotate it**, then use the CLI or the API.",
                        secrets.join(", ")
                    ));
                    continue;
                }
            }
            let mut prov = BTreeMap::new();
            prov.insert("url".to_string(), comment.html_url.clone());
            prov.insert("via".to_string(), via.path.to_string());
            if let Some(d) = &via.delivery {
                prov.insert("delivery".to_string(), d.clone());
            }
            let acts_on = match &cmd {
                Command::Approve { .. } => Some("approved"),
                Command::Deny { .. } => Some("denied"),
                Command::Cancel { .. } => Some("cancelled"),
                _ => None,
            };
            match exec
                .execute_command(
                    cmd,
                    &who,
                    &base,
                    Some(DedupKey::lifetime(key.clone())),
                    prov,
                )
                .await
            {
                Ok(Reply::Submitted(t)) => {
                    // The status comment tells the rest.
                    if t.duplicate {
                        reply.push(format!(
                            "{shown}: already handled as request `{}`",
                            t.record.request.id
                        ));
                    }
                }
                Ok(Reply::Help(h)) => {
                    let f = if h.contains("```") { "````" } else { "```" };
                    reply.push(format!("{shown}:\n{f}\n{h}\n{f}"));
                }
                Ok(Reply::Record(rec)) => {
                    if let Some(verb) = acts_on {
                        claim(
                            exec,
                            rec.request.id,
                            &key,
                            "comment_command",
                            format!(
                                "{verb} by {} in comment {}",
                                comment.user.login, comment.html_url
                            ),
                            serde_json::json!({
                                "repo": repo.to_string(), "issue": issue_number,
                                "comment_id": comment.id, "line": i, "url": comment.html_url,
                            }),
                        )
                        .await;
                    }
                    reply.push(format!("{shown}: {}", summarize(&rec, acts_on)));
                }
                Ok(_) => {}
                Err(e) => reply.push(format!("{shown}: ❌ {e}")),
            }
        }
        if reply.is_empty() {
            return "command(s) submitted".into();
        }
        let text = format!("{}\n{}\n", reply_marker(comment.id), reply.join("\n\n"));
        if let Err(e) = self
            .api
            .upsert_marked_comment(repo, issue_number, &reply_marker(comment.id), &text, false)
            .await
        {
            tracing::warn!(error = %e, "could not reply to a command comment");
        }
        reply.join(" | ")
    }

    /// A comment was edited or deleted: void what it requested or approved while
    /// that is still pending. `notice_only_if_pending`: the poller's guess of an
    /// edit records nothing for requests that already moved on.
    pub(crate) async fn comment_changed(
        &self,
        exec: &Executor,
        repo: &RepoName,
        comment: &Comment,
        kind: &str,
        by: Option<&User>,
        pending_only: bool,
    ) -> String {
        if is_ours(comment.body_text()) {
            return "our own comment".into();
        }
        let mut ids = Vec::new();
        for i in 0..MAX_COMMANDS {
            if let Ok(Some(id)) = exec
                .store()
                .find_dedup(&comment_key(repo, comment.id, i))
                .await
            {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        if ids.is_empty() {
            return "no request came from this comment".into();
        }
        let data = serde_json::json!({
            "repo": repo.to_string(), "comment_id": comment.id, "url": comment.html_url,
            "by": by.map(|u| u.login.clone()),
        });
        let mut voided = Vec::new();
        for id in ids {
            let Ok(rec) = exec.get(id).await else {
                continue;
            };
            let what = format!("comment {}", comment.html_url);
            if void_pending(exec, &rec, kind, &what, by, data.clone()).await {
                voided.push(id.to_string());
            } else if !pending_only {
                let by_text = by.map(|u| format!(" by {}", u.login)).unwrap_or_default();
                let _ = exec
                    .notice(
                        Some(id),
                        NAME,
                        kind,
                        format!(
                            "{what} was {}{by_text} after the request became {}; nothing was voided",
                            past(kind),
                            rec.state
                        ),
                        data.clone(),
                    )
                    .await;
            }
        }
        if voided.is_empty() {
            "nothing pending to void".into()
        } else {
            format!("voided {}", voided.join(", "))
        }
    }

    /// An issue was deleted: void its pending requests.
    pub(crate) async fn issue_deleted(
        &self,
        exec: &Executor,
        repo: &RepoName,
        issue: &Issue,
        by: &User,
    ) -> String {
        let mut n = 0;
        for rec in requests_from_issue(exec, repo, issue, false).await {
            let data = serde_json::json!({ "repo": repo.to_string(), "issue": issue.number });
            if void_pending(
                exec,
                &rec,
                "delete",
                &format!("issue #{}", issue.number),
                Some(by),
                data,
            )
            .await
            {
                n += 1;
            }
        }
        format!("voided {n} pending request(s)")
    }
}

fn past(kind: &str) -> &'static str {
    if kind == "delete" {
        "deleted"
    } else {
        "edited"
    }
}

/// The reply to a command on a request: what the command did and where that
/// leaves the request, said once.
fn summarize(rec: &RequestRecord, verb: Option<&str>) -> String {
    let id = rec.request.id;
    let n = rec.approvals_needed;
    match (verb, rec.state) {
        (Some("approved"), State::PendingApproval) => format!(
            "👍 approval of `{id}` recorded; it needs {n} more approval{}",
            if n == 1 { "" } else { "s" }
        ),
        (Some("approved"), State::Approved) => format!("👍 `{id}` approved; it starts now"),
        (Some("approved"), State::Running) => format!("👍 `{id}` approved; it is running"),
        (Some("approved"), s) => format!("👍 `{id}` approved; it ended **{s}**"),
        (Some("denied"), State::Rejected) => format!("👎 `{id}` denied; it will not run"),
        (Some("cancelled"), State::Cancelled) => format!("`{id}` cancelled"),
        (Some("cancelled"), s) if s.is_terminal() => {
            format!("too late to cancel `{id}`: it ended **{s}**")
        }
        (Some(v), s) => format!("`{id}` {v}; it is now **{s}**"),
        (None, s) => format!(
            "`{id}` (`{}`) is **{s}**{}",
            rec.request.op,
            rec.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: &str, needed: u32) -> RequestRecord {
        serde_json::from_value(serde_json::json!({
            "approvals_needed": needed, "last_hash": "", "last_seq": 3, "state": state,
            "updated_at": "2026-12-07T05:23:39Z",
            "request": {
                "id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "op": "deploy", "args": {},
                "actor": {"frontend": "github", "external_id": "alice-gh", "principal": "alice"},
                "origin": {"frontend": "github"}, "created_at": "2026-12-07T05:23:39Z",
                "digest": "d", "dry_run": false,
            },
        }))
        .expect("a record")
    }

    #[test]
    fn a_command_reply_says_what_happened_once() {
        let id = "`01ARZ3NDEKTSV4RRFFQ69G5FAV`";
        let table = [
            (
                "pending_approval",
                1,
                "approved",
                format!("👍 approval of {id} recorded; it needs 1 more approval"),
            ),
            (
                "pending_approval",
                2,
                "approved",
                format!("👍 approval of {id} recorded; it needs 2 more approvals"),
            ),
            (
                "approved",
                0,
                "approved",
                format!("👍 {id} approved; it starts now"),
            ),
            (
                "running",
                0,
                "approved",
                format!("👍 {id} approved; it is running"),
            ),
            (
                "succeeded",
                0,
                "approved",
                format!("👍 {id} approved; it ended **succeeded**"),
            ),
            (
                "rejected",
                0,
                "denied",
                format!("👎 {id} denied; it will not run"),
            ),
            ("cancelled", 0, "cancelled", format!("{id} cancelled")),
            (
                "succeeded",
                0,
                "cancelled",
                format!("too late to cancel {id}: it ended **succeeded**"),
            ),
        ];
        for (state, needed, verb, want) in table {
            let got = summarize(&record(state, needed), Some(verb));
            assert_eq!(got, want, "{state} {verb}");
            assert!(!got.contains("approved; it is now approved"));
        }
    }

    #[test]
    fn command_lines_skip_fences_and_other_prefixes() {
        let body = "hi\r\n/ops approve 01ARZ3NDEKTSV4RRFFQ69G5FAV\n  /ops   status X\n/opsy no\n```\n/ops run inside fence\n```\n> /ops quoted\n/ops";
        assert_eq!(
            command_lines(body, "/ops"),
            vec![
                "approve 01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string(),
                "status X".to_string(),
                String::new()
            ]
        );
    }

    #[test]
    fn keys_are_stable_and_case_insensitive_in_the_repo() {
        let a = RepoName::parse("Acme/Ops").unwrap();
        let b = RepoName::parse("acme/ops").unwrap();
        assert_eq!(comment_key(&a, 5, 0), comment_key(&b, 5, 0));
        assert_eq!(body_key(&a, 1, "x\r\ny"), body_key(&b, 1, "x\ny"));
        assert_ne!(body_key(&a, 1, "x"), body_key(&a, 1, "y"));
    }
}
