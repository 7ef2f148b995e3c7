//! Rows to events and records and back: every column read with `try_get`,
//! every decoding failure a [`StoreError::Corrupt`] naming the row.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;
use youops_core::audit::{event_json, StoreError};
use youops_core::model::{AuditEvent, EventBody, RequestId, RequestRecord};

/// The columns [`event`] reads, in order.
pub(crate) const EVENT_COLUMNS: &str = "seq, canonical, prev_hash, hash";

/// Column `idx` of `row`, or why not.
pub(crate) fn col<'a, T: FromSql<'a>>(
    row: &'a Row,
    idx: usize,
    what: &str,
) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A stored sequence number (never negative).
pub(crate) fn seq_of(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what}: negative seq {v}")))
}

/// A sequence number as PostgreSQL's `bigint`.
pub(crate) fn seq_sql(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Io(format!("seq {seq} does not fit a bigint")))
}

/// A seq bound as `bigint`: past `i64::MAX` means "all of them".
pub(crate) fn seq_bound(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// An event from a row of [`EVENT_COLUMNS`]: its canonical bytes and hashes
/// make its JSON, which decodes into the event; the seq must agree.
pub(crate) fn event(row: &Row) -> Result<AuditEvent, StoreError> {
    let seq: i64 = col(row, 0, "events.seq")?;
    let canonical: Vec<u8> = col(row, 1, "events.canonical")?;
    let prev_hash: String = col(row, 2, "events.prev_hash")?;
    let hash: String = col(row, 3, "events.hash")?;
    let json = event_json(canonical, &prev_hash, &hash);
    let ev: AuditEvent = serde_json::from_slice(&json)
        .map_err(|e| StoreError::Corrupt(format!("event #{seq} does not decode: {e}")))?;
    if i64::try_from(ev.seq).ok() != Some(seq) {
        return Err(StoreError::Corrupt(format!(
            "the event in row #{seq} says it is #{}",
            ev.seq
        )));
    }
    Ok(ev)
}

/// Every row as an event.
pub(crate) fn events(rows: &[Row]) -> Result<Vec<AuditEvent>, StoreError> {
    rows.iter().map(event).collect()
}

/// A request id stored as text.
pub(crate) fn request_id(text: &str, what: &str) -> Result<RequestId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("{what}: {text:?} is not a request id: {e}")))
}

/// A request record stored as JSON text.
pub(crate) fn record(text: &str, what: &str) -> Result<RequestRecord, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("{what}: the record does not decode: {e}")))
}

/// The first column of every row as a record.
pub(crate) fn records(rows: &[Row]) -> Result<Vec<RequestRecord>, StoreError> {
    rows.iter()
        .map(|r| {
            let text: String = col(r, 0, "requests.record")?;
            record(&text, "requests.record")
        })
        .collect()
}

/// A record as JSON text.
pub(crate) fn record_text(r: &RequestRecord) -> Result<String, StoreError> {
    serde_json::to_string(r)
        .map_err(|e| StoreError::Io(format!("cannot encode the record of {}: {e}", r.request.id)))
}

/// The `kind` column: the body's variant (checkpoints are looked up by it).
pub(crate) fn kind(body: &EventBody) -> &'static str {
    match body {
        EventBody::Received { .. } => "received",
        EventBody::Transition(_) => "transition",
        EventBody::Approval(_) => "approval",
        EventBody::Notice { .. } => "notice",
        EventBody::Checkpoint { .. } => "checkpoint",
        _ => "other",
    }
}

/// `created_ns`: nanoseconds since the epoch, clamped to `bigint` (years
/// 1677 to 2262 exactly; times outside compare as those bounds).
pub(crate) fn nanos(t: &DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// A request's record and the seq of its first event.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) record: RequestRecord,
    pub(crate) first_seq: u64,
}

/// Fold one event into the record of its request (the memory store's rules
/// and messages: `received` first and once).
pub(crate) fn fold(current: Option<Entry>, ev: &AuditEvent) -> Result<Entry, StoreError> {
    let id = ev.request_id.map(|i| i.to_string()).unwrap_or_default();
    match (&ev.body, current) {
        (EventBody::Received { request }, None) => Ok(Entry {
            record: RequestRecord::new(Arc::clone(request), ev),
            first_seq: ev.seq,
        }),
        (EventBody::Received { .. }, Some(_)) => {
            Err(StoreError::Io(format!("request {id} was already received")))
        }
        (_, Some(mut e)) => {
            e.record.apply(ev);
            Ok(e)
        }
        (_, None) => Err(StoreError::Io(format!(
            "event for unknown request {id} (its `received` event must come first)"
        ))),
    }
}
