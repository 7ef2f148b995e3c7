//! Remote repositories: force-pushes, pushed notes, the git protocol, the interval.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio_util::sync::CancellationToken;
use youops_core::frontend::{Frontend, FrontendHost, Frontends};
use youops_frontend_git::state::note_request_states;
use youops_frontend_git::{reconcile_once, Action, NOTES_REF};

use crate::support::*;

/// A bare remote reached over file://, a clone pushing with the git CLI.
struct Remote {
    bare: PathBuf,
    work: PathBuf,
}

fn remote(dir: &Path) -> Remote {
    let bare = dir.join("remote.git");
    let work = dir.join("work");
    git(
        dir,
        &["init", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(
        dir,
        &["clone", bare.to_str().unwrap(), work.to_str().unwrap()],
    );
    git(&work, &["checkout", "-b", "main"]);
    Remote { bare, work }
}

impl Remote {
    fn commit(&self, file: &str, content: &str, message: &str, date: &str) -> String {
        let p = self.work.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        git(&self.work, &["add", "-A"]);
        git_env(
            &self.work,
            &["commit", "-q", "-m", message],
            &[("GIT_AUTHOR_DATE", date), ("GIT_COMMITTER_DATE", date)],
        );
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }
}

#[tokio::test]
async fn force_push_is_detected_and_audited_and_notes_are_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let r = remote(dir.path());
    let url = format!("file://{}", r.bare.display());
    let section = format!(
        "repo = \"{url}\"\npath = \"state\"\nstate_dir = \"gitstate\"\npush_notes = true\n"
    );
    let h = H::with_section(dir, r.work.clone(), &section, false).await;

    r.commit(
        "state/users.toml",
        &users_file(&[("alice", "a@x.example")]),
        "base",
        "2024-01-01T00:00:00Z",
    );
    git(&r.work, &["push", "-q", "origin", "main"]);
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(h.world.names(), vec!["alice"]);

    let a = r.commit(
        "x.txt",
        "a",
        "a\n\nYouops-Run: cache.flush env=a\n",
        "2024-01-02T00:00:00Z",
    );
    let b = r.commit(
        "y.txt",
        "b",
        "b\n\nYouops-Run: cache.flush env=b\n",
        "2024-01-03T00:00:00Z",
    );
    git(&r.work, &["push", "-q", "origin", "main"]);
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    let flushes = || {
        h.world
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("flush"))
            .collect::<Vec<_>>()
    };
    assert_eq!(flushes(), vec!["flush a", "flush b"]);

    // Notes were pushed to the bare remote: a fresh clone can read them.
    let reader = h.dir.path().join("reader");
    git(
        h.dir.path(),
        &[
            "clone",
            "-q",
            r.bare.to_str().unwrap(),
            reader.to_str().unwrap(),
        ],
    );
    git(
        &reader,
        &["fetch", "-q", "origin", &format!("{NOTES_REF}:{NOTES_REF}")],
    );
    let note = git(&reader, &["notes", "--ref", "youops", "show", &b]);
    assert_eq!(note_request_states(&note).len(), 1, "{note}");
    assert!(
        note.contains("succeeded trailer 0: cache.flush env=b"),
        "{note}"
    );

    // Rewrite history: drop b, re-create a (same author, date and message, new
    // committer date: a new id), add c; force-push.
    git(&r.work, &["reset", "-q", "--hard", &format!("{a}~1")]);
    git_env(
        &r.work,
        &["cherry-pick", &a],
        &[("GIT_COMMITTER_DATE", "2024-02-01T00:00:00Z")],
    );
    let a2 = git(&r.work, &["rev-parse", "HEAD"]).trim().to_string();
    assert_ne!(a2, a);
    let c = r.commit(
        "z.txt",
        "c",
        "c\n\nYouops-Run: cache.flush env=c\n",
        "2024-02-02T00:00:00Z",
    );
    git(&r.work, &["push", "-q", "--force", "origin", "main"]);
    reconcile_once(&h.exec, &h.git, false).await.unwrap();

    // Recorded, nothing re-run (the rewritten a), the genuinely new c ran.
    assert_eq!(flushes(), vec!["flush a", "flush b", "flush c"]);
    let n = h.notices("force_push").await;
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].1["old_head"], b);
    assert_eq!(n[0].1["new_head"], c);
    let dropped: Vec<String> = serde_json::from_value(n[0].1["dropped"].clone()).unwrap();
    assert_eq!(dropped.len(), 2);
    assert!(dropped.contains(&a) && dropped.contains(&b));
    assert_eq!(n[0].1["rewritten_not_rerun"], serde_json::json!([a2]));
    assert_eq!(h.metrics.counter("youops_git_force_pushes_total"), 1);
    assert!(h.exec.store().verify().await.unwrap().ok());
}

