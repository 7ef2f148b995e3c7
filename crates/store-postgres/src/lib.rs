//! # youops-store-postgres
//!
//! The YouOps audit chain in PostgreSQL: [`PgStore`] implements
//! [`AuditStore`] so that every node of a cluster (several daemons, each
//! with its own group commit) appends to ONE gapless hash chain in one
//! database, and any node reads and verifies all of it.
//!
//! ```no_run
//! use youops_core::audit::{AppendOptions, AuditStore};
//! use youops_core::model::{EventBody, NewEvent};
//! use youops_store_postgres::{PgOptions, PgStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::open(
//!     "postgres://youops:secret@db.example/audit?sslmode=require",
//!     PgOptions::default(),
//! )
//! .await?;
//! let notice = NewEvent::global(EventBody::Notice {
//!     source: "doc".into(),
//!     kind: "hello".into(),
//!     message: "committed before this returns".into(),
//!     data: serde_json::Value::Null,
//! });
//! let stored = store.append(vec![notice], AppendOptions::durable()).await?;
//! assert!(store.verify().await?.ok());
//! # Ok(()) }
//! ```
//!
//! ## TLS
//!
//! Over TCP, every `sslmode` but `disable` uses rustls, trusting the system's
//! roots or, with `sslrootcert=/path/to/ca.pem`, exactly the certificates of
//! that file (a private CA). The chain is always verified; the host name too,
//! except under `verify-ca`. Unix sockets never use TLS. See [`SslMode`].
//!
//! ## How appends work
//!
//! Each store runs a writer task that takes every append waiting in its
//! queue as one group, and commits the group as ONE transaction: it locks
//! the single row of the `tip` table (`FOR UPDATE`: one writer at a time in
//! the whole cluster), reads the time from the database clock (never earlier
//! than the tip's, so times are monotonic whatever the nodes' clocks say),
//! checks and claims the group's dedup keys (`claims`, `INSERT … ON
//! CONFLICT DO NOTHING RETURNING`), numbers and hashes the events with
//! core's chain functions, inserts them, upserts the request records,
//! moves the tip and records the group's random batch id, then commits.
//! The tip is locked before any claim, so two nodes never deadlock.
//!
//! Every commit is synchronous: an append is durable when it returns
//! ([`AppendOptions::durable`] or not), and [`flush`](AuditStore::flush)
//! only waits for the appends queued before it.
//!
//! A broken connection is replaced and a group that did not commit runs
//! again (for up to [`PgOptions::reconnect_timeout`]); a COMMIT whose answer
//! was lost is resolved by looking its batch id up (after taking the tip
//! lock, so the lost transaction is over), never by appending again. So an
//! append in flight while the server restarts either fails or is appended
//! exactly once. Reads use a small pool of other connections, and never
//! wait for the writer's transaction.
//!
//! ## Schema
//!
//! Versioned migrations are embedded ([`SCHEMA_VERSION`]) and run on open
//! in one transaction under `pg_advisory_xact_lock`, so nodes starting
//! together migrate once; a database whose schema is newer than the code
//! refuses to open. Tables: `tip` (one row: last seq, hash and time),
//! `events` (seq, request id, kind, the canonical bytes as `bytea` — never
//! `jsonb`, which reorders keys — and the hashes), `archive` (the archived
//! events, the same columns and the file), `requests` (one row per request:
//! the columns `RequestFilter` filters on, indexed, and the record as JSON
//! text), `claims` (key, request id, `expires_at` for claims that expire),
//! `batches` (committed batch ids, kept a day) and `schema_migrations`;
//! since version 2, for cluster coordination, `nodes` (incarnations,
//! heartbeats, fencing), `leases` (the `leader` lease and its epoch) and
//! `locks` (op locks as leases); since version 3, `events` is partitioned by
//! seq ranges, made ahead of the tip (see `partitions.rs`); since version 4,
//! `leader_state` (what the leader's work keeps between terms). What a
//! rolling upgrade with nodes of both versions may do: see
//! [`SCHEMA_VERSION`].
//!
//! ## Cluster coordination
//!
//! [`coord::Coordinator`] makes a store a cluster node: it joins under a new
//! incarnation, heartbeats, campaigns for the leader lease (demoting itself
//! on its own monotonic deadline when it cannot renew), fences leader writes
//! by epoch and dead nodes' incarnations (a bound store's group commit
//! checks its incarnation in the same transaction, see
//! [`PgStore::bind_node`]), and holds op locks as leases.
//!
//! ## Dedup claims
//!
//! A claim belongs to the request of the append's first event. Claims that
//! expire ([`AppendOptions::dedup_expires`]) hold for
//! [`PgOptions::dedup_ttl`] from their append, by the database clock; they
//! are ignored once expired, deleted when their key is claimed again and
//! swept every minute. Other claims hold for good.
//!
//! ## Retention
//!
//! [`archive`](AuditStore::archive) writes the same JSON-lines files as the
//! log store and moves the events into the `archive` table, so that every
//! node can read ([`PgStore::archived_events`]) and verify them:
//! [`verify`](AuditStore::verify) walks the archive table, then the live
//! events, which must follow on (its report is the live chain's, starting
//! at the checkpoint, as the trait defines it). The partitions of `events`
//! archived whole are dropped; only the archived rows of the one archived
//! in part are deleted. As the cluster's leader
//! ([`archive_as`](AuditStore::archive_as)), its writes are fenced by the
//! leader's epoch, as every leader write is.
//!
//! ## Secrets
//!
//! [`PgUrl`]'s `Display` and `Debug` hide the password, and every error the
//! store returns or logs has it removed.

