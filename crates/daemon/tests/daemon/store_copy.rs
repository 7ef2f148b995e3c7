//! `youops store copy`: a verified chain from a log store (and, with the
//! `sled` feature, from a sled store) into a new log store or an empty
//! PostgreSQL database, whole or after archived records, with the records and
//! dedup claims its `received` events carry.

use std::path::Path;
use std::process::Command;

use youops::store_cmd::{copy, Progress, StoreLocation};
use youops_core::audit::conformance::build::{keyed, keyed_request, received, to};
use youops_core::audit::{AppendOptions, AuditStore};
use youops_core::model::{Request, State};
use youops_store::{LogOptions, LogStore};

/// `n` finished requests, each claiming `key-<i>` as the executor does (the
/// `received` event carries the key), then one still running.
async fn fill(store: &dyn AuditStore, n: usize) -> Vec<Request> {
    let mut reqs = Vec::new();
    for i in 0..n {
        let key = format!("key-{i}");
        let r = keyed_request(&format!("op{i}"), &key);
        store.append(vec![received(&r)], keyed(&key)).await.unwrap();
        let done = vec![to(r.id, State::Running), to(r.id, State::Succeeded)];
        store.append(done, AppendOptions::durable()).await.unwrap();
        reqs.push(r);
    }
    let r = keyed_request("running", "key-live");
    store
        .append(vec![received(&r)], keyed("key-live"))
        .await
        .unwrap();
    store
        .append(vec![to(r.id, State::Running)], AppendOptions::durable())
        .await
        .unwrap();
    reqs.push(r);
    reqs
}

fn log(p: &Path) -> StoreLocation {
    StoreLocation::Log(p.to_path_buf())
}

/// Open a store, waiting while the copy's last handle is still being torn
/// down (a store holds its lock until its background work lets go of it).
async fn open_released(path: &Path) -> LogStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match LogStore::open(path, LogOptions::default()) {
            Ok(s) => return s,
            Err(youops_core::audit::StoreError::Locked(_))
                if std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open {}: {e}", path.display()),
        }
    }
}

/// Open the copy and check it against what the source said.
async fn check_copy(to: &Path, head: &(u64, String), reqs: &[Request], copied_from: usize) {
    let dest = open_released(to).await;
    check_store(&dest, head, reqs, copied_from).await;
}

/// Check a copy against what the source said: its head, that it verifies,
/// the records and claims of the requests received from `copied_from` on.
async fn check_store(
    dest: &dyn AuditStore,
    head: &(u64, String),
    reqs: &[Request],
    copied_from: usize,
) {
    assert_eq!(&dest.head().await.unwrap(), head);
    let v = dest.verify().await.unwrap();
    assert!(v.ok(), "{v:?}");
    for (i, r) in reqs.iter().enumerate() {
        let key = if i + 1 == reqs.len() {
            "key-live".to_string()
        } else {
            format!("key-{i}")
        };
        let (claim, record) = (
            dest.find_dedup(&key).await.unwrap(),
            dest.request(r.id).await.unwrap(),
        );
        if i < copied_from {
            // Received before the copied chain: in the source's archive only.
            assert_eq!(claim, None, "{key}");
            assert!(record.is_none(), "{key}");
        } else {
            assert_eq!(claim, Some(r.id), "{key}");
            let record = record.expect("a record");
            let want = if i + 1 == reqs.len() {
                State::Running
            } else {
                State::Succeeded
            };
            assert_eq!(record.state, want, "{key}");
        }
    }
    let active = dest.active_requests().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].request.id, reqs.last().unwrap().id);
}

