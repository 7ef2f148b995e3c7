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
//! 4. in one statement, claim the winners' keys (a plain `INSERT`: under the
//!    tip lock nobody else claims, so a conflict aborts the group, which runs
//!    again), insert the events, upsert the records, move the tip, record the
//!    batch id and notify the other stores (at most one group per 10 ms
//!    does, see [`crate::listen`]); then COMMIT.
//!
//! The tip is always locked before any claim, or two nodes could deadlock.
//!
//! The tip lock is held until COMMIT, so the time it is held bounds the
//! cluster's appends. Statements are prepared once per connection
//! ([`crate::statements`]: a group sends their parameters only) and go out
//! pipelined: `BEGIN` with those of steps 1 and 2, then step 4's statement
//! with `COMMIT`. The server runs them in the order sent, so
//! a group waits for two answers in all, and holds the tip for one round
//! trip and the commit's flush.
//!
//! COMMIT goes out before the write's answer is back, so the write is one
//! statement, every value of it converted first: it runs whole or not at
//! all, never partly before a COMMIT. When the server refuses it, the
//! transaction is aborted and the server answers COMMIT by rolling back
//! (`ROLLBACK` is its tag, and no error): the group did not commit. When
//! the connection breaks, the outcome is unknown and the writer looks the
//! batch id up.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};
use youops_core::audit::{canonical_bytes_encoded, chain_hash, AppendOptions, StoreError};
use youops_core::cluster::NodeId;
use youops_core::model::{AuditEvent, NewEvent, RequestId};

use crate::codec::{self, col, fold, seq_of, seq_sql, Entry};
use crate::conn::{is_connection, stale_plan, Conn, Connector, Redactor};
use crate::faults::Faults;
use crate::listen;
use crate::partitions::{self, Partitions};
use crate::rows::{self, EventColumns, RecordColumns, Stored, WriteError};
use crate::statements::{Statements, LEADER_TERM, NODE};

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
        retry: is_connection(e) || stale_plan(e),
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
    st: &Statements,
    group: &[&AppendReq],
    cx: &GroupCx<'_>,
) -> Result<Vec<Answer>, GroupError> {
    // Set until the transaction is seen to end: a connection left in it
    // (this future dropped midway, ROLLBACK unanswered) is closed by the
    // writer, so it never holds the tip lock for long.
    conn.in_transaction = true;
    let outcome = match read_under_tip(&conn.client, st, group, cx).await {
        Ok(reads) => decide_and_write(&conn.client, st, conn.pid, group, cx, reads).await,
        Err(e) => Outcome::Open(Err(e)),
    };
    match outcome {
        Outcome::Ended(result) => {
            conn.in_transaction = false;
            result
        }
        Outcome::Open(result) => {
            if conn.client.batch_execute("ROLLBACK").await.is_ok() {
                conn.in_transaction = false;
            }
            result
        }
    }
}

/// How a group's transaction stands when it returns.
enum Outcome {
    /// COMMIT was sent: the transaction is over, whatever its outcome.
    Ended(Result<Vec<Answer>, GroupError>),
    /// Nothing was committed, and the transaction is still open: roll it
    /// back.
    Open(Result<Vec<Answer>, GroupError>),
}

/// What steps 1 and 2 read.
struct Reads {
    tip: (u64, String),
    last_time: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    leading: BTreeSet<u64>,
    owners: HashMap<String, RequestId>,
    known: HashMap<RequestId, Entry>,
}

/// BEGIN, then steps 1 and 2, all sent at once: the server runs them in
/// order, so the reads run once the tip lock is held, and this waits for
/// one answer instead of one per statement.
async fn read_under_tip(
    client: &Client,
    st: &Statements,
    group: &[&AppendReq],
    cx: &GroupCx<'_>,
) -> Result<Reads, GroupError> {
    let redact = &cx.connector.redact;
    let (begun, reads) = tokio::join!(
        biased;
        client.batch_execute("BEGIN"),
        async {
            tokio::try_join!(
                biased;
                lock_tip(client, st, redact),
                read_clock(client, st, redact),
                check_node(client, cx.node, redact),
                check_leader(client, group, cx.node, redact),
                read_claims(client, st, group, redact),
                read_records(client, st, group, redact),
            )
        },
    );
    begun.map_err(|e| sql_err(redact, "BEGIN", &e))?;
    let ((tip, last_time), now, (), leading, owners, known) = reads?;
    Ok(Reads {
        tip,
        last_time,
        now,
        leading,
        owners,
        known,
    })
}

