//! The index keeps no copy of the log: request records are folded from their
//! events, and events are found from sparse positions. Each case reopens the
//! store, so that what it reads comes from `index.redb` and the log, not from
//! the writer's memory.

use std::path::Path;

use chrono::Utc;
use redb::{ReadableTable, TableDefinition, TableHandle};
use youops_core::audit::{AppendOptions, AuditStore};
use youops_core::model::{NewEvent, RequestFilter, RequestId, RequestRecord, State, Value};
use youops_store::LogStore;

use crate::support::{notice, received, request, small, to};

async fn append(store: &LogStore, events: Vec<NewEvent>) {
    store
        .append(events, AppendOptions::durable())
        .await
        .expect("append");
}

/// Requests in several states, interleaved with notices, across segments:
/// the records as the store answered before it was closed.
async fn fill(dir: &Path, segment_bytes: u64) -> Vec<RequestRecord> {
    let store = LogStore::open(dir, small(segment_bytes)).expect("open");
    let mut ids = Vec::new();
    for i in 0..120 {
        let mut r = request(&format!("op-{}", i % 4));
        // Arguments, so that a record folded back from the log carries some.
        r.args.insert("who".into(), Value::Str("ann".into()));
        append(&store, vec![received(&r)]).await;
        append(&store, vec![notice(format!("notice {i}"))]).await;
        match i % 3 {
            0 => append(&store, vec![to(r.id, State::Running)]).await,
            1 => {
                append(&store, vec![to(r.id, State::Running)]).await;
                append(&store, vec![to(r.id, State::Succeeded)]).await;
            }
            _ => append(&store, vec![to(r.id, State::Denied)]).await,
        }
        ids.push(r.id);
    }
    let mut out = Vec::new();
    for id in ids {
        out.push(store.request(id).await.unwrap().expect("a record"));
    }
    store.flush().await.expect("flush");
    drop(store);
    out
}

fn json(r: &RequestRecord) -> serde_json::Value {
    serde_json::to_value(r).expect("a record encodes")
}

#[tokio::test]
async fn every_event_is_found_from_sparse_positions_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // About 100 events per segment: positions are stored for one event in
    // 64, so most reads start before their event, some in an earlier segment.
    fill(dir.path(), 40 * 1024).await;
    let store = LogStore::open(dir.path(), small(40 * 1024)).expect("reopen");
    let all = store.events(0, usize::MAX).await.unwrap();
    let tip = all.len() as u64;
    assert_eq!(tip, 400);
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=tip).collect::<Vec<_>>()
    );
    for after in 0..=tip {
        let got = store.events(after, 3).await.unwrap();
        let want: Vec<u64> = (after + 1..=tip.min(after + 3)).collect();
        assert_eq!(
            got.iter().map(|e| e.seq).collect::<Vec<_>>(),
            want,
            "after {after}"
        );
        for e in &got {
            assert_eq!(e.hash, all[(e.seq - 1) as usize].hash);
        }
    }
}

#[tokio::test]
async fn records_are_folded_from_the_log_and_not_copied_into_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let before = fill(dir.path(), 1024 * 1024).await;
    let index = std::fs::read(dir.path().join("index.redb")).unwrap();
    assert!(
        !index.windows(4).any(|w| w == b"op-1"),
        "the index holds a copy of a request"
    );
    let store = LogStore::open(dir.path(), small(1024 * 1024)).expect("reopen");
    for r in &before {
        let now = store
            .request(r.request.id)
            .await
            .unwrap()
            .expect("a record");
        assert_eq!(json(&now), json(r));
    }
    let running = RequestFilter {
        states: vec![State::Running],
        ..RequestFilter::default()
    };
    let got = store.list_requests(&running, None, 1000).await.unwrap();
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|r| r.state == State::Running));
    let op = RequestFilter {
        states: vec![State::Succeeded, State::Denied],
        op: Some("op-2".into()),
        ..RequestFilter::default()
    };
    let got = store.list_requests(&op, None, 1000).await.unwrap();
    let want: Vec<RequestId> = before
        .iter()
        .rev()
        .filter(|r| r.request.op == "op-2" && r.state != State::Running)
        .map(|r| r.request.id)
        .collect();
    assert_eq!(got.iter().map(|r| r.request.id).collect::<Vec<_>>(), want);
    let active = store.active_requests().await.unwrap();
    assert_eq!(active.len(), 40);
    assert!(active.iter().all(|r| r.state == State::Running));
}

