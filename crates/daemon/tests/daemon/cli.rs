//! The CLI: config check, local mode, and against a running daemon.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/youops.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_config_check() {
    let qs = quickstart();
    let out = youops_async(&["config", "check", qs.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config("", "")
            .replace("default_timeout = \"2m\"", "default_timeout = \"soon\"")
            .replace(
                "values = [\"eu\", \"us\", \"ap\"]",
                "values = []\nflavour = 1",
            ),
    )
    .unwrap();
    // Through the positional FILE and through --config alike.
    for args in [
        vec!["config", "check", bad.to_str().unwrap()],
        vec!["config", "check", "--config", bad.to_str().unwrap()],
    ] {
        let out = youops_async(&args, &[]).await;
        assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in ["soon", "flavour"] {
            assert!(err.contains(needle), "no {needle:?}: {}", describe(&out));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_local_mode_maps_the_os_user() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", "")).unwrap();
    let c = cfg.to_str().unwrap();

    let out = youops_async(
        &["run", "hello", "name=x", "--config", c],
        &[("USER", CLI_USER)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("succeeded") && stdout.contains("name=x"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains("by:      alice via cli"),
        "{}",
        describe(&out)
    );

    let out = youops_async(
        &["run", "hello", "name=x", "--config", c],
        &[("USER", "mallory")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let all = describe(&out);
    assert!(
        all.contains("`mallory` is not mapped to a YouOps principal"),
        "{all}"
    );

    // The environment variable names the config too, like every flag.
    let out = youops_async(
        &["ops", "list"],
        &[("USER", CLI_USER), ("YOUOPS_CONFIG", c)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deploy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_against_a_running_daemon() {
    let d = Daemon::start(&config("", "")).await;
    let base = d.base().to_string();
    let c = d.config_path.to_str().unwrap().to_string();
    let remote = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--server".into(),
            base.clone(),
            "--token".into(),
            ALICE.into(),
        ]);
        v
    };
    let run = |v: Vec<String>| async move {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        youops_async(&a, &[]).await
    };

    let out = run(remote(&["run", "hello", "name=remote", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rec: Value = serde_json::from_slice(&out.stdout).expect("run --json");
    assert_eq!(rec["state"], "succeeded");
    assert_eq!(rec["request"]["actor"]["principal"], "alice");
    let id = rec["request"]["id"].as_str().unwrap().to_string();

    let out = run(remote(&["status", &id])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(&id) && s.contains("succeeded"), "{s}");

    let out = run(remote(&["audit", "list", "--request", &id])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.lines().count(), 3, "{s}");
    assert!(s.contains("received") && s.contains("succeeded"), "{s}");

    let out = run(remote(&["audit", "verify"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));

    let out = run(remote(&["ops", "list"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    for op in ["hello", "deploy", "nap", "cache.flush"] {
        assert!(s.contains(op), "{s}");
    }

    // Remote failures keep their exit codes: a bad token, an op not granted.
    let mut bad = remote(&["status", &id]);
    *bad.last_mut().unwrap() = "wrong".into();
    let out = run(bad).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let mut carol = remote(&["run", "hello"]);
    *carol.last_mut().unwrap() = CAROL.into();
    let out = run(carol).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        describe(&out).contains("may not run `hello`"),
        "{}",
        describe(&out)
    );

    // Env vars work like the flags.
    let out = youops_async(
        &["status", &id],
        &[("YOUOPS_SERVER", base.as_str()), ("YOUOPS_TOKEN", BOB)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // Local mode while the daemon holds the store: a plain "locked", exit 69.
    let out = youops_async(&["status", &id, "--config", &c], &[("USER", CLI_USER)]).await;
    assert_eq!(out.status.code(), Some(69), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked") && err.contains("--server"), "{err}");
    d.stop().await.expect("clean stop");
}
