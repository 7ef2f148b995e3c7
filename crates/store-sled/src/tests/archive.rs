//! Archiving: archive files, checkpoints, archives cut short, bounded size,
//! and blob files synced.

use super::*;

fn read_jsonl(path: &Path) -> Vec<AuditEvent> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn archived_events_leave_a_verifiable_chain_and_a_verifiable_archive() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    released(&dir.path().join("store"));
    let store = SledStore::open_with(
        dir.path().join("store"),
        SledOptions {
            block_events: 3,
            ..SledOptions::default()
        },
    )
    .unwrap();
    // 8 finished requests (16 events), then one still running (2 events).
    let done: Vec<Request> = (0..8).map(|i| request(&format!("op{i}"))).collect();
    for r in &done {
        append(&store, vec![received(r)]).await;
        append(&store, vec![to(r.id, State::Succeeded)]).await;
    }
    let running = request("long");
    append(
        &store,
        vec![received(&running), to(running.id, State::Running)],
    )
    .await;
    let all_before = store.events(0, usize::MAX).await.unwrap();

    // Asked for everything: only what precedes the running request goes.
    let report = store
        .archive(u64::MAX, &archive)
        .await
        .unwrap()
        .expect("something to archive");
    assert_eq!((report.first_seq, report.through_seq), (1, 16));
    assert_eq!(report.checkpoint_seq, 19);
    assert_eq!(report.records_removed, 8);
    assert_eq!(report.last_hash, all_before[15].hash);
    let archived = read_jsonl(&report.file);
    assert_eq!(archived, all_before[..16].to_vec(), "byte-exact copy");
    assert!(youops_core::audit::verify_events(archived.clone()).ok());

    // The live chain starts at 17 and its checkpoint accounts for 1..=16.
    let live = store.events(0, usize::MAX).await.unwrap();
    assert_eq!(live.first().map(|e| e.seq), Some(17));
    let v = store.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!((v.checked, v.starts_at_checkpoint), (3, Some(17)));
    assert!(youops_core::audit::verify_events(live.clone()).ok());
    // Archive then live verify as one sequence; live alone without its
    // checkpoint does not.
    let whole: Vec<AuditEvent> = archived.iter().chain(&live).cloned().collect();
    assert_eq!(youops_core::audit::verify_events(whole).checked, 19);
    let cut = youops_core::audit::verify_events(live[..2].to_vec());
    assert_eq!(cut.broken.map(|b| b.seq), Some(17));

    // Records: archived requests are gone, the running one is whole.
    assert!(store.request(done[0].id).await.unwrap().is_none());
    assert_eq!(store.request_events(running.id).await.unwrap().len(), 2);
    assert_eq!(store.head().await.unwrap().0, 19);

    // After a reopen, the chain continues and a second archive follows on.
    drop(store);
    released(&dir.path().join("store"));
    let store = SledStore::open(dir.path().join("store")).unwrap();
    append(&store, vec![to(running.id, State::Succeeded)]).await;
    let second = store.archive(u64::MAX, &archive).await.unwrap().unwrap();
    assert_eq!((second.first_seq, second.through_seq), (17, 19));
    let files = youops_core::audit::archive_files(&archive).unwrap();
    assert_eq!(files.len(), 2);
    let mut chain: Vec<AuditEvent> = files.iter().flat_map(|f| read_jsonl(f)).collect();
    chain.extend(store.events(0, usize::MAX).await.unwrap());
    let r = youops_core::audit::verify_events(chain);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.checked, 21);
    assert!(store.verify().await.unwrap().ok());
    // Nothing before the live start is left to archive.
    assert!(store.archive(19, &archive).await.unwrap().is_none());
}

/// A store of `n` finished requests (two events each), blocks of 3 events.
async fn finished_store(path: &Path, n: usize) -> (SledStore, Vec<Request>) {
    let store = SledStore::open_with(
        path,
        SledOptions {
            block_events: 3,
            ..SledOptions::default()
        },
    )
    .unwrap();
    let done: Vec<Request> = (0..n).map(|i| request(&format!("op{i}"))).collect();
    for r in &done {
        append(&store, vec![received(r)]).await;
        append(&store, vec![to(r.id, State::Succeeded)]).await;
    }
    (store, done)
}

