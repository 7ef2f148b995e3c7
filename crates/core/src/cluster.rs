//! What a node needs to share one store with other nodes: its identity, and
//! leadership of the work that must happen once.
//!
//! A single daemon is a cluster of one: it has no [`NodeId`] and leads for
//! good ([`Leadership::solo`]). Several daemons on one shared store each get
//! a node id (recorded on the requests they receive and run, so that a node
//! recovers only its own after a crash), and their leadership is fed by a
//! lease ([`Leadership::channel`]): the approval-expiry sweeper, retention,
//! and frontends' pollers, reconcilers and Socket Mode connections run
//! under [`Leadership::run_while_leader`], on the leader only.
//!
//! ```
//! use tokio_util::sync::CancellationToken;
//! use youops_core::cluster::Leadership;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let (lease, leadership) = Leadership::channel();
//! let shutdown = CancellationToken::new();
//! let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
//! let worker = tokio::spawn({
//!     let shutdown = shutdown.clone();
//!     async move {
//!         leadership
//!             .run_while_leader(&shutdown, |term, lost| {
//!                 let started = started.clone();
//!                 async move {
//!                     started.send(term.epoch).unwrap();
//!                     lost.cancelled().await // the term ended
//!                 }
//!             })
//!             .await
//!     }
//! });
//! lease.lead(7); // the lease loop won the lease at epoch 7: the task starts
//! assert_eq!(starts.recv().await, Some(7));
//! lease.follow(); // it could not renew in time: the task is cancelled
//! lease.lead(9); // won again, under a new epoch
//! assert_eq!(starts.recv().await, Some(9));
//! shutdown.cancel();
//! worker.await.unwrap();
//! # });
//! ```

use std::fmt;
use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A node's stable name in a cluster: recorded on the requests it receives
/// and runs, the owner of its locks and heartbeats.
///
/// 1 to 63 characters of ASCII letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit (it appears in logs, URLs and the audit chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Check and wrap a node id.
    pub fn new(id: impl Into<String>) -> Result<Self, String> {
        let id = id.into();
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if id.is_empty() || id.len() > 63 {
            return Err(format!(
                "a node id has 1 to 63 characters, not {}",
                id.len()
            ));
        }
        if !id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) || !id.chars().all(ok_char)
        {
            return Err(format!(
                "node id {id:?}: use ASCII letters, digits, '-', '_' and '.', starting with a letter or digit"
            ));
        }
        Ok(NodeId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0
    }
}

/// Whose requests' feedback (Slack messages, issue comments, git notes) a
/// node renders. Each request is rendered by the node that received it; when
/// that node dies, the cluster's leader adopts its requests (and those
/// received before the store was shared, which name no node), so that an
/// interruption and what follows are still told where the request was asked.
/// The node that received a request is the one recorded on it, so exactly one
/// live node renders each: the receiver while it lives, the leader once the
/// cluster declared it dead, and the receiver again once it rejoins (the
/// leader lets go at its next sweep).
#[derive(Debug)]
pub(crate) struct FeedbackOwners {
    node: Option<NodeId>,
    adopted: std::sync::RwLock<std::collections::BTreeSet<Option<NodeId>>>,
}

impl FeedbackOwners {
    pub(crate) fn new(node: Option<NodeId>) -> Self {
        FeedbackOwners {
            node,
            adopted: Default::default(),
        }
    }

    /// Whether this node renders the feedback of requests received by
    /// `receiver`.
    pub(crate) fn covers(&self, receiver: Option<&NodeId>) -> bool {
        receiver == self.node.as_ref()
            || self
                .adopted
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|n| n.as_ref() == receiver)
    }

    /// Adopt exactly `receivers` (a node's own requests are never in it).
    /// Whether that changed anything.
    pub(crate) fn adopt(&self, receivers: std::collections::BTreeSet<Option<NodeId>>) -> bool {
        let receivers = receivers.into_iter().filter(|n| *n != self.node).collect();
        let mut adopted = self.adopted.write().unwrap_or_else(|p| p.into_inner());
        let changed = *adopted != receivers;
        *adopted = receivers;
        changed
    }
}

