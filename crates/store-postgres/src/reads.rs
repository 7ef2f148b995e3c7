//! The read side, on the pool's connections: records, events, claims, the
//! head, listings with their filters, and `verify` over the archive table
//! and the live events.

use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Transaction};
use youops_core::audit::{Broken, ChainVerifier, StoreError, VerifyReport, GENESIS_HASH};
use youops_core::model::{AuditEvent, RequestFilter, RequestId, RequestRecord};

use crate::codec::{self, col, seq_bound, seq_of, EVENT_COLUMNS};
use crate::conn::{is_connection, Pool};
use crate::schema::TABLES;

/// How many events `verify` reads at a time.
const VERIFY_PAGE: i64 = 1000;

pub(crate) async fn request(
    pool: &Pool,
    id: RequestId,
) -> Result<Option<RequestRecord>, StoreError> {
    let row = pool
        .query_opt(
            "reading a request record",
            "SELECT record FROM requests WHERE id = $1",
            &[&id.to_string()],
        )
        .await?;
    match row {
        Some(row) => Ok(codec::records(std::slice::from_ref(&row))?.pop()),
        None => Ok(None),
    }
}

pub(crate) async fn request_events(
    pool: &Pool,
    id: RequestId,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows = pool
        .query(
            "reading a request's events",
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE request_id = $1 ORDER BY seq"),
            &[&id.to_string()],
        )
        .await?;
    codec::events(&rows)
}

/// The events of each of `ids`, in one read.
pub(crate) async fn requests_events(
    pool: &Pool,
    ids: &[RequestId],
) -> Result<std::collections::HashMap<RequestId, Vec<AuditEvent>>, StoreError> {
    let mut out: std::collections::HashMap<RequestId, Vec<AuditEvent>> = Default::default();
    if ids.is_empty() {
        return Ok(out);
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows = pool
        .query(
            "reading requests' events",
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE request_id = ANY($1) ORDER BY seq"),
            &[&ids],
        )
        .await?;
    for e in codec::events(&rows)? {
        if let Some(id) = e.request_id {
            out.entry(id).or_default().push(e);
        }
    }
    Ok(out)
}

pub(crate) async fn find_dedup(pool: &Pool, key: &str) -> Result<Option<RequestId>, StoreError> {
    let row = pool
        .query_opt(
            "reading a dedup claim",
            "SELECT request_id FROM claims
             WHERE key = $1 AND (expires_at IS NULL OR expires_at > clock_timestamp())",
            &[&key],
        )
        .await?;
    match row {
        Some(row) => {
            let id: String = col(&row, 0, "claims.request_id")?;
            Ok(Some(codec::request_id(&id, "claims.request_id")?))
        }
        None => Ok(None),
    }
}

pub(crate) async fn list_requests(
    pool: &Pool,
    filter: &RequestFilter,
    before: Option<RequestId>,
    limit: usize,
) -> Result<Vec<RequestRecord>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Only the conditions the filter sets, so the planner can use their indexes.
    let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
    let since = filter.since.as_ref().map(codec::nanos);
    let until = filter.until.as_ref().map(codec::nanos);
    let before = before.map(|b| b.to_string());
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let mut add = |cond: &str, p| add_cond(&mut conds, &mut params, cond, p);
    if !states.is_empty() {
        add("state = ANY(?)", &states);
    }
    if let Some(op) = &filter.op {
        add("op = ?", op);
    }
    if let Some(p) = &filter.principal {
        add("principal = ?", p);
    }
    if let Some(f) = &filter.frontend {
        add("frontend = ?", f);
    }
    if let Some(t) = &since {
        add("created_ns >= ?", t);
    }
    if let Some(t) = &until {
        add("created_ns < ?", t);
    }
    if let Some(b) = &before {
        add("id < ?", b);
    }
    params.push(&limit);
    let sql = format!(
        "SELECT record FROM requests {}{} ORDER BY id DESC LIMIT ${}",
        if conds.is_empty() { "" } else { "WHERE " },
        conds.join(" AND "),
        params.len()
    );
    let rows = pool.query("listing requests", &sql, &params).await?;
    let mut records = codec::records(&rows)?;
    // The columns are the filter's; this only guards against a clamped
    // creation time (outside 1677–2262).
    records.retain(|r| filter.matches(r));
    Ok(records)
}

/// `cond` with its `?` numbered as parameter `p`.
fn add_cond<'a>(
    conds: &mut Vec<String>,
    params: &mut Vec<&'a (dyn ToSql + Sync)>,
    cond: &str,
    p: &'a (dyn ToSql + Sync),
) {
    params.push(p);
    conds.push(cond.replace('?', &format!("${}", params.len())));
}

pub(crate) async fn active_requests(pool: &Pool) -> Result<Vec<RequestRecord>, StoreError> {
    let rows = pool
        .query(
            "listing active requests",
            "SELECT record FROM requests WHERE NOT terminal ORDER BY id",
            &[],
        )
        .await?;
    codec::records(&rows)
}

pub(crate) async fn events(
    pool: &Pool,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    events_of(pool, "events", after, limit).await
}

/// Archived events with `seq > after`, at most `limit`, in order.
pub(crate) async fn archived_events(
    pool: &Pool,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    events_of(pool, "archive", after, limit).await
}

