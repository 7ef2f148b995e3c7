//! The writer task: this node's group commit. It takes every append waiting
//! in its queue as one group and commits the group as one transaction
//! ([`crate::group`]), on a connection of its own.
//!
//! A broken connection is replaced, and a group that did not commit runs
//! again, until [`PgOptions::reconnect_timeout`](crate::PgOptions) has passed
//! (then its callers get the error). A group whose COMMIT went unanswered is
//! resolved by looking up its batch id, never by appending it again: if the
//! batch is there, the callers get the events it committed; if not, nothing
//! was committed and the group runs again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use youops_core::audit::StoreError;

use crate::conn::{describe, is_connection, Conn, Connector};
use crate::faults::Faults;
use crate::group::{
    batch_committed, commit_group, Answer, AppendReq, GroupCx, GroupError, NodeBinding,
};
use crate::partitions::Partitions;
use crate::statements::Statements;

/// What the writer is asked.
#[derive(Debug)]
pub(crate) enum Msg {
    /// An append, and where to answer.
    Append(AppendReq, oneshot::Sender<Answer>),
    /// Answer once every append queued before is answered.
    Flush(oneshot::Sender<()>),
}

/// How often expired claims and old batch ids are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How long a batch id is kept for resolving a lost COMMIT.
const BATCH_KEEP: &str = "1 day";

/// The least time between two groups that notify the other stores
/// ([`crate::listen`]): under load, a notification per group would cost
/// every group commit more than the wake-ups are worth (a follower reads at
/// most once per 10 ms anyway). A group that does not notify is read with
/// the next notified one, or at the followers' next poll.
const NOTIFY_GAP: Duration = Duration::from_millis(10);

