//! Retention on one node, verified from another: the archive table holds
//! what the archive file holds, every node verifies across it, reads it,
//! archives further, and finds a tampered archived row. Retention fenced by
//! the leader's epoch: a leader whose lease was taken over archives nothing.

use std::sync::Arc;
use std::time::Duration;

use youops_core::audit::{archive_files, verify_with_archives, AppendOptions, AuditStore};
use youops_core::model::State;
use youops_store_postgres::coord::is_fenced;

use crate::support::{
    admin, all_events, cluster, join, leads_within, notice, open, received, request, to,
};

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

const TTL: Duration = Duration::from_secs(2);
const MARGIN: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_was_taken_over_cannot_archive_under_its_old_epoch() {
    let cluster = cluster();
    let url = cluster.create_database();
    let (sa, sb) = (open(&url).await, open(&url).await);
    let (a, b) = (join(&sa, "a").await, join(&sb, "b").await);
    let campaign_a = a.campaign(TTL, MARGIN).unwrap();
    let e1 = leads_within(&campaign_a.leadership(), 10).await;
    let mut finished = Vec::new();
    for node in [&sa, &sb, &sa] {
        let r = request("ops.old");
        node.append(
            vec![received(&r), to(r.id, State::Succeeded)],
            AppendOptions::durable(),
        )
        .await
        .unwrap();
        finished.push(r.id);
    }
    sa.append(vec![notice("tip")], AppendOptions::durable())
        .await
        .unwrap();

    // A archives as the leader, and is cut short after its checkpoint (a
    // crash): the file and the checkpoint are there, the events not moved.
    let dir = tempfile::tempdir().unwrap();
    sa.faults().cut_archives_after_checkpoint(1);
    let cut = sa
        .archive_as(u64::MAX, dir.path(), Some(e1))
        .await
        .expect_err("cut short");
    assert!(!is_fenced(&cut), "{cut}");
    assert_eq!(archive_files(dir.path()).unwrap().len(), 1);

    // B takes the lease over, under a new epoch.
    campaign_a.resign().await.unwrap();
    let campaign_b = b.campaign(TTL, MARGIN).unwrap();
    let e2 = leads_within(&campaign_b.leadership(), 10).await;
    assert!(e2 > e1);
    let live = all_events(&*sa).await;

    // Under its old epoch A can neither finish its archive (the move is
    // refused in its own transaction) nor archive anew (the checkpoint is
    // refused, and its file removed again): nothing moves.
    let refused = sa
        .archive_as(u64::MAX, dir.path(), Some(e1))
        .await
        .expect_err("finishing the move under an old epoch");
    assert!(is_fenced(&refused), "{refused}");
    let other = tempfile::tempdir().unwrap();
    let refused = sa
        .archive_as(u64::MAX, other.path(), Some(e1))
        .await
        .expect_err("a new archive under an old epoch");
    assert!(is_fenced(&refused), "{refused}");
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0);
    assert_eq!(all_events(&*sb).await, live, "nothing moved or appended");
    assert!(sb.archived_events(0, 100).await.unwrap().is_empty());
    for id in &finished {
        assert!(
            sb.request(*id).await.unwrap().is_some(),
            "records untouched"
        );
    }
    assert_eq!(archive_files(dir.path()).unwrap().len(), 1, "kept");

    // The current leader can: it finishes the cut archive (its checkpoint
    // is in the chain) and archives the rest.
    let report = sb
        .archive_as(u64::MAX, dir.path(), Some(e2))
        .await
        .unwrap()
        .expect("archived");
    assert_eq!(report.first_seq, 7, "after the finished move: {report:?}");
    let archived = sb.archived_events(0, 100).await.unwrap();
    assert_eq!(archived.len() as u64, report.through_seq);
    for id in &finished {
        assert!(sa.request(*id).await.unwrap().is_none(), "records removed");
    }
    let files = archive_files(dir.path()).unwrap();
    assert_eq!(files.len(), 2);
    let both = verify_with_archives(&*sa as &dyn AuditStore, &files)
        .await
        .unwrap();
    assert!(both.report.ok(), "{:?}", both.report);
}
