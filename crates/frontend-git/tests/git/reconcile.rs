//! Planning and applying: create/update/delete, broken commits, retries.

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use youops_core::frontend::{FrontendHost, Frontends};
use youops_core::{RequestRecord, State};
use youops_frontend_git::state::note_request_states;
use youops_frontend_git::{poll_once, reconcile_once, Action, GitError, GitFrontend};

use crate::support::*;

#[tokio::test]
async fn plan_and_apply_create_update_delete_unchanged() {
    let h = H::local("prune = true", false).await;
    let repo = h.repo();
    let c1 = commit(
        &repo,
        &[
            (
                "state/users.toml",
                Some(&users_file(&[
                    ("alice", "alice@example.com"),
                    ("bob", "bob@old.example"),
                ])),
            ),
            ("README.md", Some("not desired state\n")),
        ],
        "add users",
        "alice@example.com",
    );

    // A dry run plans and changes nothing.
    let plan = reconcile_once(&h.exec, &h.git, true).await.unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.commit.as_deref(), Some(c1.to_string().as_str()));
    let text = plan.to_string();
    assert!(
        text.contains("+ user/alice  (state/users.toml:1)"),
        "{text}"
    );
    assert!(
        text.contains("    + email = \"alice@example.com\""),
        "{text}"
    );
    assert!(
        text.contains("2 to create, 0 to update, 0 to delete, 0 unchanged"),
        "{text}"
    );
    assert!(h.world.calls().is_empty());
    assert!(h.requests("user.apply").await.is_empty());

    // The real pass: one request per change, with provenance and dedup keys.
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.count(Action::Create), 2);
    assert!(
        plan.changes().all(|e| e.state == Some(State::Succeeded)),
        "{plan}"
    );
    assert_eq!(h.world.names(), vec!["alice", "bob"]);
    let reqs = h.requests("user.apply").await;
    assert_eq!(reqs.len(), 2);
    let alice = reqs
        .iter()
        .find(|r| r.request.args["name"].as_text() == "alice")
        .unwrap();
    assert_eq!(alice.request.actor.principal.as_deref(), Some("alice"));
    assert_eq!(alice.request.actor.external_id, "alice@example.com");
    assert_eq!(alice.request.provenance["commit"], c1.to_string());
    assert_eq!(alice.request.provenance["path"], "state/users.toml:1");
    assert_eq!(
        alice.request.dedup_key.as_deref(),
        Some(format!("git:{c1}:user/alice:create:0").as_str())
    );
    assert_eq!(alice.request.origin.reference["commit"], c1.to_string());

    // The note on the commit, read with the git CLI.
    let note = h.git_note(c1);
    assert!(note.contains("+ user/alice"), "{note}");
    let states = note_request_states(&note);
    assert_eq!(states.len(), 2, "{note}");
    assert!(states.iter().all(|(_, s)| s == "succeeded"), "{note}");
    assert!(states
        .iter()
        .any(|(id, _)| *id == alice.request.id.to_string()));
    let (seq, hash) = h.exec.store().head().await.unwrap();
    // The note pins the audit chain position right after the commit's requests.
    assert!(note.contains(&format!("Audit: seq {seq} {hash}")), "{note}");
    let last = alice.last_seq.max(reqs[1].last_seq);
    assert!(seq >= last);

    // Update bob, delete alice (prune), create carol.
    let c2 = commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[
                ("bob", "bob@new.example"),
                ("carol", "carol@example.com"),
            ])),
        )],
        "rotate users",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    let signs: Vec<String> = plan
        .entries
        .iter()
        .map(|e| format!("{}{}", e.action.sign(), e.id()))
        .collect();
    assert_eq!(
        signs,
        vec!["-user/alice", "~user/bob", "+user/carol"],
        "{plan}"
    );
    let bob = plan.entry("user/bob").unwrap();
    assert_eq!(bob.changes.len(), 1);
    assert_eq!(bob.changes[0].from.as_deref(), Some("bob@old.example"));
    assert_eq!(bob.changes[0].to.as_deref(), Some("bob@new.example"));
    assert!(plan
        .to_string()
        .contains("    ~ email: \"bob@old.example\" -> \"bob@new.example\""));
    assert_eq!(h.world.names(), vec!["bob", "carol"]);
    assert_eq!(h.world.user("bob").unwrap()["email"], "bob@new.example");
    let deletes = h.requests("user.delete").await;
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].request.args.len(),
        1,
        "delete gets only its own params"
    );
    assert_eq!(deletes[0].request.provenance["commit"], c2.to_string());

    // Nothing left to do: everything unchanged, nothing submitted.
    let calls = h.world.calls().len();
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.count(Action::Unchanged), 2);
    assert_eq!(plan.changes().count(), 0);
    assert_eq!(h.world.calls().len(), calls);

    // Without prune, an undeclared resource is left alone and shown as such.
    commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[("bob", "bob@new.example")])),
        )],
        "drop carol",
        "alice@example.com",
    );
    let section: toml::Table = toml::from_str(
        "repo = \"repo\"\npath = \"state\"\nstate_dir = \"gitstate\"\nprune = false",
    )
    .unwrap();
    let no_prune = GitFrontend::from_config(&section, &h.cfg.kinds, h.dir.path()).unwrap();
    let plan = reconcile_once(&h.exec, &no_prune, true).await.unwrap();
    let carol = plan.entry("user/carol").unwrap();
    assert_eq!(carol.action, Action::Orphan);
    assert!(
        plan.to_string()
            .contains("! user/carol  [not in git; prune is off]"),
        "{plan}"
    );
}

