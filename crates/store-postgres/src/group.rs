//! One local group of appends as one transaction:
//!
//! 1. lock the chain tip (`SELECT … FROM tip WHERE id = 1 FOR UPDATE`): one
//!    writer at a time in the whole cluster, which makes the chain one; when
//!    the store is bound to a cluster node ([`crate::PgStore::bind_node`]),
//!    check that its incarnation is current and not fenced (`nodes`, `FOR
//!    SHARE`: a concurrent fence waits for this transaction, or this one sees
//!    it), or refuse the whole group;
//! 2. read the time from the database clock (never earlier than the tip's
//!    last time, so times stay monotonic across the nodes' clocks), the
//!    group's dedup claims (expired ones deleted first) and the records of
//!    its requests;
//! 3. decide each append in order, in memory: a claimed key is a
//!    [`StoreError::Duplicate`], an event that does not fold refuses its
//!    append; the others get seqs and hashes (core's chain functions);
//! 4. claim the winners' keys (`INSERT … ON CONFLICT DO NOTHING RETURNING`:
//!    under the tip lock nobody else claims, so every one must come back, or
//!    the group runs again), insert the events, upsert the records, move the
//!    tip, record the batch id, notify the other stores (at most one
//!    group per 10 ms does, see [`crate::listen`]), COMMIT.
//!
//! The tip is always locked before any claim, or two nodes could deadlock.
//!
//! The tip lock is held until COMMIT, so the time it is held bounds the
//! cluster's appends. Statements go out typed (one message each, nothing to
//! prepare), and those of steps 1 and 2, then those of step 4, are sent
//! together: the server runs them in the order sent (the tip lock first), and
//! the group waits for three answers in all (the reads, the writes, COMMIT)
//! instead of two per statement.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;
use youops_core::audit::{canonical_bytes_encoded, chain_hash, AppendOptions, StoreError};
use youops_core::cluster::NodeId;
use youops_core::model::{AuditEvent, NewEvent, RequestId};

use crate::codec::{self, col, fold, seq_of, seq_sql, Entry};
use crate::conn::{is_connection, Conn, Connector, Redactor};
use crate::faults::Faults;
use crate::listen;
use crate::partitions::{self, Partitions};
use crate::rows::{self, Stored, WriteError};

/// One caller's append, its bodies encoded already.
#[derive(Debug)]
pub(crate) struct AppendReq {
    pub(crate) events: Vec<NewEvent>,
    pub(crate) bodies: Vec<Vec<u8>>,
    pub(crate) opts: AppendOptions,
}

/// What one caller is answered.
pub(crate) type Answer = Result<Vec<AuditEvent>, StoreError>;

/// Why a group did not (knowingly) commit.
#[derive(Debug)]
pub(crate) enum GroupError {
    /// Nothing was committed. `retry`: running the group again may succeed
    /// (the connection broke before COMMIT, a claim race).
    NotCommitted { error: StoreError, retry: bool },
    /// COMMIT was sent and its answer lost: `batch` tells whether it
    /// committed, and then `answers` are right.
    Unknown {
        batch: String,
        answers: Vec<Answer>,
        error: StoreError,
    },
}

/// What a group runs with.
#[derive(Debug)]
pub(crate) struct GroupCx<'a> {
    pub(crate) connector: &'a Connector,
    pub(crate) dedup_ttl: chrono::Duration,
    pub(crate) faults: &'a Faults,
    /// The cluster node whose incarnation must be current, if bound.
    pub(crate) node: Option<&'a NodeBinding>,
    /// The partitions of `events` known to exist.
    pub(crate) partitions: &'a Partitions,
    /// Whether the group notifies the other stores when it commits.
    pub(crate) notify: bool,
}

/// The cluster node a store writes as ([`crate::PgStore::bind_node`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeBinding {
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
}