/// Verify the archives in `dir` and the store as one chain.
async fn verify_all(store: &SledStore, dir: &Path) -> youops_core::audit::ArchivesVerdict {
    let files = youops_core::audit::archive_files(dir).unwrap();
    youops_core::audit::verify_with_archives(store, &files)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_archive_cut_short_before_its_checkpoint_is_dropped_and_redone() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let (store, done) = finished_store(&dir.path().join("store"), 6).await;
    // A first archive, whole, so the cut one is not at the chain's start.
    let first = store.archive(4, &archive).await.unwrap().unwrap();
    assert_eq!((first.first_seq, first.through_seq), (1, 4));
    // The crash: the file is written (and a temporary one), nothing else.
    let cut = store
        .archive_steps(5, 9, &archive, ArchiveStep::File)
        .await
        .unwrap();
    std::fs::write(
        archive.join("audit-000000000010-000000000012.jsonl.tmp"),
        "half",
    )
    .unwrap();
    drop(store);
    released(&dir.path().join("store"));
    let store = SledStore::open(dir.path().join("store")).unwrap();
    // Meanwhile the archives and the store verify; the overlap is named.
    let v = verify_all(&store, &archive).await;
    assert!(v.report.ok(), "{v:?}");
    assert_eq!((v.archived, v.overlap), (9, 5));
    // The next archive drops the cut file (no checkpoint) and archives anew.
    let again = store.archive(10, &archive).await.unwrap().unwrap();
    assert_eq!((again.first_seq, again.through_seq), (5, 10));
    assert!(!cut.file.exists(), "the cut archive is gone");
    let names: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let v = verify_all(&store, &archive).await;
    assert!(v.report.ok(), "{v:?}");
    assert_eq!((v.archived, v.overlap), (10, 0));
    assert!(store.verify().await.unwrap().ok());
    assert!(store.request(done[4].id).await.unwrap().is_none());
}

#[tokio::test]
async fn an_archive_cut_short_after_its_checkpoint_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let (store, done) = finished_store(&dir.path().join("store"), 6).await;
    let cut = store
        .archive_steps(1, 8, &archive, ArchiveStep::Checkpoint)
        .await
        .unwrap();
    assert_eq!(cut.checkpoint_seq, 13);
    drop(store);
    released(&dir.path().join("store"));
    let store = SledStore::open(dir.path().join("store")).unwrap();
    let v = verify_all(&store, &archive).await;
    assert!(v.report.ok(), "{v:?}");
    assert_eq!((v.archived, v.overlap), (8, 8));
    assert!(store.request(done[0].id).await.unwrap().is_some());
    // Asked for nothing new, the next archive still finishes the cut one.
    assert!(store.archive(8, &archive).await.unwrap().is_none());
    assert_eq!(store.events(0, 1).await.unwrap()[0].seq, 9);
    assert!(store.request(done[0].id).await.unwrap().is_none());
    assert!(store.request(done[3].id).await.unwrap().is_none());
    assert!(store.request(done[4].id).await.unwrap().is_some());
    let v = verify_all(&store, &archive).await;
    assert!(v.report.ok(), "{v:?}");
    assert_eq!((v.archived, v.overlap), (8, 0));
    assert_eq!(v.report.checked, 13);
    assert!(store.verify().await.unwrap().ok());
    assert_eq!(
        youops_core::audit::archive_files(&archive).unwrap(),
        [cut.file]
    );
}

#[tokio::test]
async fn an_overlap_that_differs_from_the_archive_is_broken_and_a_stray_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let (store, _) = finished_store(&dir.path().join("store"), 4).await;
    let cut = store
        .archive_steps(1, 4, &archive, ArchiveStep::File)
        .await
        .unwrap();
    // Another chain's records in the archive: each verifies, the junction not.
    let (other, _) = finished_store(&dir.path().join("other"), 2).await;
    let foreign: Vec<String> = other
        .events(0, 4)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    std::fs::write(&cut.file, foreign.join("\n") + "\n").unwrap();
    let v = verify_all(&store, &archive).await;
    let b = v.report.broken.expect("broken");
    assert_eq!(b.seq, 4, "{b}");
    assert!(b.reason.contains("differs from the archived one"), "{b}");
    assert_eq!(v.broken_in, None);
    // A file that claims records the store does not start at is not touched.
    std::fs::remove_file(&cut.file).unwrap();
    let stray = archive.join(youops_core::audit::archive_file_name(3, 5));
    std::fs::write(&stray, "").unwrap();
    let err = store.archive(6, &archive).await.unwrap_err();
    assert!(err.to_string().contains("the store starts at #1"), "{err}");
    assert!(stray.exists());
}

#[tokio::test]
async fn a_new_store_beside_an_old_archive_directory_never_touches_the_archives() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let (old, _) = finished_store(&dir.path().join("old"), 6).await;
    let kept = old.archive(8, &archive).await.unwrap().unwrap();
    let kept_text = std::fs::read_to_string(&kept.file).unwrap();
    drop(old);
    // A new store (its #1.. are other records) pointed at the same directory.
    let (new, _) = finished_store(&dir.path().join("new"), 6).await;
    let err = new.archive(10, &archive).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("its last record is not the store's #8"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&kept.file).unwrap(), kept_text);
    assert_eq!(
        youops_core::audit::archive_files(&archive).unwrap(),
        [kept.file]
    );
    // A shorter new store: no record #8 at all.
    let (short, _) = finished_store(&dir.path().join("short"), 2).await;
    let err = short.archive(2, &archive).await.unwrap_err();
    assert!(
        err.to_string().contains("the store has no record #8"),
        "{err}"
    );
    assert_eq!(new.events(0, 1).await.unwrap()[0].seq, 1, "nothing removed");
}