/// One term of leadership: the lease's epoch, which fences the leader's
/// writes (a write under an older epoch is refused once a newer one exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub struct Term {
    /// The lease's epoch: it only grows, one per term, across the cluster.
    pub epoch: u64,
}

/// Whether this node leads now, and a way to wait for that to change.
/// Cheap to clone; every clone sees the same leadership.
#[derive(Debug, Clone)]
pub struct Leadership {
    rx: watch::Receiver<Option<Term>>,
}

/// The side that feeds a [`Leadership`]: a lease loop calls
/// [`lead`](Self::lead) when it wins or renews the lease and
/// [`follow`](Self::follow) when it loses it or cannot renew in time.
/// Dropping it ends leadership for good.
#[derive(Debug)]
pub struct LeaseSignal {
    tx: watch::Sender<Option<Term>>,
}

impl LeaseSignal {
    /// This node leads under `epoch`.
    pub fn lead(&self, epoch: u64) {
        let term = Some(Term { epoch });
        self.tx.send_if_modified(|t| {
            let changed = *t != term;
            *t = term;
            changed
        });
    }

    /// This node does not lead (any more).
    pub fn follow(&self) {
        self.tx.send_if_modified(|t| t.take().is_some());
    }
}

impl Leadership {
    /// A node alone with its store: it leads for good, under epoch 1.
    pub fn solo() -> Self {
        let (tx, rx) = watch::channel(Some(Term { epoch: 1 }));
        // Nobody will change it: a closed channel keeps its last value.
        drop(tx);
        Leadership { rx }
    }

    /// Leadership fed by a lease loop through the returned signal; it starts
    /// as a follower.
    pub fn channel() -> (LeaseSignal, Leadership) {
        let (tx, rx) = watch::channel(None);
        (LeaseSignal { tx }, Leadership { rx })
    }

    /// The current term, when this node leads.
    pub fn current(&self) -> Option<Term> {
        *self.rx.borrow()
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.current().is_some()
    }

    /// Wait until this node leads and return the term; `None` when
    /// leadership has ended for good (the lease loop is gone).
    pub async fn acquired(&mut self) -> Option<Term> {
        match self.rx.wait_for(|t| t.is_some()).await {
            Ok(t) => *t,
            Err(_) => None,
        }
    }

    /// Wait until `term` is over: another term, no term, or the lease loop
    /// gone (a [`solo`](Self::solo) term never ends).
    pub async fn ended(&mut self, term: Term) {
        if *self.rx.borrow() != Some(term) {
            return;
        }
        loop {
            if self.rx.changed().await.is_err() {
                if *self.rx.borrow() == Some(term) {
                    // Solo, or a loop that ended while leading: the value
                    // can never change again.
                    std::future::pending::<()>().await;
                }
                return;
            }
            if *self.rx.borrow_and_update() != Some(term) {
                return;
            }
        }
    }