/// The writer's settings and state.
pub(crate) struct Writer {
    pub(crate) rx: mpsc::Receiver<Msg>,
    pub(crate) connector: Arc<Connector>,
    pub(crate) conn: Option<Conn>,
    /// The group commit's statements, prepared on `conn`.
    pub(crate) statements: Option<Statements>,
    pub(crate) dedup_ttl: chrono::Duration,
    pub(crate) reconnect_timeout: Duration,
    pub(crate) max_group: usize,
    pub(crate) faults: Arc<Faults>,
    pub(crate) last_sweep: Option<Instant>,
    /// The cluster node this store writes as, once bound.
    pub(crate) node: Arc<std::sync::Mutex<Option<NodeBinding>>>,
    /// The partitions of `events` known to exist, and their keeper.
    pub(crate) partitions: Arc<Partitions>,
    /// When a committed group last notified the other stores.
    pub(crate) last_notified: Option<Instant>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Serve until every handle of the store is gone.
    pub(crate) async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut appends = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(m) = next {
                match m {
                    Msg::Append(req, reply) => appends.push((req, reply)),
                    Msg::Flush(reply) => flushes.push(reply),
                }
                next = if appends.len() < self.max_group {
                    self.rx.try_recv().ok()
                } else {
                    None
                };
            }
            if !appends.is_empty() {
                let group: Vec<&AppendReq> = appends.iter().map(|(r, _)| r).collect();
                let answers = self.commit(&group).await;
                for ((_, reply), answer) in appends.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
            for f in flushes {
                let _ = f.send(());
            }
            self.sweep().await;
        }
    }

    /// The connection, made if needed.
    async fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.client.is_closed() || c.in_transaction)
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            self.conn = Some(self.connector.connect().await?);
        }
        self.conn.as_mut().ok_or(StoreError::Closed)
    }

    /// The connection, made if needed, and the group commit's statements
    /// prepared on it.
    async fn prepared(&mut self) -> Result<(&mut Conn, &Statements), StoreError> {
        self.conn().await?;
        let conn = self.conn.as_ref().ok_or(StoreError::Closed)?;
        if !self.statements.as_ref().is_some_and(|s| s.on(conn)) {
            self.statements = None;
            let prepared = Statements::prepare(conn).await.map_err(|e| {
                self.connector
                    .redact
                    .io("preparing the group's statements", &e)
            })?;
            self.statements = Some(prepared);
        }
        match (self.conn.as_mut(), self.statements.as_ref()) {
            (Some(conn), Some(st)) => Ok((conn, st)),
            _ => Err(StoreError::Closed),
        }
    }

    /// Commit `group`, retrying as the module docs say; an answer per append.
    async fn commit(&mut self, group: &[&AppendReq]) -> Vec<Answer> {
        let deadline = Instant::now() + self.reconnect_timeout;
        let mut pause = Duration::from_millis(25);
        let fail = |e: StoreError| -> Vec<Answer> {
            let text = e.to_string();
            group
                .iter()
                .map(|_| Err(StoreError::Io(text.clone())))
                .collect()
        };
        loop {
            let faults = Arc::clone(&self.faults);
            let connector = Arc::clone(&self.connector);
            let partitions = Arc::clone(&self.partitions);
            let node = self.node.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let notify = self.last_notified.is_none_or(|t| t.elapsed() >= NOTIFY_GAP);
            let cx = GroupCx {
                connector: &connector,
                dedup_ttl: self.dedup_ttl,
                faults: &faults,
                node: node.as_ref(),
                partitions: &partitions,
                notify,
            };
            let result = match self.prepared().await {
                Ok((conn, st)) => commit_group(conn, st, group, &cx).await,
                Err(error) => Err(GroupError::NotCommitted { error, retry: true }),
            };
            match result {
                Ok(answers) => {
                    if notify {
                        self.last_notified = Some(Instant::now());
                    }
                    return answers;
                }
                Err(GroupError::NotCommitted { error, retry }) => {
                    if !retry || Instant::now() >= deadline {
                        return fail(error);
                    }
                    tracing::warn!(%error, "audit store: a group did not commit; retrying");
                    self.conn = None;
                }
                Err(GroupError::Unknown {
                    batch,
                    answers,
                    error,
                }) => {
                    self.conn = None;
                    tracing::warn!(%batch, %error, "audit store: COMMIT unanswered; looking the batch up");
                    match self.resolve(&batch, deadline).await {
                        Ok(true) => return answers,
                        Ok(false) => {
                            tracing::warn!(%batch, "audit store: the batch did not commit; running it again");
                        }
                        Err(e) => {
                            return fail(StoreError::Io(format!(
                                "the outcome of batch {batch} is unknown ({error}), and looking \
                                 it up failed: {e}"
                            )))
                        }
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Whether `batch` committed, asked on new connections until `deadline`.
    async fn resolve(&mut self, batch: &str, deadline: Instant) -> Result<bool, StoreError> {
        let mut pause = Duration::from_millis(25);
        loop {
            let error = match self.conn().await {
                Ok(conn) => match batch_committed(conn, batch).await {
                    Ok(found) => return Ok(found),
                    Err(e) if is_connection(&e) => {
                        self.conn = None;
                        StoreError::Io(self.connector.redact.clean(describe(&e)))
                    }
                    Err(e) => return Err(self.connector.redact.io("looking up a batch", &e)),
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Every [`SWEEP_EVERY`]: delete expired claims and old batch ids. A
    /// failure is logged; the next sweep tries again.
    async fn sweep(&mut self) {
        if self.last_sweep.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let sql = format!(
            "DELETE FROM claims WHERE expires_at <= clock_timestamp();
             DELETE FROM batches WHERE committed_at < clock_timestamp() - interval '{BATCH_KEEP}'"
        );
        let redact = self.connector.redact.clone();
        if let Ok(conn) = self.conn().await {
            if let Err(e) = conn.client.batch_execute(&sql).await {
                tracing::warn!(error = %redact.clean(describe(&e)), "audit store: sweeping expired claims failed");
            }
        }
    }
}