#[test]
fn archive_file_names_parse_back() {
    use youops_core::audit::{archive_file_name, parse_archive_file_name};
    assert_eq!(
        parse_archive_file_name(&archive_file_name(17, 1_234_567)),
        Some((17, 1_234_567))
    );
    let big = archive_file_name(1, 10_000_000_000_000);
    assert_eq!(parse_archive_file_name(&big), Some((1, 10_000_000_000_000)));
    for bad in [
        "audit-1-2.jsonl",
        "audit-000000000001-000000000002.jsonl.tmp",
        "audit-00000000000x-000000000002.jsonl",
        "audit-000000000001.jsonl",
        "notes.txt",
    ] {
        assert_eq!(parse_archive_file_name(bad), None, "{bad}");
    }
}

/// Rounds of traffic, each archived away: sled's log file stops growing,
/// because its log cleaning (its timer thread, `gc_interval`) moves the
/// live pages out of mostly-dead segments so their space is reused. Without
/// the cleaning the file grew by about a round's worth every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_rounds_keep_the_store_file_bounded() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let archive = dir.path().join("archive");
    let store = SledStore::open_with(
        &path,
        SledOptions {
            gc_interval: Some(Duration::from_millis(20)),
            cache_capacity: 4 << 20,
            ..SledOptions::default()
        },
    )
    .unwrap();
    // Allocated bytes of sled's log file after each round.
    let mut sizes = Vec::new();
    for _round in 0..12 {
        // As a daemon writes them: each request claims a dedup key (kept
        // forever, so live pages stay spread over the log), then moves on.
        let mut pending = Vec::new();
        for i in 0..1000u32 {
            let mut r = request("round.op");
            r.provenance.insert("pad".into(), "x".repeat(400));
            r.dedup_key = Some(format!("delivery-{}-{i}", r.id));
            let opts = {
                let mut o = AppendOptions::buffered();
                o.dedup_key = r.dedup_key.clone();
                o
            };
            store.append(vec![received(&r)], opts).await.unwrap();
            pending.push(r.id);
            if pending.len() == 50 {
                let events = pending
                    .drain(..)
                    .flat_map(|id| [to(id, State::Running), to(id, State::Succeeded)])
                    .collect();
                store
                    .append(events, AppendOptions::buffered())
                    .await
                    .unwrap();
            }
        }
        store.archive(u64::MAX, &archive).await.unwrap().unwrap();
        // Give the cleaning thread a moment, as a daemon's minute would.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sizes.push(std::fs::metadata(path.join("db")).unwrap().blocks() * 512);
    }
    // Each round archives ~2 MB of events (1,000 requests). The file
    // settles at a few rounds' worth of segments and stays there (7–9 MB
    // here); without the cleaning it passed 4× its early size by round 12.
    // The margin of 2×, and taking the smallest of the last rounds, are for
    // a loaded machine, where the cleaning lags a round behind; without
    // cleaning the file only grows, so every late round is over the bound.
    let settled = sizes[..4].iter().max().copied().unwrap_or_default();
    let last = sizes[8..].iter().min().copied().unwrap_or_default();
    assert!(
        last <= settled * 2,
        "the store file kept growing: {sizes:?}"
    );
    assert!(store.verify().await.unwrap().ok());
}

#[tokio::test]
async fn blob_files_sled_writes_for_large_values_are_synced_too() {
    let dir = tempfile::tempdir().unwrap();
    released(dir.path());
    let store = SledStore::open(dir.path()).unwrap();
    // A block far above sled's inline limit (a quarter of its 512 KiB
    // segments) goes to a file of its own in `blobs/`.
    let big = NewEvent::global(EventBody::Notice {
        source: "test".into(),
        kind: "big".into(),
        message: "x".repeat(400 << 10),
        data: serde_json::Value::Null,
    });
    append(&store, vec![big]).await;
    let on_disk = names_in(&dir.path().join("blobs")).unwrap();
    assert!(!on_disk.is_empty(), "sled wrote no blob file");
    let seen = lock(&store.inner.db.sync.seen);
    for name in &on_disk {
        assert!(seen.blobs.contains(name), "{name:?} was not synced");
    }
    assert!(seen.entries.iter().any(|n| n == "db"), "{:?}", seen.entries);
}