    /// Run `task` on every term this node leads, until `shutdown`. Each run
    /// gets the term and a token cancelled when the term ends (or at
    /// shutdown); the next term starts a new run only after the last one
    /// returned, so two runs never overlap.
    pub async fn run_while_leader<F, Fut>(&self, shutdown: &CancellationToken, mut task: F)
    where
        F: FnMut(Term, CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut me = self.clone();
        loop {
            let term = tokio::select! {
                t = me.acquired() => t,
                _ = shutdown.cancelled() => None,
            };
            let Some(term) = term else { return };
            let lost = shutdown.child_token();
            let run = task(term, lost.clone());
            tokio::pin!(run);
            let mut watcher = me.clone();
            tokio::select! {
                _ = &mut run => {}
                _ = watcher.ended(term) => {
                    tracing::info!(epoch = term.epoch, "leadership lost: stopping leader-only work");
                    lost.cancel();
                    run.await;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            // The task returned on its own during the term: wait for the
            // term to end before starting it again.
            tokio::select! {
                _ = me.ended(term) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn feedback_is_rendered_by_the_receiver_or_the_adopter_only() {
        let [a, b] = ["a", "b"].map(|n| NodeId::new(n).unwrap());
        let owners = FeedbackOwners::new(Some(b.clone()));
        assert!(owners.covers(Some(&b)));
        assert!(!owners.covers(Some(&a)));
        assert!(!owners.covers(None), "requests of no node are nobody's yet");
        // The leader adopts a (declared dead) and the requests of no node;
        // its own stay its own even when named.
        let adopt = |set: &[Option<&NodeId>]| set.iter().map(|n| n.cloned()).collect();
        assert!(owners.adopt(adopt(&[Some(&a), None, Some(&b)])));
        assert!(owners.covers(Some(&a)) && owners.covers(None) && owners.covers(Some(&b)));
        assert!(!owners.adopt(adopt(&[Some(&a), None])), "unchanged");
        // a rejoined: let go of it.
        assert!(owners.adopt(adopt(&[None])));
        assert!(!owners.covers(Some(&a)) && owners.covers(Some(&b)));
        // A node alone renders the requests of no node: they are its own.
        assert!(FeedbackOwners::new(None).covers(None));
    }

    #[test]
    fn node_ids_are_checked() {
        assert!(NodeId::new("node-1").is_ok());
        assert!(NodeId::new("a.b_c").is_ok());
        for bad in ["", "-x", "a b", "ä", &"x".repeat(64)] {
            assert!(NodeId::new(bad).is_err(), "{bad:?}");
        }
        let n: Result<NodeId, _> = serde_json::from_str("\"bad id\"");
        assert!(n.is_err());
    }

    proptest::proptest! {
        /// Any text: a precise answer, never a panic, and exactly the
        /// documented ids are accepted (and round-trip through serde).
        #[test]
        fn node_ids_accept_exactly_the_documented_form(text in "\\PC{0,70}") {
            let ok = (1..=63).contains(&text.len())
                && text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            match NodeId::new(text.clone()) {
                Ok(id) => {
                    proptest::prop_assert!(ok, "accepted {text:?}");
                    let json = serde_json::to_string(&id).unwrap();
                    proptest::prop_assert_eq!(serde_json::from_str::<NodeId>(&json).unwrap(), id);
                }
                Err(e) => proptest::prop_assert!(!ok && !e.is_empty(), "refused {text:?}: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn solo_leads_for_good() {
        let l = Leadership::solo();
        assert_eq!(l.current(), Some(Term { epoch: 1 }));
        let mut m = l.clone();
        let ended = tokio::time::timeout(Duration::from_millis(50), m.ended(Term { epoch: 1 }));
        assert!(ended.await.is_err(), "a solo term never ends");
    }

    #[tokio::test]
    async fn a_task_runs_per_term_and_stops_when_the_term_ends() {
        let (lease, leadership) = Leadership::channel();
        let shutdown = CancellationToken::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let runner = tokio::spawn({
            let (shutdown, log) = (shutdown.clone(), log.clone());
            async move {
                leadership
                    .run_while_leader(&shutdown, |term, lost| {
                        let log = log.clone();
                        async move {
                            log.lock().unwrap().push(format!("start {}", term.epoch));
                            lost.cancelled().await;
                            log.lock().unwrap().push(format!("stop {}", term.epoch));
                        }
                    })
                    .await
            }
        });
        let wait_len = |n: usize| {
            let log = log.clone();
            async move {
                for _ in 0..200 {
                    if log.lock().unwrap().len() >= n {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("log never reached {n}: {:?}", log.lock().unwrap());
            }
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(log.lock().unwrap().is_empty(), "a follower runs nothing");
        lease.lead(3);
        wait_len(1).await;
        lease.lead(3); // a renewal is the same term
        lease.lead(4); // a new epoch is a new term
        wait_len(3).await;
        lease.follow();
        wait_len(4).await;
        shutdown.cancel();
        runner.await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            vec!["start 3", "stop 3", "start 4", "stop 4"]
        );
    }

    #[tokio::test]
    async fn shutdown_stops_the_running_term() {
        let leadership = Leadership::solo();
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                leadership
                    .run_while_leader(&shutdown, |_, lost| async move { lost.cancelled().await })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("stops at shutdown")
            .unwrap();
    }
}
