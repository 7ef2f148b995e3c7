//! The request model shared by every frontend: requests, actors, origins, lifecycle
//! states, and the per-request record derived from audit events.
//!
//! Everything here is plain data with public fields. Frontend wire types (Slack,
//! GitHub, git) never appear here: a frontend turns its input into a [`Submission`]
//! and renders [`RequestRecord`]s back in its own format.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A request id: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub ulid::Ulid);

impl RequestId {
    /// A fresh id for a request created now, greater than every id this
    /// process made before it: ULIDs of one millisecond are otherwise random
    /// among themselves, and listings sort newest first by id.
    pub fn new() -> Self {
        static LAST: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
        let mut g = LAST.lock().unwrap_or_else(|p| p.into_inner());
        let id = g
            .get_or_insert_with(ulid::Generator::new)
            .generate()
            // 2^80 ids in one millisecond: start a new random run instead.
            .unwrap_or_else(|_| ulid::Ulid::new());
        RequestId(id)
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RequestId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Accept lower-case ids too: people type them in chat.
        ulid::Ulid::from_string(&s.to_ascii_uppercase()).map(RequestId)
    }
}

/// Who asked: the frontend identity and, once resolved by the policy, the principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Actor {
    /// The frontend the identity belongs to (`slack`, `github`, `git`, `cli`, `api`, ...).
    pub frontend: String,
    /// The identity inside that frontend (Slack user id, GitHub login, OS user, ...).
    pub external_id: String,
    /// The principal the policy mapped the identity to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// A human-friendly name for display, if the frontend knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl Actor {
    /// An actor identified by `external_id` on `frontend`, not yet resolved.
    pub fn new(frontend: impl Into<String>, external_id: impl Into<String>) -> Self {
        Actor {
            frontend: frontend.into(),
            external_id: external_id.into(),
            principal: None,
            display: None,
        }
    }

    /// Set the display name.
    pub fn with_display(mut self, display: impl Into<String>) -> Self {
        self.display = Some(display.into());
        self
    }

    /// `principal (frontend:external_id)`, or just the identity when unresolved.
    pub fn describe(&self) -> String {
        match &self.principal {
            Some(p) => format!("{p} ({}:{})", self.frontend, self.external_id),
            None => format!("{}:{}", self.frontend, self.external_id),
        }
    }
}

/// Where feedback for a request goes: the frontend that received it and a
/// frontend-defined reference (channel + thread, issue + comment, commit, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Origin {
    /// The frontend that should render lifecycle events of the request.
    pub frontend: String,
    /// Where in that frontend, for policy limits (`channels`/`repos` of a grant):
    /// a Slack channel id, `owner/repo`, a git remote. Empty when not applicable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// Frontend-private reference data (thread ts, issue number, commit id, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reference: BTreeMap<String, String>,
}

impl Origin {
    /// An origin on `frontend` with no location.
    pub fn new(frontend: impl Into<String>) -> Self {
        Origin {
            frontend: frontend.into(),
            ..Default::default()
        }
    }

    /// Set the location used by grant limits.
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = location.into();
        self
    }

    /// Add one reference entry.
    pub fn with_ref(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.reference.insert(key.into(), value.into());
        self
    }
}

/// What a frontend hands the executor: an op with raw (string) arguments, as typed.
/// The executor validates and types the arguments against the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Submission {
    /// Operation name.
    pub op: String,
    /// Arguments as given, in order.
    pub args: Vec<(String, String)>,
    /// Who asked.
    pub actor: Actor,
    /// Where to send feedback.
    pub origin: Origin,
    /// A key that identifies the delivery (Slack event id, GitHub delivery id,
    /// commit + trailer index). A key already seen returns the earlier request.
    pub dedup_key: Option<String>,
    /// Whether the claim of `dedup_key` expires (after `[store] dedup_ttl`):
    /// see [`DedupKey`].
    pub dedup_expires: bool,
    /// Validate, authorize and show what would run, without running it.
    pub dry_run: bool,
    /// Provenance shown to people (commit id and path, issue URL, ...).
    pub provenance: BTreeMap<String, String>,
}

impl Submission {
    /// A submission of `op` by `actor` from `origin`.
    pub fn new(op: impl Into<String>, actor: Actor, origin: Origin) -> Self {
        Submission {
            op: op.into(),
            args: Vec::new(),
            actor,
            origin,
            dedup_key: None,
            dedup_expires: false,
            dry_run: false,
            provenance: BTreeMap::new(),
        }
    }

    /// Add an argument.
    pub fn arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.args.push((name.into(), value.into()));
        self
    }

    /// Set the dedup key: a key naming an object for its whole life, whose
    /// claim never expires ([`DedupKey::lifetime`]).
    pub fn dedup(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self.dedup_expires = false;
        self
    }

    /// Set the dedup key, with how long its claim must hold.
    pub fn dedup_with(mut self, key: DedupKey) -> Self {
        self.dedup_key = Some(key.key);
        self.dedup_expires = key.expires;
        self
    }

    /// Set the dry-run flag.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Add a provenance entry.
    pub fn provenance(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.provenance.insert(key.into(), value.into());
        self
    }
}

