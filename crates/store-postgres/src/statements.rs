//! The statements of a group commit ([`crate::group`]), prepared once per
//! connection: the server parses each once, and a group sends only their
//! parameters (bind and execute, no parse). A new connection prepares them
//! all at once, in one round trip. The two that read a cluster's tables
//! ([`NODE`], [`LEADER_TERM`]) are not prepared.
//!
//! A plan the server cached is planned again after a change of the tables
//! (a partition made or dropped, a migration). Should a migration change
//! what a statement returns, the server refuses the old plan ("cached plan
//! must not change result type"): the group runs again on a new
//! connection, which prepares them anew
//! ([`stale_plan`](crate::conn::stale_plan)).

use std::sync::LazyLock;

use tokio_postgres::types::Type;
use tokio_postgres::Statement;

use crate::conn::Conn;
use crate::rows::{EventColumns, RecordColumns, READ_RECORDS};

/// Step 1: the locked tip `(seq, hash, time)`. Sent first: every statement
/// after it in the group runs under the lock.
pub(crate) const LOCK_TIP: &str = "SELECT seq, hash, time FROM tip WHERE id = 1 FOR UPDATE";

/// Step 2: the database's clock.
pub(crate) const CLOCK: &str = "SELECT clock_timestamp()";

/// Step 1: the incarnation and fence of node `$1`, locked `FOR SHARE`. Not
/// prepared, nor [`LEADER_TERM`]: their tables are a cluster's (a store
/// bound to no node, or at an older schema, has none to prepare them on),
/// and they go out typed, parsed by the server each time.
pub(crate) const NODE: &str = "SELECT incarnation, fenced FROM nodes WHERE id = $1 FOR SHARE";

/// The epoch under which node `$1`, incarnation `$2`, holds the leader
/// lease now, by the database clock; the row locked `FOR SHARE`.
pub(crate) const LEADER_TERM: &str = "SELECT epoch FROM leases
     WHERE name = 'leader' AND holder = $1 AND holder_incarnation = $2
       AND expires_at > clock_timestamp()
     FOR SHARE";

/// Step 2: who holds the keys `$1`; expired claims are deleted (the
/// statement's snapshot still shows them: they are left out).
pub(crate) const CLAIMS: &str = "WITH expired AS (
         DELETE FROM claims WHERE key = ANY($1) AND expires_at <= clock_timestamp()
         RETURNING key
     )
     SELECT key, request_id FROM claims
     WHERE key = ANY($1) AND key NOT IN (SELECT key FROM expired)";

/// Step 4's one statement: claim the winners' keys (a plain `INSERT`: every
/// one new, under the tip lock nobody else claims), insert the events,
/// upsert the records, move the tip, record the batch id, and notify the
/// other stores when `$27`. Its parameters are [`WRITE_TYPES`].
pub(crate) static WRITE_GROUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH claimed AS (
             INSERT INTO claims (key, request_id, expires_at)
             SELECT k, r, CASE WHEN e THEN $20::timestamptz END
             FROM unnest($17::text[], $18::text[], $19::bool[]) AS c(k, r, e)
         ), inserted AS ({events}
         ), recorded AS ({records}
         ), moved AS (
             UPDATE tip SET seq = $21, hash = $22, time = $23 WHERE id = 1
         ), batched AS (
             INSERT INTO batches (id, last_seq, committed_at) VALUES ($24, $21, $23)
         )
         SELECT pg_notify($25, $26) WHERE $27",
        events = EventColumns::sql(1),
        records = RecordColumns::sql(1 + EventColumns::TYPES.len()),
    )
});

/// The types of [`WRITE_GROUP`]'s parameters `$17` on: the claims' keys,
/// request ids and whether each expires, when they expire; the tip's seq,
/// hash and time; the batch id; the notification's channel and payload, and
/// whether to send it.
const WRITE_TAIL: [Type; 11] = [
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::BOOL_ARRAY,
    Type::TIMESTAMPTZ,
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
];

/// The types of [`WRITE_GROUP`]'s parameters, in order: the events', the
/// records', then [`WRITE_TAIL`].
pub(crate) fn write_types() -> Vec<Type> {
    let mut types = Vec::with_capacity(27);
    types.extend(EventColumns::TYPES);
    types.extend(RecordColumns::TYPES);
    types.extend(WRITE_TAIL);
    types
}

/// A group commit's statements, prepared on one connection.
#[derive(Debug)]
pub(crate) struct Statements {
    /// The [`Conn::serial`](crate::conn::Conn) of the connection they are
    /// prepared on.
    serial: u64,
    pub(crate) lock_tip: Statement,
    pub(crate) clock: Statement,
    pub(crate) claims: Statement,
    pub(crate) records: Statement,
    pub(crate) write: Statement,
}

impl Statements {
    /// Prepare them all on `conn`, at once.
    pub(crate) async fn prepare(conn: &Conn) -> Result<Statements, tokio_postgres::Error> {
        let client = &conn.client;
        let write = write_types();
        let (lock_tip, clock, claims, records, write) = tokio::try_join!(
            client.prepare_typed(LOCK_TIP, &[]),
            client.prepare_typed(CLOCK, &[]),
            client.prepare_typed(CLAIMS, &[Type::TEXT_ARRAY]),
            client.prepare_typed(READ_RECORDS, &[Type::TEXT_ARRAY]),
            client.prepare_typed(&WRITE_GROUP, &write),
        )?;
        Ok(Statements {
            serial: conn.serial,
            lock_tip,
            clock,
            claims,
            records,
            write,
        })
    }

    /// Whether they are prepared on `conn`.
    pub(crate) fn on(&self, conn: &Conn) -> bool {
        self.serial == conn.serial
    }
}
