//! The sled store on real files: a store written by the patched sled fork
//! YouOps used before opens with the crates.io sled, a killed process keeps
//! every acknowledged append, and the store appends like the memory store.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use youops_core::audit::conformance::build::{received, request, to};
use youops_core::audit::{expected_hash, AppendOptions, AuditStore, MemoryStore};
use youops_core::model::{EventBody, State};
use youops_store_sled::SledStore;

/// Open a store, retrying while the last handle of an earlier one is still
/// being torn down (sled's IO threads hold its file lock until they finish).
async fn reopen(path: &Path) -> SledStore {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match SledStore::open(path) {
            Ok(s) => return s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot reopen {}: {e}", path.display()),
        }
    }
}

/// `tests/fixtures/forkstore.tgz`: a store of 9 events written by the sled
/// fork YouOps patched (three changes to how sled writes its log; see the
/// history of `vendor/sled`), unpacked into `into` as `data/youops-store`.
fn unpack_fork_store(into: &Path) -> std::path::PathBuf {
    let tgz = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/forkstore.tgz");
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(into)
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar xzf {}", tgz.display());
    into.join("data/youops-store")
}

#[tokio::test]
async fn a_store_written_by_the_patched_fork_opens_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = unpack_fork_store(dir.path());
    let head = "385c1237d49b242e639e4938bb809ba26e31668358b761f8c8afd0775ffc7182";
    {
        let store = SledStore::open(&path).expect("crates.io sled opens the fork's store");
        assert_eq!(store.head().await.unwrap(), (9, head.to_string()));
        let report = store.verify().await.unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.checked, report.head_seq), (9, 9));
        let events = store.events(0, usize::MAX).await.unwrap();
        assert_eq!(events.len(), 9);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.hash, expected_hash(e));
        }
        // Its records read back from the fork's tree.
        for e in &events {
            if let (EventBody::Received { request }, Some(id)) = (&e.body, e.request_id) {
                let r = store.request(id).await.unwrap().expect("a record");
                assert_eq!(r.request.op, request.op);
            }
        }
        // And it takes appends, durably, on the crates.io sled.
        let r = request("after-the-fork");
        let stored = store
            .append(vec![received(&r)], AppendOptions::durable())
            .await
            .unwrap();
        assert_eq!(stored[0].seq, 10);
        assert_eq!(stored[0].prev_hash, head);
    }
    let store = reopen(&path).await;
    let report = store.verify().await.unwrap();
    assert!(report.ok() && report.head_seq == 10, "{report:?}");
}

#[tokio::test]
async fn appends_like_the_memory_store() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    let mem = MemoryStore::new();
    let r = request("op");
    let script = [
        vec![received(&r), to(r.id, State::Running)],
        vec![to(r.id, State::Succeeded)],
    ];
    for events in script {
        let m = mem
            .append(events.clone(), AppendOptions::durable())
            .await
            .unwrap();
        let s = sled.append(events, AppendOptions::durable()).await.unwrap();
        // The same events (times, and so hashes, differ), each hashed by the
        // chain rule over its canonical bytes.
        for (m, s) in m.iter().zip(&s) {
            assert_eq!(
                (m.seq, &m.request_id, &m.body),
                (s.seq, &s.request_id, &s.body)
            );
            assert_eq!(m.hash, expected_hash(m));
            assert_eq!(s.hash, expected_hash(s));
        }
    }
    let (m, s) = (
        mem.request(r.id).await.unwrap().unwrap(),
        sled.request(r.id).await.unwrap().unwrap(),
    );
    assert_eq!((m.state, m.last_seq), (s.state, s.last_seq));
    assert_eq!(s.last_hash, sled.head().await.unwrap().1);
}

/// The child of [`a_killed_process_keeps_every_acknowledged_append`]: append
/// durably forever, printing each acknowledged seq.
const CHILD_ENV: &str = "YOUOPS_SLED_KILL_CHILD";

fn child(path: &Path) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(SledStore::open(path).unwrap());
        let mut tasks = Vec::new();
        // Concurrent appenders: group commits of several appends each.
        for t in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let r = request(&format!("t{t}.{i}"));
                    let stored = store
                        .append(
                            vec![received(&r), to(r.id, State::Succeeded)],
                            AppendOptions::durable(),
                        )
                        .await
                        .unwrap();
                    println!("acked {}", stored[1].seq);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    std::process::exit(0)
}