/// A dedup key, and how long its claim must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DedupKey {
    /// The key.
    pub key: String,
    /// The claim expires after `[store] dedup_ttl`.
    pub expires: bool,
}

impl DedupKey {
    /// The id of one delivery (a Slack event id, a GitHub delivery id, an API
    /// idempotency key). Senders redeliver for days at most (GitHub for 3), so
    /// the claim expires after `[store] dedup_ttl` (7 days by default).
    pub fn delivery(key: impl Into<String>) -> Self {
        DedupKey {
            key: key.into(),
            expires: true,
        }
    }

    /// A key naming an object for its whole life (an issue body, a comment, a
    /// commit trailer): it can be seen again at any time (a poll, a re-scan), so
    /// its claim never expires and old work never runs again.
    pub fn lifetime(key: impl Into<String>) -> Self {
        DedupKey {
            key: key.into(),
            expires: false,
        }
    }
}

impl From<String> for DedupKey {
    /// A lifetime key: the claim that never expires is the safe default.
    fn from(key: String) -> Self {
        DedupKey::lifetime(key)
    }
}

/// A typed argument value after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// bool params.
    Bool(bool),
    /// int params.
    Int(i64),
    /// string, enum, email, duration (as given) and secret params.
    Str(String),
}

impl Value {
    /// The value as it is passed to a runner (argv element, env var, JSON string).
    pub fn as_text(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) => s.clone(),
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Str(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// The text stored and shown in place of a secret argument.
pub const REDACTED: &str = "********";

/// A request as it is recorded: the submission after validation, with secret
/// values replaced by [`REDACTED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Request {
    /// Sortable id.
    pub id: RequestId,
    /// Operation name, as asked (may be unknown when the request is `invalid`).
    pub op: String,
    /// Validated, typed arguments (secrets redacted). Empty for invalid requests.
    pub args: BTreeMap<String, Value>,
    /// Raw arguments as given, for invalid requests only (secrets never known then,
    /// so every raw value of a param the catalog marks secret is redacted too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw_args: Vec<(String, String)>,
    /// Names of the secret arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_args: Vec<String>,
    /// Who asked.
    pub actor: Actor,
    /// Where feedback goes.
    pub origin: Origin,
    /// Dedup key of the delivery that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// The claim of `dedup_key` expires ([`DedupKey::delivery`]); absent from
    /// the stored bytes when false, so chains written before it verify.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dedup_expires: bool,
    /// Dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Provenance shown to people.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provenance: BTreeMap<String, String>,
    /// When it was received.
    pub created_at: DateTime<Utc>,
    /// Digest of op + arguments that approvals bind to (hex SHA-256).
    pub digest: String,
    /// If this is a retry, the request it retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<RequestId>,
    /// The node that received it, in a cluster (absent on a single node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::cluster::NodeId>,
}

/// Lifecycle states: `received`, then validation, policy and approvals, then a
/// run, ending in one terminal state ([`State::is_terminal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Recorded; not yet validated or authorized.
    Received,
    /// Did not validate against the catalog.
    Invalid,
    /// The policy refused it.
    Denied,
    /// Waiting for approvals.
    PendingApproval,
    /// Approved; waiting to run (for a lock, or about to start).
    Approved,
    /// An approver denied it.
    Rejected,
    /// Approvals did not arrive in time.
    Expired,
    /// The runner is running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Ran and failed.
    Failed,
    /// Ran past its timeout and was killed.
    TimedOut,
    /// Cancelled by someone.
    Cancelled,
    /// The daemon stopped (or crashed) while it was in flight.
    Interrupted,
}

impl State {
    /// All states, in lifecycle order.
    pub const ALL: [State; 13] = [
        State::Received,
        State::Invalid,
        State::Denied,
        State::PendingApproval,
        State::Approved,
        State::Rejected,
        State::Expired,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::TimedOut,
        State::Cancelled,
        State::Interrupted,
    ];

    /// No further transition happens from a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Invalid
                | State::Denied
                | State::Rejected
                | State::Expired
                | State::Succeeded
                | State::Failed
                | State::TimedOut
                | State::Cancelled
                | State::Interrupted
        )
    }

    /// The snake_case name used in the API, metrics and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Invalid => "invalid",
            State::Denied => "denied",
            State::PendingApproval => "pending_approval",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::TimedOut => "timed_out",
            State::Cancelled => "cancelled",
            State::Interrupted => "interrupted",
        }
    }

    /// Whether `self → to` is a legal lifecycle transition.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        match self {
            Received => matches!(
                to,
                Invalid | Denied | PendingApproval | Approved | Running | Succeeded | Interrupted
            ),
            PendingApproval => {
                matches!(to, Approved | Rejected | Expired | Cancelled | Interrupted)
            }
            Approved => matches!(to, Running | Cancelled | Interrupted | Failed),
            Running => matches!(to, Succeeded | Failed | TimedOut | Cancelled | Interrupted),
            _ => false,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state `{s}`"))
    }
}