/// The desired state is combined incrementally (the files that changed swapped
/// into the last good state): a broken commit in between, a rename and a move
/// between files must still plan exactly what a fresh parse plans.
#[tokio::test]
async fn one_file_changes_across_a_broken_commit_and_poll_once_does_no_work() {
    let h = H::local("prune = true", false).await;
    let repo = h.repo();
    commit(
        &repo,
        &[
            (
                "state/a.toml",
                Some(&users_file(&[("alice", "a@x.example")])),
            ),
            ("state/b.toml", Some(&users_file(&[("bob", "b@x.example")]))),
        ],
        "one",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.count(Action::Create), 2);

    // An unchanged head: no plan, no request.
    let p = poll_once(&h.exec, &h.git).await.unwrap();
    assert!(p.unchanged_head && p.entries.is_empty(), "{p}");
    assert_eq!(h.metrics.counter("youops_git_noop_passes_total"), 1);

    let broken = commit(
        &repo,
        &[("state/a.toml", Some("[[resource]\n"))],
        "broken",
        "alice@example.com",
    );
    match poll_once(&h.exec, &h.git).await.unwrap_err() {
        GitError::Desired { commit, .. } => assert_eq!(commit, broken.to_string()),
        other => panic!("{other}"),
    }
    // Fixed, with alice renamed to carol.
    commit(
        &repo,
        &[(
            "state/a.toml",
            Some(&users_file(&[("carol", "c@x.example")])),
        )],
        "fixed",
        "alice@example.com",
    );
    let plan = poll_once(&h.exec, &h.git).await.unwrap();
    let signs = |p: &youops_frontend_git::Plan| -> Vec<String> {
        p.entries
            .iter()
            .map(|e| format!("{}{}", e.action.sign(), e.key))
            .collect()
    };
    assert_eq!(signs(&plan), vec!["-alice", "=bob", "+carol"], "{plan}");
    // bob moves from b.toml to a.toml in one commit: not a duplicate, not a delete.
    commit(
        &repo,
        &[
            (
                "state/a.toml",
                Some(&users_file(&[
                    ("carol", "c@x.example"),
                    ("bob", "b@x.example"),
                ])),
            ),
            (
                "state/b.toml",
                Some(&users_file(&[("dave", "d@x.example")])),
            ),
        ],
        "move bob",
        "alice@example.com",
    );
    let plan = poll_once(&h.exec, &h.git).await.unwrap();
    assert_eq!(signs(&plan), vec!["=bob", "=carol", "+dave"], "{plan}");
    assert_eq!(
        plan.entry("user/bob").unwrap().location.as_deref(),
        Some("state/a.toml:6")
    );
    assert_eq!(h.world.names(), vec!["bob", "carol", "dave"]);
    let p = poll_once(&h.exec, &h.git).await.unwrap();
    assert!(p.unchanged_head);
}

