//! The log store's promises, each shown on real temporary directories or, where
//! a power cut, a failed sync or a full disk is needed, on the file-layer
//! doubles (`SimFs`, `FaultFs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use youops_core::audit::{
    archive_file_name, archive_files, parse_archive_file_name, verify_with_archives, AppendOptions,
    AuditStore, ChainVerifier, StoreError, GENESIS_HASH,
};
use youops_core::model::{
    AuditEvent, EventBody, NewEvent, Request, RequestFilter, RequestId, State, Transition,
};
use youops_store::fs::{FaultFs, SimFs, StdFs};
use youops_store::{LogOptions, LogStore};

// ---------------------------------------------------------------- helpers

fn request(op: &str, dedup_key: Option<&str>) -> Request {
    serde_json::from_value(serde_json::json!({
        "id": RequestId::new(),
        "op": op,
        "args": {},
        "actor": {"frontend": "cli", "external_id": "ann"},
        "origin": {"frontend": "cli"},
        "dedup_key": dedup_key,
        "created_at": Utc::now(),
        "digest": "ab".repeat(32),
    }))
    .expect("a request decodes")
}

fn received(r: &Request) -> NewEvent {
    NewEvent::request(
        r.id,
        EventBody::Received {
            request: Arc::new(r.clone()),
        },
    )
}

fn to(id: RequestId, state: State) -> NewEvent {
    NewEvent::transition(id, Transition::to(state))
}

fn notice(message: impl Into<String>) -> NewEvent {
    NewEvent::global(EventBody::Notice {
        source: "test".into(),
        kind: "note".into(),
        message: message.into(),
        data: serde_json::Value::Null,
    })
}

/// A request whose claim of `key` expires after the store's dedup TTL (a
/// delivery id), and the append options that claim it so.
fn delivery(op: &str, key: &str) -> (Request, AppendOptions) {
    let mut r = request(op, Some(key));
    r.dedup_expires = true;
    let mut o = keyed(key);
    o.dedup_expires = true;
    (r, o)
}

/// Durable, claiming `key` for good.
fn keyed(key: &str) -> AppendOptions {
    let mut o = AppendOptions::durable();
    o.dedup_key = Some(key.to_string());
    o
}

fn open(path: &Path, opts: LogOptions) -> LogStore {
    LogStore::open(path, opts).expect("the store opens")
}

fn sim_open(path: &Path, sim: &SimFs, opts: LogOptions) -> Result<LogStore, StoreError> {
    LogStore::open_with_fs(path, opts, Arc::new(sim.clone()))
}

fn small(segment_bytes: u64) -> LogOptions {
    let mut o = LogOptions::default();
    o.segment_bytes = segment_bytes;
    o
}

/// Records, claims and positions stay in memory (until `flush` or close).
fn lazy() -> LogOptions {
    let mut o = LogOptions::default();
    o.index_interval = Duration::from_secs(3600);
    o.index_sync_interval = Duration::from_secs(3600);
    o.index_max_pending = usize::MAX;
    o
}

async fn all_events(store: &dyn AuditStore) -> Vec<AuditEvent> {
    store.events(0, usize::MAX).await.expect("events")
}

async fn append(store: &dyn AuditStore, events: Vec<NewEvent>) -> Vec<AuditEvent> {
    store
        .append(events, AppendOptions::durable())
        .await
        .expect("append")
}

/// `count` notices, durable, one append each.
async fn notices(store: &dyn AuditStore, count: usize) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    for i in 0..count {
        out.extend(append(store, vec![notice(format!("notice {i}"))]).await);
    }
    out
}

fn log_names(store_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store_dir.join("log"))
        .expect("the log directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn line_of(e: &AuditEvent) -> String {
    serde_json::to_string(e).unwrap() + "\n"
}

async fn assert_verifies(store: &dyn AuditStore) {
    let v = store.verify().await.expect("verify");
    assert!(v.ok(), "{v:?}");
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x04;
    std::fs::write(path, b).unwrap();
}

/// Byte offset of line `n` (1-based) of a file.
fn line_start(bytes: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 1..n {
        at += bytes[at..].iter().position(|b| *b == b'\n').unwrap() + 1;
    }
    at
}

fn corrupt_message(r: Result<LogStore, StoreError>) -> String {
    match r {
        Err(StoreError::Corrupt(m)) => m,
        Err(e) => panic!("expected a corrupt-log error, got {e}"),
        Ok(_) => panic!("expected a corrupt-log error, the store opened"),
    }
}

// ------------------------------------------------------------- 1. the log

#[tokio::test]
async fn segments_are_archive_files_of_json_lines_and_roll_at_the_configured_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, small(2000));
    let events = notices(&store, 30).await;
    let names = log_names(&path);
    assert!(names.len() >= 4, "{names:?}");
    let (open_name, sealed) = names.split_last().unwrap();
    let mut next = 1;
    let mut verifier = ChainVerifier::new();
    for name in sealed {
        let (first, last) = parse_archive_file_name(name).expect("a sealed segment");
        assert_eq!(first, next, "{names:?}");
        let text = std::fs::read_to_string(path.join("log").join(name)).unwrap();
        let want: String = events[first as usize - 1..last as usize]
            .iter()
            .map(line_of)
            .collect();
        assert_eq!(
            text, want,
            "{name}: one JSON line per event, as serde writes it"
        );
        // Rolled once it reached the size, not before.
        let last_line = text.trim_end().rsplit('\n').next().unwrap().len() + 1;
        assert!(
            text.len() >= 2000 && text.len() - last_line < 2000,
            "{name}: {}",
            text.len()
        );
        verifier
            .check_json_lines(&text)
            .expect("a sealed segment verifies as an archive");
        next = last + 1;
    }
    assert_eq!(open_name, &format!("open-{next:012}.jsonl"));
    let text = std::fs::read_to_string(path.join("log").join(open_name)).unwrap();
    let want: String = events[next as usize - 1..].iter().map(line_of).collect();
    assert_eq!(text, want);
    verifier.check_json_lines(&text).unwrap();
    assert!(verifier.finish().ok());
    // Reads cross segment boundaries.
    assert_eq!(all_events(&store).await, events);
    for after in [0, 3, 7, 12, 29] {
        let page = store.events(after, 5).await.unwrap();
        assert_eq!(
            page,
            events[after as usize..(after as usize + 5).min(30)].to_vec()
        );
    }
    let v = store.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.checked, v.head_seq), (30, 30));
    assert!(path.join("index.redb").exists());
    assert_eq!(store.head().await.unwrap(), (30, events[29].hash.clone()));
    assert!(store.size_on_disk().await.unwrap() > 2000 * 3);
}