/// An approval or denial given by an approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalRecord {
    /// Who decided.
    pub by: Actor,
    /// `true` for approve, `false` for deny.
    pub approve: bool,
    /// The request digest the decision was bound to.
    pub digest: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Optional reason (denials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunOutcome {
    /// Process exit code (exec), HTTP status (http), or 0/1 (builtin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that ended the process, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Captured output (stdout and stderr interleaved), capped and scrubbed of secrets.
    pub output: String,
    /// Bytes of output left out by the cap.
    #[serde(default)]
    pub output_truncated_bytes: u64,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
    /// A one-line summary of why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One lifecycle transition of a request, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transition {
    /// The new state.
    pub to: State,
    /// Who caused it, when it was a person (approver, canceller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Actor>,
    /// Why, in words (validation errors, denial explanation, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Approvals still needed (pending_approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_needed: Option<u32>,
    /// When pending approvals expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The run result (terminal states after running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// The node that took the request on with this transition (the one
    /// that runs it), in a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::cluster::NodeId>,
}

impl Transition {
    /// A transition to `to` with nothing else.
    pub fn to(to: State) -> Self {
        Transition {
            to,
            by: None,
            reason: None,
            approvals_needed: None,
            expires_at: None,
            outcome: None,
            node: None,
        }
    }

    /// Set the node that takes the request on.
    pub fn node(mut self, node: Option<crate::cluster::NodeId>) -> Self {
        self.node = node;
        self
    }

    /// Set who caused it.
    pub fn by(mut self, by: Actor) -> Self {
        self.by = Some(by);
        self
    }

    /// Set the reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Set the outcome.
    pub fn outcome(mut self, outcome: RunOutcome) -> Self {
        self.outcome = Some(outcome);
        self
    }
}

/// The body of an audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventBody {
    /// A new request was received (always the first event of a request).
    Received {
        /// The recorded request (secrets redacted), shared with the records
        /// folded from it.
        request: Arc<Request>,
    },
    /// A lifecycle transition.
    Transition(Transition),
    /// An approval or denial by an approver (a denial is followed by `rejected`).
    Approval(ApprovalRecord),
    /// Something a frontend or the system wants on the record that is not a
    /// transition: a delivery retried, drift found, a force-push seen, an edit of
    /// the content an approval was bound to.
    Notice {
        /// Who recorded it (`slack`, `git`, `system`, ...).
        source: String,
        /// Machine-friendly kind (`feedback_retry`, `drift`, `force_push`, ...).
        kind: String,
        /// Human text.
        message: String,
        /// Extra structured data.
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        data: serde_json::Value,
    },
    /// A retention checkpoint: events before it were archived. Carries the hash of
    /// the last archived event so the chain stays provable.
    Checkpoint {
        /// Sequence number of the last archived event.
        archived_through_seq: u64,
        /// Hash of the last archived event.
        archived_last_hash: String,
        /// Where the archive was written.
        archive: String,
    },
}

impl EventBody {
    /// Short name of the body kind: `received`, the target state, `approval`, `notice`, `checkpoint`.
    pub fn label(&self) -> String {
        match self {
            EventBody::Received { .. } => "received".into(),
            EventBody::Transition(t) => t.to.as_str().into(),
            EventBody::Approval(a) => if a.approve { "approve" } else { "deny" }.into(),
            EventBody::Notice { kind, .. } => format!("notice:{kind}"),
            EventBody::Checkpoint { .. } => "checkpoint".into(),
        }
    }
}

/// An event to append: what the caller provides. The store assigns sequence,
/// time and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewEvent {
    /// The request it belongs to, if any.
    pub request_id: Option<RequestId>,
    /// What happened.
    pub body: EventBody,
}

impl NewEvent {
    /// An event of `request_id`.
    pub fn request(request_id: RequestId, body: EventBody) -> Self {
        NewEvent {
            request_id: Some(request_id),
            body,
        }
    }

    /// A transition event of `request_id`.
    pub fn transition(request_id: RequestId, t: Transition) -> Self {
        Self::request(request_id, EventBody::Transition(t))
    }

    /// An event about no request in particular.
    pub fn global(body: EventBody) -> Self {
        NewEvent {
            request_id: None,
            body,
        }
    }
}

/// A stored audit event: one link of the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it was appended.
    pub time: DateTime<Utc>,
    /// The request it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// What happened.
    pub body: EventBody,
    /// Hash of the previous event (64 zeros for the first).
    pub prev_hash: String,
    /// `SHA-256(prev_hash ‖ canonical bytes)`, hex.
    pub hash: String,
}

impl AuditEvent {
    /// An event from its parts, for a store that has just numbered and hashed
    /// it (or read them back). It is not checked: [`crate::audit::ChainVerifier`]
    /// checks a chain.
    pub fn from_parts(
        seq: u64,
        time: DateTime<Utc>,
        request_id: Option<RequestId>,
        body: EventBody,
        prev_hash: String,
        hash: String,
    ) -> Self {
        AuditEvent {
            seq,
            time,
            request_id,
            body,
            prev_hash,
            hash,
        }
    }
}

mod record;

pub use record::{RequestFilter, RequestRecord};

#[cfg(test)]
mod tests;