mod archive;
mod codec;
mod conn;
pub mod coord;
mod faults;
mod group;
mod import;
mod listen;
mod partitions;
mod reads;
mod rows;
mod schema;
mod statements;
mod url;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use youops_core::audit::{AppendOptions, ArchiveReport, AuditStore, StoreError, VerifyReport};
use youops_core::cluster::NodeId;
use youops_core::model::{AuditEvent, NewEvent, RequestFilter, RequestId, RequestRecord};

pub use faults::Faults;
pub use schema::SCHEMA_VERSION;
pub use url::{PgUrl, SslMode};

use conn::{Connector, Pool, Redactor};
use group::{AppendReq, NodeBinding};
use listen::Listener;
use partitions::Partitions;
use writer::{Msg, Writer};

/// How a [`PgStore`] is opened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgOptions {
    /// Connections for reads (4); the writer has one more of its own.
    pub pool_size: usize,
    /// How long an expiring dedup claim holds (7 days).
    pub dedup_ttl: Duration,
    /// How long the writer keeps reconnecting and retrying a group before its
    /// callers get the error (30 s).
    pub reconnect_timeout: Duration,
    /// The most appends in one group commit (1024).
    pub max_group: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 4,
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            reconnect_timeout: Duration::from_secs(30),
            max_group: 1024,
        }
    }
}

