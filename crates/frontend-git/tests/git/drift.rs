//! Drift detection and self-heal, and observers that misbehave.

use std::time::{Duration, Instant};

use git2::Repository;
use youops_core::config::Config;
use youops_core::State;
use youops_frontend_git::{check_drift, reconcile_once, Action, GitFrontend};

use crate::support::*;

#[tokio::test]
async fn drift_is_detected_audited_and_self_healed() {
    let h = H::local("", true).await;
    let repo = h.repo();
    let c1 = commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[
                ("alice", "a@x.example"),
                ("bob", "b@x.example"),
            ])),
        )],
        "users",
        "alice@example.com",
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.count(Action::Create), 2);
    // In sync: no drift.
    let r = check_drift(&h.exec, &h.git).await.unwrap();
    assert!(r.drifted.is_empty(), "{:?}", r.drifted);

    // Someone changes alice by hand, behind git's back.
    h.world
        .users
        .lock()
        .unwrap()
        .get_mut("alice")
        .unwrap()
        .insert("email".into(), "hacked@x.example".into());
    h.world.write_json();
    let r = check_drift(&h.exec, &h.git).await.unwrap();
    assert_eq!(r.new, vec!["user/alice"]);
    assert!(r.healed.is_empty(), "self_heal is off");
    assert_eq!(h.world.user("alice").unwrap()["email"], "hacked@x.example");
    let n = h.notices("drift").await;
    assert_eq!(n.len(), 1);
    assert!(n[0].0.contains("user/alice"), "{}", n[0].0);
    assert_eq!(h.metrics.counter("youops_git_drift_detected_total"), 1);
    assert_eq!(h.metrics.gauge("youops_git_drifted_resources"), 1.0);
    assert!(h.git_note(c1).contains("drift ~ user/alice"));
    // Still drifted: reported once, not on every check.
    let r = check_drift(&h.exec, &h.git).await.unwrap();
    assert_eq!(r.drifted.len(), 1);
    assert!(r.new.is_empty());
    assert_eq!(h.notices("drift").await.len(), 1);

    // With self-heal on, the next check corrects it through the executor.
    let section: toml::Table = toml::from_str(
        "repo = \"repo\"\npath = \"state\"\nstate_dir = \"gitstate\"\nself_heal = true",
    )
    .unwrap();
    let (healer, healed) =
        Recorded::build(|| GitFrontend::from_config(&section, &h.cfg.kinds, h.dir.path()).unwrap());
    let r = check_drift(&h.exec, &healer).await.unwrap();
    assert_eq!(r.healed.len(), 1);
    assert_eq!(r.healed[0].2, State::Succeeded);
    assert_eq!(h.world.user("alice").unwrap()["email"], "a@x.example");
    assert_eq!(healed.counter("youops_git_drift_corrected_total"), 1);
    let heal = h.exec.get(r.healed[0].1).await.unwrap();
    assert_eq!(heal.request.provenance["reason"], "self-heal");
    assert_eq!(heal.request.provenance["commit"], c1.to_string());
    let r = check_drift(&h.exec, &healer).await.unwrap();
    assert!(r.drifted.is_empty());

    // A resource deleted by hand is drift too; a kind's self_heal overrides.
    h.world.users.lock().unwrap().remove("bob");
    h.world.write_json();
    let plan = reconcile_once(&h.exec, &h.git, true).await.unwrap();
    assert_eq!(
        plan.entry("user/bob").unwrap().action,
        Action::Create,
        "the observer is the actual state"
    );
    let r = check_drift(&h.exec, &h.git).await.unwrap();
    assert_eq!(r.new, vec!["user/bob"]);
}

/// An observer that prints the world's users, or the garbage `observe.mode` names.
const GARBAGE_OBSERVER: &str = r#"
case "$(cat observe.mode)" in
good) cat users.json ;;
text) echo 'Traceback (most recent call last):'; echo '  File "list-users", line 3, in <module>' ;;
truncated) printf '[{"name":"alice","email":"a@x.example"},{"name":"bo' ;;
not-utf8) printf '[{"name":"alice","email":"a@x.example"},{"name":"bob","email":"b\377@x.example"}]' ;;
huge) yes '{"name":"alice","email":"a@x.example"},' ;;
fails) echo 'backend unreachable' >&2; cat users.json; exit 3 ;;
hangs) sleep 30 & echo $! > observe.pid; wait ;;
esac
"#;