/// The decisions of step 3.
#[derive(Debug, Default)]
struct Plan {
    answers: Vec<Answer>,
    events: Vec<Stored>,
    /// Records changed, with their entries.
    records: Vec<Entry>,
    /// `(key, request id, expires)`.
    claims: Vec<(String, String, bool)>,
    tip: (u64, String),
}

fn sql_err(redact: &Redactor, what: &str, e: &tokio_postgres::Error) -> GroupError {
    GroupError::NotCommitted {
        retry: is_connection(e),
        error: redact.io(what, e),
    }
}

fn data_err(error: StoreError) -> GroupError {
    GroupError::NotCommitted {
        error,
        retry: false,
    }
}

/// Run `group` as one transaction on `conn` (see the module docs).
pub(crate) async fn commit_group(
    conn: &mut Conn,
    group: &[&AppendReq],
    cx: &GroupCx<'_>,
) -> Result<Vec<Answer>, GroupError> {
    let redact = &cx.connector.redact;
    let pid = conn.pid;
    let tx = conn
        .client
        .transaction()
        .await
        .map_err(|e| sql_err(redact, "BEGIN", &e))?;
    // Steps 1 and 2, sent at once: the server runs them in order, so the
    // reads run once the tip lock is held, and this waits for one answer
    // instead of one per statement (the lock is held across them all).
    let (tip_row, now, (), leading, owners, known) = tokio::try_join!(
        biased;
        lock_tip(&tx, redact),
        read_clock(&tx, redact),
        check_node(&tx, cx.node, redact),
        check_leader(&tx, group, cx.node, redact),
        read_claims(&tx, group, redact),
        read_records(&tx, group, redact),
    )?;
    let (tip, last_time) = tip_row;
    // Never before the previous group's time, even across nodes whose
    // clocks differ.
    let time = last_time.map_or(now, |l| l.max(now));
    let plan = plan(group, tip, time, &owners, known, &leading);
    if plan.events.is_empty() {
        // Every append refused: nothing to write.
        let _ = tx.rollback().await;
        return Ok(plan.answers);
    }
    make_room(&tx, &plan, cx).await?;
    let expires = now + cx.dedup_ttl;
    let batch = ulid::Ulid::new().to_string();
    write_group(&tx, &plan, cx, &batch, time, expires).await?;
    if cx.faults.take_kill_before_commit() {
        cx.faults.kill_session(cx.connector, pid).await;
    }
    let tip = plan.tip.0;
    match tx.commit().await {
        Ok(()) if cx.faults.take_lose_commit_ack() => Err(GroupError::Unknown {
            batch,
            answers: plan.answers,
            error: StoreError::Io("the answer to COMMIT was lost (an injected fault)".into()),
        }),
        Ok(()) => {
            cx.partitions.committed(tip);
            Ok(plan.answers)
        }
        // The server answered COMMIT with an error: it rolled back.
        Err(e) if !is_connection(&e) => Err(data_err(redact.io("COMMIT", &e))),
        Err(e) => Err(GroupError::Unknown {
            batch,
            answers: plan.answers,
            error: redact.io("COMMIT", &e),
        }),
    }
}

