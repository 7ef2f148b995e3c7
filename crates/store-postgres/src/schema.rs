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
///
/// # Rolling upgrades (version 2 to 3)
///
/// Version 3 turns `events` into a table partitioned by seq ranges (made
/// ahead of the tip, see `partitions.rs`): the version-2 table, its rows and
/// indexes kept as they are, becomes the first partition (seqs from 0
/// through its last), under a new partitioned `events` with the same
/// columns, primary key and indexes. No other table changes. While nodes of both versions share a
/// database:
///
/// - a node whose code knows only version 2 refuses to START against a
///   database at version 3 (as above: the upgrade is one way);
/// - while the first version-3 node migrates, every node's reads and
///   appends of `events` wait: the migration holds an exclusive lock on the
///   table until it commits, and attaching the old table as a partition
///   reads it once whole (to check its rows fit the range; nothing is
///   copied or rewritten);
/// - version-2 nodes started before the migration keep appending, reading,
///   verifying and archiving: the columns are the same, an insert goes to
///   the partition of its seq and a `DELETE` reaches every partition (their
///   archives delete row by row and leave empty partitions behind, which
///   the next version-3 archive drops; they are not fenced by the leader's
///   epoch either);
/// - but they make no partitions: their appends land in those the
///   version-3 nodes make ahead of the tip (a span ahead, checked after
///   their own commits and every minute). With no version-3 node running,
///   the old nodes' appends fail ("no partition of relation "events" found
///   for row") once the chain outgrows the partitions made ahead;
/// - their `size_on_disk` counts `events` as empty (the size of a
///   partitioned table is that of its partitions, which they do not add).
///
/// # Rolling upgrades (version 3 to 4)
///
/// Version 4 only ADDS the table `leader_state`, where the leader's work
/// keeps its state between terms ([`crate::coord::Coordinator::save_state`]).
/// Version-3 nodes keep working, but a version-3 leader's reconciler keeps
/// its state in its node's own files, as before: after a term of an old
/// node, a new node's reconciler goes on from the state the last version-4
/// leader saved, and may apply again what the old leader applied meanwhile
/// if the branch moved. Finish the upgrade before relying on it.
pub const SCHEMA_VERSION: i32 = 4;

/// Version 1: the chain tip, the live events and the archived ones, request
/// records, dedup claims and committed batches.
///
/// Removing archived rows from `events` is a plain `DELETE` here; version 3
/// partitions `events` by seq ranges, so that retention drops them whole.
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

/// Version 3: `events` partitioned by seq ranges ([`crate::partitions`]).
///
/// The version-2 table becomes the partition `events_p0` of seqs `0..=` its
/// last (renamed with its indexes; attaching reuses them as the partitions
/// of the new table's primary key and indexes, so nothing is rebuilt or
/// copied); the partitions after it are made by the code, ahead of the tip
/// (no DEFAULT partition, see [`crate::partitions`]).
const V3: &str = r"
ALTER TABLE events RENAME TO events_p0;
ALTER INDEX events_pkey RENAME TO events_p0_pkey;
ALTER INDEX events_by_request RENAME TO events_p0_by_request;
ALTER INDEX events_checkpoints RENAME TO events_p0_checkpoints;

CREATE TABLE events (
    seq bigint NOT NULL,
    request_id text,
    kind text NOT NULL,
    canonical bytea NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    PRIMARY KEY (seq)
) PARTITION BY RANGE (seq);
CREATE INDEX events_by_request ON events (request_id, seq) WHERE request_id IS NOT NULL;
CREATE INDEX events_checkpoints ON events (seq) WHERE kind = 'checkpoint';

DO $$
DECLARE
    hi bigint;
BEGIN
    SELECT coalesce(max(seq), 0) + 1 INTO hi FROM events_p0;
    EXECUTE format('ALTER TABLE events ATTACH PARTITION events_p0 FOR VALUES FROM (0) TO (%s)', hi);
END
$$;
";

/// Version 4: the state of the leader's work, by name (a reconciler's last
/// commit and applied state), written by the leader under its epoch.
const V4: &str = r"
CREATE TABLE leader_state (
    name text PRIMARY KEY,
    state bytea NOT NULL,
    epoch bigint NOT NULL,
    saved_at timestamptz NOT NULL
);
";

/// Every migration, oldest first: `(version, SQL)`.
fn migrations() -> Vec<(i32, String)> {
    vec![
        (1, V1.replace("{GENESIS}", GENESIS_HASH)),
        (2, V2.to_string()),
        (3, V3.to_string()),
        (4, V4.to_string()),
    ]
}

/// The tables of the store (for `size_on_disk`; a partitioned table counts
/// its partitions).
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
    "leader_state",
];

/// Bring the schema up to `up_to` ([`SCHEMA_VERSION`], or older for tests of
/// upgrades), in one transaction under the advisory lock; refuse a database
/// whose schema is newer than the code.
pub(crate) async fn migrate(
    client: &mut Client,
    redact: &Redactor,
    up_to: i32,
) -> Result<(), StoreError> {
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
    let wanted = migrations()
        .into_iter()
        .filter(|(v, _)| *v > current && *v <= up_to);
    for (version, sql) in wanted {
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