// ------------------------------------------------ 2. durable before the answer

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_durable_appends_share_one_fdatasync_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(7);
    // A disk that takes a while to sync: appends queue up behind each sync.
    sim.set_sync_delay(Duration::from_millis(5));
    let store = sim_open(dir.path(), &sim, LogOptions::default()).unwrap();
    let segment = dir.path().join("log").join("open-000000000001.jsonl");
    let before = sim.syncs();
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (store, sim, segment, start) =
            (store.clone(), sim.clone(), segment.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let r = request(&format!("op{i}"), None);
            start.wait().await;
            let stored = store
                .append(
                    vec![received(&r), to(r.id, State::Succeeded)],
                    AppendOptions::durable(),
                )
                .await
                .unwrap();
            // Answered only once a completed sync covers the events.
            let durable = sim
                .durable_bytes(&segment)
                .expect("the segment's name is durable");
            for e in &stored {
                let line = line_of(e);
                assert!(
                    durable.windows(line.len()).any(|w| w == line.as_bytes()),
                    "#{} acknowledged before it was synced",
                    e.seq
                );
            }
            stored
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        let stored = t.await.unwrap();
        assert_eq!(
            stored[1].seq,
            stored[0].seq + 1,
            "an append's events are contiguous"
        );
        seqs.extend(stored.iter().map(|e| e.seq));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=128).collect::<Vec<_>>());
    let syncs = sim.syncs() - before;
    assert!(
        (1..=32).contains(&syncs),
        "64 durable appends took {syncs} fdatasyncs: they were not group-committed"
    );
    assert_verifies(&store).await;
}

#[tokio::test]
async fn buffered_appends_become_durable_with_the_next_sync_and_flush_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(8);
    let mut opts = LogOptions::default();
    opts.sync_interval = Duration::from_secs(3600);
    let store = sim_open(dir.path(), &sim, opts).unwrap();
    let segment = dir.path().join("log").join("open-000000000001.jsonl");
    let durable_has = |e: &AuditEvent| {
        let line = line_of(e);
        sim.durable_bytes(&segment)
            .unwrap_or_default()
            .windows(line.len())
            .any(|w| w == line.as_bytes())
    };
    let syncs = sim.syncs();
    let b1 = store
        .append(vec![notice("buffered 1")], AppendOptions::buffered())
        .await
        .unwrap();
    // Answered once ordered and written, not synced.
    assert_eq!(sim.syncs(), syncs);
    assert!(!durable_has(&b1[0]));
    assert_eq!(store.events(0, 10).await.unwrap(), b1, "readable at once");
    // The next durable append's sync covers it.
    let d = append(&store, vec![notice("durable")]).await;
    assert_eq!(sim.syncs(), syncs + 1);
    assert!(durable_has(&b1[0]) && durable_has(&d[0]));
    // So does a flush.
    let b2 = store
        .append(vec![notice("buffered 2")], AppendOptions::buffered())
        .await
        .unwrap();
    assert!(!durable_has(&b2[0]));
    store.flush().await.unwrap();
    assert!(durable_has(&b2[0]));
    // Without either, the writer syncs buffered appends itself after
    // `sync_interval`.
    drop(store);
    let mut opts = LogOptions::default();
    opts.sync_interval = Duration::from_millis(20);
    let store = sim_open(dir.path(), &sim, opts).unwrap();
    let b3 = store
        .append(vec![notice("buffered 3")], AppendOptions::buffered())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(durable_has(&b3[0]));
}

#[tokio::test]
async fn new_and_sealed_segment_names_survive_a_power_cut() {
    // The double forgets a created or renamed name unless its directory was
    // synced: every segment created and sealed must come back.
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(9);
    let store = sim_open(dir.path(), &sim, small(1500)).unwrap();
    let dir_syncs = sim.dir_syncs();
    let events = notices(&store, 20).await;
    assert!(sim.dir_syncs() > dir_syncs);
    let after = sim.power_cut();
    drop(store);
    let names: Vec<String> = after
        .files()
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
        .collect();
    assert!(
        names.iter().filter(|n| n.starts_with("audit-")).count() >= 3,
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.starts_with("open-")), "{names:?}");
    let store = sim_open(dir.path(), &after, small(1500)).unwrap();
    assert_eq!(all_events(&store).await, events);
    assert_verifies(&store).await;
}

// ------------------------------------------------------------ 3. torn tails

#[tokio::test]
async fn a_torn_tail_is_cut_at_every_byte_of_the_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let segment = path.join("log").join("open-000000000001.jsonl");
    let index = path.join("index.redb");
    let first = {
        let store = open(&path, LogOptions::default());
        notices(&store, 5).await
    };
    // The state before the last event: its log and its index.
    let (base, base_index) = (
        std::fs::read(&segment).unwrap(),
        std::fs::read(&index).unwrap(),
    );
    let last = {
        let store = open(&path, LogOptions::default());
        notices(&store, 1).await.remove(0)
    };
    let whole = std::fs::read(&segment).unwrap();
    let line = whole[base.len()..].to_vec();
    assert_eq!(line, line_of(&last).into_bytes());
    for keep in 0..=line.len() {
        // What a crash in the middle of writing the last line leaves.
        let mut torn = base.clone();
        torn.extend_from_slice(&line[..keep]);
        std::fs::write(&segment, &torn).unwrap();
        std::fs::write(&index, &base_index).unwrap();
        let store = open(&path, LogOptions::default());
        let head = store.head().await.unwrap();
        if keep == line.len() {
            assert_eq!(head, (6, last.hash.clone()), "the whole line stays");
            assert_eq!(std::fs::read(&segment).unwrap(), whole);
        } else {
            assert_eq!(
                head,
                (5, first[4].hash.clone()),
                "cut at {keep} of {}",
                line.len()
            );
            assert_eq!(std::fs::read(&segment).unwrap(), base, "cut at {keep}");
        }
        // Appends chain onto the last whole event.
        let next = append(&store, vec![notice("after the cut")])
            .await
            .remove(0);
        assert_eq!((next.seq, &next.prev_hash), (head.0 + 1, &head.1));
        assert_verifies(&store).await;
        drop(store);
    }
    // Garbage after the last whole line (a torn write of several pages) is cut too.
    let mut torn = base.clone();
    torn.extend_from_slice(b"{\"seq\":6,\"ti\x00\x00\x00\n\x00\x00garbage\n\x00");
    std::fs::write(&segment, &torn).unwrap();
    std::fs::write(&index, &base_index).unwrap();
    let store = open(&path, LogOptions::default());
    assert_eq!(store.head().await.unwrap().0, 5);
    assert_eq!(std::fs::read(&segment).unwrap(), base);
}

