//! Retention (section 9): whole segments moved into an archive directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use youops_core::audit::{
    archive_file_name, archive_files, parse_archive_file_name, verify_with_archives, AppendOptions,
    AuditStore, ChainVerifier,
};
use youops_core::model::{AuditEvent, EventBody, Request, State};
use youops_store::fs::{FaultFs, SimFs, StdFs};
use youops_store::LogStore;

use crate::support::{
    all_events, append, assert_verifies, line_of, log_names, notice, open, received, request,
    sim_open, small, to,
};
// --------------------------------------------------------------- 9. retention

/// A request in flight from the start (#1, #2), then `done` finished requests
/// (two events each), then a notice.
async fn retention_store(store: &LogStore, done: usize) -> (Request, Vec<Request>) {
    let flight = request("long");
    append(
        store,
        vec![received(&flight), to(flight.id, State::Running)],
    )
    .await;
    let reqs: Vec<Request> = (0..done).map(|i| request(&format!("op{i}"))).collect();
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
            let r = request(&format!("round{round}.op{i}"));
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
    let flight = request("long");
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