#[tokio::test]
async fn a_log_store_copies_into_a_new_log_store() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from"), dir.path().join("to"));
    let (reqs, head) = {
        let src = LogStore::open(&from, LogOptions::default()).unwrap();
        let reqs = fill(&src, 700).await;
        (reqs, src.head().await.unwrap())
    };
    let mut progress = Progress::new(Vec::new(), false);
    let summary = copy(&log(&from), &log(&to), &mut progress).await.unwrap();
    assert_eq!(summary.events, 2102);
    assert_eq!((summary.head_seq, &summary.head_hash), (head.0, &head.1));
    assert_eq!((summary.requests, summary.claims), (701, 701));
    assert_eq!(summary.starts_at_checkpoint, None);
    let text = String::from_utf8(progress.into_inner()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"copied 1000 of 2102 events (47%)"));
    assert_eq!(lines.last(), Some(&"copied 2102 of 2102 events (100%)"));
    check_copy(&to, &head, &reqs, 0).await;

    // Refused: a destination that is not empty, the same place, no store.
    let mut sink = Progress::new(Vec::new(), false);
    let e = copy(&log(&from), &log(&to), &mut sink).await.unwrap_err();
    assert!(e.message.contains("not empty"), "{}", e.message);
    let e = copy(&log(&from), &log(&from), &mut sink).await.unwrap_err();
    assert!(e.message.contains("same directory"), "{}", e.message);
    let e = copy(
        &log(&dir.path().join("nothing")),
        &log(&dir.path().join("x")),
        &mut sink,
    )
    .await
    .unwrap_err();
    assert!(e.message.contains("no log store"), "{}", e.message);
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn a_log_store_that_archived_its_beginning_copies_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to, archive) = (
        dir.path().join("from"),
        dir.path().join("to"),
        dir.path().join("archive"),
    );
    let (reqs, head, live_start) = {
        let mut o = LogOptions::default();
        o.segment_bytes = 8 << 10;
        let src = LogStore::open(&from, o).unwrap();
        let reqs = fill(&src, 60).await;
        // Whole segments go: the live chain starts where one began.
        let report = src.archive(90, &archive).await.unwrap().expect("archived");
        let live_start = report.through_seq + 1;
        (reqs, src.head().await.unwrap(), live_start)
    };
    assert!(live_start > 1 && live_start <= 91, "{live_start}");
    let mut progress = Progress::new(Vec::new(), false);
    let summary = copy(&log(&from), &log(&to), &mut progress).await.unwrap();
    assert_eq!(summary.starts_at_checkpoint, Some(live_start));
    assert_eq!(summary.first_seq, live_start);
    assert_eq!(summary.events, head.0 - live_start + 1);
    assert!(summary.to_string().contains("were not copied"), "{summary}");
    // Requests are three events each: those received before the live start
    // stay in the archive (an event of one straddling it derives nothing).
    let copied_from = usize::try_from((live_start - 1).div_ceil(3)).unwrap();
    check_copy(&to, &head, &reqs, copied_from).await;
}

