//! Decisions on a request: approve, deny, cancel, void, retry and approval expiry.

use std::sync::Arc;

use chrono::Utc;

use super::handle::Decided;
use super::help::approvers_text;
use super::{lock, Executor, Loaded, Ticket};
use crate::audit::StoreError;
use crate::catalog::OpSpec;
use crate::error::{Error, Result};
use crate::model::{
    Actor, ApprovalRecord, DedupKey, EventBody, NewEvent, Origin, RequestId, RequestRecord, State,
    Submission, Transition,
};

/// The notice kind of a request to cancel a run: the node running it
/// cancels it, when it reads the notice from the store if another node
/// recorded it.
pub(super) const CANCEL_REQUESTED: &str = "cancel_requested";

impl Executor {
    /// Approve a pending request. `digest`, when given (e.g. carried by a chat
    /// button), must match the request's: an approval is bound to exactly what was
    /// asked.
    pub async fn approve(
        &self,
        id: RequestId,
        approver: &Actor,
        digest: Option<&str>,
    ) -> Result<RequestRecord> {
        self.decide(id, approver, digest, true, None, None)
            .await
            .map(Decided::into_record)
    }

    /// Deny a pending request; it ends `rejected`.
    pub async fn deny(
        &self,
        id: RequestId,
        approver: &Actor,
        reason: Option<String>,
    ) -> Result<RequestRecord> {
        self.decide(id, approver, None, false, reason, None)
            .await
            .map(Decided::into_record)
    }

    /// Approve or deny, claiming `dedup` with the approval event; made again
    /// from a fresh read if another node changed the request meanwhile.
    pub(super) async fn decide(
        &self,
        id: RequestId,
        approver: &Actor,
        digest: Option<&str>,
        approve: bool,
        reason: Option<String>,
        dedup: Option<&DedupKey>,
    ) -> Result<Decided> {
        self.decided(|| self.decide_once(id, approver, digest, approve, reason.clone(), dedup))
            .await
    }

    async fn decide_once(
        &self,
        id: RequestId,
        approver: &Actor,
        digest: Option<&str>,
        approve: bool,
        reason: Option<String>,
        dedup: Option<&DedupKey>,
    ) -> Result<Decided> {
        let principal = self.principal_of(approver)?;
        let _g = self.inner.actions.lock().await;
        if let Some(done) = self.claimed(dedup).await? {
            return Ok(Decided::Duplicate(done));
        }
        let mut rec = self.get(id).await?;
        let verb = if approve { "approve" } else { "deny" };
        if rec.state != State::PendingApproval {
            return Err(Error::Conflict(format!(
                "request {id} is {}, not pending approval; there is nothing to {verb}",
                rec.state
            )));
        }
        if let Some(exp) = rec.expires_at {
            if Utc::now() >= exp {
                self.expire(&mut rec, None).await?;
                return Err(Error::Approval(format!(
                    "request {id} expired at {exp}; approvals are no longer accepted, submit it again"
                )));
            }
        }
        let loaded = self.loaded();
        let op = may_decide(&loaded, &rec, &principal, digest, approve)?;
        let by = self.with_principal(approver, &principal);
        let mut events = vec![NewEvent::request(
            id,
            EventBody::Approval(ApprovalRecord {
                by: by.clone(),
                approve,
                digest: rec.request.digest.clone(),
                at: Utc::now(),
                reason: reason.clone(),
            }),
        )];
        let mut run = false;
        if !approve {
            let mut t = Transition::to(State::Rejected).by(by.clone());
            t.reason = Some(match &reason {
                Some(r) => format!("denied by {principal}: {r}"),
                None => format!("denied by {principal}"),
            });
            events.push(NewEvent::transition(id, t));
        } else if rec.approvals_needed <= 1 {
            events.push(NewEvent::transition(
                id,
                Transition::to(State::Approved)
                    .by(by.clone())
                    .reason(format!("approved by {}", approvers_of(&rec, &principal))),
            ));
            run = true;
        }
        if !self.commit_decision(&mut rec, events, dedup).await? {
            return Ok(Decided::Duplicate(
                self.claimed(dedup).await?.unwrap_or(rec),
            ));
        }
        if !approve || run {
            let pending = lock(&self.inner.pending).remove(&id);
            if run {
                match pending {
                    Some(p) => self.spawn_run(rec.clone(), op, p.args),
                    // Arguments with no secret are on the record: any node
                    // that records the approval runs the request.
                    None if rec.request.secret_args.is_empty() => {
                        let args = rec.request.args.clone();
                        self.spawn_run(rec.clone(), op, args);
                    }
                    // The secret is in the memory of the node that received
                    // the request: that node runs it when it reads this
                    // approval from the store (or, if it died, the leader
                    // marks the request interrupted).
                    None if rec.node.is_some() && rec.node != self.inner.node => {}
                    None => {
                        let t = Transition::to(State::Interrupted)
                            .reason("its arguments were not kept across a restart (secret values are never stored); submit it again");
                        self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
                            .await?;
                    }
                }
            }
        }
        Ok(Decided::Done(rec))
    }