#[tokio::test]
async fn a_bad_line_followed_by_good_lines_is_refused_with_the_record_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let segment = path.join("log").join("open-000000000001.jsonl");
    {
        let store = open(&path, LogOptions::default());
        notices(&store, 6).await;
    }
    let good = std::fs::read(&segment).unwrap();
    // A changed byte in line 3.
    flip(&segment, line_start(&good, 3) + 40);
    let damaged = std::fs::read(&segment).unwrap();
    let msg = corrupt_message(LogStore::open(&path, LogOptions::default()));
    assert!(
        msg.contains("record #3") && msg.contains("open-000000000001.jsonl:3"),
        "{msg}"
    );
    assert!(msg.contains("records follow it"), "{msg}");
    assert_eq!(std::fs::read(&segment).unwrap(), damaged, "nothing was cut");
    // Line 3 half gone, the lines after it whole.
    let mut cut = good[..line_start(&good, 3) + 50].to_vec();
    cut.push(b'\n');
    cut.extend_from_slice(&good[line_start(&good, 4)..]);
    std::fs::write(&segment, &cut).unwrap();
    let msg = corrupt_message(LogStore::open(&path, LogOptions::default()));
    assert!(
        msg.contains("record #3 (open-000000000001.jsonl:3)"),
        "{msg}"
    );
    // A whole line missing.
    let mut gap = good[..line_start(&good, 3)].to_vec();
    gap.extend_from_slice(&good[line_start(&good, 4)..]);
    std::fs::write(&segment, &gap).unwrap();
    let msg = corrupt_message(LogStore::open(&path, LogOptions::default()));
    assert!(
        msg.contains("record #3 (open-000000000001.jsonl:3)") && msg.contains("sequence number 4"),
        "{msg}"
    );
    std::fs::write(&segment, &good).unwrap();
    let store = open(&path, LogOptions::default());
    assert_eq!(store.head().await.unwrap().0, 6);
}

#[tokio::test]
async fn damage_in_a_sealed_segment_is_refused_with_the_record_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = open(&path, small(1500));
        notices(&store, 20).await;
    }
    let names = log_names(&path);
    let sealed = &names[0];
    let (first, last) = parse_archive_file_name(sealed).unwrap();
    assert!(last > first + 1, "{names:?}");
    let file = path.join("log").join(sealed);
    let good = std::fs::read(&file).unwrap();
    // A changed byte in its second line.
    flip(&file, line_start(&good, 2) + 30);
    let msg = corrupt_message(LogStore::open(&path, small(1500)));
    assert!(
        msg.contains(&format!("record #{} ({sealed}:2)", first + 1)),
        "{msg}"
    );
    // Its last line cut short (a sealed segment never has a torn tail).
    std::fs::write(&file, &good[..good.len() - 10]).unwrap();
    let msg = corrupt_message(LogStore::open(&path, small(1500)));
    assert!(
        msg.contains(&format!("record #{last}")) && msg.contains(sealed),
        "{msg}"
    );
    // The whole segment gone: a gap between the others.
    std::fs::write(&file, &good).unwrap();
    let middle = path.join("log").join(&names[1]);
    let kept = std::fs::read(&middle).unwrap();
    std::fs::remove_file(&middle).unwrap();
    let msg = corrupt_message(LogStore::open(&path, small(1500)));
    assert!(msg.contains("missing") && msg.contains(&names[2]), "{msg}");
    std::fs::write(&middle, kept).unwrap();
    let store = open(&path, small(1500));
    assert_eq!(store.head().await.unwrap().0, 20);
    assert_verifies(&store).await;
}

#[tokio::test]
async fn a_damaged_tail_the_index_proves_durable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = open(&path, LogOptions::default());
        notices(&store, 4).await;
        store.flush().await.unwrap();
    }
    let segment = path.join("log").join("open-000000000001.jsonl");
    let good = std::fs::read(&segment).unwrap();
    flip(&segment, line_start(&good, 4) + 30);
    let msg = corrupt_message(LogStore::open(&path, LogOptions::default()));
    assert!(
        msg.contains("record #4") && msg.contains("through #4"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap().len(),
        good.len(),
        "nothing was cut"
    );
}

#[tokio::test]
async fn with_verify_on_open_off_indexed_segments_are_checked_by_their_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = open(&path, small(1500));
        notices(&store, 20).await;
    }
    let names = log_names(&path);
    let file = path.join("log").join(&names[0]);
    let (first, _) = parse_archive_file_name(&names[0]).unwrap();
    let good = std::fs::read(&file).unwrap();
    flip(&file, line_start(&good, 2) + 30);
    let mut opts = small(1500);
    opts.verify_on_open = false;
    let store = LogStore::open(&path, opts).expect("opens without reading the middle");
    let v = store.verify().await.unwrap();
    let broken = v.broken.expect("verify reads every line");
    assert_eq!(broken.seq, first + 1, "{broken}");
    assert!(broken.reason.contains(&names[0]), "{broken}");
    drop(store);
    // Its last line is still checked.
    std::fs::write(&file, &good[..good.len() - 1]).unwrap();
    let mut opts = small(1500);
    opts.verify_on_open = false;
    corrupt_message(LogStore::open(&path, opts));
}