/// Events of `table` (`events` or `archive`) with `seq > after`.
async fn events_of(
    pool: &Pool,
    table: &'static str,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = pool
        .query(
            &format!("reading {table}"),
            &format!("SELECT {EVENT_COLUMNS} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&seq_bound(after), &limit],
        )
        .await?;
    codec::events(&rows)
}

pub(crate) async fn head(pool: &Pool) -> Result<(u64, String), StoreError> {
    let row = pool
        .query_one(
            "reading the chain tip",
            "SELECT seq, hash FROM tip WHERE id = 1",
            &[],
        )
        .await?;
    Ok((
        seq_of(col(&row, 0, "tip.seq")?, "tip.seq")?,
        col(&row, 1, "tip.hash")?,
    ))
}

/// Walk the archive table, then the live events, in one snapshot (a
/// repeatable-read transaction: an archive or appends meanwhile change
/// nothing it sees). The report is the live chain's (as the trait has it:
/// from its checkpoint), broken at the first bad archived record, where the
/// live chain does not follow the archive, or if the chain tip is not one
/// of the events walked.
pub(crate) async fn verify(pool: &Pool) -> Result<VerifyReport, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut conn = pool.get().await?;
        let client = conn.client()?;
        let walked = match client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
        {
            Ok(tx) => walk(&tx).await,
            Err(e) => Err(Walk::Sql(e)),
        };
        match walked {
            Ok(report) => return Ok(report),
            Err(Walk::Sql(e)) if tries < 3 && is_connection(&e) => conn.discard(),
            Err(Walk::Sql(e)) => return Err(pool.redact().io("verifying the chain", &e)),
            Err(Walk::Store(e)) => return Err(e),
        }
    }
}

/// Why a walk stopped.
enum Walk {
    Sql(tokio_postgres::Error),
    Store(StoreError),
}

impl From<StoreError> for Walk {
    fn from(e: StoreError) -> Self {
        Walk::Store(e)
    }
}

impl From<tokio_postgres::Error> for Walk {
    fn from(e: tokio_postgres::Error) -> Self {
        Walk::Sql(e)
    }
}

/// Events of `table` with `seq > after`, a page of them.
async fn page(tx: &Transaction<'_>, table: &str, after: u64) -> Result<Vec<AuditEvent>, Walk> {
    let rows = tx
        .query(
            &format!("SELECT {EVENT_COLUMNS} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&seq_bound(after), &VERIFY_PAGE],
        )
        .await?;
    Ok(codec::events(&rows)?)
}

async fn walk(tx: &Transaction<'_>) -> Result<VerifyReport, Walk> {
    let row = tx
        .query_one("SELECT seq, hash FROM tip WHERE id = 1", &[])
        .await?;
    let tip: (u64, String) = (
        seq_of(col(&row, 0, "tip.seq")?, "tip.seq")?,
        col(&row, 1, "tip.hash")?,
    );
    let mut tip_seen = tip.0 == 0 && tip.1 == GENESIS_HASH;
    let mut archived = ChainVerifier::new();
    let mut after = 0;
    loop {
        let page = page(tx, "archive", after).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            if let Err(b) = archived.check(e) {
                return Ok(archived.report(Some(Broken {
                    seq: b.seq,
                    reason: format!("in the archive table: {}", b.reason),
                })));
            }
            tip_seen |= e.seq == tip.0 && e.hash == tip.1;
        }
    }
    let archived = archived.report(None);
    let mut live = ChainVerifier::new();
    let mut after = 0;
    loop {
        let page = page(tx, "events", after).await?;
        for e in &page {
            if after == 0 && archived.checked > 0 {
                if let Some(b) = not_following(&archived, e) {
                    return Ok(live.report(Some(b)));
                }
            }
            after = e.seq;
            if let Err(b) = live.check(e) {
                return Ok(live.report(Some(b)));
            }
            tip_seen |= e.seq == tip.0 && e.hash == tip.1;
        }
        if page.is_empty() {
            break;
        }
    }
    let report = live.finish();
    if report.ok() && !tip_seen {
        return Ok(live.report(Some(Broken {
            seq: tip.0,
            reason: format!(
                "the chain tip (#{}, hash {}) is none of the stored events",
                tip.0,
                short(&tip.1)
            ),
        })));
    }
    Ok(report)
}

/// Why the first live event `e` does not follow the archive table, if not.
fn not_following(archived: &VerifyReport, e: &AuditEvent) -> Option<Broken> {
    (e.seq != archived.head_seq + 1 || e.prev_hash != archived.head_hash).then(|| Broken {
        seq: e.seq,
        reason: format!(
            "the live events do not follow the archive table (archived through #{}, hash {}; \
             the first live event is #{} after hash {})",
            archived.head_seq,
            short(&archived.head_hash),
            e.seq,
            short(&e.prev_hash)
        ),
    })
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

pub(crate) async fn size_on_disk(pool: &Pool) -> Result<u64, StoreError> {
    let tables: Vec<&str> = TABLES.to_vec();
    let row = pool
        .query_one(
            "measuring the store's tables",
            "SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0)::bigint
             FROM unnest($1::text[]) AS t, pg_partition_tree(to_regclass(t)) AS p",
            &[&tables],
        )
        .await?;
    let bytes: i64 = col(&row, 0, "size")?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}
