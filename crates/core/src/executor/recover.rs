//! Recovery on start: requests a crash left in flight.
//!
//! In a cluster, a starting node recovers only its own requests (those whose
//! record names its node id): another node's running request is that node's
//! to account for, or the leader's when that node is dead. Pending approvals
//! without secrets are picked up by every node, so that an approval given on
//! any node can start the run.
//!
//! When a node dies, the leader calls [`Executor::recover_node`] for it
//! (after fencing it, so that nothing it still does is recorded): its
//! requests in flight are marked `interrupted` the same way, never re-run.

use chrono::Utc;

use super::{lock, Executor, PendingRun};
use crate::audit::StoreError;
use crate::cluster::NodeId;
use crate::error::{Error, Result};
use crate::model::{NewEvent, RequestRecord, State, Transition};

impl Executor {
    pub(super) async fn recover(&self) -> Result<()> {
        let active = self.inner.store.active_requests().await?;
        for mut rec in active {
            let id = rec.request.id;
            let own = rec.node == self.inner.node;
            match rec.state {
                State::PendingApproval if rec.request.secret_args.is_empty() => {
                    let args = rec.request.args.clone();
                    let expires_at = rec.expires_at.unwrap_or_else(Utc::now);
                    lock(&self.inner.pending).insert(id, PendingRun { args, expires_at });
                }
                _ if !own => {}
                State::PendingApproval => {
                    let t = Transition::to(State::Interrupted).reason(
                        "YouOps restarted while this waited for approval; secret arguments are never stored, so submit it again",
                    );
                    self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
                        .await?;
                }
                _ => {
                    let t = Transition::to(State::Interrupted).reason(format!(
                        "YouOps stopped while this request was {}; it was not re-run (check the target, then `retry {id}` if needed)",
                        rec.state
                    ));
                    self.commit(&mut rec, vec![NewEvent::transition(id, t)], true)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Mark the requests a dead node `node` had in flight `interrupted`:
    /// those it ran or was about to run, and those waiting for approval
    /// with a secret only it held. Its pending approvals without secrets
    /// stay pending (any node can run them). For the cluster's leader, once
    /// `node` is fenced; each write is fenced by the leader's epoch, and a
    /// node that does not lead does nothing. Returns how many were
    /// interrupted.
    pub async fn recover_node(&self, node: &NodeId) -> Result<usize> {
        // The leader's work: each write is fenced by its epoch in the store.
        let Some(term) = self.inner.leadership.current() else {
            return Ok(0);
        };
        let mut n = 0;
        for rec in self.inner.store.active_requests().await? {
            if rec.node.as_ref() != Some(node) {
                continue;
            }
            if rec.state == State::PendingApproval && rec.request.secret_args.is_empty() {
                continue;
            }
            if self.interrupt_for(rec, node, term.epoch).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Interrupt `rec` of the dead `node`, unless someone changed it
    /// meanwhile (then it is read again).
    async fn interrupt_for(
        &self,
        mut rec: RequestRecord,
        node: &NodeId,
        leader_epoch: u64,
    ) -> Result<bool> {
        let id = rec.request.id;
        loop {
            if rec.state.is_terminal() || rec.node.as_ref() != Some(node) {
                return Ok(false);
            }
            let t = Transition::to(State::Interrupted).reason(format!(
                "node {node} stopped while this request was {} there; it was not re-run (check the target, then `retry {id}` if needed)",
                rec.state
            ));
            match self
                .commit_decision_as(
                    &mut rec,
                    vec![NewEvent::transition(id, t)],
                    None,
                    Some(leader_epoch),
                )
                .await
            {
                Ok(_) => {
                    lock(&self.inner.pending).remove(&id);
                    return Ok(true);
                }
                Err(Error::Store(StoreError::Stale { .. })) => rec = self.get(id).await?,
                Err(e) => return Err(e),
            }
        }
    }
}
