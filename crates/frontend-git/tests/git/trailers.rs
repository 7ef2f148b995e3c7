//! Commit-trailer commands: run once, in commit order, across restarts.

use youops_core::State;
use youops_frontend_git::state::note_request_states;
use youops_frontend_git::{reconcile_once, Action};

use crate::support::*;

#[tokio::test]
async fn trailers_run_once_in_commit_order_across_restarts() {
    let mut h = H::local("", false).await;
    let repo = h.repo();
    let base = commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[("alice", "a@x.example")])),
        )],
        "base\n\nYouops-Run: cache.flush env=history\n",
        "alice@example.com",
    );
    // The first sync is a baseline: history before YouOps watched does not run.
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert!(!h.world.calls().iter().any(|c| c.starts_with("flush")));
    assert_eq!(h.world.calls(), vec!["apply alice a@x.example"]);

    // Even with the frontend's state lost, the dedup keys keep a change from
    // running twice: the re-planned create finds its earlier request.
    std::fs::remove_dir_all(h.dir.path().join("gitstate")).unwrap();
    h.restart().await;
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.entry("user/alice").unwrap().action, Action::Create);
    assert_eq!(
        plan.entry("user/alice").unwrap().state,
        Some(State::Succeeded)
    );
    assert_eq!(h.world.calls(), vec!["apply alice a@x.example"]);
    assert_eq!(h.requests("user.apply").await.len(), 1);

    let a = commit(
        &repo,
        &[("notes.txt", Some("a"))],
        "a\n\nYouops-Run: cache.flush env=one\nYouops-Run: cache.flush env=two\n",
        "alice@example.com",
    );
    let b = commit(
        &repo,
        &[("notes.txt", Some("b"))],
        "b\n\nsome text\n\nYouops-Run: cache.flush env=three\nYouops-Run: not a command !!\n",
        "alice@example.com",
    );
    commit(
        &repo,
        &[("notes.txt", Some("c"))],
        "c without trailers",
        "alice@example.com",
    );
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    let flushes: Vec<String> = h
        .world
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("flush"))
        .collect();
    assert_eq!(flushes, vec!["flush one", "flush two", "flush three"]);
    let reqs = h.requests("cache.flush").await;
    let keys: Vec<&str> = reqs
        .iter()
        .map(|r| r.request.dedup_key.as_deref().unwrap())
        .collect();
    assert_eq!(
        keys,
        vec![
            format!("git:{a}:run:0"),
            format!("git:{a}:run:1"),
            format!("git:{b}:run:0")
        ]
    );
    assert_eq!(reqs[2].request.provenance["commit"], b.to_string());
    assert_eq!(reqs[2].request.actor.principal.as_deref(), Some("alice"));
    // Notes on the trailer commits, and the bad trailer is reported.
    let note_a = h.git_note(a);
    assert_eq!(note_request_states(&note_a).len(), 2, "{note_a}");
    let note_b = h.git_note(b);
    assert!(
        note_b.contains("trailer 1: not a command !!: does not parse"),
        "{note_b}"
    );
    assert_eq!(h.notices("trailer_invalid").await.len(), 1);
    assert!(h.git_note(base).contains("Plan:"));

    // A restart runs nothing again.
    h.restart().await;
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(
        h.world
            .calls()
            .iter()
            .filter(|c| c.starts_with("flush"))
            .count(),
        3
    );
    let applies = h
        .world
        .calls()
        .iter()
        .filter(|c| c.starts_with("apply"))
        .count();
    assert_eq!(applies, 1);
}