// ----------------------------------------- 4. a failed sync is an error, not a retry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_fails_every_waiting_caller_and_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(10);
    sim.set_sync_delay(Duration::from_millis(5));
    let store = sim_open(dir.path(), &sim, LogOptions::default()).unwrap();
    let kept = notices(&store, 3).await;
    let segment = dir.path().join("log").join("open-000000000001.jsonl");
    let durable = sim.bytes(&segment).unwrap();
    sim.fail_sync(1);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(vec![notice(format!("lost {i}"))], AppendOptions::durable())
                .await
        }));
    }
    for t in tasks {
        match t.await.unwrap() {
            Err(StoreError::Io(m)) => assert!(
                m.contains("fdatasync") || m.contains("stopped appending"),
                "{m}"
            ),
            other => panic!("an append was not failed: {other:?}"),
        }
    }
    // Poisoned: later appends and flushes fail at once, nothing is retried.
    let syncs = sim.syncs();
    match store
        .append(vec![notice("later")], AppendOptions::buffered())
        .await
    {
        Err(StoreError::Io(m)) => assert!(m.contains("reopen the store"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(store.flush().await, Err(StoreError::Io(_))));
    assert_eq!(sim.syncs(), syncs, "no sync after the failed one");
    // What was written after the last good sync is cut at once.
    assert_eq!(sim.bytes(&segment).unwrap(), durable);
    drop(store);

    // Reopened (a new process): the durable prefix, and the chain goes on.
    let store = sim_open(dir.path(), &sim, LogOptions::default()).unwrap();
    assert_eq!(all_events(&store).await, kept);
    assert!(!sim.files().iter().any(|p| p.ends_with("POISONED")));
    let next = append(&store, vec![notice("after reopening")])
        .await
        .remove(0);
    assert_eq!((next.seq, &next.prev_hash), (4, &kept[2].hash));
    assert_verifies(&store).await;
}

#[tokio::test]
async fn after_a_failed_sync_and_a_power_cut_the_durable_prefix_opens() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..20 {
        let path = dir.path().join(format!("s{seed}"));
        let sim = SimFs::new(seed);
        let store = sim_open(&path, &sim, LogOptions::default()).unwrap();
        let kept = notices(&store, 3).await;
        // Buffered appends, then a durable one whose sync fails.
        for i in 0..3 {
            store
                .append(
                    vec![notice(format!("buffered {i}"))],
                    AppendOptions::buffered(),
                )
                .await
                .unwrap();
        }
        sim.fail_sync(1);
        assert!(store
            .append(vec![notice("lost")], AppendOptions::durable())
            .await
            .is_err());
        let after = sim.power_cut();
        drop(store);
        let store = sim_open(&path, &after, LogOptions::default()).unwrap();
        assert_eq!(all_events(&store).await, kept, "seed {seed}");
        assert_verifies(&store).await;
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_group_and_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(11);
    let store = sim_open(dir.path(), &sim, LogOptions::default()).unwrap();
    let kept = notices(&store, 2).await;
    sim.fill_disk_after(100);
    match store
        .append(vec![notice("x".repeat(1000))], AppendOptions::durable())
        .await
    {
        Err(StoreError::Io(m)) => assert!(m.contains("No space left"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store
            .append(vec![notice("small")], AppendOptions::durable())
            .await,
        Err(StoreError::Io(_))
    ));
    drop(store);
    sim.free_disk();
    let store = sim_open(dir.path(), &sim, LogOptions::default()).unwrap();
    assert_eq!(all_events(&store).await, kept);
    let next = append(&store, vec![notice("room again")]).await.remove(0);
    assert_eq!(next.seq, 3);
    assert_verifies(&store).await;
}

// -------------------------------------------------------------- 6. one writer

#[tokio::test]
async fn a_second_open_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, LogOptions::default());
    match LogStore::open(&path, LogOptions::default()) {
        Err(e @ StoreError::Locked(_)) => {
            assert!(matches!(&e, StoreError::Locked(p) if p == &path.display().to_string()));
            assert!(e.to_string().contains("locked by another process"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    drop(store);
    open(&path, LogOptions::default());
}

// ------------------------------------------------------------- 7. the indexes

#[tokio::test]
async fn records_and_claims_are_readable_before_they_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), lazy());
    let r = request("deploy", Some("delivery-1"));
    let stored = store
        .append(
            vec![received(&r), to(r.id, State::Running)],
            keyed("delivery-1"),
        )
        .await
        .unwrap();
    // Nothing is indexed yet (the interval is an hour): all from memory.
    let record = store
        .request(r.id)
        .await
        .unwrap()
        .expect("readable at once");
    assert_eq!((record.state, record.last_seq), (State::Running, 2));
    assert_eq!(store.request_events(r.id).await.unwrap(), stored);
    assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(r.id));
    let again = request("deploy", Some("delivery-1"));
    match store
        .append(vec![received(&again)], keyed("delivery-1"))
        .await
    {
        Err(StoreError::Duplicate(owner)) => assert_eq!(owner, r.id),
        other => panic!("a duplicate was not refused: {other:?}"),
    }
    let listed = store
        .list_requests(&RequestFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(store.active_requests().await.unwrap().len(), 1);
    assert_eq!(store.events(1, 10).await.unwrap(), stored[1..]);
    // A second `received` for the same id is refused too.
    let dup = store
        .append(vec![received(&r)], AppendOptions::durable())
        .await;
    assert!(
        matches!(&dup, Err(StoreError::Io(m)) if m.contains("already received")),
        "{dup:?}"
    );
    // The same after the indexer stored them.
    store.flush().await.unwrap();
    assert_eq!(
        store.request(r.id).await.unwrap().unwrap().state,
        State::Running
    );
    assert_eq!(store.find_dedup("delivery-1").await.unwrap(), Some(r.id));
    assert_eq!(store.request_events(r.id).await.unwrap(), stored);
    assert_verifies(&store).await;
}

#[tokio::test]
async fn the_index_is_rebuilt_from_the_log_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, lazy());
    let (a, b) = (request("a", Some("key-a")), request("b", Some("key-b")));
    store
        .append(vec![received(&a)], keyed("key-a"))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store
        .append(vec![received(&b), to(b.id, State::Running)], keyed("key-b"))
        .await
        .unwrap();
    append(&store, vec![to(a.id, State::Succeeded)]).await;
    store
        .append(
            vec![notice("buffered, then killed")],
            AppendOptions::buffered(),
        )
        .await
        .unwrap();
    let events = all_events(&store).await;
    // Killed: no last sync, no last index writes.
    store.kill();
    let store = open(&path, LogOptions::default());
    assert_eq!(
        all_events(&store).await,
        events,
        "whole lines stay (synced on open)"
    );
    assert_eq!(
        store.request(a.id).await.unwrap().unwrap().state,
        State::Succeeded
    );
    assert_eq!(
        store.request(b.id).await.unwrap().unwrap().state,
        State::Running
    );
    assert_eq!(store.request_events(a.id).await.unwrap().len(), 2);
    assert_eq!(store.find_dedup("key-b").await.unwrap(), Some(b.id));
    let active: Vec<RequestId> = store
        .active_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.request.id)
        .collect();
    assert_eq!(active, vec![b.id]);
    assert_verifies(&store).await;
}

#[tokio::test]
async fn list_requests_pages_across_memory_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), lazy());
    let reqs: Vec<Request> = (0..6).map(|i| request(&format!("op{i}"), None)).collect();
    for r in &reqs[..3] {
        append(&store, vec![received(r), to(r.id, State::Succeeded)]).await;
    }
    store.flush().await.unwrap();
    append(&store, vec![to(reqs[0].id, State::Failed)]).await;
    append(
        &store,
        vec![received(&reqs[3]), to(reqs[3].id, State::Running)],
    )
    .await;
    append(&store, vec![received(&reqs[4])]).await;
    append(
        &store,
        vec![received(&reqs[5]), to(reqs[5].id, State::Succeeded)],
    )
    .await;
    let mut want: Vec<RequestId> = reqs.iter().map(|r| r.id).collect();
    want.sort_unstable_by(|a, b| b.cmp(a));
    let all = store
        .list_requests(&RequestFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.request.id).collect::<Vec<_>>(), want);
    for split in 1..6 {
        let page = store
            .list_requests(&RequestFilter::default(), Some(want[split - 1]), 2)
            .await
            .unwrap();
        let ids: Vec<RequestId> = page.iter().map(|r| r.request.id).collect();
        assert_eq!(
            ids,
            want[split..(split + 2).min(6)].to_vec(),
            "after {split}"
        );
    }
    let failed = RequestFilter {
        states: vec![State::Failed],
        ..RequestFilter::default()
    };
    let only = store.list_requests(&failed, None, 10).await.unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].request.id, reqs[0].id);
    let mut active: Vec<RequestId> = vec![reqs[3].id, reqs[4].id];
    active.sort_unstable();
    let got: Vec<RequestId> = store
        .active_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.request.id)
        .collect();
    assert_eq!(got, active);
}

