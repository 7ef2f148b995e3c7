//! Retention on one node, verified from another: the archive table holds
//! what the archive file holds, every node verifies across it, reads it,
//! archives further, and finds a tampered archived row.

use std::sync::Arc;

use youops_core::audit::{archive_files, verify_with_archives, AppendOptions, AuditStore};
use youops_core::model::State;

use crate::support::{admin, all_events, cluster, notice, open, received, request, to};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_node_reads_and_verifies_the_archive() {
    let cluster = cluster();
    let url = cluster.create_database();
    let a = open(&url).await;
    let b = open(&url).await;
    for node in [&a, &b, &a, &b, &a] {
        let r = request("ops.old");
        node.append(
            vec![received(&r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await
        .unwrap();
    }
    let flight = request("ops.long");
    b.append(
        vec![received(&flight), to(flight.id, State::Running)],
        AppendOptions::durable(),
    )
    .await
    .unwrap();
    a.append(vec![notice("last")], AppendOptions::durable())
        .await
        .unwrap();
    let before = all_events(&*a).await;
    assert_eq!(before.len(), 13);

    let dir_a = tempfile::tempdir().unwrap();
    let report = a
        .archive(u64::MAX, dir_a.path())
        .await
        .unwrap()
        .expect("archived");
    // The request in flight (#11 on) stays.
    assert_eq!(
        (report.first_seq, report.through_seq, report.checkpoint_seq),
        (1, 10, 14)
    );
    assert_eq!(report.records_removed, 5);

    // Node B: the archive table holds exactly the file's events.
    let archived = b.archived_events(0, 100).await.unwrap();
    assert_eq!(archived, before[..10]);
    let file = std::fs::read_to_string(&report.file).unwrap();
    let lines: String = archived
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    assert_eq!(file, lines);
    let v = b.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    assert_eq!(
        (v.checked, v.head_seq, v.starts_at_checkpoint),
        (4, 14, Some(11))
    );
    let files = archive_files(dir_a.path()).unwrap();
    let both = verify_with_archives(&*b as &dyn AuditStore, &files)
        .await
        .unwrap();
    assert!(both.report.ok() && both.archived == 10, "{:?}", both.report);
    assert_eq!(b.request_events(flight.id).await.unwrap().len(), 2);

    // Node B archives the rest, into a directory of its own.
    b.append(
        vec![to(flight.id, State::Succeeded)],
        AppendOptions::durable(),
    )
    .await
    .unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let second = b
        .archive(u64::MAX, dir_b.path())
        .await
        .unwrap()
        .expect("archived again");
    assert_eq!((second.first_seq, second.through_seq), (11, 14));
    // The request's last event (#15) is live: its record stays.
    assert_eq!(second.records_removed, 0);
    assert!(a.request(flight.id).await.unwrap().is_some());
    for node in [&a, &b] {
        let v = node.verify().await.unwrap();
        assert!(v.ok() && v.starts_at_checkpoint == Some(15), "{v:?}");
    }
    assert_eq!(a.archived_events(0, 100).await.unwrap().len(), 14);

    // A tampered archived row is found, by any node.
    let c = admin(&url).await;
    c.execute(
        "UPDATE archive SET canonical = convert_to(replace(convert_from(canonical, 'UTF8'), 'ops.old', 'ops.new'), 'UTF8') WHERE seq = 3",
        &[],
    )
    .await
    .unwrap();
    let v = Arc::clone(&a).verify().await.unwrap();
    let broken = v.broken.expect("a tampered archive row is found");
    assert_eq!(broken.seq, 3, "{broken}");
    assert!(broken.reason.contains("archive table"), "{broken}");
}
