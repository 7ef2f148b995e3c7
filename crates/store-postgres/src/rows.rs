//! The rows a group commit and an import both write: events, and the
//! request records folded from them.
//!
//! An import's statements go out typed (`query_typed`: parse, bind and
//! execute in one message, no round trip to prepare). A group commit makes
//! the insert and the upsert parts of its one write statement, prepared
//! once per connection ([`crate::statements`]): their text is made for a
//! first parameter number, with their parameters' types beside.
//!
//! They take the [`Client`] of a connection in a transaction (a
//! [`Transaction`](tokio_postgres::Transaction)'s `client()`, or one whose
//! `BEGIN` the caller sent).

use std::collections::{BTreeSet, HashMap};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, ToStatement};
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

/// The records of the requests `$1` (a `text[]`).
pub(crate) const READ_RECORDS: &str =
    "SELECT id, record, first_seq FROM requests WHERE id = ANY($1)";

/// The records of the requests `ids`, as stored (under the caller's tip
/// lock, so no other node changes them meanwhile), by `statement`:
/// [`READ_RECORDS`], or its prepared statement.
pub(crate) async fn read_records<T>(
    tx: &Client,
    statement: &T,
    ids: BTreeSet<RequestId>,
) -> Result<HashMap<RequestId, Entry>, WriteError>
where
    T: ?Sized + ToStatement + Sync,
{
    let mut known = HashMap::new();
    if ids.is_empty() {
        return Ok(known);
    }
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    let rows = tx
        .query(statement, &[&ids])
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

/// Parameters beside their types, as `query_typed` takes them.
fn typed<const N: usize>(
    values: [&(dyn ToSql + Sync); N],
    types: [Type; N],
) -> Vec<(&(dyn ToSql + Sync), Type)> {
    values.into_iter().zip(types).collect()
}

/// `$n, $n+1, …`: the numbers of `count` parameters from `first`.
fn numbered(first: usize, count: usize) -> Vec<String> {
    (first..first + count).map(|n| format!("${n}")).collect()
}

/// The `events` columns of some events, one array each.
#[derive(Debug)]
pub(crate) struct EventColumns<'a> {
    seqs: Vec<i64>,
    ids: Vec<Option<&'a str>>,
    kinds: Vec<&'a str>,
    canonical: Vec<&'a [u8]>,
    prev: Vec<&'a str>,
    hash: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    /// The columns of `events`, or the first value that does not fit.
    pub(crate) fn of(events: &'a [Stored]) -> Result<EventColumns<'a>, StoreError> {
        Ok(EventColumns {
            seqs: events
                .iter()
                .map(|e| seq_sql(e.seq))
                .collect::<Result<Vec<i64>, _>>()?,
            ids: events.iter().map(|e| e.request_id.as_deref()).collect(),
            kinds: events.iter().map(|e| e.kind).collect(),
            canonical: events.iter().map(|e| e.canonical.as_slice()).collect(),
            prev: events.iter().map(|e| e.prev_hash.as_str()).collect(),
            hash: events.iter().map(|e| e.hash.as_str()).collect(),
        })
    }

    /// The types of the insert's parameters.
    pub(crate) const TYPES: [Type; 6] = [
        Type::INT8_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::BYTEA_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
    ];

    /// The insert, its parameters numbered from `first`.
    pub(crate) fn sql(first: usize) -> String {
        let p = numbered(first, Self::TYPES.len());
        format!(
            "INSERT INTO events (seq, request_id, kind, canonical, prev_hash, hash)
             SELECT * FROM unnest({}::bigint[], {}::text[], {}::text[], {}::bytea[], {}::text[],
                                  {}::text[])",
            p[0], p[1], p[2], p[3], p[4], p[5]
        )
    }

    /// The parameters of [`EventColumns::sql`], in order ([`Self::TYPES`]).
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.seqs,
            &self.ids,
            &self.kinds,
            &self.canonical,
            &self.prev,
            &self.hash,
        ]
    }
}

/// Insert `events`, in one statement.
pub(crate) async fn insert_events(tx: &Client, events: &[Stored]) -> Result<(), WriteError> {
    let columns = EventColumns::of(events).map_err(WriteError::Data)?;
    tx.query_typed(
        &EventColumns::sql(1),
        &typed(columns.params(), EventColumns::TYPES),
    )
    .await
    .map_err(WriteError::Sql)?;
    Ok(())
}

/// Insert or update the request records of `records`, in one statement.
pub(crate) async fn upsert_records(tx: &Client, records: &[Entry]) -> Result<(), WriteError> {
    if records.is_empty() {
        return Ok(());
    }
    let columns = RecordColumns::of(records).map_err(WriteError::Data)?;
    tx.query_typed(
        &RecordColumns::sql(1),
        &typed(columns.params(), RecordColumns::TYPES),
    )
    .await
    .map_err(WriteError::Sql)?;
    Ok(())
}

/// The `requests` columns of some records, one array each.
#[derive(Debug, Default)]
pub(crate) struct RecordColumns {
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
    /// The columns of `records`, or the first value that does not fit.
    pub(crate) fn of(records: &[Entry]) -> Result<RecordColumns, StoreError> {
        let mut c = RecordColumns::default();
        for e in records {
            c.push(e)?;
        }
        Ok(c)
    }

    /// The types of the upsert's parameters.
    pub(crate) const TYPES: [Type; 10] = [
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::BOOL_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::TEXT_ARRAY,
        Type::INT8_ARRAY,
        Type::INT8_ARRAY,
        Type::INT8_ARRAY,
        Type::TEXT_ARRAY,
    ];

    /// The upsert, its parameters numbered from `first`.
    pub(crate) fn sql(first: usize) -> String {
        let p = numbered(first, Self::TYPES.len());
        format!(
            "INSERT INTO requests (id, state, terminal, op, principal, frontend, created_ns,
                                   first_seq, last_seq, record)
             SELECT * FROM unnest({}::text[], {}::text[], {}::bool[], {}::text[], {}::text[],
                                  {}::text[], {}::bigint[], {}::bigint[], {}::bigint[], {}::text[])
             ON CONFLICT (id) DO UPDATE SET state = excluded.state, terminal = excluded.terminal,
                 last_seq = excluded.last_seq, record = excluded.record",
            p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
        )
    }

    /// The parameters of [`RecordColumns::sql`], in order ([`Self::TYPES`]).
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.id,
            &self.state,
            &self.terminal,
            &self.op,
            &self.principal,
            &self.frontend,
            &self.created,
            &self.first,
            &self.last,
            &self.record,
        ]
    }

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
