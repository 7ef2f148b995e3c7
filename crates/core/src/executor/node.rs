//! What makes an executor a node of a cluster, as its handle shows it: its
//! id, its leadership, whose requests' feedback it renders, and where the
//! leader's work keeps its state between terms ([`LeaderState`]).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::Executor;
use crate::audit::StoreError;
use crate::cluster::{FeedbackOwners, Leadership, NodeId, Term};

/// Where the work that happens once per cluster keeps its state between
/// leadership terms: a reconciler's last commit seen and the state it last
/// applied. The next leader goes on from what the last one saved, instead
/// of from its own node's (stale, or empty) copy. A node alone has none.
#[async_trait]
pub trait LeaderState: Send + Sync + fmt::Debug {
    /// The state saved under `name`, if any.
    async fn load(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Save the state under `name`, as the leader of `term`: refused (an
    /// error) once this node no longer leads under it, so a deposed leader
    /// never overwrites what the next one saved.
    async fn save(&self, name: &str, state: &[u8], term: Term) -> Result<(), StoreError>;
}

impl Executor {
    /// This node's id in a cluster (`None` alone).
    pub fn node(&self) -> Option<&NodeId> {
        self.inner.node.as_ref()
    }

    /// This node's leadership of the work that happens once per cluster.
    pub fn leadership(&self) -> &Leadership {
        &self.inner.leadership
    }

    /// Render, besides this node's own, the feedback of requests received by
    /// `receivers` (exactly these, replacing the last call's; `None` stands
    /// for requests received before the store was shared). The cluster's
    /// leader adopts the nodes it declared dead, and lets go of them when
    /// they rejoin or when it stops leading.
    pub fn adopt_feedback(&self, receivers: BTreeSet<Option<NodeId>>) {
        let shown: Vec<String> = receivers
            .iter()
            .map(|n| n.as_ref().map_or("(none)".into(), NodeId::to_string))
            .collect();
        if self.inner.feedback.adopt(receivers) {
            tracing::info!(
                receivers = ?shown,
                "this node now renders the feedback of requests received by these nodes too"
            );
        }
    }

    /// Where the work that happens once per cluster keeps its state between
    /// terms; `None` for a node alone (its own files are that state).
    pub fn leader_state(&self) -> Option<Arc<dyn LeaderState>> {
        self.inner.leader_state.clone()
    }

    /// Whose requests' feedback this node's frontends render.
    pub(crate) fn feedback_owners(&self) -> Arc<FeedbackOwners> {
        self.inner.feedback.clone()
    }
}
