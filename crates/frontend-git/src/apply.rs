//! Applying a plan: one request per change, submitted, waited for and
//! recorded, with retries on a capped exponential backoff.

use std::collections::{BTreeSet, HashSet};

use youops_core::{Actor, DedupKey, Executor, Origin, RequestId, RequestRecord, State, Submission};

use crate::engine::{now_ms, settled, Engine, NAME};
use crate::error::GitError;
use crate::plan::{Action, Plan, PlanEntry};
use crate::repo;
use crate::state::{Applied, Persisted, Retry};

/// A submitted change: its plan entry's index, its request and its attempt.
type Pending = (usize, RequestId, u32);

/// Record that `e` was applied at `commit` (a delete forgets the resource).
pub(crate) fn remember_applied(st: &mut Persisted, id: &str, e: &PlanEntry, commit: &str) {
    if e.action == Action::Delete {
        st.applied.remove(id);
    } else {
        st.applied.insert(
            id.to_string(),
            Applied {
                kind: e.kind.clone(),
                key: e.key.clone(),
                fields: e.fields.clone(),
                commit: commit.to_string(),
            },
        );
    }
}

/// The plan's lines for the commit's note.
fn plan_lines(plan: &Plan) -> Vec<String> {
    let unchanged = plan.count(Action::Unchanged);
    plan.entries
        .iter()
        .filter(|e| e.action != Action::Unchanged)
        .map(|e| match &e.remark {
            Some(r) => format!("{}  [{r}]", e.line()),
            None => e.line(),
        })
        .chain(std::iter::once(format!("= {unchanged} unchanged")))
        .collect()
}

/// The attempt a change is at, or `None` (with a remark on the entry) when
/// its retry gave up or is not due yet.
fn attempt_due(st: &Persisted, e: &mut PlanEntry, id: &str, now: i64) -> Option<u32> {
    match st.retries.get(id) {
        Some(r) if r.action == e.action.as_str() => {
            if r.gave_up {
                e.remark = Some(format!("not retried for this commit: {}", r.reason));
                return None;
            }
            if !r.waiting {
                if let Some(t) = r.next_at_ms.filter(|t| *t > now) {
                    e.remark = Some(format!(
                        "attempt {} due in {}s",
                        r.attempt + 1,
                        (t - now + 999) / 1000
                    ));
                    return None;
                }
            }
            Some(r.attempt)
        }
        _ => Some(0),
    }
}