/// Step 4, sent at once: claim the keys, insert the events, upsert the
/// records, move the tip, notify the other stores (when `cx.notify`), record
/// the batch id. COMMIT comes only once every one came back.
async fn write_group(
    tx: &Transaction<'_>,
    plan: &Plan,
    cx: &GroupCx<'_>,
    batch: &str,
    time: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Result<(), GroupError> {
    let redact = &cx.connector.redact;
    let last = seq_sql(plan.tip.0).map_err(data_err)?;
    tokio::try_join!(
        biased;
        write_claims(tx, &plan.claims, expires, redact),
        write_events(tx, &plan.events, cx),
        write_records(tx, &plan.records, redact),
        async {
            tx.query_typed(
                "UPDATE tip SET seq = $1, hash = $2, time = $3 WHERE id = 1",
                &[
                    (&last, Type::INT8),
                    (&plan.tip.1, Type::TEXT),
                    (&time, Type::TIMESTAMPTZ),
                ],
            )
            .await
            .map_err(|e| sql_err(redact, "moving the chain tip", &e))
        },
        async {
            if !cx.notify {
                return Ok(());
            }
            // Delivered at COMMIT, to the other stores' listeners (`listen`).
            tx.query_typed(
                "SELECT pg_notify($1, $2)",
                &[
                    (&listen::CHANNEL, Type::TEXT),
                    (&cx.connector.session, Type::TEXT),
                ],
            )
            .await
            .map(|_| ())
            .map_err(|e| sql_err(redact, "notifying the other nodes", &e))
        },
        async {
            tx.query_typed(
                "INSERT INTO batches (id, last_seq, committed_at) VALUES ($1, $2, $3)",
                &[
                    (&batch, Type::TEXT),
                    (&last, Type::INT8),
                    (&time, Type::TIMESTAMPTZ),
                ],
            )
            .await
            .map_err(|e| sql_err(redact, "recording the batch", &e))
        },
    )?;
    Ok(())
}

/// Step 1: the locked tip `(seq, hash)` and its time. Sent first: every
/// statement after it in the group runs under the lock.
async fn lock_tip(
    tx: &Transaction<'_>,
    redact: &Redactor,
) -> Result<((u64, String), Option<DateTime<Utc>>), GroupError> {
    let row = tx
        .query_typed_one(
            "SELECT seq, hash, time FROM tip WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(|e| sql_err(redact, "locking the chain tip", &e))?;
    let seq = seq_of(col(&row, 0, "tip.seq").map_err(data_err)?, "tip.seq").map_err(data_err)?;
    let hash: String = col(&row, 1, "tip.hash").map_err(data_err)?;
    let last: Option<DateTime<Utc>> = col(&row, 2, "tip.time").map_err(data_err)?;
    Ok(((seq, hash), last))
}

/// Step 2: the database's clock, read once the tip lock is held.
async fn read_clock(tx: &Transaction<'_>, redact: &Redactor) -> Result<DateTime<Utc>, GroupError> {
    let row = tx
        .query_typed_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(|e| sql_err(redact, "reading the clock", &e))?;
    col(&row, 0, "clock_timestamp()").map_err(data_err)
}

/// Step 1: the bound node's incarnation is current and not fenced, or the
/// group is refused (not retried). The row is locked `FOR SHARE`, so a fence
/// (an `UPDATE` of the row) either committed before, and is seen here, or
/// waits until this transaction is over.
async fn check_node(
    tx: &Transaction<'_>,
    node: Option<&NodeBinding>,
    redact: &Redactor,
) -> Result<(), GroupError> {
    let Some(node) = node else {
        return Ok(());
    };
    let row = tx
        .query_typed_opt(
            "SELECT incarnation, fenced FROM nodes WHERE id = $1 FOR SHARE",
            &[(&node.node.as_str(), Type::TEXT)],
        )
        .await
        .map_err(|e| sql_err(redact, "checking this node's incarnation", &e))?;
    let state = match row {
        None => None,
        Some(row) => {
            let current: i64 = col(&row, 0, "nodes.incarnation").map_err(data_err)?;
            let fenced: Option<i64> = col(&row, 1, "nodes.fenced").map_err(data_err)?;
            Some((current, fenced))
        }
    };
    match crate::coord::refusal(&node.node, node.incarnation, state) {
        None => Ok(()),
        Some(error) => Err(data_err(error)),
    }
}

/// Step 1: the leader epochs of the group's leader writes
/// ([`AppendOptions::leader_epoch`]) under which this node holds the
/// leader lease now, by the database clock. The row is locked `FOR SHARE`,
/// so a takeover waits for this transaction, or is seen by it.
async fn check_leader(
    tx: &Transaction<'_>,
    group: &[&AppendReq],
    node: Option<&NodeBinding>,
    redact: &Redactor,
) -> Result<BTreeSet<u64>, GroupError> {
    let wanted: BTreeSet<u64> = group.iter().filter_map(|r| r.opts.leader_epoch).collect();
    let mut held = BTreeSet::new();
    let Some(node) = node else {
        // A store that is no node of a cluster holds no lease.
        return Ok(held);
    };
    if wanted.is_empty() {
        return Ok(held);
    }
    let epoch = leader_term(tx, node)
        .await
        .map_err(|e| write_err(redact, "checking the leader lease", e))?;
    if let Some(epoch) = epoch.filter(|e| wanted.contains(e)) {
        held.insert(epoch);
    }
    Ok(held)
}

/// The epoch under which `node` holds the leader lease now (by the
/// database clock), if it does. The row is locked `FOR SHARE` until the
/// transaction ends, so a takeover (an `UPDATE` of the row) waits for the
/// transaction, or was seen by it: a write checked by this commits before
/// the next term begins, or not at all. Every leader write of a store checks
/// this way (group commits, retention's move).
pub(crate) async fn leader_term(
    tx: &Transaction<'_>,
    node: &NodeBinding,
) -> Result<Option<u64>, WriteError> {
    let incarnation = seq_sql(node.incarnation).map_err(WriteError::Data)?;
    let row = tx
        .query_typed_opt(
            "SELECT epoch FROM leases
             WHERE name = 'leader' AND holder = $1 AND holder_incarnation = $2
               AND expires_at > clock_timestamp()
             FOR SHARE",
            &[
                (&node.node.as_str(), Type::TEXT),
                (&incarnation, Type::INT8),
            ],
        )
        .await
        .map_err(WriteError::Sql)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let epoch: i64 = col(&row, 0, "leases.epoch").map_err(WriteError::Data)?;
    Ok(u64::try_from(epoch).ok())
}

/// The refusal of a leader write under `epoch` by a node that does not hold
/// the lease under it.
pub(crate) fn not_leading(epoch: u64) -> StoreError {
    StoreError::Io(format!(
        "fenced: a leader's write under epoch {epoch}, and this node does not hold the leader \
         lease under it (any more)"
    ))
}

/// Step 2: who holds the group's keys. Expired claims are deleted (the
/// statement's snapshot still shows them: they are left out).
async fn read_claims(
    tx: &Transaction<'_>,
    group: &[&AppendReq],
    redact: &Redactor,
) -> Result<HashMap<String, RequestId>, GroupError> {
    let keys: Vec<&str> = group
        .iter()
        .filter_map(|r| r.opts.dedup_key.as_deref())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut owners = HashMap::new();
    if keys.is_empty() {
        return Ok(owners);
    }
    let rows = tx
        .query_typed(
            "WITH expired AS (
                 DELETE FROM claims WHERE key = ANY($1) AND expires_at <= clock_timestamp()
                 RETURNING key
             )
             SELECT key, request_id FROM claims
             WHERE key = ANY($1) AND key NOT IN (SELECT key FROM expired)",
            &[(&keys, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|e| sql_err(redact, "reading dedup claims", &e))?;
    for row in &rows {
        let key: String = col(row, 0, "claims.key").map_err(data_err)?;
        let id: String = col(row, 1, "claims.request_id").map_err(data_err)?;
        let id = codec::request_id(&id, "claims.request_id").map_err(data_err)?;
        owners.insert(key, id);
    }
    Ok(owners)
}

/// Step 2: the records of the group's requests.
async fn read_records(
    tx: &Transaction<'_>,
    group: &[&AppendReq],
    redact: &Redactor,
) -> Result<HashMap<RequestId, Entry>, GroupError> {
    let ids = group
        .iter()
        .flat_map(|r| r.events.iter().filter_map(|e| e.request_id))
        .collect();
    rows::read_records(tx, ids)
        .await
        .map_err(|e| write_err(redact, "reading request records", e))
}

/// Step 3: each append in order; a refused one leaves no trace.
fn plan(
    group: &[&AppendReq],
    tip: (u64, String),
    time: DateTime<Utc>,
    owners: &HashMap<String, RequestId>,
    mut known: HashMap<RequestId, Entry>,
    leading: &BTreeSet<u64>,
) -> Plan {
    let mut p = Plan {
        tip,
        ..Plan::default()
    };
    let mut claimed: HashMap<String, RequestId> = HashMap::new();
    let mut changed: BTreeSet<RequestId> = BTreeSet::new();
    for req in group {
        if let Some(epoch) = req.opts.leader_epoch.filter(|e| !leading.contains(e)) {
            p.answers.push(Err(not_leading(epoch)));
            continue;
        }
        if let Some(key) = &req.opts.dedup_key {
            if let Some(owner) = claimed.get(key).or_else(|| owners.get(key)) {
                p.answers.push(Err(StoreError::Duplicate(*owner)));
                continue;
            }
        }
        // A conditional append (`expect_last_seq`) is checked against the
        // records read under the tip lock and the group's earlier appends:
        // a stale one claims and appends nothing.
        if let Err(e) = req.opts.check_expected(&req.events, |id| {
            Ok(known.get(&id).map_or(0, |e| e.record.last_seq))
        }) {
            p.answers.push(Err(e));
            continue;
        }
        match hash_and_fold(req, &p.tip, time, &known) {
            Ok((out, stored, local)) => {
                if let Some(last) = out.last() {
                    p.tip = (last.seq, last.hash.clone());
                }
                changed.extend(local.keys().copied());
                known.extend(local);
                if let (Some(key), Some(id)) =
                    (&req.opts.dedup_key, out.first().and_then(|e| e.request_id))
                {
                    claimed.insert(key.clone(), id);
                    p.claims
                        .push((key.clone(), id.to_string(), req.opts.dedup_expires));
                }
                p.events.extend(stored);
                p.answers.push(Ok(out));
            }
            Err(e) => p.answers.push(Err(e)),
        }
    }
    p.records = changed
        .iter()
        .filter_map(|id| known.get(id).cloned())
        .collect();
    p
}

type Hashed = (Vec<AuditEvent>, Vec<Stored>, HashMap<RequestId, Entry>);

/// One append's events numbered after `tip`, hashed, and folded into the
/// records (`known`, not changed: the changes are returned).
fn hash_and_fold(
    req: &AppendReq,
    tip: &(u64, String),
    time: DateTime<Utc>,
    known: &HashMap<RequestId, Entry>,
) -> Result<Hashed, StoreError> {
    let mut local: HashMap<RequestId, Entry> = HashMap::new();
    let (mut seq, mut prev) = tip.clone();
    let mut out = Vec::with_capacity(req.events.len());
    let mut stored = Vec::with_capacity(req.events.len());
    for (ne, body) in req.events.iter().zip(&req.bodies) {
        seq += 1;
        let canonical = canonical_bytes_encoded(seq, &time, &ne.request_id, body);
        let hash = chain_hash(&prev, &canonical);
        let ev = AuditEvent::from_parts(
            seq,
            time,
            ne.request_id,
            ne.body.clone(),
            prev.clone(),
            hash.clone(),
        );
        if let Some(id) = ev.request_id {
            let current = local.remove(&id).or_else(|| known.get(&id).cloned());
            local.insert(id, fold(current, &ev)?);
        }
        stored.push(Stored {
            seq,
            request_id: ne.request_id.map(|i| i.to_string()),
            kind: codec::kind(&ne.body),
            canonical,
            prev_hash: std::mem::replace(&mut prev, hash),
            hash: ev.hash.clone(),
        });
        out.push(ev);
    }
    Ok((out, stored, local))
}

/// Step 4: the winners' claims; every one must be new.
async fn write_claims(
    tx: &Transaction<'_>,
    claims: &[(String, String, bool)],
    expires: DateTime<Utc>,
    redact: &Redactor,
) -> Result<(), GroupError> {
    if claims.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = claims.iter().map(|c| c.0.as_str()).collect();
    let ids: Vec<&str> = claims.iter().map(|c| c.1.as_str()).collect();
    let expiring: Vec<bool> = claims.iter().map(|c| c.2).collect();
    let rows = tx
        .query_typed(
            "INSERT INTO claims (key, request_id, expires_at)
             SELECT k, r, CASE WHEN e THEN $4::timestamptz END
             FROM unnest($1::text[], $2::text[], $3::bool[]) AS c(k, r, e)
             ON CONFLICT DO NOTHING RETURNING key",
            &[
                (&keys, Type::TEXT_ARRAY),
                (&ids, Type::TEXT_ARRAY),
                (&expiring, Type::BOOL_ARRAY),
                (&expires, Type::TIMESTAMPTZ),
            ],
        )
        .await
        .map_err(|e| sql_err(redact, "claiming dedup keys", &e))?;
    if rows.len() != claims.len() {
        // Someone claimed without holding the tip: decide again.
        return Err(GroupError::NotCommitted {
            error: StoreError::Io(
                "a dedup key was claimed by a writer that does not lock the chain tip".into(),
            ),
            retry: true,
        });
    }
    Ok(())
}

/// Step 4: the partitions of the group's seqs, if this store does not know
/// them to exist (the keeper makes them ahead: this is the safety net, see
/// [`crate::partitions`]).
async fn make_room(tx: &Transaction<'_>, plan: &Plan, cx: &GroupCx<'_>) -> Result<(), GroupError> {
    let (Some(first), last) = (plan.events.first(), plan.tip.0) else {
        return Ok(());
    };
    if cx.partitions.covers(last) {
        return Ok(());
    }
    let hi = partitions::cover(tx, first.seq, last, cx.partitions.span())
        .await
        .map_err(|e| write_err(&cx.connector.redact, "making a partition of events", e))?;
    cx.partitions.note(hi);
    Ok(())
}

/// Step 4: the events. An insert that finds no partition for its seq (the
/// only check `events` has) means partitions were dropped under this store:
/// it forgets what it knew, and the group runs again, making them.
async fn write_events(
    tx: &Transaction<'_>,
    events: &[Stored],
    cx: &GroupCx<'_>,
) -> Result<(), GroupError> {
    let redact = &cx.connector.redact;
    match rows::insert_events(tx, events).await {
        Err(WriteError::Sql(e)) if e.code() == Some(&SqlState::CHECK_VIOLATION) => {
            cx.partitions.forget();
            Err(GroupError::NotCommitted {
                error: redact.io("inserting events", &e),
                retry: true,
            })
        }
        other => other.map_err(|e| write_err(redact, "inserting events", e)),
    }
}

/// Step 4: the records the group changed.
async fn write_records(
    tx: &Transaction<'_>,
    records: &[Entry],
    redact: &Redactor,
) -> Result<(), GroupError> {
    rows::upsert_records(tx, records)
        .await
        .map_err(|e| write_err(redact, "writing request records", e))
}

fn write_err(redact: &Redactor, what: &str, e: WriteError) -> GroupError {
    match e {
        WriteError::Data(d) => data_err(d),
        WriteError::Sql(e) => sql_err(redact, what, &e),
    }
}

/// Whether batch `batch` committed. Takes the tip lock first: a transaction
/// whose COMMIT is still being processed holds it, so once it is ours the
/// lost transaction is over, one way or the other.
pub(crate) async fn batch_committed(
    conn: &mut Conn,
    batch: &str,
) -> Result<bool, tokio_postgres::Error> {
    let tx = conn.client.transaction().await?;
    tx.query_one("SELECT seq FROM tip WHERE id = 1 FOR UPDATE", &[])
        .await?;
    let found = tx
        .query_opt("SELECT last_seq FROM batches WHERE id = $1", &[&batch])
        .await?
        .is_some();
    tx.rollback().await?;
    Ok(found)
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