#[tokio::test]
async fn broken_commit_changes_nothing_and_names_file_and_line() {
    let h = H::local("prune = true", false).await;
    let repo = h.repo();
    commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[("alice", "a@x.example")])),
        )],
        "one",
        "alice@example.com",
    );
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    let calls = h.world.calls();

    // One good change, plus an unknown kind, a duplicate key and a syntax error.
    let bad = commit(
        &repo,
        &[
            (
                "state/users.toml",
                Some(&users_file(&[
                    ("alice", "changed@x.example"),
                    ("bob", "b@x.example"),
                ])),
            ),
            (
                "state/robots.toml",
                Some("# robots\n[[resource]]\nkind = \"robot\"\nname = \"r2\"\n"),
            ),
            (
                "state/more/dup.toml",
                Some("[[resource]]\nkind = \"user\"\nname = \"bob\"\n"),
            ),
            (
                "state/syntax.toml",
                Some("[[resource]]\nkind = \"user\"\nname = \n"),
            ),
        ],
        "broken\n\nYouops-Run: cache.flush env=broken\n",
        "alice@example.com",
    );
    let err = reconcile_once(&h.exec, &h.git, false).await.unwrap_err();
    assert_eq!(err.code(), "desired_state_invalid");
    let GitError::Desired { commit: c, errors } = &err else {
        panic!("{err}")
    };
    assert_eq!(c, &bad.to_string());
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("state/robots.toml:3: unknown kind `robot`")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("state/syntax.toml:3: not valid TOML")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("duplicate resource `user/bob`")
                && (l.starts_with("state/users.toml:") || l.starts_with("state/more/dup.toml:1"))),
        "{lines:?}"
    );
    // Nothing was applied, and the commit's trailer did not run either.
    assert_eq!(h.world.calls(), calls);
    assert_eq!(h.world.user("alice").unwrap()["email"], "a@x.example");
    let n = h.notices("desired_state_invalid").await;
    assert_eq!(n.len(), 1);
    assert!(n[0].0.contains(&bad.to_string()[..12]));
    let note = h.git_note(bad);
    assert!(
        note.contains("Errors (nothing from this commit was applied):"),
        "{note}"
    );
    assert!(
        note.contains("state/robots.toml:3: unknown kind `robot`"),
        "{note}"
    );
    // Seeing it again does not re-report it.
    assert!(reconcile_once(&h.exec, &h.git, false).await.is_err());
    assert_eq!(h.notices("desired_state_invalid").await.len(), 1);
    assert_eq!(h.metrics.counter("youops_git_invalid_commits_total"), 1);

    // The fix applies.
    commit(
        &repo,
        &[
            ("state/robots.toml", None),
            ("state/more/dup.toml", None),
            ("state/syntax.toml", None),
        ],
        "fix",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.changes().count(), 2, "{plan}");
    assert_eq!(h.world.user("alice").unwrap()["email"], "changed@x.example");
    assert!(!h.world.calls().iter().any(|c| c.contains("broken")));
}