impl Engine {
    pub(crate) fn submission(
        &self,
        exec: &Executor,
        e: &PlanEntry,
        commit: &str,
        actor: &Actor,
        dedup: String,
        extra: &[(&str, String)],
    ) -> Option<Submission> {
        let kind = self.kinds.get(&e.kind)?;
        let (op, args): (&str, Vec<(String, String)>) = match e.action {
            Action::Create | Action::Update => (
                &kind.apply,
                e.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            Action::Delete => {
                let op = kind.delete.as_deref()?;
                let loaded = exec.loaded();
                let params: Option<BTreeSet<String>> = loaded
                    .catalog
                    .get(op)
                    .map(|o| o.params.iter().map(|p| p.name.clone()).collect());
                let args = e
                    .fields
                    .iter()
                    .filter(|(k, _)| match &params {
                        Some(p) => p.contains(*k),
                        None => **k == kind.key,
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (op, args)
            }
            Action::Unchanged | Action::Orphan => return None,
        };
        let id = e.id();
        let origin = Origin::new(NAME)
            .with_location(self.cfg.location.clone())
            .with_ref("commit", commit)
            .with_ref("resource", id.clone())
            .with_ref("action", e.action.as_str());
        // Its claim may expire with the dedup window: the key names one
        // attempt of one change at one commit, and the persisted apply state
        // (attempts, last applied) keeps it from being planned again.
        let mut sub = Submission::new(op, actor.clone(), origin)
            .dedup_with(DedupKey::delivery(dedup))
            .provenance("commit", commit)
            .provenance("branch", self.cfg.branch.clone())
            .provenance("resource", id)
            .provenance("action", e.action.as_str());
        if let Some(l) = &e.location {
            sub = sub.provenance("path", l.clone());
        }
        for (k, v) in extra {
            sub = sub.provenance(*k, v.clone());
        }
        sub.args = args;
        Some(sub)
    }

    /// Submit one request per change, wait for each to settle, record results.
    pub(crate) async fn apply(
        self: &std::sync::Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        plan: &mut Plan,
        head: &str,
        info: &repo::CommitInfo,
    ) -> Result<(), GitError> {
        let actor = self.actor(info);
        let now = now_ms();
        let changing: HashSet<String> = plan.changes().map(|e| e.id()).collect();
        // A new commit supersedes retries of older ones; a resource that no
        // longer needs a change needs no retry.
        st.retries
            .retain(|id, r| r.commit == head && changing.contains(id));
        if plan.changes().next().is_some() {
            st.applying = Some(head.to_string());
            self.save(st).await?;
        }
        let pending = self.submit_changes(exec, st, plan, head, &actor, now).await;
        let records =
            futures::future::join_all(pending.iter().map(|(_, id, _)| settled(exec, *id))).await;
        let now = now_ms();
        for ((idx, rid, attempt), rec) in pending.into_iter().zip(records) {
            let rec = rec?;
            self.record_result(st, &mut plan.entries[idx], head, (rid, attempt), &rec, now);
        }
        st.target = Some(head.to_string());
        st.applying = None;
        st.note(head, &self.cfg.branch).plan = plan_lines(plan);
        self.publish_note(exec, st, head).await;
        self.save(st).await
    }

    /// Submit the changes that are due; a change that cannot be submitted is
    /// retried later.
    async fn submit_changes(
        &self,
        exec: &Executor,
        st: &mut Persisted,
        plan: &mut Plan,
        head: &str,
        actor: &Actor,
        now: i64,
    ) -> Vec<Pending> {
        let mut pending = Vec::new();
        for (idx, e) in plan.entries.iter_mut().enumerate() {
            if !e.action.is_change() {
                continue;
            }
            let id = e.id();
            let action = e.action.as_str();
            let Some(attempt) = attempt_due(st, e, &id, now) else {
                continue;
            };
            let dedup = format!("git:{head}:{id}:{action}:{attempt}");
            let Some(sub) = self.submission(
                exec,
                e,
                head,
                actor,
                dedup,
                &[("attempt", (attempt + 1).to_string())],
            ) else {
                continue;
            };
            match exec.submit(sub).await {
                Ok(t) => {
                    if !t.duplicate {
                        self.metrics.change_requests.increment(1);
                    }
                    pending.push((idx, t.record.request.id, attempt));
                }
                Err(err) => {
                    let next = attempt + 1;
                    let delay = self.backoff(next);
                    e.remark = Some(format!(
                        "not submitted ({err}); retry in {}s",
                        delay.as_secs()
                    ));
                    st.retries.insert(
                        id,
                        Retry {
                            commit: head.to_string(),
                            action: action.to_string(),
                            attempt: next,
                            next_at_ms: Some(now + delay.as_millis() as i64),
                            waiting: false,
                            gave_up: false,
                            request: None,
                            reason: err.to_string(),
                        },
                    );
                }
            }
        }
        pending
    }

    /// Record how a change's request ended: applied, waiting for approval,
    /// to be retried, or given up.
    fn record_result(
        &self,
        st: &mut Persisted,
        e: &mut PlanEntry,
        head: &str,
        (rid, attempt): (RequestId, u32),
        rec: &RequestRecord,
        now: i64,
    ) {
        let id = e.id();
        let action = e.action.as_str();
        e.request = Some(rid);
        e.state = Some(rec.state);
        let op = rec.request.op.clone();
        let reason = rec
            .reason
            .clone()
            .or_else(|| rec.outcome.as_ref().and_then(|o| o.error.clone()))
            .unwrap_or_else(|| rec.state.to_string());
        let mut retry = Retry {
            commit: head.to_string(),
            action: action.to_string(),
            attempt,
            next_at_ms: None,
            waiting: false,
            gave_up: false,
            request: Some(rid.to_string()),
            reason: reason.clone(),
        };
        match rec.state {
            State::Succeeded => {
                self.metrics.changes_applied.increment(1);
                st.retries.remove(&id);
                st.drifted.remove(&id);
                remember_applied(st, &id, e, head);
            }
            State::PendingApproval => {
                retry.waiting = true;
                retry.reason = "waiting for approval".into();
                e.remark = Some("waiting for approval".into());
                st.retries.insert(id.clone(), retry);
            }
            State::Failed | State::TimedOut | State::Interrupted => {
                self.metrics.changes_failed.increment(1);
                retry.attempt = attempt + 1;
                let delay = self.backoff(retry.attempt);
                retry.next_at_ms = Some(now + delay.as_millis() as i64);
                e.remark = Some(format!(
                    "attempt {} {}; retry in {}s",
                    attempt + 1,
                    rec.state,
                    delay.as_secs_f64().ceil() as u64
                ));
                st.retries.insert(id.clone(), retry);
            }
            _ => {
                self.metrics.changes_failed.increment(1);
                retry.gave_up = true;
                e.remark = Some(format!("{}: {reason}", rec.state));
                st.retries.insert(id.clone(), retry);
            }
        }
        st.note(head, &self.cfg.branch).set_request(
            &rid.to_string(),
            rec.state.as_str(),
            &format!("{action} {id} ({op})"),
        );
    }
}