#[test]
fn a_killed_process_keeps_every_acknowledged_append() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&path));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    for round in 0..3 {
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "files::a_killed_process_keeps_every_acknowledged_append",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(proc.stdout.take().unwrap()).lines();
        let mut acked = 0u64;
        let started = Instant::now();
        // Kill it after a varying number of acknowledgements.
        let want = 50 + round * 120;
        while acked < want && started.elapsed() < Duration::from_secs(60) {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(seq) = l.strip_prefix("acked ") {
                        acked = acked.max(seq.trim().parse().unwrap());
                    }
                }
                _ => break,
            }
        }
        proc.kill().unwrap();
        // Acknowledged before the kill, and printed since: read the rest.
        for l in lines.map_while(Result::ok) {
            if let Some(seq) = l.strip_prefix("acked ") {
                acked = acked.max(seq.trim().parse().unwrap());
            }
        }
        let _ = proc.wait();
        assert!(acked >= want, "round {round}: only {acked} acknowledged");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = SledStore::open(&path).unwrap();
            let (head, _) = store.head().await.unwrap();
            assert!(
                head >= acked,
                "round {round}: head #{head}, #{acked} was acknowledged"
            );
            let report = store.verify().await.unwrap();
            assert!(report.ok() && report.head_seq == head, "{report:?}");
            // Every request whose events were acknowledged has its record.
            let events = store.events(0, usize::MAX).await.unwrap();
            for e in events.iter().filter(|e| e.seq <= acked) {
                if let Some(id) = e.request_id {
                    assert!(store.request(id).await.unwrap().is_some(), "#{}", e.seq);
                }
            }
        });
    }
}

/// The child of [`every_acknowledged_append_is_fdatasynced_under_strace`]:
/// `APPENDS` sequential durable appends, each acknowledgement printed.
const STRACE_CHILD_ENV: &str = "YOUOPS_SLED_STRACE_CHILD";
const APPENDS: u64 = 100;

fn strace_child(path: &Path) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SledStore::open(path).unwrap();
        for i in 0..APPENDS {
            let r = request(&format!("op{i}"));
            let stored = store
                .append(vec![received(&r)], AppendOptions::durable())
                .await
                .unwrap();
            println!("acked {}", stored[0].seq);
        }
    });
    std::process::exit(0)
}

/// Under `strace -f`, every durable append is acknowledged only after an
/// `fdatasync` of sled's data file that returned after the append was
/// applied: between two acknowledgements (and before the first) there is a
/// completed `fdatasync(<dir>/db)`. sled's own flush is a `sync_file_range`,
/// which syncs neither the file's metadata nor the disk's cache.
#[test]
fn every_acknowledged_append_is_fdatasynced_under_strace() {
    if let Some(path) = std::env::var_os(STRACE_CHILD_ENV) {
        strace_child(Path::new(&path));
    }
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("strace is missing: scripts/test.sh installs it (apt-get install strace)");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let trace = dir.path().join("strace.out");
    let out = Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-y",
            "-e",
            "trace=fdatasync,fsync,sync_file_range,write",
            "-o",
        ])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "files::every_acknowledged_append_is_fdatasynced_under_strace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(STRACE_CHILD_ENV, &path)
        .output()
        .expect("spawn strace");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let db = format!("{}/db>", path.display());
    // Per thread: the syscall it has in flight (strace splits a call that
    // another thread's call interrupts into `<unfinished ...>` and `<...
    // resumed>`).
    let mut pending: std::collections::HashMap<&str, bool> = Default::default();
    let (mut acks, mut synced_since_ack, mut fdatasyncs, mut ranges) = (0u64, false, 0u64, 0u64);
    for line in text.lines() {
        let (pid, call) = line.split_once(' ').unwrap_or(("", line));
        let call = call.trim_start();
        let db_sync = |c: &str| c.starts_with("fdatasync(") && c.contains(&db);
        let done = if let Some(rest) = call.strip_prefix("<... fdatasync resumed>") {
            pending.remove(pid).unwrap_or(false) && rest.ends_with("= 0")
        } else if db_sync(call) && call.ends_with("<unfinished ...>") {
            pending.insert(pid, true);
            false
        } else {
            db_sync(call) && call.ends_with("= 0")
        };
        if done {
            fdatasyncs += 1;
            synced_since_ack = true;
        }
        if call.starts_with("sync_file_range(") && call.contains(&db) {
            ranges += 1;
        }
        if call.starts_with("write(1") && call.contains("\"acked ") {
            assert!(
                synced_since_ack,
                "acknowledgement #{} without an fdatasync of {db} since the last one:\n{text}",
                acks + 1
            );
            acks += 1;
            synced_since_ack = false;
        }
    }
    println!(
        "{acks} durable appends acknowledged; fdatasync({db}) completed {fdatasyncs} times; \
         sled's sync_file_range on it {ranges} times"
    );
    assert_eq!(acks, APPENDS, "{text}");
    assert!(fdatasyncs >= APPENDS, "{text}");
}