#[tokio::test]
async fn failing_resource_retries_with_backoff_while_others_apply() {
    let h = H::local("interval = \"1h\"", false).await;
    h.world.flaky_failures.store(2, Ordering::SeqCst);
    let repo = h.repo();
    let c1 = commit(
        &repo,
        &[
            (
                "state/users.toml",
                Some(&users_file(&[("alice", "a@x.example")])),
            ),
            (
                "state/flaky.toml",
                Some("[[resource]]\nkind = \"flaky\"\nname = \"f1\"\nsize = 1\n"),
            ),
        ],
        "two kinds",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    let f = plan.entry("flaky/f1").unwrap();
    assert_eq!(f.state, Some(State::Failed));
    assert!(
        f.remark.as_deref().unwrap_or("").contains("retry in"),
        "{plan}"
    );
    // The failure did not block the user.
    assert_eq!(
        plan.entry("user/alice").unwrap().state,
        Some(State::Succeeded)
    );
    assert!(h.world.user("alice").is_some());
    assert_eq!(h.metrics.gauge("youops_git_retries_pending"), 1.0);

    // The running frontend retries on its own, with growing delays, until it works.
    let shutdown = CancellationToken::new();
    let host = FrontendHost::new(
        &Frontends::new().with(h.git.clone()),
        &h.exec,
        None,
        &shutdown,
        |_| toml::Table::new(),
    );
    let handles = host.spawn();
    eventually("the flaky resource to be applied", 20, || async {
        h.world
            .calls()
            .contains(&"flaky f1 ok".to_string())
            .then_some(())
    })
    .await;
    // The op has run; its end state is recorded just after it returns.
    let reqs = eventually("the third attempt to reach its end state", 5, || async {
        let reqs = h.requests("flaky.apply").await;
        reqs.last()
            .is_some_and(|r| r.state.is_terminal())
            .then_some(reqs)
    })
    .await;
    assert_eq!(reqs.len(), 3, "two failures then a success");
    let keys: Vec<String> = reqs
        .iter()
        .map(|r| r.request.dedup_key.clone().unwrap())
        .collect();
    assert_eq!(
        keys,
        (0..3)
            .map(|a| format!("git:{c1}:flaky/f1:create:{a}"))
            .collect::<Vec<_>>()
    );
    let gap = |a: &RequestRecord, b: &RequestRecord| {
        (b.request.created_at - a.request.created_at).num_milliseconds()
    };
    assert!(
        gap(&reqs[0], &reqs[1]) >= 100,
        "first retry after >= retry_base"
    );
    assert!(
        gap(&reqs[1], &reqs[2]) >= 200,
        "second retry after >= 2 * retry_base"
    );
    assert_eq!(reqs[2].state, State::Succeeded);
    assert_eq!(
        h.requests("user.apply").await.len(),
        1,
        "the user was not re-applied"
    );
    eventually("no retries pending", 5, || async {
        (h.metrics.gauge("youops_git_retries_pending") == 0.0).then_some(())
    })
    .await;
    shutdown.cancel();
    for j in handles {
        j.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_new_commit_supersedes_a_retry() {
    let h = H::local("retry_base = \"1h\"\nretry_max = \"2h\"", false).await;
    h.world.flaky_failures.store(1, Ordering::SeqCst);
    let repo = h.repo();
    commit(
        &repo,
        &[(
            "state/flaky.toml",
            Some("[[resource]]\nkind = \"flaky\"\nname = \"f1\"\nsize = 1\n"),
        )],
        "one",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.entry("flaky/f1").unwrap().state, Some(State::Failed));
    // Not due for an hour: a pass does not retry it.
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert!(
        plan.entry("flaky/f1")
            .unwrap()
            .remark
            .as_deref()
            .unwrap()
            .contains("due in"),
        "{plan}"
    );
    assert_eq!(h.requests("flaky.apply").await.len(), 1);
    // A new commit changes it: its change is submitted at once, as attempt 0 of the new commit.
    let c2 = commit(
        &repo,
        &[(
            "state/flaky.toml",
            Some("[[resource]]\nkind = \"flaky\"\nname = \"f1\"\nsize = 2\n"),
        )],
        "two",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(
        plan.entry("flaky/f1").unwrap().state,
        Some(State::Succeeded),
        "{plan}"
    );
    let reqs = h.requests("flaky.apply").await;
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].request.dedup_key.as_deref(),
        Some(format!("git:{c2}:flaky/f1:create:0").as_str())
    );
    assert_eq!(reqs[1].request.args["size"].as_text(), "2");
    assert_eq!(h.metrics.gauge("youops_git_retries_pending"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_cut_short_is_resumed_at_its_commit_not_applied_again() {
    let mut h = H::local("", false).await;
    let repo = h.repo();
    let c1 = commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[("alice", "alice@example.com")])),
        )],
        "alice",
        "alice@example.com",
    );
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(h.world.names(), vec!["alice"]);

    // The state as a process killed after alice's request succeeded, but
    // before its pass saved (or a node whose copy is that old): still
    // applying c1, alice not recorded as applied.
    let path = h.dir.path().join("gitstate/state.json");
    let mut st: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(st["applying"], serde_json::Value::Null, "a finished pass");
    st["applied"] = serde_json::json!({});
    st["target"] = serde_json::Value::Null;
    st["applying"] = serde_json::json!(c1.to_string());
    std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
    h.restart().await;

    // The branch moved on meanwhile: the next pass applies bob, and alice's
    // request of c1 is found again, not made anew under the new commit.
    commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[
                ("alice", "alice@example.com"),
                ("bob", "bob@example.com"),
            ])),
        )],
        "bob",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.count(Action::Create), 1, "{plan}");
    assert_eq!(h.world.names(), vec!["alice", "bob"], "alice ran once");
    let reqs = h.requests("user.apply").await;
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(st["applying"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_cut_short_at_a_commit_gone_from_the_branch_is_given_up() {
    let mut h = H::local("", false).await;
    let repo = h.repo();
    let users = users_file(&[("alice", "alice@example.com")]);
    commit(
        &repo,
        &[("state/users.toml", Some(&users))],
        "alice",
        "alice@example.com",
    );
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    // Cut short at a commit the repository does not have (force-pushed away).
    let path = h.dir.path().join("gitstate/state.json");
    let mut st: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    st["applying"] = serde_json::json!("0123456789abcdef0123456789abcdef01234567");
    std::fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
    h.restart().await;
    let users = users_file(&[("alice", "alice@example.com"), ("bob", "bob@example.com")]);
    commit(
        &repo,
        &[("state/users.toml", Some(&users))],
        "bob",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.count(Action::Create), 1, "{plan}");
    assert_eq!(h.requests("user.apply").await.len(), 2);
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(st["applying"], serde_json::Value::Null);
}