#[test]
fn the_cli_copies_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from"), dir.path().join("to"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let head = rt.block_on(async {
        let src = LogStore::open(&from, LogOptions::default()).unwrap();
        fill(&src, 3).await;
        src.head().await.unwrap()
    });
    let out = Command::new(env!("CARGO_BIN_EXE_youops"))
        .args(["store", "copy", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(format!("log:{}", to.display()))
        .env("YOUOPS_CONFIG", dir.path().join("no-config.toml"))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("copied 11 events (#1..=#11)"), "{stdout}");
    assert!(stdout.contains(&head.1), "{stdout}");
    assert!(stderr.contains("copied 11 of 11 events (100%)"), "{stderr}");
    // A second copy into the same place is refused with a usage error.
    let again = Command::new(env!("CARGO_BIN_EXE_youops"))
        .args(["store", "copy", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(&to)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    // sled:PATH says how to get sled, or is taken; postgres:// is not supported.
    let sled = Command::new(env!("CARGO_BIN_EXE_youops"))
        .args(["store", "copy", "--from", "sled:/nonexistent", "--to"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&sled.stderr);
    if cfg!(feature = "sled") {
        assert!(err.contains("no sled store"), "{err}");
    } else {
        assert!(err.contains("--features sled"), "{err}");
    }
    // postgres:// is taken (here a server that is not there), or says it
    // is not compiled in; a sled destination is refused.
    let pg = Command::new(env!("CARGO_BIN_EXE_youops"))
        .args([
            "store",
            "copy",
            "--from",
            "postgres://nowhere.invalid/youops",
            "--to",
        ])
        .arg(dir.path().join("p"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&pg.stderr);
    if cfg!(feature = "postgres") {
        assert!(
            err.contains("cannot open postgres://nowhere.invalid"),
            "{err}"
        );
    } else {
        assert!(err.contains("not compiled in"), "{err}");
    }
    let to_sled = Command::new(env!("CARGO_BIN_EXE_youops"))
        .args(["store", "copy", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(format!("sled:{}", dir.path().join("s").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&to_sled.stderr);
    assert_ne!(to_sled.status.code(), Some(0), "{err}");
    assert!(!dir.path().join("s").exists());
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use youops_core::model::{RequestFilter, RequestRecord};
    use youops_store_postgres::{PgOptions, PgStore};
    use youops_testkit::pg::PgCluster;

    fn cluster() -> PgCluster {
        PgCluster::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
    }

    /// Every record, newest first.
    async fn all_records(store: &dyn AuditStore) -> Vec<RequestRecord> {
        let mut out: Vec<RequestRecord> = Vec::new();
        loop {
            let before = out.last().map(|r| r.request.id);
            let page = store
                .list_requests(&RequestFilter::default(), before, 300)
                .await
                .unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_store_copies_into_an_empty_postgres_database() {
        let cluster = cluster();
        let url = cluster.create_database();
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let (reqs, head) = {
            let src = LogStore::open(&from, LogOptions::default()).unwrap();
            let reqs = fill(&src, 400).await;
            (reqs, src.head().await.unwrap())
        };
        let to: StoreLocation = url.parse().unwrap();
        let mut progress = Progress::new(Vec::new(), false);
        let summary = copy(&log(&from), &to, &mut progress).await.unwrap();
        assert_eq!((summary.events, summary.first_seq), (1202, 1));
        assert_eq!((summary.head_seq, &summary.head_hash), (head.0, &head.1));
        assert_eq!((summary.requests, summary.claims), (401, 401));
        let text = String::from_utf8(progress.into_inner()).unwrap();
        assert_eq!(
            text.lines().last(),
            Some("copied 1202 of 1202 events (100%)")
        );

        let dest = PgStore::open(&url, PgOptions::default()).await.unwrap();
        check_store(&dest, &head, &reqs, 0).await;
        assert_eq!(dest.verify().await.unwrap().checked, 1202);
        let src = open_released(&from).await;
        let records = all_records(&dest).await;
        assert_eq!(records.len(), 401);
        assert_eq!(records, all_records(&src).await);
        for r in &reqs {
            assert_eq!(
                dest.request(r.id).await.unwrap(),
                src.request(r.id).await.unwrap()
            );
        }
        drop(src);

        // A second copy into the database, which now holds events: refused,
        // and the database is untouched.
        let mut sink = Progress::new(Vec::new(), false);
        let e = copy(&log(&from), &to, &mut sink).await.unwrap_err();
        assert_eq!(e.code, 2, "{}", e.message);
        assert!(e.message.contains("not empty"), "{}", e.message);
        assert_eq!(dest.head().await.unwrap(), head);
        assert!(dest.verify().await.unwrap().ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_store_that_archived_its_beginning_copies_into_postgres() {
        let cluster = cluster();
        let url = cluster.create_database();
        let dir = tempfile::tempdir().unwrap();
        let (from, archive) = (dir.path().join("from"), dir.path().join("archive"));
        let (reqs, head, live_start) = {
            let mut o = LogOptions::default();
            o.segment_bytes = 8 << 10;
            let src = LogStore::open(&from, o).unwrap();
            let reqs = fill(&src, 60).await;
            let report = src.archive(90, &archive).await.unwrap().expect("archived");
            (reqs, src.head().await.unwrap(), report.through_seq + 1)
        };
        let to: StoreLocation = url.parse().unwrap();
        let mut progress = Progress::new(Vec::new(), false);
        let summary = copy(&log(&from), &to, &mut progress).await.unwrap();
        assert_eq!(summary.starts_at_checkpoint, Some(live_start));
        assert_eq!(summary.events, head.0 - live_start + 1);
        let dest = PgStore::open(&url, PgOptions::default()).await.unwrap();
        let copied_from = usize::try_from((live_start - 1).div_ceil(3)).unwrap();
        check_store(&dest, &head, &reqs, copied_from).await;
        let v = dest.verify().await.unwrap();
        assert_eq!(v.starts_at_checkpoint, Some(live_start));
        // The archive verifies in front of the copy.
        let files = youops_core::audit::archive_files(&archive).unwrap();
        let all = youops_core::audit::verify_with_archives(&dest, &files)
            .await
            .unwrap();
        assert!(all.report.ok(), "{all:?}");
        assert_eq!(all.report.checked, head.0);
    }
}

#[cfg(feature = "sled")]
mod sled {
    use super::*;
    use youops_store_sled::SledStore;

    fn sled(p: &Path) -> StoreLocation {
        StoreLocation::Sled(p.to_path_buf())
    }

    /// Wait until the sled store in `dir` is closed for good: sled's IO
    /// threads hold its file lock (an `flock` of `db`) a moment after its
    /// last handle is dropped. (The CLI opens it in a new process.)
    fn released(dir: &Path) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let f = std::fs::File::open(dir.join("db")).unwrap();
            match f.try_lock() {
                Ok(()) => return,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("{} stays locked: {e}", dir.display()),
            }
        }
    }

    #[tokio::test]
    async fn a_sled_store_copies_into_a_new_log_store() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("sled"), dir.path().join("log"));
        let (reqs, head) = {
            let src = SledStore::open(&from).unwrap();
            let reqs = fill(&src, 400).await;
            (reqs, src.head().await.unwrap())
        };
        released(&from);
        let mut progress = Progress::new(Vec::new(), true);
        let summary = copy(&sled(&from), &log(&to), &mut progress).await.unwrap();
        assert_eq!((summary.events, summary.head_seq), (1202, 1202));
        let text = String::from_utf8(progress.into_inner()).unwrap();
        assert_eq!(
            text,
            "\rcopied 0 of 1202 events\rcopied 1000 of 1202 events\rcopied 1202 of 1202 events\n"
        );
        check_copy(&to, &head, &reqs, 0).await;
        // The source is untouched and still a sled store.
        released(&from);
        let src = SledStore::open(&from).unwrap();
        assert_eq!(src.head().await.unwrap(), head);
    }

    #[tokio::test]
    async fn a_sled_store_that_archived_its_beginning_copies_from_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to, archive) = (
            dir.path().join("sled"),
            dir.path().join("log"),
            dir.path().join("archive"),
        );
        let (reqs, head) = {
            let src = SledStore::open(&from).unwrap();
            let reqs = fill(&src, 30).await;
            // The first 10 requests (30 events) go to the archive.
            let r = src.archive(30, &archive).await.unwrap().expect("archived");
            assert_eq!(r.through_seq, 30);
            (reqs, src.head().await.unwrap())
        };
        released(&from);
        let mut progress = Progress::new(Vec::new(), false);
        let summary = copy(&sled(&from), &log(&to), &mut progress).await.unwrap();
        assert_eq!(summary.starts_at_checkpoint, Some(31));
        assert_eq!(summary.events, head.0 - 30);
        assert_eq!(summary.orphan_events, 0);
        check_copy(&to, &head, &reqs, 10).await;
        // The archive verifies in front of the copy, as in front of the source.
        let dest = open_released(&to).await;
        let files = youops_core::audit::archive_files(&archive).unwrap();
        let all = youops_core::audit::verify_with_archives(&dest, &files)
            .await
            .unwrap();
        assert!(all.report.ok(), "{all:?}");
        assert_eq!(all.report.checked, head.0);
    }

    #[tokio::test]
    async fn the_store_the_patched_sled_fork_wrote_copies_into_a_log_store() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../store-sled/tests/fixtures/forkstore.tgz");
        let status = Command::new("tar")
            .arg("xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let from = dir.path().join("data/youops-store");
        let to = dir.path().join("log");
        let mut progress = Progress::new(Vec::new(), false);
        let summary = copy(&sled(&from), &log(&to), &mut progress).await.unwrap();
        let head = "385c1237d49b242e639e4938bb809ba26e31668358b761f8c8afd0775ffc7182";
        assert_eq!((summary.events, summary.head_seq), (9, 9));
        assert_eq!(summary.head_hash, head);
        let dest = open_released(&to).await;
        assert_eq!(dest.head().await.unwrap(), (9, head.to_string()));
        assert!(dest.verify().await.unwrap().ok());
    }
}