const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("records");
// Format 1 kept claims under their whole key.
const OLD_DEDUP: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("dedup");
const OLD_EXPIRY: TableDefinition<'static, &[u8], ()> = TableDefinition::new("dedup_expiry");

/// A claim as format 1 encoded it: bucket ‖ request id ‖ seq ‖ flags.
fn old_claim(bucket: u32, id: RequestId, seq: u64) -> Vec<u8> {
    let mut v = bucket.to_be_bytes().to_vec();
    v.extend_from_slice(&id.0.to_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.push(0);
    v
}

#[tokio::test]
async fn an_index_of_format_1_is_converted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let before = fill(dir.path(), 1024 * 1024).await;
    // Write the index as format 1 did: a JSON copy of each record with the
    // positions of its events.
    // One segment: the offset of each event's line in it.
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let bytes = std::fs::read(&logs[0]).unwrap();
    let mut offsets = std::collections::HashMap::new();
    let mut at = 0u64;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        offsets.insert(v["seq"].as_u64().unwrap(), at);
        at += line.len() as u64;
    }
    let store = LogStore::open(dir.path(), small(1024 * 1024)).expect("reopen");
    let mut v1 = Vec::new();
    for r in &before {
        let events = store.request_events(r.request.id).await.unwrap();
        let positions: Vec<(u64, u64)> = events.iter().map(|e| (e.seq, offsets[&e.seq])).collect();
        let stored = serde_json::json!({"events": positions, "record": json(r)});
        v1.push((r.request.id, serde_json::to_vec(&stored).unwrap()));
    }
    drop(store);
    {
        let db = redb::Database::open(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            assert_eq!(
                redb::ReadableTableMetadata::len(&records).unwrap(),
                before.len() as u64
            );
            for (id, v) in &v1 {
                let key = id.0.to_bytes();
                records.insert(key.as_slice(), v.as_slice()).unwrap();
            }
            txn.open_table(META)
                .unwrap()
                .insert("format", b"1".as_slice())
                .unwrap();
            // One claim for good, one in the current hour's bucket.
            let mut dedup = txn.open_table(OLD_DEDUP).unwrap();
            let (a, b) = (&before[0].request, &before[1].request);
            let seq_a = store_seq(&v1[0].1);
            dedup
                .insert(
                    "github:comment:o/r:1:0",
                    old_claim(u32::MAX, a.id, seq_a).as_slice(),
                )
                .unwrap();
            let hour = u32::try_from(Utc::now().timestamp() / 3600).unwrap();
            let seq_b = store_seq(&v1[1].1);
            dedup
                .insert("slack:Ev1", old_claim(hour, b.id, seq_b).as_slice())
                .unwrap();
            let mut expiry_key = hour.to_be_bytes().to_vec();
            expiry_key.extend_from_slice(b"slack:Ev1");
            txn.open_table(OLD_EXPIRY)
                .unwrap()
                .insert(expiry_key.as_slice(), ())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = LogStore::open(dir.path(), small(1024 * 1024)).expect("a format 1 index opens");
    for r in &before {
        let now = store
            .request(r.request.id)
            .await
            .unwrap()
            .expect("a record");
        assert_eq!(json(&now), json(r));
    }
    assert_eq!(store.active_requests().await.unwrap().len(), 40);
    // The claims moved to their hashes and still hold.
    assert_eq!(
        store.find_dedup("github:comment:o/r:1:0").await.unwrap(),
        Some(before[0].request.id)
    );
    assert_eq!(
        store.find_dedup("slack:Ev1").await.unwrap(),
        Some(before[1].request.id)
    );
    assert_eq!(store.find_dedup("slack:Ev2").await.unwrap(), None);
    drop(store);
    let db = redb::Database::open(dir.path().join("index.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), b"2");
    let tables: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(!tables.iter().any(|t| t.starts_with("dedup")), "{tables:?}");
}

/// The seq of the first event a format 1 record lists.
fn store_seq(v1: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(v1).unwrap();
    v["events"][0][0].as_u64().unwrap()
}
