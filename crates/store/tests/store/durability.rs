//! The log (section 1) and durable before the answer (section 2): segments
//! and group commit.

use std::sync::Arc;
use std::time::Duration;

use youops_core::audit::{parse_archive_file_name, AppendOptions, AuditStore, ChainVerifier};
use youops_core::model::{AuditEvent, State};
use youops_store::fs::SimFs;
use youops_store::LogOptions;

use crate::support::{
    all_events, append, assert_verifies, line_of, log_names, notice, notices, open, received,
    request, sim_open, small, to,
};
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
            let r = request(&format!("op{i}"));
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