/// Steps 3 and 4: decide in memory, then write and COMMIT.
async fn decide_and_write(
    client: &Client,
    st: &Statements,
    pid: i32,
    group: &[&AppendReq],
    cx: &GroupCx<'_>,
    reads: Reads,
) -> Outcome {
    // Never before the previous group's time, even across nodes whose
    // clocks differ.
    let time = reads.last_time.map_or(reads.now, |l| l.max(reads.now));
    let mut plan = plan(
        group,
        reads.tip,
        time,
        &reads.owners,
        reads.known,
        &reads.leading,
    );
    if plan.events.is_empty() {
        // Every append refused: nothing to write.
        return Outcome::Open(Ok(plan.answers));
    }
    if let Err(e) = make_room(client, &plan, cx).await {
        return Outcome::Open(Err(e));
    }
    let expires = reads.now + cx.dedup_ttl;
    let batch = ulid::Ulid::new().to_string();
    let answers = std::mem::take(&mut plan.answers);
    let columns = match Columns::of(&plan, cx, &batch, time, expires) {
        Ok(columns) => columns,
        Err(e) => return Outcome::Open(Err(data_err(e))),
    };
    if cx.faults.take_kill_before_commit() {
        cx.faults.kill_session(cx.connector, pid).await;
    }
    if let Some(first) = plan.claims.first() {
        if let Some(owner) = cx.faults.take_claim_behind() {
            cx.faults.claim(cx.connector, &first.0, owner).await;
        }
    }
    let params = columns.params();
    let written = write_and_commit(client, &st.write, cx, &params).await;
    Outcome::Ended(match written {
        Ok(()) => {
            cx.partitions.committed(plan.tip.0);
            Ok(answers)
        }
        Err(Failed::Unknown(error)) => Err(GroupError::Unknown {
            batch,
            answers,
            error,
        }),
        Err(Failed::RolledBack(e)) => Err(e),
    })
}

/// How step 4 failed.
enum Failed {
    /// Whether the group committed is unknown: look its batch id up.
    Unknown(StoreError),
    /// The group did not commit.
    RolledBack(GroupError),
}

/// Step 4: the group's one write statement and COMMIT, sent at once (see
/// the module docs), and what their answers say of the outcome.
async fn write_and_commit(
    client: &Client,
    write: &Statement,
    cx: &GroupCx<'_>,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), Failed> {
    let redact = &cx.connector.redact;
    let (written, committed) = tokio::join!(
        biased;
        client.query(write, params),
        client.batch_execute("COMMIT"),
    );
    let lost = [written.as_ref().err(), committed.as_ref().err()]
        .into_iter()
        .flatten()
        .find(|e| is_connection(e));
    if let Some(e) = lost {
        // The server may have run COMMIT before the connection broke.
        return Err(Failed::Unknown(redact.io("COMMIT", e)));
    }
    match (written, committed) {
        // The writes were refused: the transaction was aborted, and the
        // server answered COMMIT by rolling it back.
        (Err(e), _) => Err(Failed::RolledBack(write_refused(&e, cx))),
        // The server answered COMMIT with an error: it rolled back.
        (Ok(_), Err(e)) => Err(Failed::RolledBack(data_err(redact.io("COMMIT", &e)))),
        (Ok(_), Ok(())) if cx.faults.take_lose_commit_ack() => Err(Failed::Unknown(
            StoreError::Io("the answer to COMMIT was lost (an injected fault)".into()),
        )),
        (Ok(_), Ok(())) => Ok(()),
    }
}

/// The parameters of [`WRITE_GROUP`](crate::statements::WRITE_GROUP), every
/// value converted before anything is sent: a value that does not fit fails
/// the group before its writes, never between them and COMMIT.
struct Columns<'a> {
    events: EventColumns<'a>,
    records: RecordColumns,
    claim_keys: Vec<&'a str>,
    claim_ids: Vec<&'a str>,
    claim_expiring: Vec<bool>,
    expires: DateTime<Utc>,
    last: i64,
    hash: &'a str,
    time: DateTime<Utc>,
    batch: &'a str,
    session: &'a str,
    notify: bool,
}

impl<'a> Columns<'a> {
    fn of(
        plan: &'a Plan,
        cx: &GroupCx<'a>,
        batch: &'a str,
        time: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<Columns<'a>, StoreError> {
        Ok(Columns {
            events: EventColumns::of(&plan.events)?,
            records: RecordColumns::of(&plan.records)?,
            claim_keys: plan.claims.iter().map(|c| c.0.as_str()).collect(),
            claim_ids: plan.claims.iter().map(|c| c.1.as_str()).collect(),
            claim_expiring: plan.claims.iter().map(|c| c.2).collect(),
            expires,
            last: seq_sql(plan.tip.0)?,
            hash: &plan.tip.1,
            time,
            batch,
            session: &cx.connector.session,
            notify: cx.notify,
        })
    }