/// The PostgreSQL audit store (see the [crate documentation](crate)).
/// Clones share the store; its writer stops when the last is dropped.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: PgUrl,
    session: String,
    tx: mpsc::Sender<Msg>,
    connector: Arc<Connector>,
    pool: Pool,
    archiving: tokio::sync::Mutex<()>,
    /// How long an expiring dedup claim holds ([`PgOptions::dedup_ttl`]), for
    /// [`PgStore::import`] (the writer has its own copy).
    dedup_ttl: chrono::Duration,
    faults: Arc<Faults>,
    node: Arc<std::sync::Mutex<Option<NodeBinding>>>,
    /// The partitions of `events` this store knows, and their keeper.
    partitions: Arc<Partitions>,
    /// The listener for other stores' appends, once asked for.
    listener: std::sync::OnceLock<Listener>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.url)
            .field("session", &self.inner.session)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Open the store at `url` (`postgres://user:password@host:port/db`,
    /// `postgresql://user@/db?host=/socket/dir`, see [`PgUrl::parse`]):
    /// connect, migrate the schema, start the writer. Errors never contain
    /// the password.
    pub async fn open(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let url = PgUrl::parse(url)
            .map_err(|e| StoreError::Io(format!("invalid PostgreSQL URL: {e}")))?;
        Self::open_url(url, opts).await
    }

    /// Open the store with a `tokio_postgres` configuration (TLS with rustls
    /// if its `ssl_mode` is `prefer` or `require`).
    pub async fn open_config(
        config: tokio_postgres::Config,
        opts: PgOptions,
    ) -> Result<PgStore, StoreError> {
        Self::open_url(PgUrl::from_config(config), opts).await
    }

    /// Open the store at a parsed [`PgUrl`].
    pub async fn open_url(url: PgUrl, opts: PgOptions) -> Result<PgStore, StoreError> {
        Self::open_spanned(url, opts, partitions::SPAN, SCHEMA_VERSION).await
    }

    /// Open the store at `url` with partitions of `events` of `span` seqs
    /// (tests reach several partitions with a few events).
    #[cfg(feature = "test-util")]
    pub async fn open_with_partition_span(
        url: &str,
        opts: PgOptions,
        span: u64,
    ) -> Result<PgStore, StoreError> {
        let url = PgUrl::parse(url)
            .map_err(|e| StoreError::Io(format!("invalid PostgreSQL URL: {e}")))?;
        Self::open_spanned(url, opts, span.max(1), SCHEMA_VERSION).await
    }

    /// Open the store at `url` as the code of schema version `version` (1 or
    /// 2) would, for tests of upgrades: migrate only that far, and make no
    /// partitions of `events` (those versions have none).
    #[cfg(feature = "test-util")]
    pub async fn open_at_schema(
        url: &str,
        opts: PgOptions,
        version: i32,
    ) -> Result<PgStore, StoreError> {
        let url = PgUrl::parse(url)
            .map_err(|e| StoreError::Io(format!("invalid PostgreSQL URL: {e}")))?;
        if !(1..=2).contains(&version) {
            return Err(StoreError::Io(format!(
                "open_at_schema: version {version} is not one without partitions (1 or 2)"
            )));
        }
        Self::open_spanned(url, opts, partitions::SPAN, version).await
    }

    async fn open_spanned(
        url: PgUrl,
        opts: PgOptions,
        span: u64,
        schema: i32,
    ) -> Result<PgStore, StoreError> {
        let session = session_name(&url);
        let connector = Arc::new(Connector::new(&url, &session)?);
        let mut first = connector.connect().await?;
        schema::migrate(&mut first.client, &connector.redact, schema).await?;
        let partitions = if schema >= 3 {
            let ready = partitions::ahead(&mut first.client, &connector.redact, span).await?;
            Partitions::start(Arc::clone(&connector), span, ready)
        } else {
            Partitions::none()
        };
        let partitions = Arc::new(partitions);
        let dedup_ttl = chrono::Duration::from_std(opts.dedup_ttl)
            .map_err(|_| StoreError::Io(format!("dedup TTL {:?} is too long", opts.dedup_ttl)))?;
        let (tx, rx) = mpsc::channel(opts.max_group.max(1) * 4);
        let faults = Arc::new(Faults::default());
        let node = Arc::new(std::sync::Mutex::new(None));
        let writer = Writer {
            rx,
            connector: Arc::clone(&connector),
            conn: Some(first),
            statements: None,
            dedup_ttl,
            reconnect_timeout: opts.reconnect_timeout,
            max_group: opts.max_group.max(1),
            faults: Arc::clone(&faults),
            last_sweep: None,
            last_notified: None,
            node: Arc::clone(&node),
            partitions: Arc::clone(&partitions),
        };
        tokio::spawn(writer.run());
        Ok(PgStore {
            inner: Arc::new(Inner {
                url,
                session,
                tx,
                pool: Pool::new(Arc::clone(&connector), opts.pool_size),
                connector,
                archiving: tokio::sync::Mutex::new(()),
                dedup_ttl,
                faults,
                node,
                partitions,
                listener: std::sync::OnceLock::new(),
            }),
        })
    }

    /// A wake-up whenever another store (another node) commits appends to
    /// this database, for a follower of the chain
    /// ([`ExecutorBuilder::follow_wakeups`](youops_core::executor::ExecutorBuilder::follow_wakeups)):
    /// every group commit notifies the others (`LISTEN`/`NOTIFY`), and the
    /// first call starts this store's listener, on a connection of its own.
    /// It wakes once more after each reconnection, for what it may have
    /// missed meanwhile; it never wakes for this store's own appends.
    pub fn appended_elsewhere(&self) -> Arc<tokio::sync::Notify> {
        self.inner
            .listener
            .get_or_init(|| {
                Listener::start(
                    Arc::clone(&self.inner.connector),
                    self.inner.session.clone(),
                )
            })
            .wake()
    }

    /// Where the store connects (the password hidden when shown).
    pub fn url(&self) -> &PgUrl {
        &self.inner.url
    }

    /// The `application_name` of this store's sessions, unique to it: find
    /// them in `pg_stat_activity`.
    pub fn session_name(&self) -> &str {
        &self.inner.session
    }

    /// Archived events (in the `archive` table) with `seq > after`, at most
    /// `limit`, in order: from any node, whoever archived them.
    pub async fn archived_events(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        reads::archived_events(&self.inner.pool, after, limit).await
    }

    /// Write events copied from another store's chain (`youops store
    /// copy`), keeping their seqs, times, `prev_hash` and hash
    /// ([`append`](AuditStore::append) would number and hash them anew).
    ///
    /// The events are the next part of a chain: the first must follow the
    /// tip exactly (seq and `prev_hash`), or start an empty store: at #1, or
    /// later, after records the source archived (its checkpoint must then
    /// follow, or [`verify`](AuditStore::verify) reports the start). Every
    /// event is checked first (its seq, its link to the one before, its
    /// hash over its own content); a refusal names the record. Then one
    /// transaction, holding the tip lock as a group commit does, inserts
    /// them and derives what a replay would: the request records (events
    /// whose `received` event is not in the store derive none) and the dedup
    /// claims their `received` events carry (expiring ones until the event's
    /// time plus [`PgOptions::dedup_ttl`], left out once expired).
    pub async fn import(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        import::import(self, events).await
    }

    /// Bind the store to cluster node `node`, incarnation `incarnation`
    /// (what [`coord::Coordinator::join`] does, with the incarnation it
    /// took): from the next group commit on, every group transaction checks,
    /// right after locking the chain tip, that this is the node's current
    /// incarnation and that the leader has not fenced it
    /// ([`coord::Coordinator::fence_node`]). A refused group answers every
    /// caller with [`StoreError::Io`] starting `fenced:` (see
    /// [`coord::is_fenced`]) and writes nothing. A store never bound writes
    /// unchecked, as a single node does.
    pub fn bind_node(&self, node: NodeId, incarnation: u64) {
        *self.node_slot() = Some(NodeBinding { node, incarnation });
    }

    /// The cluster node and incarnation the store is bound to, if any.
    pub fn bound_node(&self) -> Option<(NodeId, u64)> {
        self.node_slot()
            .as_ref()
            .map(|b| (b.node.clone(), b.incarnation))
    }

    fn node_slot(&self) -> std::sync::MutexGuard<'_, Option<NodeBinding>> {
        self.inner.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fault injection for tests.
    #[cfg(feature = "test-util")]
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    fn redact(&self) -> &Redactor {
        &self.inner.connector.redact
    }
}

