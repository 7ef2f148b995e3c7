//! Recovery on start: requests a crash left in flight.
//!
//! In a cluster, a starting node recovers only its own requests (those whose
//! record names its node id): another node's running request is that node's
//! to account for, or the leader's when that node is dead. Pending approvals
//! without secrets are picked up by every node, so that an approval given on
//! any node can start the run.

use chrono::Utc;

use super::{lock, Executor, PendingRun};
use crate::error::Result;
use crate::model::{NewEvent, State, Transition};

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
}