// ------------------------------------------------------------ 8. dedup claims

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_claims_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, LogOptions::default());
    for round in 0..3 {
        let key = format!("delivery-{round}");
        let start = Arc::new(tokio::sync::Barrier::new(64));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (store, key, start) = (store.clone(), key.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                let r = request("deliver", Some(&key));
                start.wait().await;
                (r.id, store.append(vec![received(&r)], keyed(&key)).await)
            }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (id, Ok(_)) => winners.push(id),
                (_, Err(StoreError::Duplicate(owner))) => losers.push(owner),
                (_, Err(e)) => panic!("{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(losers.len(), 63);
        assert!(losers.iter().all(|o| *o == winners[0]));
        assert_eq!(store.find_dedup(&key).await.unwrap(), Some(winners[0]));
    }
    assert_eq!(
        all_events(&store).await.len(),
        3,
        "the losers appended nothing"
    );
    drop(store);
    let store = open(&path, LogOptions::default());
    for round in 0..3 {
        assert!(store
            .find_dedup(&format!("delivery-{round}"))
            .await
            .unwrap()
            .is_some());
    }
}

#[tokio::test]
async fn expiring_dedup_claims_expire_by_bucket_and_the_others_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut opts = lazy();
    opts.dedup_ttl = Duration::from_secs(1);
    opts.dedup_bucket = Duration::from_secs(1);
    let store = open(&path, opts.clone());
    let (indexed, claim) = delivery("a", "slack:1");
    store.append(vec![received(&indexed)], claim).await.unwrap();
    store.flush().await.unwrap();
    let (in_memory, claim) = delivery("b", "slack:2");
    store
        .append(vec![received(&in_memory)], claim)
        .await
        .unwrap();
    // Not marked as expiring: held for good.
    let forever = request("c", Some("git:abc"));
    store
        .append(vec![received(&forever)], keyed("git:abc"))
        .await
        .unwrap();
    // A claim its event does not carry, expiring.
    let plain = request("d", None);
    let mut elsewhere = keyed("api:1");
    elsewhere.dedup_expires = true;
    store
        .append(vec![received(&plain)], elsewhere)
        .await
        .unwrap();
    // Killed before slack:2 was indexed: rebuilt from its event, still expiring.
    store.kill();
    let store = open(&path, opts.clone());
    let (held, claim) = delivery("e", "slack:3");
    store.append(vec![received(&held)], claim).await.unwrap();
    assert_eq!(store.find_dedup("slack:1").await.unwrap(), Some(indexed.id));
    assert_eq!(
        store.find_dedup("slack:2").await.unwrap(),
        Some(in_memory.id)
    );
    assert_eq!(store.find_dedup("slack:3").await.unwrap(), Some(held.id));
    assert_eq!(store.find_dedup("api:1").await.unwrap(), Some(plain.id));
    // A bucket of one second expires whole one second after it ends.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for key in ["slack:1", "slack:2", "slack:3", "api:1"] {
        assert_eq!(store.find_dedup(key).await.unwrap(), None, "{key}");
    }
    assert_eq!(store.find_dedup("git:abc").await.unwrap(), Some(forever.id));
    // An expired key can be claimed again; the other cannot.
    let (again, claim) = delivery("a2", "slack:1");
    store.append(vec![received(&again)], claim).await.unwrap();
    assert_eq!(store.find_dedup("slack:1").await.unwrap(), Some(again.id));
    let twice = request("c2", Some("git:abc"));
    assert!(matches!(
        store.append(vec![received(&twice)], keyed("git:abc")).await,
        Err(StoreError::Duplicate(id)) if id == forever.id
    ));
    drop(store);
    // After a reopen (which also removes expired buckets) the same holds.
    let store = open(&path, opts);
    assert_eq!(store.find_dedup("slack:1").await.unwrap(), Some(again.id));
    assert_eq!(store.find_dedup("slack:2").await.unwrap(), None);
    assert_eq!(store.find_dedup("api:1").await.unwrap(), None);
    assert_eq!(store.find_dedup("git:abc").await.unwrap(), Some(forever.id));
}

#[tokio::test]
async fn a_claim_its_events_do_not_carry_is_stored_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(12);
    let store = sim_open(dir.path(), &sim, lazy()).unwrap();
    // The received event carries no key: the claim is not in the log.
    let r = request("plain", None);
    store
        .append(vec![received(&r)], keyed("elsewhere"))
        .await
        .unwrap();
    store.kill();
    let store = sim_open(dir.path(), &sim, lazy()).unwrap();
    assert_eq!(store.find_dedup("elsewhere").await.unwrap(), Some(r.id));
    // A claim whose events never reach the log is dropped on the next open.
    sim.fill_disk_after(10);
    let lost = request("lost", None);
    assert!(store
        .append(vec![received(&lost)], keyed("never-written"))
        .await
        .is_err());
    drop(store);
    sim.free_disk();
    let store = sim_open(dir.path(), &sim, lazy()).unwrap();
    assert_eq!(store.find_dedup("never-written").await.unwrap(), None);
    assert_eq!(store.find_dedup("elsewhere").await.unwrap(), Some(r.id));
    let r2 = request("retry", None);
    store
        .append(vec![received(&r2)], keyed("never-written"))
        .await
        .unwrap();
    assert_eq!(
        store.find_dedup("never-written").await.unwrap(),
        Some(r2.id)
    );
}

#[tokio::test]
async fn a_key_its_received_event_carries_is_claimed_as_a_replay_would() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = open(&path, lazy());
    // Appended without asking for the claim: the event carries the key.
    let first = request("a", Some("carried"));
    append(&store, vec![received(&first)]).await;
    assert_eq!(store.find_dedup("carried").await.unwrap(), Some(first.id));
    // A later request carrying it does not take it over.
    let second = request("b", Some("carried"));
    append(&store, vec![received(&second)]).await;
    assert_eq!(store.find_dedup("carried").await.unwrap(), Some(first.id));
    store.kill();
    // Rebuilt from the log: the same owner.
    let store = open(&path, lazy());
    assert_eq!(store.find_dedup("carried").await.unwrap(), Some(first.id));
}

// --------------------------------------------------------------- 9. retention