/// Whether a process is running (a zombie awaiting its reaper is not).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn an_observer_printing_garbage_is_audited_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    init_repo(&repo_dir);
    std::fs::write(dir.path().join("observe.sh"), GARBAGE_OBSERVER).unwrap();
    let mode = |m: &str| std::fs::write(dir.path().join("observe.mode"), m).unwrap();
    mode("good");
    // Self-heal on: garbage taken for the actual state would run ops at once.
    let text = format!(
        r#"{OPS}
[frontends.git]
repo = "repo"
path = "state"
state_dir = "gitstate"
retry_base = "100ms"
retry_max = "1s"
self_heal = true

[[kinds]]
name = "user"
apply = "user.apply"
delete = "user.delete"
observe = ["sh", "observe.sh"]
observe_timeout = "4s"

[[kinds]]
name = "flaky"
apply = "flaky.apply"
"#
    );
    let cfg = Config::parse(&text, dir.path(), "test", &|_| None).unwrap();
    let world = World::new(dir.path());
    let exec = executor(&cfg, &dir.path().join("store"), &world).await;
    let (git, _metrics) = frontend(&cfg);
    let repo = Repository::open(&repo_dir).unwrap();
    let flaky = |n: usize| -> String {
        (0..=n)
            .map(|i| format!("[[resource]]\nkind = \"flaky\"\nname = \"f{i}\"\n\n"))
            .collect()
    };
    commit(
        &repo,
        &[
            (
                "state/users.toml",
                Some(&users_file(&[
                    ("alice", "a@x.example"),
                    ("bob", "b@x.example"),
                ])),
            ),
            ("state/flaky.toml", Some(&flaky(0))),
        ],
        "users and a flaky resource",
        "alice@example.com",
    );
    let plan = reconcile_once(&exec, &git, false).await.unwrap();
    assert_eq!(plan.count(Action::Create), 3, "{plan}");
    assert_eq!(world.names(), ["alice", "bob"]);
    assert!(check_drift(&exec, &git).await.unwrap().drifted.is_empty());

    let cases = [
        ("text", "no valid JSON: expected value at line 1 column 1"),
        ("truncated", "no valid JSON: EOF while parsing"),
        ("not-utf8", "not UTF-8 (invalid byte at offset 64)"),
        ("huge", "printed more than 64 MiB"),
        ("fails", "exited with exit status: 3: backend unreachable"),
        ("hangs", "did not finish within 4s"),
    ];
    for (i, (garbage, why)) in cases.into_iter().enumerate() {
        mode(garbage);
        let calls_before = world.calls().len();
        // A new commit touching both kinds: a new user and a new flaky resource.
        let user = format!("u{i}");
        commit(
            &repo,
            &[
                (
                    "state/users.toml",
                    Some(&users_file(&[
                        ("alice", "a@x.example"),
                        ("bob", "b@x.example"),
                        (&user, "u@x.example"),
                    ])),
                ),
                ("state/flaky.toml", Some(&flaky(i + 1))),
            ],
            &format!("add {user}"),
            "alice@example.com",
        );
        let t0 = Instant::now();
        let plan = reconcile_once(&exec, &git, false).await.unwrap();
        // A hanging observer costs its timeout (4 s), not the pass.
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{garbage}: the pass took {:?}",
            t0.elapsed()
        );
        // The user kind was not planned against garbage: nothing ran for it…
        assert!(
            plan.entries.iter().all(|e| e.kind != "user"),
            "{garbage}: {plan}"
        );
        assert_eq!(plan.kind_errors.len(), 1, "{garbage}: {plan}");
        assert!(
            plan.kind_errors[0].contains("kind `user`") && plan.kind_errors[0].contains(why),
            "{garbage}: {:?}",
            plan.kind_errors
        );
        // …while the other kind went on.
        let f = plan.entry(&format!("flaky/f{}", i + 1)).unwrap();
        assert_eq!(f.state, Some(State::Succeeded), "{garbage}: {plan}");
        let new_calls = world.calls()[calls_before..].to_vec();
        assert_eq!(
            new_calls,
            [format!("flaky f{} ok", i + 1)],
            "{garbage}: only the other kind's change ran"
        );
        // The audit log names the kind, the cause and the unchecked resources.
        let n = notices(&exec, "observe_failed").await;
        assert_eq!(n.len(), i + 1, "{garbage}: one notice per new failure");
        let (message, data) = n.last().unwrap();
        assert!(
            message.contains("kind `user`")
                && message.contains(why)
                && message.contains(&format!("user/{user}")),
            "{garbage}: {message}"
        );
        assert_eq!(data["kind"], "user");
        assert_eq!(data["resources"].as_array().unwrap().len(), 3, "{data}");
        // A drift check on the same garbage: no bogus drift, no self-heal, and
        // the lasting failure is not recorded again.
        let r = check_drift(&exec, &git).await.unwrap();
        assert!(r.drifted.is_empty() && r.new.is_empty(), "{garbage}: {r:?}");
        assert!(r.healed.is_empty(), "{garbage}: {r:?}");
        assert_eq!(r.kind_errors.len(), 1, "{garbage}: {r:?}");
        assert_eq!(notices(&exec, "observe_failed").await.len(), i + 1);
        assert!(notices(&exec, "drift").await.is_empty(), "{garbage}");
        assert_eq!(world.calls().len(), calls_before + 1, "{garbage}");
        assert_eq!(world.names(), ["alice", "bob"], "{garbage}");
        if garbage == "hangs" {
            // What the observer started was killed with it.
            let pid = std::fs::read_to_string(dir.path().join("observe.pid")).unwrap();
            let pid = pid.trim().to_string();
            eventually("the observer's child to be gone", 5, || {
                let alive = running(&pid);
                async move { (!alive).then_some(()) }
            })
            .await;
        }
    }

    // The observer works again: the next pass compares the kind and applies
    // what is missing; the recovery is on the record.
    mode("good");
    let plan = reconcile_once(&exec, &git, false).await.unwrap();
    assert!(plan.kind_errors.is_empty(), "{plan}");
    let last = format!("u{}", cases.len() - 1);
    assert_eq!(
        plan.entry(&format!("user/{last}")).unwrap().state,
        Some(State::Succeeded),
        "{plan}"
    );
    assert!(world.user(&last).is_some());
    let recovered = notices(&exec, "observe_recovered").await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(recovered[0].0.contains("kind `user`"));
    let r = check_drift(&exec, &git).await.unwrap();
    assert!(r.drifted.is_empty() && r.kind_errors.is_empty(), "{r:?}");
    assert!(exec.store().verify().await.unwrap().ok());
}