    /// Expire `rec`; as the cluster's leader under `leader_epoch` when the
    /// sweeper does it (an approval that finds it overdue may, anywhere).
    async fn expire(&self, rec: &mut RequestRecord, leader_epoch: Option<u64>) -> Result<()> {
        let id = rec.request.id;
        lock(&self.inner.pending).remove(&id);
        let t = Transition::to(State::Expired).reason(format!(
            "approvals did not arrive before {}",
            rec.expires_at.map(|e| e.to_rfc3339()).unwrap_or_default()
        ));
        self.commit_decision_as(rec, vec![NewEvent::transition(id, t)], None, leader_epoch)
            .await
            .map(|_| ())
    }

    /// Expire pending requests whose approval window has passed.
    pub async fn expire_due(&self) -> Result<usize> {
        // The leader's work: fenced by its epoch in the store.
        let Some(term) = self.inner.leadership.current() else {
            return Ok(0);
        };
        let now = Utc::now();
        let mut due: std::collections::BTreeSet<RequestId> = lock(&self.inner.pending)
            .iter()
            .filter(|(_, p)| p.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        // In a cluster the leader expires every node's requests, including
        // those it never held (received elsewhere, or with a secret).
        if self.inner.follow_every.is_some() {
            for r in self.inner.store.active_requests().await? {
                if r.state == State::PendingApproval && r.expires_at.is_some_and(|e| e <= now) {
                    due.insert(r.request.id);
                }
            }
        }
        let mut n = 0;
        for id in due {
            let _g = self.inner.actions.lock().await;
            let mut rec = self.get(id).await?;
            if rec.state == State::PendingApproval {
                match self.expire(&mut rec, Some(term.epoch)).await {
                    Ok(()) => n += 1,
                    // Decided elsewhere meanwhile: the next sweep reads it again.
                    Err(Error::Store(StoreError::Stale { .. })) => {}
                    Err(e) => return Err(e),
                }
            } else {
                lock(&self.inner.pending).remove(&id);
            }
        }
        Ok(n)
    }

    /// Cancel a request that is pending, queued or running. The requester may
    /// cancel, and so may anyone who may approve the op.
    pub async fn cancel(&self, id: RequestId, actor: &Actor) -> Result<RequestRecord> {
        self.cancel_claiming(id, actor, None)
            .await
            .map(Decided::into_record)
    }

    /// Cancel, claiming `dedup` with the first event; made again from a
    /// fresh read if another node changed the request meanwhile.
    pub(super) async fn cancel_claiming(
        &self,
        id: RequestId,
        actor: &Actor,
        dedup: Option<&DedupKey>,
    ) -> Result<Decided> {
        self.decided(|| self.cancel_once(id, actor, dedup)).await
    }

    async fn cancel_once(
        &self,
        id: RequestId,
        actor: &Actor,
        dedup: Option<&DedupKey>,
    ) -> Result<Decided> {
        let principal = self.principal_of(actor)?;
        let _g = self.inner.actions.lock().await;
        if let Some(done) = self.claimed(dedup).await? {
            return Ok(Decided::Duplicate(done));
        }
        let mut rec = self.get(id).await?;
        if rec.state.is_terminal() {
            return Err(Error::Conflict(format!(
                "request {id} already ended ({})",
                rec.state
            )));
        }
        let loaded = self.loaded();
        let is_requester = rec.request.actor.principal.as_deref() == Some(principal.as_str());
        let may = is_requester
            || loaded
                .op(&rec.request.op)
                .is_some_and(|op| loaded.policy.may_approve(&principal, &op));
        if !may {
            return Err(Error::Forbidden(format!(
                "`{principal}` may not cancel request {id}: only its requester or an approver of `{}` may",
                rec.request.op
            )));
        }
        let token = lock(&self.inner.runs).get(&id).cloned();
        // A request another node has taken on (received and started, or
        // approved) is that node's to stop: it reads the request to cancel
        // from the store.
        let elsewhere = token.is_none()
            && rec.node.is_some()
            && rec.node != self.inner.node
            && rec.state != State::PendingApproval;
        if token.is_some() || elsewhere {
            let asked = NewEvent::request(
                id,
                EventBody::Notice {
                    source: "executor".into(),
                    kind: CANCEL_REQUESTED.into(),
                    message: format!("cancel requested by {principal}"),
                    data: serde_json::Value::Null,
                },
            );
            if !self.commit_decision(&mut rec, vec![asked], dedup).await? {
                return Ok(Decided::Duplicate(
                    self.claimed(dedup).await?.unwrap_or(rec),
                ));
            }
            if let Some(token) = token {
                token.cancel();
            }
            drop(_g);
            return self.wait(id).await.map(Decided::Done);
        }
        let by = self.with_principal(actor, &principal);
        let t = Transition::to(State::Cancelled)
            .by(by)
            .reason(format!("cancelled by {principal}"));
        if !self
            .commit_decision(&mut rec, vec![NewEvent::transition(id, t)], dedup)
            .await?
        {
            return Ok(Decided::Duplicate(
                self.claimed(dedup).await?.unwrap_or(rec),
            ));
        }
        lock(&self.inner.pending).remove(&id);
        Ok(Decided::Done(rec))
    }

    /// Void a request pending approval because what it (or one of its approvals)
    /// came from changed under it: an edited or deleted issue, comment or message.
    /// It ends `cancelled` with `voided: <reason>`; approvals given so far no
    /// longer count. Unlike [`cancel`](Self::cancel) no principal is needed: the
    /// frontend that saw the edit decides, and should first record what happened
    /// with [`notice`](Self::notice). A request in any other state is left alone
    /// (`Conflict`).
    pub async fn void(
        &self,
        id: RequestId,
        by: Option<&Actor>,
        reason: &str,
    ) -> Result<RequestRecord> {
        self.decided(|| self.void_once(id, by, reason)).await
    }

    async fn void_once(
        &self,
        id: RequestId,
        by: Option<&Actor>,
        reason: &str,
    ) -> Result<RequestRecord> {
        let _g = self.inner.actions.lock().await;
        let mut rec = self.get(id).await?;
        if rec.state != State::PendingApproval {
            return Err(Error::Conflict(format!(
                "request {id} is {}; only a request pending approval can be voided",
                rec.state
            )));
        }
        lock(&self.inner.pending).remove(&id);
        let mut t = Transition::to(State::Cancelled).reason(format!("voided: {reason}"));
        t.by = by.cloned();
        self.commit_decision(&mut rec, vec![NewEvent::transition(id, t)], None)
            .await?;
        Ok(rec)
    }

    /// Run a finished request again with the same op and arguments, as a new
    /// request by `actor` (checked by the policy and approvals again).
    pub async fn retry(
        &self,
        id: RequestId,
        actor: &Actor,
        origin: Origin,
        dedup_key: Option<DedupKey>,
    ) -> Result<Ticket> {
        self.principal_of(actor)?;
        let rec = self.get(id).await?;
        if !rec.state.is_terminal() {
            return Err(Error::Conflict(format!(
                "request {id} is still {}; retry it when it ends",
                rec.state
            )));
        }
        if rec.state == State::Invalid {
            return Err(Error::Conflict(format!(
                "request {id} was invalid ({}); fix it and submit it again",
                rec.reason.clone().unwrap_or_default()
            )));
        }
        if !rec.request.secret_args.is_empty() {
            return Err(Error::Conflict(format!(
                "request {id} had secret arguments ({}), which are never stored; submit it again with them",
                rec.request.secret_args.join(", ")
            )));
        }
        let mut sub = Submission::new(rec.request.op.clone(), actor.clone(), origin);
        sub.args = rec
            .request
            .args
            .iter()
            .map(|(k, v)| (k.clone(), v.as_text()))
            .collect();
        if let Some(key) = dedup_key {
            sub = sub.dedup_with(key);
        }
        sub.provenance = rec.request.provenance.clone();
        sub.provenance.insert("retry_of".into(), id.to_string());
        self.submit_inner(sub, Some(id)).await
    }
}

/// Whether `principal` may approve (or deny) the pending request `rec`: not its
/// requester, an approver of its op, the digest (if given) matching, and not
/// approving twice. Returns the op.
fn may_decide(
    loaded: &Loaded,
    rec: &RequestRecord,
    principal: &str,
    digest: Option<&str>,
    approve: bool,
) -> Result<Arc<OpSpec>> {
    let id = rec.request.id;
    let verb = if approve { "approve" } else { "deny" };
    if rec.request.actor.principal.as_deref() == Some(principal) {
        return Err(Error::Approval(format!(
            "`{principal}` asked for request {id}; someone else must {verb} it (approver ≠ requester){}",
            if approve { "" } else { " — use `cancel` to withdraw it" }
        )));
    }
    let Some(op) = loaded.op(&rec.request.op) else {
        return Err(Error::Conflict(format!(
            "op `{}` is no longer in the catalog",
            rec.request.op
        )));
    };
    if !loaded.policy.may_approve(principal, &op) {
        return Err(Error::Approval(format!(
            "`{principal}` may not {verb} `{}` requests (approvers: {})",
            op.name,
            approvers_text(&loaded.policy, &op)
        )));
    }
    if let Some(d) = digest {
        if d != rec.request.digest {
            return Err(Error::Approval(format!(
                "the approval was for different content than request {id} now has (digest mismatch); look at it again"
            )));
        }
    }
    if approve
        && rec
            .approvals
            .iter()
            .any(|a| a.approve && a.by.principal.as_deref() == Some(principal))
    {
        return Err(Error::Approval(format!(
            "`{principal}` already approved request {id}"
        )));
    }
    Ok(op)
}

fn approvers_of(rec: &RequestRecord, last: &str) -> String {
    let mut names: Vec<String> = rec
        .approvals
        .iter()
        .filter(|a| a.approve)
        .filter_map(|a| a.by.principal.clone())
        .collect();
    names.push(last.to_string());
    names.join(", ")
}
