//! The lifecycle of the real binary: SIGTERM drain, bad configs, SIGHUP reload,
//! shutdown logs.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_finishes_short_runs_and_interrupts_long_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let ops = format!(
        "{}\n{}",
        exec_op("sleep.short", &["sleep", "2"]),
        exec_op("sleep.long", &["sleep", "60"])
    );
    std::fs::write(&cfg, config(r#"shutdown_grace = "3s""#, &ops)).unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let api = served.api.clone();

    let (st, v) = api.submit(ALICE, "sleep.short", json!({}), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let short = id_of(&v);
    let (st, v) = api.submit(ALICE, "sleep.long", json!({}), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let long = id_of(&v);
    api.wait_state(ALICE, &short, "running").await;
    api.wait_state(ALICE, &long, "running").await;

    let t0 = Instant::now();
    served.signal(nix::sys::signal::Signal::SIGTERM);
    // Right after SIGTERM: new work gets 503 (or, at the very end, no connection).
    let mut refused = 0;
    let mut other = Vec::new();
    while t0.elapsed() < Duration::from_millis(2500) && refused < 3 {
        match api
            .http
            .post(api.url("/api/v1/requests"))
            .bearer_auth(ALICE)
            .json(&json!({ "op": "hello" }))
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().contains_key(reqwest::header::RETRY_AFTER));
                refused += 1;
            }
            Ok(r) => other.push(r.status()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused >= 1, "no 503 while draining (got {other:?})");
    // At most a request that raced the signal itself was accepted.
    assert!(other.len() <= 1, "accepted while draining: {other:?}");

    let code = served.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "exit status; log:\n{}", served.log_text());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "drain took {took:?}: it should wait for the grace period, then stop"
    );

    // The store is unlocked and tells what happened.
    let cfg_s = cfg.to_str().unwrap();
    for (id, want, why) in [
        (&short, "succeeded", None),
        (
            &long,
            "interrupted",
            Some("shut down before the run finished"),
        ),
    ] {
        let out = youops_async(&["status", id, "--json", "--config", cfg_s], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        let rec: Value = serde_json::from_slice(&out.stdout).expect("status --json");
        assert_eq!(rec["state"], want, "{rec:#}");
        if let Some(why) = why {
            assert!(rec["reason"].as_str().unwrap().contains(why), "{rec:#}");
        }
    }
    let out = youops_async(&["audit", "verify", "--config", cfg_s], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_at_start_exits_64_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let text = format!(
        "{}\n[[ops]]\nname = \"broken\"\nrunner = {{ type = \"teleport\" }}\n",
        config(r#"colour = "blue""#, "")
    )
    .replace(
        "roles = [\"viewer\"]",
        "roles = [\"viewer\"]\nshoe_size = 42",
    );
    std::fs::write(&cfg, text).unwrap();
    let port = free_port().to_string();
    let out = youops_async(
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in ["colour", "teleport", "shoe_size", "3 problems"] {
        assert!(
            err.contains(needle),
            "no {needle:?} in:\n{}",
            describe(&out)
        );
    }
    // Nothing was listening, and no store was created.
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err());
    assert!(!dir.path().join("store").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_old_catalog_on_a_bad_config_and_loads_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let good = config("", "");
    std::fs::write(&cfg, &good).unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let api = served.api.clone();

    // A broken file: refused, the running catalog stays, and every problem
    // is in the log (as `config check` reports them), without colour codes.
    std::fs::write(
        &cfg,
        format!("{good}\n[[ops]]\nname = 7\n")
            .replace("[server]", "[server]\ncolour = \"blue\"")
            .replace(
                "roles = [\"viewer\"]",
                "roles = [\"viewer\"]\nshoe_size = 42",
            ),
    )
    .unwrap();
    served.signal(nix::sys::signal::Signal::SIGHUP);
    served.wait_log("config reload refused").await;
    let log = served.log_text();
    for needle in ["colour", "shoe_size", "problems=3"] {
        assert!(log.contains(needle), "no {needle:?} in:\n{log}");
    }
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log file:\n{log:?}"
    );
    // A builtin this daemon does not have: refused too.
    std::fs::write(
        &cfg,
        config(
            "",
            "[[ops]]\nname = \"ghost\"\nrunner = { type = \"builtin\", name = \"nope\" }\n",
        ),
    )
    .unwrap();
    served.signal(nix::sys::signal::Signal::SIGHUP);
    served.wait_log("no builtin named `nope`").await;
    let (st, v) = api
        .submit(ALICE, "hello", json!({ "name": "still" }), Some("10s"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(state_of(&v), "succeeded", "{v}");

    // A good file with a new op: visible and runnable after SIGHUP.
    let ops = exec_op("greet.new", &["echo", "fresh"]);
    std::fs::write(&cfg, config("", &ops)).unwrap();
    served.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, v) = api.get("/api/v1/ops", Some(ALICE)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let names: Vec<&str> = v["ops"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["name"].as_str())
            .collect();
        if names.contains(&"greet.new") {
            assert!(names.contains(&"hello"), "{names:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new op never appeared: {names:?}\n{}",
            served.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, v) = api.submit(BOB, "greet.new", json!({}), Some("10s")).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(v["request"]["outcome"]["output"]
        .as_str()
        .unwrap()
        .contains("fresh"));
    served.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(served.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_builtin_is_a_config_error_naming_the_builtins_there_are() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    let ops = "[[ops]]\nname = \"ghost\"\nrunner = { type = \"builtin\", name = \"nope\" }\n";
    std::fs::write(&cfg, config("", ops)).unwrap();
    let check = youops_async(&["config", "check", cfg.to_str().unwrap()], &[]).await;
    let port = free_port().to_string();
    let serve = youops_async(
        &[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    )
    .await;
    for out in [&check, &serve] {
        assert_eq!(out.status.code(), Some(64), "{}", describe(out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("ops `ghost`: runner: no builtin named `nope` (this program has: echo, noop, sleep)"),
            "{}",
            describe(out)
        );
    }
    assert!(!dir.path().join("store").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_503s_of_a_shutdown_are_logged_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("shutdown_grace = \"20s\"", "")).unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let api = served.api.clone();
    // A run that keeps the daemon draining while we knock.
    let (st, v) = api
        .submit(ALICE, "nap", json!({ "seconds": "3" }), None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    served.signal(nix::sys::signal::Signal::SIGTERM);
    served.wait_log("shutting down").await;
    let (st, v) = api.submit(ALICE, "hello", json!({}), None).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(served.wait_exit(Duration::from_secs(20)).await, Some(0));
    let log = served.log_text();
    let answered: Vec<&str> = log.lines().filter(|l| l.contains("answered 503")).collect();
    assert!(!answered.is_empty(), "{log}");
    assert!(answered.iter().all(|l| l.contains(" INFO ")), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}