/// A request in flight from the start (#1, #2), then `done` finished requests
/// (two events each), then a notice.
async fn retention_store(store: &LogStore, done: usize) -> (Request, Vec<Request>) {
    let flight = request("long", None);
    append(
        store,
        vec![received(&flight), to(flight.id, State::Running)],
    )
    .await;
    let reqs: Vec<Request> = (0..done)
        .map(|i| request(&format!("op{i}"), None))
        .collect();
    for r in &reqs {
        store
            .append(vec![received(r)], AppendOptions::buffered())
            .await
            .unwrap();
        store
            .append(vec![to(r.id, State::Succeeded)], AppendOptions::buffered())
            .await
            .unwrap();
    }
    append(store, vec![notice("before retention")]).await;
    (flight, reqs)
}

async fn verify_all(store: &dyn AuditStore, dir: &Path) -> youops_core::audit::ArchivesVerdict {
    let files = archive_files(dir).unwrap();
    verify_with_archives(store, &files).await.unwrap()
}

#[tokio::test]
async fn retention_moves_whole_segments_and_the_chain_verifies_with_archives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let archive = dir.path().join("archive");
    let store = open(&path, small(3000));
    let (flight, done) = retention_store(&store, 12).await;
    let before = all_events(&store).await;
    assert_eq!(before.len(), 27);
    let sealed: Vec<(u64, u64)> = log_names(&path)
        .iter()
        .filter_map(|n| parse_archive_file_name(n))
        .collect();
    assert!(sealed.len() >= 3, "{sealed:?}");
    // Asked through #15: whole segments whose last event is at or before it.
    let through = sealed
        .iter()
        .map(|s| s.1)
        .filter(|l| *l <= 15)
        .max()
        .unwrap();
    let report = store
        .archive(15, &archive)
        .await
        .unwrap()
        .expect("archived");
    let moved: Vec<(u64, u64)> = sealed.iter().copied().filter(|s| s.1 <= 15).collect();
    let (last_first, _) = *moved.last().unwrap();
    assert_eq!(
        report.file,
        archive.join(archive_file_name(last_first, through))
    );
    assert_eq!((report.first_seq, report.through_seq), (1, through));
    assert_eq!(report.last_hash, before[through as usize - 1].hash);
    assert_eq!(report.checkpoint_seq, 28);
    // Finished requests whose events are all archived lose their records.
    let gone = done
        .iter()
        .filter(|r| {
            before
                .iter()
                .filter(|e| e.request_id == Some(r.id))
                .all(|e| e.seq <= through)
        })
        .count() as u64;
    assert_eq!(report.records_removed, gone);
    // The segments moved byte for byte.
    let files = archive_files(&archive).unwrap();
    assert_eq!(files.len(), moved.len());
    let mut bytes = 0;
    for (file, (first, last)) in files.iter().zip(&moved) {
        let text = std::fs::read_to_string(file).unwrap();
        let want: String = before[*first as usize - 1..*last as usize]
            .iter()
            .map(line_of)
            .collect();
        assert_eq!(text, want);
        bytes += text.len() as u64;
    }
    assert_eq!(report.bytes, bytes);
    assert!(log_names(&path)
        .iter()
        .filter_map(|n| parse_archive_file_name(n))
        .all(|(f, _)| f > through));
    let check = |store: LogStore| {
        let (archive, before, flight) = (archive.clone(), before.clone(), flight.clone());
        async move {
            let live = all_events(&store).await;
            assert_eq!(live.first().unwrap().seq, through + 1);
            assert_eq!(live[..live.len() - 1], before[through as usize..]);
            assert_eq!(
                live.last().unwrap().body,
                EventBody::Checkpoint {
                    archived_through_seq: through,
                    archived_last_hash: before[through as usize - 1].hash.clone(),
                    archive: archive_file_name(last_first, through),
                }
            );
            let v = store.verify().await.unwrap();
            assert!(v.ok(), "{v:?}");
            assert_eq!(v.starts_at_checkpoint, Some(through + 1));
            let all = verify_all(&store, &archive).await;
            assert!(all.report.ok(), "{all:?}");
            assert_eq!(
                (all.archived, all.overlap, all.report.checked),
                (through, 0, 28)
            );
            // The request in flight has its events in the archive: still readable.
            assert_eq!(store.request_events(flight.id).await.unwrap(), before[..2]);
            assert_eq!(store.active_requests().await.unwrap().len(), 1);
            store
        }
    };
    let store = check(store).await;
    drop(store);
    let store = check(open(&path, small(3000))).await;
    assert_eq!(store.archive_dir().unwrap(), Some(archive.clone()));

    // Everything: the open segment is sealed and goes too; the checkpoint stays.
    append(&store, vec![to(flight.id, State::Succeeded)]).await;
    let tip = store.head().await.unwrap().0;
    let report = store.archive(u64::MAX, &archive).await.unwrap().unwrap();
    assert_eq!((report.first_seq, report.through_seq), (through + 1, tip));
    assert_eq!(report.checkpoint_seq, tip + 1);
    let live = all_events(&store).await;
    assert_eq!(live.len(), 1, "only the checkpoint is live");
    assert_verifies(&store).await;
    let all = verify_all(&store, &archive).await;
    assert!(all.report.ok(), "{all:?}");
    assert_eq!((all.archived, all.report.checked), (tip, tip + 1));
    assert!(
        store.request(flight.id).await.unwrap().is_none(),
        "finished and archived"
    );
    // A lone checkpoint is not archived again.
    assert_eq!(store.archive(u64::MAX, &archive).await.unwrap(), None);
    // Nothing sealed at or before #5 is left: nothing to do.
    assert_eq!(store.archive(5, &archive).await.unwrap(), None);
}

#[tokio::test]
async fn archiving_rounds_keep_the_log_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let archive = dir.path().join("archive");
    let store = open(&path, small(8 << 10));
    let mut sizes = Vec::new();
    for round in 0..8 {
        for i in 0..60 {
            let r = request(&format!("round{round}.op{i}"), None);
            store
                .append(
                    vec![received(&r), to(r.id, State::Succeeded)],
                    AppendOptions::buffered(),
                )
                .await
                .unwrap();
        }
        let (tip, _) = store.head().await.unwrap();
        // As `[store] retain_events = 20` would.
        store.archive(tip - 20, &archive).await.unwrap();
        let size: u64 = log_names(&path)
            .iter()
            .map(|n| std::fs::metadata(path.join("log").join(n)).unwrap().len())
            .sum();
        sizes.push(size);
    }
    // The log holds the open segment and at most the one sealed segment the
    // last 20 events reach into.
    assert!(sizes.iter().all(|s| *s <= 3 * (8 << 10)), "{sizes:?}");
    let all = verify_all(&store, &archive).await;
    assert!(all.report.ok(), "{all:?}");
    assert_eq!(all.report.head_seq, store.head().await.unwrap().0);
}

