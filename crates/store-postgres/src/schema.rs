//! The schema, as versioned migrations embedded in the crate, applied on
//! open under a transaction-scoped advisory lock so that nodes starting
//! together migrate once; a database newer than the code is refused.
//!
//! Canonical bytes are stored as `bytea`, never `jsonb` (which reorders keys
//! and would break the hashes); request records as JSON text.
//!
//! Migrations are append-only: a released version's SQL never changes, a new
//! version only adds to it.

use tokio_postgres::Client;
use youops_core::audit::{StoreError, GENESIS_HASH};

use crate::conn::Redactor;

/// The advisory lock key of migrations (any constant; this one spells
/// "youopsmg" in ASCII).
const MIGRATION_LOCK: i64 = 0x796f_756f_7073_6d67;

/// The newest schema version this code knows.
///
/// # Rolling upgrades (version 1 to 2)
///
/// Version 2 only ADDS tables (`nodes`, `leases`, `locks`, see
/// [`crate::coord`]); it changes no table, column, index or row of version 1.
/// While nodes of both versions share a database:
///
/// - a node whose code knows only version 1 refuses to START against a
///   database at version 2 (its `open` fails with "schema is version 2, newer
///   than this youops knows"), so the upgrade is one way: roll back by
///   restoring the database, not by starting old code;
/// - version-1 nodes started before the migration keep working: their
///   appends, reads, dedup claims and archives use only version-1 tables,
///   whose shape is unchanged, and the chain stays one (every writer, old or
///   new, locks the same `tip` row);
/// - but they take no part in coordination: they do not register in
///   `nodes`, never heartbeat, never hold or respect the `leader` lease or
///   the `locks` rows, and their appends are not checked against fencing.
///   Until the last of them is stopped, leader-only work and op locks are
///   exclusive among the version-2 nodes only; an old node may run them at
///   the same time (as it did before version 2, when nothing coordinated).
///   Stop the old nodes before relying on cluster-wide exclusivity.
pub const SCHEMA_VERSION: i32 = 2;

/// Version 1: the chain tip, the live events and the archived ones, request
/// records, dedup claims and committed batches.
///
/// Removing archived rows from `events` is a plain `DELETE`; partitioning
/// `events` by seq ranges (and detaching old partitions) is the later
/// optimisation for very large chains.
const V1: &str = r"
CREATE TABLE tip (
    id smallint PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL,
    hash text NOT NULL,
    time timestamptz
);
INSERT INTO tip (id, seq, hash, time) VALUES (1, 0, '{GENESIS}', NULL);

CREATE TABLE events (
    seq bigint PRIMARY KEY,
    request_id text,
    kind text NOT NULL,
    canonical bytea NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX events_by_request ON events (request_id, seq) WHERE request_id IS NOT NULL;
CREATE INDEX events_checkpoints ON events (seq) WHERE kind = 'checkpoint';

CREATE TABLE archive (
    seq bigint PRIMARY KEY,
    request_id text,
    kind text NOT NULL,
    canonical bytea NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    file text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE requests (
    id text PRIMARY KEY,
    state text NOT NULL,
    terminal boolean NOT NULL,
    op text NOT NULL,
    principal text,
    frontend text NOT NULL,
    created_ns bigint NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    record text NOT NULL
);
CREATE INDEX requests_active ON requests (id) WHERE NOT terminal;
CREATE INDEX requests_by_state ON requests (state, id);
CREATE INDEX requests_by_op ON requests (op, id);
CREATE INDEX requests_by_frontend ON requests (frontend, id);
CREATE INDEX requests_by_principal ON requests (principal, id);
CREATE INDEX requests_by_created ON requests (created_ns);
CREATE INDEX requests_finished ON requests (last_seq) WHERE terminal;

CREATE TABLE claims (
    key text PRIMARY KEY,
    request_id text NOT NULL,
    expires_at timestamptz
);
CREATE INDEX claims_expiring ON claims (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE batches (
    id text PRIMARY KEY,
    last_seq bigint NOT NULL,
    committed_at timestamptz NOT NULL
);
CREATE INDEX batches_by_time ON batches (committed_at);
";

/// Version 2: cluster coordination ([`crate::coord`]). Only new tables.
///
/// - `nodes`: one row per node id; `incarnation` grows by one each time the
///   node joins; `heartbeat_at` and `started_at` by the database clock;
///   `fenced` is the highest incarnation the leader declared dead (`NULL`:
///   none), so incarnation `i` may write while `incarnation = i` and
///   `fenced < i`.
/// - `leases`: named leases (the row `leader` is made here): the holder and
///   its incarnation, the epoch (one per term, only grows) and `expires_at`
///   by the database clock.
/// - `locks`: op lock keys as leases: the request holding the key, the
///   holding node and incarnation, `expires_at` by the database clock.
const V2: &str = r"
CREATE TABLE nodes (
    id text PRIMARY KEY,
    incarnation bigint NOT NULL CHECK (incarnation > 0),
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    fenced bigint
);

CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text,
    holder_incarnation bigint,
    epoch bigint NOT NULL CHECK (epoch >= 0),
    expires_at timestamptz NOT NULL
);
INSERT INTO leases (name, holder, holder_incarnation, epoch, expires_at)
VALUES ('leader', NULL, NULL, 0, '-infinity');

CREATE TABLE locks (
    key text PRIMARY KEY,
    request_id text NOT NULL,
    holder text NOT NULL,
    holder_incarnation bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX locks_by_holder ON locks (holder, holder_incarnation);
";

/// Every migration, oldest first: `(version, SQL)`.
fn migrations() -> Vec<(i32, String)> {
    vec![
        (1, V1.replace("{GENESIS}", GENESIS_HASH)),
        (2, V2.to_string()),
    ]
}

/// The tables of the store (for `size_on_disk`).
pub(crate) const TABLES: &[&str] = &[
    "tip",
    "events",
    "archive",
    "requests",
    "claims",
    "batches",
    "schema_migrations",
    "nodes",
    "leases",
    "locks",
];

/// Bring the schema up to [`SCHEMA_VERSION`], in one transaction under the
/// advisory lock; refuse a database whose schema is newer.
pub(crate) async fn migrate(client: &mut Client, redact: &Redactor) -> Result<(), StoreError> {
    let err = |what: &str, e: tokio_postgres::Error| redact.io(what, &e);
    let tx = client
        .transaction()
        .await
        .map_err(|e| err("migrations: BEGIN", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| err("migrations: taking the advisory lock", e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
         )",
    )
    .await
    .map_err(|e| err("migrations: creating schema_migrations", e))?;
    let row = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(|e| err("migrations: reading the schema version", e))?;
    let current: i32 = row
        .try_get(0)
        .map_err(|e| StoreError::Corrupt(format!("schema_migrations.version: {e}")))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Io(format!(
            "the database's audit store schema is version {current}, newer than this youops \
             knows (up to version {SCHEMA_VERSION}): upgrade youops on this node before it \
             opens this database"
        )));
    }
    for (version, sql) in migrations().into_iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(&sql)
            .await
            .map_err(|e| err(&format!("migration to schema version {version}"), e))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| err(&format!("recording schema version {version}"), e))?;
        tracing::info!(version, "audit store: PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(|e| err("migrations: COMMIT", e))
}