/// `<the URL's application_name, or youops>/<a new ULID>`, at most 63 bytes
/// (PostgreSQL's limit).
fn session_name(url: &PgUrl) -> String {
    let base = url.config().get_application_name().unwrap_or("youops");
    let id = ulid::Ulid::new().to_string();
    let mut base: String = base.chars().filter(|c| c.is_ascii()).collect();
    base.truncate(63 - id.len() - 1);
    format!("{base}/{id}")
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append(
        &self,
        events: Vec<NewEvent>,
        opts: AppendOptions,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Encoded here, off the writer.
        let bodies = youops_core::audit::encode_bodies(&events)?;
        let (reply, answer) = oneshot::channel();
        let req = AppendReq {
            events,
            bodies,
            opts,
        };
        self.inner
            .tx
            .send(Msg::Append(req, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.inner
            .tx
            .send(Msg::Flush(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)
    }

    async fn request(&self, id: RequestId) -> Result<Option<RequestRecord>, StoreError> {
        reads::request(&self.inner.pool, id).await
    }

    async fn request_events(&self, id: RequestId) -> Result<Vec<AuditEvent>, StoreError> {
        reads::request_events(&self.inner.pool, id).await
    }

    async fn requests_events(
        &self,
        ids: &[RequestId],
    ) -> Result<std::collections::HashMap<RequestId, Vec<AuditEvent>>, StoreError> {
        reads::requests_events(&self.inner.pool, ids).await
    }

    async fn find_dedup(&self, key: &str) -> Result<Option<RequestId>, StoreError> {
        reads::find_dedup(&self.inner.pool, key).await
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        reads::list_requests(&self.inner.pool, filter, before, limit).await
    }

    async fn active_requests(&self) -> Result<Vec<RequestRecord>, StoreError> {
        reads::active_requests(&self.inner.pool).await
    }

    async fn events(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        reads::events(&self.inner.pool, after, limit).await
    }

    async fn head(&self) -> Result<(u64, String), StoreError> {
        reads::head(&self.inner.pool).await
    }

    async fn verify(&self) -> Result<VerifyReport, StoreError> {
        reads::verify(&self.inner.pool).await
    }

    /// `pg_total_relation_size` of the store's tables (with their indexes).
    async fn size_on_disk(&self) -> Result<u64, StoreError> {
        reads::size_on_disk(&self.inner.pool).await
    }

    async fn archive(
        &self,
        through_seq: u64,
        dir: &Path,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        archive::archive(self, through_seq, dir, None).await
    }

    /// Fenced by `leader_epoch`: the checkpoint is a leader write
    /// ([`AppendOptions::leader_epoch()`]), and moving the events and
    /// removing the records checks the lease in its own transaction (see
    /// the crate docs on retention). A refusal is an error starting
    /// `fenced:` ([`coord::is_fenced`]); it leaves the events live and the
    /// archive directory as it was.
    async fn archive_as(
        &self,
        through_seq: u64,
        dir: &Path,
        leader_epoch: Option<u64>,
    ) -> Result<Option<ArchiveReport>, StoreError> {
        archive::archive(self, through_seq, dir, leader_epoch).await
    }
}
