//! What a comment does: its `/ops …` command lines run through the core
//! executor, with one reply for what needs saying; editing or deleting it
//! voids what it requested or approved while that is still pending.

use std::collections::BTreeMap;

use youops_core::executor::Reply;
use youops_core::grammar::{self, Command};
use youops_core::model::{Actor, Origin, RequestRecord, State};
use youops_core::{DedupKey, Executor, Inbound};

use super::keys::comment_key;
use super::record::{actor, past, void_pending};
use super::{Via, MAX_COMMANDS};
use crate::config::RepoName;
use crate::feedback::{is_ours, reply_marker};
use crate::github::{Comment, User};
use crate::origin::{origin, NAME};
use crate::shared::Shared;

/// The command lines of a comment: lines starting with `prefix` (outside code
/// fences), the text after it.
pub(crate) fn command_lines(body: &str, prefix: &str) -> Vec<String> {
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

/// A command comment being handled: what each of its lines shares.
struct CommandComment<'a> {
    exec: &'a Executor,
    repo: &'a RepoName,
    issue_number: u64,
    comment: &'a Comment,
    via: &'a Via,
    prefix: &'a str,
    who: Actor,
    base: Origin,
}

impl CommandComment<'_> {
    /// Run command line `i`; the reply it needs, if any.
    async fn run_line(&self, i: usize, text: &str) -> Option<String> {
        let (exec, comment) = (self.exec, self.comment);
        let text = if text.is_empty() { "help" } else { text };
        let key = comment_key(self.repo, comment.id, i);
        let prefix = self.prefix;
        let shown = format!("`{prefix} {}`", text.replace('`', "'"));
        let cmd = match grammar::parse(text) {
            Ok(c) => c,
            Err(e) => return Some(format!("{shown}: ❌ {e}")),
        };
        if let Some(refused) = self.refuse_secrets(&cmd).await {
            return Some(refused);
        }
        let acts_on = match &cmd {
            Command::Approve { .. } => Some("approved"),
            Command::Deny { .. } => Some("denied"),
            Command::Cancel { .. } => Some("cancelled"),
            _ => None,
        };
        // The claim expires with the store's dedup window; `comment_created`
        // refuses comments older than that window, so it never lets this
        // line run again.
        let mut inbound = Inbound::new(cmd, self.who.clone(), self.base.clone())
            .dedup(DedupKey::delivery(key.clone()));
        inbound.provenance = self.provenance();
        match exec.handle(inbound).await {
            Ok(Reply::Submitted(t)) => {
                // The status comment tells the rest.
                t.duplicate.then(|| {
                    format!(
                        "{shown}: already handled as request `{}`",
                        t.record.request.id
                    )
                })
            }
            Ok(Reply::Help(h)) => {
                let f = if h.contains("```") { "````" } else { "```" };
                Some(format!("{shown}:\n{f}\n{h}\n{f}"))
            }
            Ok(Reply::Record(rec)) => {
                if let Some(verb) = acts_on {
                    self.record_line(&rec, i, verb).await;
                }
                Some(format!("{shown}: {}", summarize(&rec, acts_on)))
            }
            Ok(Reply::Duplicate(rec)) => Some(format!(
                "{shown}: already handled (request `{}`)",
                rec.request.id
            )),
            Ok(_) => None,
            Err(e) => Some(format!("{shown}: ❌ {e}")),
        }
    }

    /// Where a command came from, for the audit log.
    fn provenance(&self) -> BTreeMap<String, String> {
        let mut prov = BTreeMap::new();
        prov.insert("url".to_string(), self.comment.html_url.clone());
        prov.insert("via".to_string(), self.via.path.to_string());
        if let Some(d) = &self.via.delivery {
            prov.insert("delivery".to_string(), d.clone());
        }
        prov
    }

    /// A run command that types a secret parameter is refused (and recorded):
    /// the reply saying so.
    async fn refuse_secrets(&self, cmd: &Command) -> Option<String> {
        let Command::Run { op, args, .. } = cmd else {
            return None;
        };
        let (exec, comment, prefix) = (self.exec, self.comment, self.prefix);
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
        if secrets.is_empty() {
            return None;
        }
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
                serde_json::json!({ "repo": self.repo.to_string(), "comment_id": comment.id, "login": comment.user.login }),
            )
            .await;
        Some(format!(
            "`{prefix} {op} …`: ❌ {} is a secret parameter and secrets are never accepted in GitHub (comments are public and keep their edit history). Nothing was run. **Treat the value as leaked and rotate it**, then use the CLI or the API.",
            secrets.join(", ")
        ))
    }

    /// Record where the decision on `rec` (approve, deny, cancel) came from:
    /// line `i` of this comment (its key was claimed with the decision).
    async fn record_line(&self, rec: &RequestRecord, i: usize, verb: &str) {
        let comment = self.comment;
        let noted = self
            .exec
            .notice(
                Some(rec.request.id),
                NAME,
                "comment_command",
                format!(
                    "{verb} by {} in comment {}",
                    comment.user.login, comment.html_url
                ),
                serde_json::json!({
                    "repo": self.repo.to_string(), "issue": self.issue_number,
                    "comment_id": comment.id, "line": i, "url": comment.html_url,
                }),
            )
            .await;
        if let Err(e) = noted {
            tracing::warn!(error = %e, "could not record a comment command in the audit log");
        }
    }
}

/// Whether an object created at `created` is older than the dedup window:
/// the claim of anything it caused to run holds for at least the window from
/// when it ran, which was after `created`; past the window, only age tells
/// that it was handled, so it is not acted on.
pub(crate) fn too_old(created: chrono::DateTime<chrono::Utc>, window: std::time::Duration) -> bool {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    chrono::Utc::now().signed_duration_since(created) >= window
}

impl Shared {
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
        let window = exec.loaded().dedup_ttl;
        if too_old(comment.created_at, window) {
            // Its lines' claims (if it ran) may have expired: it is never run now.
            return format!(
                "comment older than the dedup window ({}s): not run",
                window.as_secs()
            );
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
        let handling = CommandComment {
            exec,
            repo,
            issue_number,
            comment,
            via,
            prefix: &self.cfg.command_prefix,
            who: actor(&comment.user),
            base: origin(repo, issue_number, &comment.html_url)
                .with_ref("source", "comment")
                .with_ref("comment_id", comment.id.to_string()),
        };
        for (i, text) in lines.iter().enumerate() {
            reply.extend(handling.run_line(i, text).await);
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
}
