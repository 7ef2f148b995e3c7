//! The record of a request, folded from its audit events, and the filters
//! that select records.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ApprovalRecord, AuditEvent, EventBody, Request, RunOutcome, State};

/// The current state of a request, derived from its audit events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequestRecord {
    /// The request (shared: it never changes after `received`, so copies of a
    /// record share it).
    pub request: Arc<Request>,
    /// Current state.
    pub state: State,
    /// Last state change.
    pub updated_at: DateTime<Utc>,
    /// Approvals still needed while pending.
    #[serde(default)]
    pub approvals_needed: u32,
    /// When pending approvals expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Decisions by approvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
    /// The reason of the last transition that gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The run result, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// Hash of the last audit event of this request.
    pub last_hash: String,
    /// Sequence number of the last audit event of this request.
    pub last_seq: u64,
    /// The node the request is with, in a cluster: the one that received
    /// it, then the one that runs it. A node recovers only its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::cluster::NodeId>,
}

impl RequestRecord {
    /// The record right after `received`.
    pub fn new(request: Arc<Request>, event: &AuditEvent) -> Self {
        RequestRecord {
            node: request.node.clone(),
            request,
            state: State::Received,
            updated_at: event.time,
            approvals_needed: 0,
            expires_at: None,
            approvals: Vec::new(),
            reason: None,
            outcome: None,
            last_hash: event.hash.clone(),
            last_seq: event.seq,
        }
    }

    /// Fold one more event of this request into the record.
    pub fn apply(&mut self, event: &AuditEvent) {
        self.last_hash.clone_from(&event.hash);
        self.last_seq = event.seq;
        match &event.body {
            EventBody::Transition(t) => {
                self.state = t.to;
                self.updated_at = event.time;
                if let Some(n) = t.approvals_needed {
                    self.approvals_needed = n;
                }
                if t.to != State::PendingApproval {
                    self.approvals_needed = 0;
                }
                if t.expires_at.is_some() {
                    self.expires_at = t.expires_at;
                }
                if t.reason.is_some() {
                    self.reason.clone_from(&t.reason);
                }
                if t.outcome.is_some() {
                    self.outcome.clone_from(&t.outcome);
                }
                if t.node.is_some() {
                    self.node.clone_from(&t.node);
                }
            }
            EventBody::Approval(a) => {
                if a.approve && self.approvals_needed > 0 {
                    self.approvals_needed -= 1;
                }
                self.approvals.push(a.clone());
            }
            EventBody::Received { .. }
            | EventBody::Notice { .. }
            | EventBody::Checkpoint { .. } => {}
        }
    }

    /// Duration of the run, if it ran.
    pub fn duration_ms(&self) -> Option<u64> {
        self.outcome.as_ref().map(|o| o.duration_ms)
    }
}

/// Filters for listing requests. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFilter {
    /// Only these states.
    #[serde(default)]
    pub states: Vec<State>,
    /// Only this op.
    #[serde(default)]
    pub op: Option<String>,
    /// Only this principal.
    #[serde(default)]
    pub principal: Option<String>,
    /// Only from this frontend.
    #[serde(default)]
    pub frontend: Option<String>,
    /// Only created at or after.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Only created before.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

impl RequestFilter {
    /// Whether `r` passes the filter.
    pub fn matches(&self, r: &RequestRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&r.state))
            && self.op.as_ref().is_none_or(|op| &r.request.op == op)
            && self
                .principal
                .as_ref()
                .is_none_or(|p| r.request.actor.principal.as_ref() == Some(p))
            && self
                .frontend
                .as_ref()
                .is_none_or(|f| &r.request.actor.frontend == f)
            && self.since.is_none_or(|t| r.request.created_at >= t)
            && self.until.is_none_or(|t| r.request.created_at < t)
    }
}