    /// In the order of [`write_types`](crate::statements::write_types).
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut p: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(27);
        p.extend(self.events.params());
        p.extend(self.records.params());
        p.extend([
            &self.claim_keys as &(dyn ToSql + Sync),
            &self.claim_ids,
            &self.claim_expiring,
            &self.expires,
            &self.last,
            &self.hash,
            &self.time,
            &self.batch,
            &listen::CHANNEL,
            &self.session,
            &self.notify,
        ]);
        p
    }
}

/// The group whose writes the server refused (its transaction rolled back):
/// run again when that may succeed, else fail.
fn write_refused(e: &tokio_postgres::Error, cx: &GroupCx<'_>) -> GroupError {
    let redact = &cx.connector.redact;
    let db = e.as_db_error();
    let table = db.and_then(|d| d.table());
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) && table == Some("claims") {
        // Someone claimed without holding the tip: decide again.
        return GroupError::NotCommitted {
            error: StoreError::Io(
                "a dedup key was claimed by a writer that does not lock the chain tip".into(),
            ),
            retry: true,
        };
    }
    if e.code() == Some(&SqlState::CHECK_VIOLATION) && table == Some("events") {
        // No partition for a seq (the only check `events` has): partitions
        // were dropped under this store. It forgets what it knew, and the
        // group runs again, making them.
        cx.partitions.forget();
        return GroupError::NotCommitted {
            error: redact.io("inserting events", e),
            retry: true,
        };
    }
    sql_err(redact, "writing the group", e)
}

/// Step 1: the locked tip `(seq, hash)` and its time. Sent first: every
/// statement after it in the group runs under the lock.
async fn lock_tip(
    tx: &Client,
    st: &Statements,
    redact: &Redactor,
) -> Result<((u64, String), Option<DateTime<Utc>>), GroupError> {
    let row = tx
        .query_one(&st.lock_tip, &[])
        .await
        .map_err(|e| sql_err(redact, "locking the chain tip", &e))?;
    let seq = seq_of(col(&row, 0, "tip.seq").map_err(data_err)?, "tip.seq").map_err(data_err)?;
    let hash: String = col(&row, 1, "tip.hash").map_err(data_err)?;
    let last: Option<DateTime<Utc>> = col(&row, 2, "tip.time").map_err(data_err)?;
    Ok(((seq, hash), last))
}

/// Step 2: the database's clock, read once the tip lock is held.
async fn read_clock(
    tx: &Client,
    st: &Statements,
    redact: &Redactor,
) -> Result<DateTime<Utc>, GroupError> {
    let row = tx
        .query_one(&st.clock, &[])
        .await
        .map_err(|e| sql_err(redact, "reading the clock", &e))?;
    col(&row, 0, "clock_timestamp()").map_err(data_err)
}

/// Step 1: the bound node's incarnation is current and not fenced, or the
/// group is refused (not retried). The row is locked `FOR SHARE`, so a fence
/// (an `UPDATE` of the row) either committed before, and is seen here, or
/// waits until this transaction is over.
async fn check_node(
    tx: &Client,
    node: Option<&NodeBinding>,
    redact: &Redactor,
) -> Result<(), GroupError> {
    let Some(node) = node else {
        return Ok(());
    };
    let row = tx
        .query_typed_opt(NODE, &[(&node.node.as_str(), Type::TEXT)])
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
    tx: &Client,
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
    tx: &Client,
    node: &NodeBinding,
) -> Result<Option<u64>, WriteError> {
    let incarnation = seq_sql(node.incarnation).map_err(WriteError::Data)?;
    let row = tx
        .query_typed_opt(
            LEADER_TERM,
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
    tx: &Client,
    st: &Statements,
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
        .query(&st.claims, &[&keys])
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
    tx: &Client,
    st: &Statements,
    group: &[&AppendReq],
    redact: &Redactor,
) -> Result<HashMap<RequestId, Entry>, GroupError> {
    let ids = group
        .iter()
        .flat_map(|r| r.events.iter().filter_map(|e| e.request_id))
        .collect();
    rows::read_records(tx, &st.records, ids)
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

/// Step 4: the partitions of the group's seqs, if this store does not know
/// them to exist (the keeper makes them ahead: this is the safety net, see
/// [`crate::partitions`]).
async fn make_room(tx: &Client, plan: &Plan, cx: &GroupCx<'_>) -> Result<(), GroupError> {
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
