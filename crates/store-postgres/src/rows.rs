//! The rows a group commit and an import both write: events, and the
//! request records folded from them.
//!
//! Statements go out typed (`query_typed`: parse, bind and execute in one
//! message, no round trip to prepare), so that a group commit can send
//! several at once and wait for their answers together (see
//! [`crate::group`]).

use std::collections::{BTreeSet, HashMap};

use tokio_postgres::types::Type;
use tokio_postgres::Transaction;
use youops_core::audit::StoreError;
use youops_core::model::RequestId;

use crate::codec::{self, col, seq_of, seq_sql, Entry};
use crate::conn::Redactor;

/// An event as inserted into `events`.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) request_id: Option<String>,
    pub(crate) kind: &'static str,
    pub(crate) canonical: Vec<u8>,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

/// Why a write failed: a value that does not fit its column, or the
/// database.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// A value that does not fit its column.
    Data(StoreError),
    /// The database refused or failed.
    Sql(tokio_postgres::Error),
}

impl WriteError {
    /// As the store reports it: `what` failed, the password removed.
    pub(crate) fn report(self, redact: &Redactor, what: &str) -> StoreError {
        match self {
            WriteError::Data(d) => d,
            WriteError::Sql(e) => redact.io(what, &e),
        }
    }
}

/// The records of the requests `ids`, as stored (under the caller's tip
/// lock, so no other node changes them meanwhile).
pub(crate) async fn read_records(
    tx: &Transaction<'_>,
    ids: BTreeSet<RequestId>,
) -> Result<HashMap<RequestId, Entry>, WriteError> {
    let mut known = HashMap::new();
    if ids.is_empty() {
        return Ok(known);
    }
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    let rows = tx
        .query_typed(
            "SELECT id, record, first_seq FROM requests WHERE id = ANY($1)",
            &[(&ids, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(WriteError::Sql)?;
    for row in &rows {
        let (id, entry) = entry_of(row).map_err(WriteError::Data)?;
        known.insert(id, entry);
    }
    Ok(known)
}

/// One row of `requests` as the request's id and entry.
fn entry_of(row: &tokio_postgres::Row) -> Result<(RequestId, Entry), StoreError> {
    let id: String = col(row, 0, "requests.id")?;
    let text: String = col(row, 1, "requests.record")?;
    let first: i64 = col(row, 2, "requests.first_seq")?;
    let what = format!("the record of request {id}");
    let entry = Entry {
        record: codec::record(&text, &what)?,
        first_seq: seq_of(first, &what)?,
    };
    Ok((codec::request_id(&id, "requests.id")?, entry))
}

/// Insert `events`, in one statement.
pub(crate) async fn insert_events(
    tx: &Transaction<'_>,
    events: &[Stored],
) -> Result<(), WriteError> {
    let seqs = events
        .iter()
        .map(|e| seq_sql(e.seq))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(WriteError::Data)?;
    let ids: Vec<Option<&str>> = events.iter().map(|e| e.request_id.as_deref()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let canonical: Vec<&[u8]> = events.iter().map(|e| e.canonical.as_slice()).collect();
    let prev: Vec<&str> = events.iter().map(|e| e.prev_hash.as_str()).collect();
    let hash: Vec<&str> = events.iter().map(|e| e.hash.as_str()).collect();
    tx.query_typed(
        "INSERT INTO events (seq, request_id, kind, canonical, prev_hash, hash)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[])",
        &[
            (&seqs, Type::INT8_ARRAY),
            (&ids, Type::TEXT_ARRAY),
            (&kinds, Type::TEXT_ARRAY),
            (&canonical, Type::BYTEA_ARRAY),
            (&prev, Type::TEXT_ARRAY),
            (&hash, Type::TEXT_ARRAY),
        ],
    )
    .await
    .map_err(WriteError::Sql)?;
    Ok(())
}

/// Insert or update the request records of `records`, in one statement.
pub(crate) async fn upsert_records(
    tx: &Transaction<'_>,
    records: &[Entry],
) -> Result<(), WriteError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut c = RecordColumns::default();
    for e in records {
        c.push(e).map_err(WriteError::Data)?;
    }
    tx.query_typed(
        "INSERT INTO requests (id, state, terminal, op, principal, frontend, created_ns,
                               first_seq, last_seq, record)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[],
                              $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::text[])
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, terminal = excluded.terminal,
             last_seq = excluded.last_seq, record = excluded.record",
        &[
            (&c.id, Type::TEXT_ARRAY),
            (&c.state, Type::TEXT_ARRAY),
            (&c.terminal, Type::BOOL_ARRAY),
            (&c.op, Type::TEXT_ARRAY),
            (&c.principal, Type::TEXT_ARRAY),
            (&c.frontend, Type::TEXT_ARRAY),
            (&c.created, Type::INT8_ARRAY),
            (&c.first, Type::INT8_ARRAY),
            (&c.last, Type::INT8_ARRAY),
            (&c.record, Type::TEXT_ARRAY),
        ],
    )
    .await
    .map_err(WriteError::Sql)?;
    Ok(())
}

/// The `requests` columns, one array each.
#[derive(Debug, Default)]
struct RecordColumns {
    id: Vec<String>,
    state: Vec<&'static str>,
    terminal: Vec<bool>,
    op: Vec<String>,
    principal: Vec<Option<String>>,
    frontend: Vec<String>,
    created: Vec<i64>,
    first: Vec<i64>,
    last: Vec<i64>,
    record: Vec<String>,
}

impl RecordColumns {
    fn push(&mut self, e: &Entry) -> Result<(), StoreError> {
        let r = &e.record;
        self.id.push(r.request.id.to_string());
        self.state.push(r.state.as_str());
        self.terminal.push(r.state.is_terminal());
        self.op.push(r.request.op.clone());
        self.principal.push(r.request.actor.principal.clone());
        self.frontend.push(r.request.actor.frontend.clone());
        self.created.push(codec::nanos(&r.request.created_at));
        self.first.push(seq_sql(e.first_seq)?);
        self.last.push(seq_sql(r.last_seq)?);
        self.record.push(codec::record_text(r)?);
        Ok(())
    }
}