#[tokio::test]
async fn an_archive_cut_short_at_any_operation_is_finished_or_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = 0;
    loop {
        let path = dir.path().join(format!("store{k}"));
        let archive = dir.path().join(format!("archive{k}"));
        let fault = FaultFs::new(Arc::new(StdFs));
        let store = LogStore::open_with_fs(&path, small(3000), Arc::new(fault.clone())).unwrap();
        let (flight, _) = retention_store(&store, 12).await;
        let before = all_events(&store).await;
        // The process dies at operation k of the archive.
        fault.fail_after(k);
        let done = store.archive(u64::MAX, &archive).await;
        let ops = fault.ops();
        drop(store);
        let store = open(&path, small(3000));
        let all = verify_all(&store, &archive).await;
        assert!(all.report.ok(), "crash at op {k}: {all:?}");
        assert_verifies(&store).await;
        assert_eq!(
            store.request_events(flight.id).await.unwrap(),
            before[..2],
            "crash at op {k}"
        );
        // The next archive completes it.
        store.archive(u64::MAX, &archive).await.unwrap();
        let all = verify_all(&store, &archive).await;
        assert!(all.report.ok(), "crash at op {k}: {all:?}");
        assert_eq!(all.overlap, 0);
        let (tip, _) = store.head().await.unwrap();
        assert_eq!(all.report.checked, tip, "crash at op {k}");
        let stray: Vec<PathBuf> = std::fs::read_dir(&archive)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| parse_archive_file_name(p.file_name().unwrap().to_str().unwrap()).is_none())
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
        if done.is_ok() && ops <= k {
            break;
        }
        k += 1;
        assert!(k < 200, "the archive never completed");
    }
    assert!(k > 10, "an archive is more than {k} operations");
}

/// The archives in the double's `dir` (in order) then the live events, as one
/// chain; the whole of it.
async fn sim_chain(sim: &SimFs, dir: &Path, store: &dyn AuditStore) -> Vec<AuditEvent> {
    let mut files: Vec<PathBuf> = sim
        .files()
        .into_iter()
        .filter(|p| p.parent() == Some(dir))
        .collect();
    files.sort();
    let mut chain: Vec<AuditEvent> = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(parse_archive_file_name(name).is_some(), "{name}");
        let text = String::from_utf8(sim.bytes(f).unwrap()).unwrap();
        chain.extend(
            text.lines()
                .map(|l| serde_json::from_str::<AuditEvent>(l).unwrap()),
        );
    }
    for e in all_events(store).await {
        match chain.iter().find(|a| a.seq == e.seq) {
            // A segment in both places (a move cut short): the same records.
            Some(a) => assert_eq!(a, &e),
            None => chain.push(e),
        }
    }
    let mut v = ChainVerifier::new();
    for e in &chain {
        v.check(e).unwrap_or_else(|b| panic!("{b}"));
    }
    assert!(v.finish().ok());
    chain
}

#[tokio::test]
async fn an_archive_cut_by_a_power_cut_at_any_operation_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = 0;
    loop {
        let path = dir.path().join(format!("store{k}"));
        let archive = dir.path().join(format!("archive{k}"));
        let sim = SimFs::new(k);
        let fault = FaultFs::new(Arc::new(sim.clone()));
        let store = LogStore::open_with_fs(&path, small(3000), Arc::new(fault.clone())).unwrap();
        let (flight, _) = retention_store(&store, 12).await;
        let before = all_events(&store).await;
        // The process dies at operation k of the archive, and the power goes.
        fault.fail_after(k);
        let done = store.archive(u64::MAX, &archive).await;
        let ops = fault.ops();
        let after = sim.power_cut();
        drop(store);
        let store = sim_open(&path, &after, small(3000)).unwrap();
        let chain = sim_chain(&after, &archive, &store).await;
        assert_eq!(chain[..before.len()], before, "power cut at op {k}");
        assert_eq!(
            store.request_events(flight.id).await.unwrap(),
            before[..2],
            "power cut at op {k}"
        );
        store.archive(u64::MAX, &archive).await.unwrap();
        let chain = sim_chain(&after, &archive, &store).await;
        assert_eq!(chain[..before.len()], before, "power cut at op {k}");
        assert_eq!(
            all_events(&store).await.len(),
            1,
            "only the last checkpoint is live"
        );
        if done.is_ok() && ops <= k {
            break;
        }
        k += 1;
        assert!(k < 200, "the archive never completed");
    }
}

#[tokio::test]
async fn across_file_systems_segments_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let sim = SimFs::new(13);
    sim.refuse_links();
    let store = sim_open(&dir.path().join("store"), &sim, small(3000)).unwrap();
    let (flight, _) = retention_store(&store, 12).await;
    let before = all_events(&store).await;
    let report = store.archive(u64::MAX, &archive).await.unwrap().unwrap();
    assert_eq!(report.through_seq, before.len() as u64);
    let in_archive: Vec<PathBuf> = sim
        .files()
        .into_iter()
        .filter(|p| p.starts_with(&archive))
        .collect();
    assert!(in_archive.len() >= 3, "{in_archive:?}");
    let mut verifier = ChainVerifier::new();
    let mut text = String::new();
    for p in &in_archive {
        assert!(
            parse_archive_file_name(p.file_name().unwrap().to_str().unwrap()).is_some(),
            "{p:?}"
        );
        text += &String::from_utf8(sim.durable_bytes(p).expect("synced")).unwrap();
    }
    assert_eq!(text, before.iter().map(line_of).collect::<String>());
    verifier.check_json_lines(&text).unwrap();
    for e in all_events(&store).await {
        verifier.check(&e).unwrap();
    }
    assert!(verifier.finish().ok());
    assert_eq!(store.request_events(flight.id).await.unwrap(), before[..2]);
}

