//! The `exec` runner: no shell ever sees user input, timeouts and cancel take
//! down the whole process group, output is capped and secrets never stored.

use std::path::Path;

use youops_core::audit::AuditStore;
use youops_core::{Error, State};

use crate::support::*;

// ---------------------------------------------------------------------------
// 2. No shell ever sees user input
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_metacharacters_reach_the_process_literally() {
    // The daemon's own environment must not leak into ops by default.
    const DAEMON_SECRET: &str = "daemon-only-value-7f3a";
    std::env::set_var("YOUOPS_TEST_SECRET_ENV", DAEMON_SECRET);
    let ops = r#"
[[ops]]
name = "echo.args"
roles = ["ops"]
runner = { type = "exec", argv = ["/usr/bin/printf", '[%s]\n', "{a}"] }
[[ops.params]]
name = "a"
type = "string"

[[ops]]
name = "show.env"
roles = ["ops"]
runner = { type = "exec", argv = ["/usr/bin/env"] }
[[ops.params]]
name = "a"
type = "string"

[[ops]]
name = "show.env.inherit"
roles = ["ops"]
runner = { type = "exec", argv = ["/usr/bin/env"], inherit_env = true }
[[ops.params]]
name = "a"
type = "string"
"#;
    let h = start(ops, |b| b).await;
    let marker = h.dir.path().join("pwned");
    let m = marker.display().to_string();
    let values = [
        "x; rm -rf /".to_string(),
        format!("x; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("a && touch {m} || touch {m}"),
        format!("> {m}"),
        "$(id)".to_string(),
        "it's \"quoted\" with  spaces\nand a newline\tand a tab".to_string(),
        "*".to_string(),
        "{a} {{a}} ${HOME} $HOME %s %d \\n".to_string(),
        "-v".to_string(),
        String::new(),
    ];
    for v in &values {
        let t = h
            .exec
            .submit(sub("echo.args", "alice").arg("a", v.as_str()))
            .await
            .unwrap();
        let r = done(&h.exec, t.record.request.id).await;
        assert_eq!(r.state, State::Succeeded, "{v:?}: {r:#?}");
        assert_eq!(output(&r), format!("[{v}]\n"), "value {v:?}");
    }
    assert!(!marker.exists(), "a shell ran user input");

    let tricky = "x; $(id) 'q' `id`\nsecond line";
    for (op, inherit) in [("show.env", false), ("show.env.inherit", true)] {
        let t = h
            .exec
            .submit(sub(op, "alice").arg("a", tricky))
            .await
            .unwrap();
        let r = done(&h.exec, t.record.request.id).await;
        assert_eq!(r.state, State::Succeeded, "{r:#?}");
        let out = output(&r);
        assert!(
            out.contains(&format!("YOUOPS_PARAM_A={tricky}\n")),
            "{op}: {out}"
        );
        assert!(
            out.contains(&format!("YOUOPS_REQUEST_ID={}\n", t.record.request.id)),
            "{op}: {out}"
        );
        assert!(out.contains("YOUOPS_PRINCIPAL=alice\n"), "{op}: {out}");
        assert_eq!(
            out.contains(&format!("YOUOPS_TEST_SECRET_ENV={DAEMON_SECRET}")),
            inherit,
            "{op} (inherit_env = {inherit}): {out}"
        );
    }
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 6. and 7. Timeouts and cancel take down the whole process group
// ---------------------------------------------------------------------------

const TREE_OPS: &str = r#"
[[ops]]
name = "tree.short"
roles = ["ops"]
timeout = "5s"
runner = { type = "exec", argv = ["/bin/sh", "fixtures/spawn_tree.sh", "{dir}"] }
[[ops.params]]
name = "dir"
type = "string"

[[ops]]
name = "tree.long"
roles = ["ops"]
timeout = "5m"
runner = { type = "exec", argv = ["/bin/sh", "fixtures/spawn_tree.sh", "{dir}"] }
[[ops.params]]
name = "dir"
type = "string"
"#;

/// Wait for the fixture to record its pids: shell, then its two children.
async fn tree_pids(dir: &Path) -> Vec<i32> {
    let file = dir.join("pids");
    eventually("the fixture's pid file", || {
        let f = file.clone();
        async move { f.exists() }
    })
    .await;
    let pids: Vec<i32> = std::fs::read_to_string(&file)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    pids
}

async fn assert_all_gone(pids: &[i32]) {
    let pids = pids.to_vec();
    eventually("every process of the tree to die", || {
        let pids = pids.clone();
        async move { pids.iter().all(|p| !alive(*p)) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group() {
    let h = start(TREE_OPS, |b| b).await;
    let work = tempfile::tempdir().unwrap();
    let t = h
        .exec
        .submit(sub("tree.short", "alice").arg("dir", work.path().display().to_string()))
        .await
        .unwrap();
    let id = t.record.request.id;
    let pids = tree_pids(work.path()).await;
    let r = done(&h.exec, id).await;
    assert_eq!(r.state, State::TimedOut, "{r:#?}");
    assert!(r.reason.as_deref().unwrap().contains("timed out after 5s"));
    let o = r.outcome.as_ref().unwrap();
    assert!(o.output.contains("tree started"), "{o:?}");
    assert!(o.duration_ms < 60_000, "{o:?}");
    assert_all_gone(&pids).await;
    assert_chain_ok(&h.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_process_tree() {
    let h = start(TREE_OPS, |b| b).await;
    let exec = &h.exec;
    let work = tempfile::tempdir().unwrap();
    let t = exec
        .submit(sub("tree.long", "alice").arg("dir", work.path().display().to_string()))
        .await
        .unwrap();
    let id = t.record.request.id;
    running(exec, id).await;
    let pids = tree_pids(work.path()).await;
    assert!(pids.iter().all(|p| alive(*p)), "the tree runs: {pids:?}");

    match exec.cancel(id, &who("dave")).await {
        Err(Error::Forbidden(m)) => assert!(m.contains("dave"), "{m}"),
        other => panic!("unrelated principal cancelled: {other:?}"),
    }
    assert!(matches!(
        exec.cancel(id, &who("mallory")).await,
        Err(Error::UnknownIdentity { .. })
    ));
    assert!(
        pids.iter().all(|p| alive(*p)),
        "a refused cancel stops nothing"
    );
    assert_eq!(exec.get(id).await.unwrap().state, State::Running);

    let r = within(30, "cancel", exec.cancel(id, &who("alice")))
        .await
        .unwrap();
    assert_eq!(r.state, State::Cancelled, "{r:#?}");
    assert_all_gone(&pids).await;
    assert!(matches!(
        exec.cancel(id, &who("alice")).await,
        Err(Error::Conflict(_))
    ));
    assert!(labels(exec, id)
        .await
        .contains(&"notice:cancel_requested".to_string()));

    // An approver of the op may cancel someone else's run too.
    let work2 = tempfile::tempdir().unwrap();
    let t = exec
        .submit(sub("tree.long", "alice").arg("dir", work2.path().display().to_string()))
        .await
        .unwrap();
    let id = t.record.request.id;
    let pids = tree_pids(work2.path()).await;
    let r = within(30, "cancel", exec.cancel(id, &who("bob")))
        .await
        .unwrap();
    assert_eq!(r.state, State::Cancelled, "{r:#?}");
    assert_all_gone(&pids).await;
    // The run's task forgets the request just after recording its end.
    eventually("no run to be left", || async { exec.running() == 0 }).await;
    assert_chain_ok(&h.store).await;
}

// ---------------------------------------------------------------------------
// 9. Output cap and secrets
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_and_secrets_never_stored() {
    const SECRET: &str = "hunter2-Zq9XbV7pLw";
    let ops = r#"
[[ops]]
name = "noisy"
roles = ["ops"]
output_limit = "1KiB"
runner = { type = "exec", argv = ["/bin/sh", "-c", 'printf HEAD; yes 0123456789 | head -c 1048576; printf TAIL'] }

[[ops]]
name = "vault.login"
roles = ["ops"]
runner = { type = "exec", argv = ["/bin/sh", "-c", 'echo "user=$YOUOPS_PARAM_USER token=$YOUOPS_PARAM_TOKEN"; echo "stderr token=$YOUOPS_PARAM_TOKEN" >&2; echo "arg=$1"', "sh", "{token}"] }
[[ops.params]]
name = "user"
type = "string"
[[ops.params]]
name = "token"
type = "secret"

[[ops]]
name = "vault.leaky"
roles = ["ops"]
output_limit = "1KiB"
runner = { type = "exec", argv = ["/bin/sh", "-c", '''printf '%0505d' 0; printf '%s' "$YOUOPS_PARAM_TOKEN"; yes 0123456789 | head -c 4096; printf '%s' "$YOUOPS_PARAM_TOKEN"; printf '%0500d\n' 0'''] }
[[ops.params]]
name = "token"
type = "secret"
"#;
    let h = start(ops, |b| b).await;
    let exec = &h.exec;

    let t = exec.submit(sub("noisy", "alice")).await.unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let o = r.outcome.unwrap();
    let total = 4 + 1_048_576 + 4;
    assert_eq!(o.output_truncated_bytes, total - 1024, "{}", o.output);
    assert!(o.output.starts_with("HEAD0123456789"), "{}", o.output);
    assert!(o.output.ends_with("TAIL"), "{}", o.output);
    assert!(
        o.output
            .contains(&format!("{} bytes of output omitted", total - 1024)),
        "{}",
        o.output
    );
    assert!(o.output.len() < 1024 + 200, "{}", o.output.len());

    let t = exec
        .submit(
            sub("vault.login", "alice")
                .arg("user", "bob")
                .arg("token", SECRET),
        )
        .await
        .unwrap();
    assert_eq!(t.record.request.args["token"].as_text(), "********");
    assert_eq!(t.record.request.secret_args, ["token"]);
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let out = output(&r);
    for line in [
        "user=bob token=********\n",
        "stderr token=********\n",
        "arg=********\n",
    ] {
        assert!(out.contains(line), "missing `{line}` in {out}");
    }
    assert!(!out.contains(SECRET), "{out}");

    // A secret cut in two by the cap: neither visible part may show. The head
    // keeps 512 bytes (505 zeros and the secret's first 7), the tail 512 (the
    // secret's last 11, 500 zeros and a newline).
    let t = exec
        .submit(sub("vault.leaky", "alice").arg("token", SECRET))
        .await
        .unwrap();
    let r = done(exec, t.record.request.id).await;
    assert_eq!(r.state, State::Succeeded, "{r:#?}");
    let out = output(&r);
    assert!(out.contains("bytes of output omitted"), "{out}");
    let (first, last) = SECRET.split_at(7);
    assert!(
        !out.contains(first) && !out.contains(last),
        "part of a secret cut by the output cap leaked: {out}"
    );
    assert!(
        out.starts_with(&format!("{}********", "0".repeat(505))),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("********{}\n", "0".repeat(500))),
        "{out}"
    );

    // Nowhere in the store: not in any exported event, not in any file on
    // disk (the log's segments and the index).
    h.store.flush().await.unwrap();
    let files = files_under(&h.path);
    assert!(
        files.iter().any(|f| f.ends_with("index.redb")) && files.len() >= 3,
        "the scan saw the store: {files:?}"
    );
    let events = all_events(&h.store).await;
    let json = serde_json::to_string(&events).unwrap();
    assert!(json.contains("********"));
    assert!(!json.contains(SECRET));
    for file in files_under(&h.path) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains_bytes(&bytes, SECRET.as_bytes()),
            "secret on disk in {}",
            file.display()
        );
    }
    assert_chain_ok(&h.store).await;
}
