//! Torn tails (section 3); a failed sync is an error, not a retry (section 4).

use std::time::Duration;

use youops_core::audit::{parse_archive_file_name, AppendOptions, AuditStore, StoreError};
use youops_store::fs::SimFs;
use youops_store::{LogOptions, LogStore};

use crate::support::{
    all_events, append, assert_verifies, corrupt_message, flip, line_of, line_start, log_names,
    notice, notices, open, sim_open, small,
};
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