#[tokio::test]
async fn archives_of_another_store_are_never_mixed_with_or_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let old = open(&dir.path().join("old"), small(3000));
    retention_store(&old, 12).await;
    old.archive(u64::MAX, &archive).await.unwrap().unwrap();
    let kept: BTreeMap<PathBuf, Vec<u8>> = archive_files(&archive)
        .unwrap()
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    // A new store (other records #1..) pointed at the same directory.
    let new = open(&dir.path().join("new"), small(2000));
    retention_store(&new, 12).await;
    let err = new.archive(u64::MAX, &archive).await.unwrap_err();
    assert!(
        err.to_string().contains("another store's archives"),
        "{err}"
    );
    let now: BTreeMap<PathBuf, Vec<u8>> = archive_files(&archive)
        .unwrap()
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert_eq!(now, kept);
    assert_eq!(
        new.events(0, 1).await.unwrap()[0].seq,
        1,
        "nothing archived"
    );
    assert_verifies(&new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stay_whole_while_segments_roll_and_move() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let store = open(&dir.path().join("store"), small(1200));
    let flight = request("long", None);
    append(
        &store,
        vec![received(&flight), to(flight.id, State::Running)],
    )
    .await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            for i in 0..400 {
                let opts = if i % 4 == 0 {
                    AppendOptions::durable()
                } else {
                    AppendOptions::buffered()
                };
                if let Err(e) = store.append(vec![notice(format!("n{i}"))], opts).await {
                    panic!("append {i}: {e}");
                }
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let archiver = {
        let (store, done, archive) = (store.clone(), done.clone(), archive.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let (tip, _) = store.head().await.unwrap();
                if let Err(e) = store.archive(tip.saturating_sub(30), &archive).await {
                    panic!("archive through #{}: {e}", tip.saturating_sub(30));
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let mut reads = 0;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let events = all_events(&store).await;
        for w in events.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1);
            assert_eq!(w[1].prev_hash, w[0].hash);
        }
        let page = store.events(0, 7).await.unwrap();
        assert!(page.len() <= 7);
        let mine = store.request_events(flight.id).await.unwrap();
        assert_eq!(
            mine.len(),
            2,
            "events of a request in flight, archived or not"
        );
        reads += 1;
    }
    writer.await.unwrap();
    archiver.await.unwrap();
    assert!(reads > 5, "{reads}");
    let all = verify_all(&store, &archive).await;
    assert!(all.report.ok(), "{all:?}");
    assert_verifies(&store).await;
}

// ------------------------------------------------------- 10. an old sled store

#[tokio::test]
async fn a_sled_store_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let sled = youops_store_sled::SledStore::open(&path).unwrap();
        sled.append(vec![notice("in sled")], AppendOptions::durable())
            .await
            .unwrap();
    }
    // sled's IO threads hold its lock (an flock of `db`) a moment after its
    // last handle goes: wait until it is closed for good.
    let db = std::fs::File::open(path.join("db")).unwrap();
    for _ in 0..750 {
        if db.try_lock().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(db);
    let before: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    match LogStore::open(&path, LogOptions::default()) {
        Err(StoreError::Io(m)) => {
            assert!(m.contains("sled") && m.contains("youops store copy"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let after: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(before, after, "nothing was created in the sled directory");
}

// ------------------------------------------------- 12. random power cuts

/// ~200 power cuts during concurrent submits: after each, every acknowledged
/// durable event is there, the chain verifies, and the claims of acknowledged
/// requests hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_power_cuts_during_concurrent_submits_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // YOUOPS_STORE_SEED=n reruns another sequence of cuts.
    let seed: u64 = std::env::var("YOUOPS_STORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2024);
    let mut sim = SimFs::new(seed);
    sim.set_sync_delay(Duration::from_micros(300));
    let mut rng = seed | 1;
    let (mut lost, mut rounds_with_acks) = (0u64, 0usize);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let acked: Arc<Mutex<BTreeMap<u64, AuditEvent>>> = Arc::default();
    let claims: Arc<Mutex<Vec<(String, RequestId)>>> = Arc::default();
    let mut submitted = 0u64;
    // YOUOPS_STORE_CUTS=n makes more cuts (a benchmark run); CI makes 200.
    let cuts: u64 = std::env::var("YOUOPS_STORE_CUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    for round in 0..cuts {
        let mut opts = small(4096);
        opts.index_interval = Duration::from_millis(1 + next() % 20);
        let store = sim_open(&path, &sim, opts).unwrap_or_else(|e| panic!("round {round}: {e}"));
        // Everything acknowledged so far is there, unchanged.
        let events = all_events(&store).await;
        let by_seq: BTreeMap<u64, &AuditEvent> = events.iter().map(|e| (e.seq, e)).collect();
        for (seq, e) in acked.lock().unwrap().iter() {
            assert_eq!(
                by_seq.get(seq),
                Some(&e),
                "seed {seed} round {round}: acknowledged #{seq}"
            );
        }
        let v = store.verify().await.unwrap();
        assert!(v.ok(), "seed {seed} round {round}: {v:?}");
        assert_eq!(v.head_seq, events.last().map_or(0, |e| e.seq));
        let held = claims.lock().unwrap().clone();
        for (key, id) in held.iter().rev().take(20) {
            assert_eq!(
                store.find_dedup(key).await.unwrap(),
                Some(*id),
                "round {round}: {key}"
            );
        }
        if let Some((key, id)) = held.last() {
            let again = request("again", Some(key));
            assert!(matches!(
                store.append(vec![received(&again)], keyed(key)).await,
                Err(StoreError::Duplicate(owner)) if owner == *id
            ));
        }
        // Concurrent submitters until the power goes.
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let (store, acked, claims) = (store.clone(), acked.clone(), claims.clone());
            let base = submitted + t * 1_000_000;
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("delivery-{base}-{i}");
                    let r = request("submit", Some(&key));
                    let durable = !(base + i).is_multiple_of(3);
                    let mut opts = if durable {
                        AppendOptions::durable()
                    } else {
                        AppendOptions::buffered()
                    };
                    opts.dedup_key = Some(key.clone());
                    match store
                        .append(vec![received(&r), to(r.id, State::Running)], opts)
                        .await
                    {
                        Ok(events) => {
                            if durable {
                                let mut a = acked.lock().unwrap();
                                for e in events {
                                    a.insert(e.seq, e);
                                }
                                claims.lock().unwrap().push((key, r.id));
                            }
                        }
                        Err(_) => return,
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        submitted += 10_000_000;
        let acked_before = acked.lock().unwrap().len();
        tokio::time::sleep(Duration::from_micros(next() % 4000)).await;
        let after = sim.power_cut();
        for t in tasks {
            t.await.unwrap();
        }
        let tip = store.head().await.unwrap().0;
        drop(store);
        sim = after;
        rounds_with_acks += usize::from(acked.lock().unwrap().len() > acked_before);
        let back = sim_open(&path, &sim, small(4096)).unwrap();
        lost += tip.saturating_sub(back.head().await.unwrap().0);
    }
    eprintln!(
        "seed {seed}: {} acknowledged durable events, {rounds_with_acks} of 200 rounds \
         acknowledged some, {lost} events written but not acknowledged durable lost to cuts",
        acked.lock().unwrap().len()
    );
    assert!(rounds_with_acks > 100, "{rounds_with_acks}");
    assert!(lost > 0, "no cut ever lost an unsynced write");
    let store = sim_open(&path, &sim, small(4096)).unwrap();
    let events = all_events(&store).await;
    assert!(events.len() as u64 >= acked.lock().unwrap().len() as u64);
    assert!(
        acked.lock().unwrap().len() > 200,
        "few appends were acknowledged"
    );
    assert_verifies(&store).await;
    assert_eq!(
        events.first().map(|e| e.prev_hash.as_str()),
        Some(GENESIS_HASH)
    );
}
