//! Durability, checked at the syscalls, and old sled stores refused.

use std::os::unix::process::CommandExt as _;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// Under `strace -f`, 100 sequential API requests to `youops serve` make at
/// least one `fdatasync`/`fsync` each (every request is acknowledged only
/// after its `received` group is synced), and no `sync_file_range` (what
/// sled's flush was: it syncs neither metadata nor the disk's cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_request_is_fdatasynced_under_strace() {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("strace is missing: scripts/test.sh installs it (apt-get install strace)");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", "")).unwrap();
    let trace = dir.path().join("strace.out");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = std::process::Command::new(strace)
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=fdatasync,fsync,sync_file_range",
            "-o",
        ])
        .arg(&trace)
        .arg(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("spawn strace");
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_healthy(&api).await;
    let count = |name: &str| {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(" {name}(")) || l.starts_with(&format!("{name}(")))
            .count()
    };
    let before = count("fdatasync") + count("fsync");
    for i in 0..100 {
        let (st, v) = api
            .submit(
                ALICE,
                "hello",
                json!({ "name": format!("n{i}") }),
                Some("10s"),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert_eq!(state_of(&v), "succeeded", "{v}");
    }
    let syncs = count("fdatasync") + count("fsync") - before;
    // strace and the daemon it traces share a process group: stop both.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        syncs >= 100,
        "{syncs} syncs for 100 acknowledged requests:\n{text}"
    );
    assert_eq!(count("sync_file_range"), 0, "sync_file_range in:\n{text}");
}

/// A `[store] path` that holds a sled store of an earlier version is refused
/// with the command that moves it, and never started again at genesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_sled_store_is_refused_with_the_copy_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", "")).unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("blobs")).unwrap();
    std::fs::write(store.join("conf"), "segment_size: 524288\n").unwrap();
    std::fs::write(store.join("db"), [0u8; 64]).unwrap();
    let port = free_port().to_string();
    let c = cfg.to_str().unwrap();
    let listen = format!("127.0.0.1:{port}");
    for args in [
        vec!["serve", "--config", c, "--listen", &listen],
        vec!["--config", c, "audit", "list"],
    ] {
        let out = youops_async(&args, &[]).await;
        assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("holds a sled audit store"),
            "{}",
            describe(&out)
        );
        assert!(
            err.contains("youops store copy --from sled:"),
            "{}",
            describe(&out)
        );
    }
    // Nothing of a new store was written beside the old one.
    let mut names: Vec<String> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["blobs", "conf", "db"]);
}
