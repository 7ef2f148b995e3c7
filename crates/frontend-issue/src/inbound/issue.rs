//! What an issue does: its body (rendered from an issue form) is a request;
//! editing the body replaces it, deleting the issue voids what is pending.

use youops_core::model::{RequestFilter, RequestRecord, State, Submission};
use youops_core::Executor;

use super::forms::{form_op, parse_issue_form};
use super::keys::body_key;
use super::record::{actor, claim, void_pending};
use super::Via;
use crate::config::RepoName;
use crate::feedback::{render_form_problems, status_marker};
use crate::github::{Issue, User};
use crate::origin::{origin, origin_refs, NAME};
use crate::shared::Shared;
use crate::GithubError;

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

/// The body of `issue` changed since the requests made from it: void the
/// pending ones, and when one of them ran already, claim `key` for it so that
/// nothing runs again. `Some(summary)` when the edit stops here.
async fn edit_of_prior(
    exec: &Executor,
    repo: &RepoName,
    issue: &Issue,
    editor: Option<&User>,
    via: &Via,
    key: &str,
) -> Option<String> {
    let prior = requests_from_issue(exec, repo, issue, true).await;
    if prior.is_empty() {
        return None;
    }
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
    })?;
    claim(
        exec,
        ran.request.id,
        &youops_core::DedupKey::lifetime(key),
        "edit",
        format!(
            "issue #{} was edited{} after request {} ran; nothing runs again (use `retry`)",
            issue.number,
            editor
                .map(|u| format!(" by {}", u.login))
                .unwrap_or_default(),
            ran.request.id
        ),
        data,
    )
    .await;
    Some(format!(
        "edited after request {} ran: not run again",
        ran.request.id
    ))
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
        if let Some(done) = edit_of_prior(exec, repo, issue, editor, via, &key).await {
            return done;
        }
        match self.is_open(repo, issue).await {
            Ok(true) => {}
            Ok(false) => return "closed issue: not submitted".into(),
            Err(why) => return why,
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
                GithubError::Form(problems).to_string()
            }
        }
    }

    /// Whether `issue` is open; `Err` is the summary when that cannot be told.
    async fn is_open(&self, repo: &RepoName, issue: &Issue) -> Result<bool, String> {
        match issue.is_open() {
            Some(open) => Ok(open),
            // A webhook payload without `state`: ask GitHub (the REST API always says).
            None => match self.api.issue(repo, issue.number).await {
                Ok(now) => Ok(now.is_open().unwrap_or(false)),
                Err(e) => {
                    tracing::warn!(repo = %repo, issue = issue.number, error = %e,
                        "the delivery did not say whether the issue is open, and GitHub could not be asked");
                    Err(format!(
                        "issue #{} state unknown ({e}): not submitted now; polling picks it up",
                        issue.number
                    ))
                }
            },
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