/// Kills the child process (a `git daemon` this test started) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn git_protocol_remote_served_by_git_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let r = remote(dir.path());
    r.commit(
        "state/users.toml",
        &users_file(&[("erin", "e@x.example")]),
        "erin",
        "2024-04-01T00:00:00Z",
    );
    git(&r.work, &["push", "-q", "origin", "main"]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", dir.path().display()),
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("git daemon");
    let _daemon = KillOnDrop(child);
    eventually("git daemon to listen", 10, || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .await;
    let section = format!(
        "repo = \"git://127.0.0.1:{port}/remote.git\"\npath = \"state\"\nstate_dir = \"gitstate\"\n"
    );
    let h = H::with_section(dir, r.work.clone(), &section, false).await;
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.count(Action::Create), 1, "{plan}");
    assert!(h.world.user("erin").is_some());
    // The clone lives under the state dir, and the note is written there.
    let head = plan.commit.clone().unwrap();
    assert!(h.dir.path().join("gitstate/checkout/HEAD").is_file());
    assert!(h.git.note(&head).unwrap().contains("+ user/erin"));
}

#[tokio::test]
async fn interval_picks_up_commits_pushed_to_a_remote() {
    let dir = tempfile::tempdir().unwrap();
    let r = remote(dir.path());
    let url = format!("file://{}", r.bare.display());
    let section = format!(
        "repo = \"{url}\"\npath = \"state\"\nstate_dir = \"gitstate\"\ninterval = \"200ms\"\n"
    );
    let h = H::with_section(dir, r.work.clone(), &section, false).await;
    let shutdown = CancellationToken::new();
    let host = FrontendHost::new(
        &Frontends::new().with(h.git.clone()),
        &h.exec,
        None,
        &shutdown,
        |_| toml::Table::new(),
    );
    let handles = host.spawn();
    eventually("ready", 10, || async { h.git.is_ready().then_some(()) }).await;
    // The branch did not exist at the first sync: every commit pushed later is new.
    r.commit(
        "state/users.toml",
        &users_file(&[("dave", "d@x.example")]),
        "dave\n\nYouops-Run: cache.flush env=first",
        "2024-03-01T00:00:00Z",
    );
    git(&r.work, &["push", "-q", "origin", "main"]);
    eventually("dave to be applied by an interval pass", 10, || async {
        h.world.user("dave").map(|_| ())
    })
    .await;
    eventually("the trailer to run", 10, || async {
        h.world
            .calls()
            .contains(&"flush first".to_string())
            .then_some(())
    })
    .await;
    let noop_before = h.metrics.counter("youops_git_noop_passes_total");
    eventually("an unchanged head to make no-op passes", 10, || async {
        (h.metrics.counter("youops_git_noop_passes_total") > noop_before).then_some(())
    })
    .await;
    assert_eq!(h.requests("user.apply").await.len(), 1);
    shutdown.cancel();
    for j in handles {
        j.await.unwrap().unwrap();
    }
}
