//! Retention: archiving old events, and every part still verifies.

use std::time::{Duration, Instant};

use youops_core::AuditEvent;

use crate::stdout;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_archives_old_events_and_every_part_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    // Retention moves whole segments: small ones, so a few requests fill some.
    let small = |text: String| {
        text.replace(
            "path = \"store\"",
            "path = \"store\"\nsegment_size = \"4KiB\"",
        )
    };
    std::fs::write(&cfg, small(config("", ""))).unwrap();
    let c = cfg.to_str().unwrap();
    let user = [("USER", CLI_USER)];
    for i in 0..5 {
        let name = format!("name=n{i}");
        let out = youops_async(&["run", "hello", &name, "--config", c], &user).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }

    // By hand: keep the newest 4 events.
    let out = youops_async(&["audit", "archive", "--keep", "4", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).starts_with("archived events #1..#"),
        "{}",
        describe(&out)
    );
    let archive_dir = dir.path().join("youops-archive");
    let archives = youops_core::audit::archive_files(&archive_dir).unwrap();
    assert_eq!(archives.len(), 1, "{archives:?}");

    // The store verifies with its archive in front, and alone.
    let out = youops_async(&["audit", "verify", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("archived in 1 file(s)"),
        "{}",
        describe(&out)
    );
    let out = youops_async(&["audit", "export", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let live = dir.path().join("live.jsonl");
    std::fs::write(&live, &out.stdout).unwrap();
    let first_live: AuditEvent =
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert!(first_live.seq > 1);
    let (a, l) = (archives[0].to_str().unwrap(), live.to_str().unwrap());
    for files in [vec![l], vec![a], vec![a, l]] {
        let mut args = vec!["audit", "verify"];
        for f in &files {
            args.extend(["--file", f]);
        }
        let out = youops_async(&args, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{files:?}: {}", describe(&out));
    }
    // Out of order, the pieces do not chain.
    let out = youops_async(&["audit", "verify", "--file", l, "--file", a], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // A record altered inside the archive is found, and the file named.
    let original = std::fs::read_to_string(&archives[0]).unwrap();
    std::fs::write(&archives[0], original.replacen("n1", "n9", 1)).unwrap();
    let out = youops_async(&["audit", "verify", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stdout(&out).contains("BROKEN") && stdout(&out).contains("audit-000000000001-"),
        "{}",
        describe(&out)
    );
    std::fs::write(&archives[0], original).unwrap();

    // The daemon archives by itself past `retain_events` (at start, then every
    // minute), whole segments: enough requests to seal some past the newest 2.
    for i in 5..15 {
        let name = format!("name=n{i}");
        let out = youops_async(&["run", "hello", &name, "--config", c], &user).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let text =
        small(config("", "")).replace("path = \"store\"", "path = \"store\"\nretain_events = 2");
    std::fs::write(&cfg, text).unwrap();
    let served = Served::spawn(&cfg, dir.path().join("daemon.log")).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while youops_core::audit::archive_files(&archive_dir)
        .unwrap()
        .len()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the daemon did not archive: {}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Killed (SIGKILL), perhaps in the middle of moving a segment: the chain
    // still verifies with its archives (the store's tests cut every step).
    drop(served);
    let files = youops_core::audit::archive_files(&archive_dir)
        .unwrap()
        .len();
    let out = youops_async(&["audit", "verify", "--config", c], &user).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("archived in {files} file(s)")),
        "{}",
        describe(&out)
    );
}
