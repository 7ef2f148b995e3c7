//! GitOps plans against a running daemon.

use std::path::Path;
use std::time::Duration;

use crate::stdout;
use crate::support::*;

/// Run git in `dir` (a real repository; committer identity given inline).
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=Stranger",
            "-c",
            "user.email=stranger@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", describe(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_dry_run_through_the_server_plans_on_the_daemons_state() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("state")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("state/users.toml"),
        "[[resource]]\nkind = \"user\"\nname = \"ada\"\nemail = \"ada@example.com\"\n",
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "ada"]);
    // The commit's author maps to no principal: its request is denied, so
    // the plan stays `+ user/ada` however far the daemon's own pass got.
    let ops = format!(
        r#"[[ops]]
name = "user.apply"
runner = {{ type = "builtin", name = "echo" }}
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "email"
type = "email"

[frontends.git]
repo = "{}"
branch = "main"
path = "state"
interval = "1h"

[[kinds]]
name = "user"
apply = "user.apply"
"#,
        repo.display()
    );
    let cfg = dir.path().join("youops.toml");
    std::fs::write(&cfg, config("", &ops)).unwrap();
    let c = cfg.to_str().unwrap();
    let mut served = Served::spawn(&cfg, dir.path().join("serve.log")).await;
    let server = served.api.base.clone();
    let plan = |token: &'static str, extra: &'static [&'static str]| {
        let server = server.clone();
        async move {
            let mut args = vec![
                "--config",
                c,
                "--server",
                &server,
                "--token",
                token,
                "reconcile",
                "--once",
            ];
            args.extend_from_slice(extra);
            youops_async(&args, &[]).await
        }
    };

    let remote = plan(ALICE, &["--dry-run"]).await;
    assert_eq!(remote.status.code(), Some(0), "{}", describe(&remote));
    let remote_text = stdout(&remote);
    assert!(
        remote_text.starts_with("plan for main at "),
        "{remote_text}"
    );
    assert!(remote_text.contains("+ user/ada"), "{remote_text}");

    // Who may not run the kind's ops may not see its plan.
    let carol = plan(CAROL, &["--dry-run"]).await;
    assert_eq!(carol.status.code(), Some(2), "{}", describe(&carol));
    assert!(
        String::from_utf8_lossy(&carol.stderr).contains("may not run `user.apply`"),
        "{}",
        describe(&carol)
    );
    // Applying through the server is the daemon's job; the advice works.
    let apply = plan(ALICE, &[]).await;
    assert_eq!(apply.status.code(), Some(2), "{}", describe(&apply));
    assert!(
        String::from_utf8_lossy(&apply.stderr).contains("--dry-run` with --server"),
        "{}",
        describe(&apply)
    );
    // Locally, the store is the daemon's: the message points at --server.
    let local = youops_async(&["--config", c, "reconcile", "--once", "--dry-run"], &[]).await;
    assert_eq!(local.status.code(), Some(69), "{}", describe(&local));
    assert!(
        String::from_utf8_lossy(&local.stderr).contains("--server"),
        "{}",
        describe(&local)
    );

    served.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(served.wait_exit(Duration::from_secs(10)).await, Some(0));
    // With the daemon stopped, the local plan reads the same.
    let local = youops_async(&["--config", c, "reconcile", "--once", "--dry-run"], &[]).await;
    assert_eq!(local.status.code(), Some(0), "{}", describe(&local));
    assert_eq!(stdout(&local), remote_text);
}
