//! What inbound records on requests that exist already: a claimed dedup key
//! (with a notice saying why), and the void of a pending request whose issue or
//! comment was edited or deleted.

use youops_core::model::{Actor, RequestId, RequestRecord, State};
use youops_core::Executor;

use crate::github::User;
use crate::origin::NAME;

/// The core actor of a GitHub user.
pub(crate) fn actor(user: &User) -> Actor {
    Actor::new(NAME, user.login.clone())
}

/// Record `what` on request `id` and claim `key` for it, so that the same
/// delivery is recognised later (an issue body's key never expires). A key
/// claimed already is fine.
pub(crate) async fn claim(
    exec: &Executor,
    id: RequestId,
    key: &youops_core::DedupKey,
    kind: &str,
    message: String,
    data: serde_json::Value,
) {
    if let Err(e) = exec
        .notice_claiming(id, key, NAME, kind, message, data)
        .await
    {
        tracing::warn!(error = %e, "could not record an issue edit in the audit log");
    }
}

/// Void `rec` if it is pending approval: a notice of what changed, then the void.
pub(crate) async fn void_pending(
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

/// The past tense of a change kind (`edit` or `delete`).
pub(crate) fn past(kind: &str) -> &'static str {
    if kind == "delete" {
        "deleted"
    } else {
        "edited"
    }
}
