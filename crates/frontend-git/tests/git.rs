//! Integration tests of the GitOps frontend: real repositories in temp dirs
//! (made with git2, and with the `git` CLI as a real peer for remotes, pushes,
//! force-pushes, signing and reading notes), a real sled audit store, the real
//! executor, the frontend host the daemon uses, and the core conformance suite.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use git2::{Oid, Repository, RepositoryInitOptions, Signature};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use youops_core::config::Config;
use youops_core::frontend::conformance::{run_suite, Driver};
use youops_core::frontend::{Frontend, FrontendHost, Frontends};
use youops_core::runner::BuiltinCall;
use youops_core::{EventBody, Executor, RequestFilter, RequestId, RequestRecord, State};
use youops_frontend_git::state::note_request_states;
use youops_frontend_git::{
    check_drift, poll_once, reconcile_once, Action, GitError, GitFrontend, NOTES_REF,
};
use youops_store::{LogOptions, LogStore};

// ---------------------------------------------------------------- the world

/// The "system" the ops change: users (mirrored to a JSON file an observer
/// `cat`s), and a log of every call.
#[derive(Debug)]
struct World {
    users: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    calls: Mutex<Vec<String>>,
    flaky_failures: AtomicUsize,
    json: PathBuf,
}

impl World {
    fn new(dir: &Path) -> Arc<World> {
        let w = Arc::new(World {
            users: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(Vec::new()),
            flaky_failures: AtomicUsize::new(0),
            json: dir.join("users.json"),
        });
        w.write_json();
        w
    }

    fn write_json(&self) {
        let users: Vec<_> = self.users.lock().unwrap().values().cloned().collect();
        std::fs::write(&self.json, serde_json::to_string(&users).unwrap()).unwrap();
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn user(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.users.lock().unwrap().get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.users.lock().unwrap().keys().cloned().collect()
    }
}

fn arg(call: &BuiltinCall, k: &str) -> String {
    call.args.get(k).map(|v| v.as_text()).unwrap_or_default()
}

/// Open a store, retrying while an earlier handle in this process is still
/// being torn down (the store holds a file lock until its last handle drops).
async fn open_store(path: &Path) -> Arc<LogStore> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match LogStore::open(path, LogOptions::default()) {
            Ok(s) => return Arc::new(s),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot reopen the store at {}: {e}",
                    path.display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn executor(cfg: &Config, store: &Path, world: &Arc<World>) -> Executor {
    let store = open_store(store).await;
    let (w1, w2, w3, w4) = (world.clone(), world.clone(), world.clone(), world.clone());
    Executor::builder(cfg, store)
        .builtin("user.apply", move |call: BuiltinCall| {
            let w = w1.clone();
            async move {
                let name = arg(&call, "name");
                let mut fields = BTreeMap::from([("name".to_string(), name.clone())]);
                if call.args.contains_key("email") {
                    fields.insert("email".into(), arg(&call, "email"));
                }
                w.calls
                    .lock()
                    .unwrap()
                    .push(format!("apply {name} {}", arg(&call, "email")));
                w.users.lock().unwrap().insert(name, fields);
                w.write_json();
                Ok("applied".to_string())
            }
        })
        .builtin("user.delete", move |call: BuiltinCall| {
            let w = w2.clone();
            async move {
                let name = arg(&call, "name");
                w.calls.lock().unwrap().push(format!("delete {name}"));
                w.users.lock().unwrap().remove(&name);
                w.write_json();
                Ok("deleted".to_string())
            }
        })
        .builtin("cache.flush", move |call: BuiltinCall| {
            let w = w3.clone();
            async move {
                w.calls
                    .lock()
                    .unwrap()
                    .push(format!("flush {}", arg(&call, "env")));
                Ok("flushed".to_string())
            }
        })
        .builtin("flaky.apply", move |call: BuiltinCall| {
            let w = w4.clone();
            async move {
                let name = arg(&call, "name");
                let left = w.flaky_failures.load(Ordering::SeqCst);
                if left > 0 {
                    w.flaky_failures.store(left - 1, Ordering::SeqCst);
                    w.calls.lock().unwrap().push(format!("flaky {name} fail"));
                    Err("the flaky backend is down".to_string())
                } else {
                    w.calls.lock().unwrap().push(format!("flaky {name} ok"));
                    Ok("ok".to_string())
                }
            }
        })
        .build()
        .await
        .unwrap()
}

const OPS: &str = r#"
[[ops]]
name = "user.apply"
runner = { type = "builtin", name = "user.apply" }
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "email"
type = "string"
required = false

[[ops]]
name = "user.delete"
runner = { type = "builtin", name = "user.delete" }
[[ops.params]]
name = "name"
type = "string"

[[ops]]
name = "cache.flush"
runner = { type = "builtin", name = "cache.flush" }
[[ops.params]]
name = "env"
type = "string"

[[ops]]
name = "flaky.apply"
runner = { type = "builtin", name = "flaky.apply" }
[[ops.params]]
name = "name"
type = "string"
[[ops.params]]
name = "size"
type = "int"
required = false

[principals.alice]
roles = ["ops"]
identities = { git = ["alice@example.com"] }

[[grants]]
roles = ["ops"]
ops = ["*"]
"#;

// ---------------------------------------------------------------- repos

fn init_repo(path: &Path) -> Repository {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head("main");
    Repository::init_opts(path, &opts).unwrap()
}

/// Commit with git2: `Some(text)` writes a file, `None` removes it.
fn commit(repo: &Repository, files: &[(&str, Option<&str>)], message: &str, email: &str) -> Oid {
    let wd = repo.workdir().unwrap().to_path_buf();
    let mut index = repo.index().unwrap();
    for (p, content) in files {
        let full = wd.join(p);
        match content {
            Some(c) => {
                std::fs::create_dir_all(full.parent().unwrap()).unwrap();
                std::fs::write(&full, c).unwrap();
                index.add_path(Path::new(p)).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(&full);
                index.remove_path(Path::new(p)).unwrap();
            }
        }
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Alice", email).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, args, &[])
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn users_file(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(n, e)| format!("[[resource]]\nkind = \"user\"\nname = \"{n}\"\nemail = \"{e}\"\n\n"))
        .collect()
}

// ---------------------------------------------------------------- harness

struct H {
    dir: tempfile::TempDir,
    repo_dir: PathBuf,
    world: Arc<World>,
    cfg: Config,
    exec: Executor,
    git: GitFrontend,
}

fn kinds_toml(observe: bool) -> String {
    format!(
        r#"
[[kinds]]
name = "user"
apply = "user.apply"
delete = "user.delete"
{}

[[kinds]]
name = "flaky"
apply = "flaky.apply"
"#,
        if observe {
            "observe = [\"cat\", \"users.json\"]"
        } else {
            ""
        }
    )
}

fn config(dir: &Path, section: &str, observe: bool) -> Config {
    let text = format!("{OPS}\n[frontends.git]\n{section}\n{}", kinds_toml(observe));
    Config::parse(&text, dir, "test", &|_| None).unwrap()
}

fn frontend(cfg: &Config) -> GitFrontend {
    GitFrontend::from_config(cfg.frontend("git").unwrap(), &cfg.kinds, &cfg.base_dir).unwrap()
}

impl H {
    /// A local repository with desired state under `state/`.
    async fn local(extra: &str, observe: bool) -> H {
        let dir = tempfile::tempdir().unwrap();
        let repo_dir = dir.path().join("repo");
        init_repo(&repo_dir);
        let retry = if extra.contains("retry_base") {
            ""
        } else {
            "retry_base = \"100ms\"\nretry_max = \"1s\"\n"
        };
        let section =
            format!("repo = \"repo\"\npath = \"state\"\nstate_dir = \"gitstate\"\n{retry}{extra}");
        Self::with_section(dir, repo_dir, &section, observe).await
    }

    async fn with_section(
        dir: tempfile::TempDir,
        repo_dir: PathBuf,
        section: &str,
        observe: bool,
    ) -> H {
        let world = World::new(dir.path());
        let cfg = config(dir.path(), section, observe);
        let exec = executor(&cfg, &dir.path().join("store"), &world).await;
        let git = frontend(&cfg);
        H {
            dir,
            repo_dir,
            world,
            cfg,
            exec,
            git,
        }
    }

    fn repo(&self) -> Repository {
        Repository::open(&self.repo_dir).unwrap()
    }

    /// Stop the executor, reopen the store, build a new executor and frontend:
    /// what a daemon restart does.
    async fn restart(&mut self) {
        self.exec.shutdown(Duration::from_secs(5)).await.unwrap();
        let store = self.dir.path().join("store");
        // Drop the old executor (and with it the store's lock) before reopening.
        let old = std::mem::replace(&mut self.exec, {
            let cfg = Config::parse("", self.dir.path(), "empty", &|_| None).unwrap();
            let tmp = self.dir.path().join(format!("scratch-{}", ulid_like()));
            Executor::builder(
                &cfg,
                Arc::new(LogStore::open(tmp, LogOptions::default()).unwrap()),
            )
            .build()
            .await
            .unwrap()
        });
        drop(old);
        self.exec = executor(&self.cfg, &store, &self.world).await;
        self.git = frontend(&self.cfg);
    }

    async fn notices(&self, kind: &str) -> Vec<(String, serde_json::Value)> {
        notices(&self.exec, kind).await
    }

    async fn requests(&self, op: &str) -> Vec<RequestRecord> {
        let filter = RequestFilter {
            op: Some(op.into()),
            ..Default::default()
        };
        let mut v = self.exec.list(&filter, None, 1000).await.unwrap();
        v.reverse();
        v
    }

    fn git_note(&self, commit: Oid) -> String {
        git(
            &self.repo_dir,
            &["notes", "--ref", "youops", "show", &commit.to_string()],
        )
    }
}

fn ulid_like() -> String {
    format!("{:?}", Instant::now()).replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

async fn notices(exec: &Executor, kind: &str) -> Vec<(String, serde_json::Value)> {
    exec.store()
        .events(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::Notice {
                kind: k,
                message,
                data,
                ..
            } if k == kind => Some((message, data)),
            _ => None,
        })
        .collect()
}

async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- tests

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
    assert_eq!(h.git.metrics().noop_passes, 1);

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
    assert_eq!(h.git.metrics().invalid_commits, 1);

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
    assert_eq!(h.git.metrics().retries_pending, 1);

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
        (h.git.metrics().retries_pending == 0).then_some(())
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
    assert_eq!(h.git.metrics().retries_pending, 0);
}

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
    assert_eq!(h.git.metrics().force_pushes, 1);
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

fn ssh_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen must be installed (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

#[tokio::test]
async fn require_signed_accepts_allowed_ssh_signatures_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, alice_pub) = ssh_keygen(dir.path(), "alice_key");
    let (mallory_key, _) = ssh_keygen(dir.path(), "mallory_key");
    std::fs::write(
        dir.path().join("allowed_signers"),
        format!("alice@example.com {alice_pub}\n"),
    )
    .unwrap();
    let repo_dir = dir.path().join("repo");
    init_repo(&repo_dir);
    let section = "repo = \"repo\"\npath = \"state\"\nstate_dir = \"gitstate\"\nrequire_signed = true\nallowed_signers = \"allowed_signers\"\n";
    let h = H::with_section(dir, repo_dir.clone(), section, false).await;
    let commit_cli =
        |file: &str, users: &[(&str, &str)], msg: &str, key: Option<&Path>| -> String {
            let p = repo_dir.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, users_file(users)).unwrap();
            git(&repo_dir, &["add", "-A"]);
            match key {
                Some(k) => git(
                    &repo_dir,
                    &[
                        "-c",
                        "gpg.format=ssh",
                        "-c",
                        &format!("user.signingkey={}", k.display()),
                        "commit",
                        "-q",
                        "-S",
                        "-m",
                        msg,
                    ],
                ),
                None => git(&repo_dir, &["commit", "-q", "-m", msg]),
            };
            git(&repo_dir, &["rev-parse", "HEAD"]).trim().to_string()
        };

    // Signed by alice's allowed key: applied, and the note says by whom.
    let good = commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example")],
        "signed",
        Some(&alice_key),
    );
    let plan = reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert_eq!(plan.changes().count(), 1);
    assert!(h.world.user("alice").is_some());
    let note = git(&repo_dir, &["notes", "--ref", "youops", "show", &good]);
    assert!(
        note.contains("Signature: Good \"git\" signature for alice@example.com"),
        "{note}"
    );

    // Unsigned: refused, nothing applied, its trailer does not run, audited.
    let unsigned = commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example"), ("eve", "e@x.example")],
        "unsigned\n\nYouops-Run: cache.flush env=unsigned",
        None,
    );
    let err = reconcile_once(&h.exec, &h.git, false).await.unwrap_err();
    assert_eq!(err.code(), "commit_refused");
    assert!(err.to_string().contains("not signed"), "{err}");
    assert!(h.world.user("eve").is_none());
    assert!(!h.world.calls().iter().any(|c| c.contains("unsigned")));
    let n = h.notices("commit_refused").await;
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].1["commit"], unsigned);

    // Signed, but by a key not allowed for the author: refused too.
    let forged = commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example"), ("mallory", "m@x.example")],
        "forged",
        Some(&mallory_key),
    );
    let err = reconcile_once(&h.exec, &h.git, false).await.unwrap_err();
    assert_eq!(err.code(), "commit_refused");
    assert!(h.world.user("mallory").is_none());
    let n = h.notices("commit_refused").await;
    assert_eq!(n.len(), 2);
    assert_eq!(n[1].1["commit"], forged);
    let note = git(&repo_dir, &["notes", "--ref", "youops", "show", &forged]);
    assert!(note.contains("refused: SSH signature not valid"), "{note}");

    // A signed fix applies again.
    commit_cli(
        "state/users.toml",
        &[("alice", "a@x.example"), ("bob", "b@x.example")],
        "signed again",
        Some(&alice_key),
    );
    reconcile_once(&h.exec, &h.git, false).await.unwrap();
    assert!(h.world.user("bob").is_some());
    assert!(h.world.user("eve").is_none() && h.world.user("mallory").is_none());
    assert_eq!(h.git.metrics().refused_commits, 2);
}

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
    assert_eq!(h.git.metrics().drift_detected, 1);
    assert_eq!(h.git.metrics().drifted_now, 1);
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
    let healer = GitFrontend::from_config(&section, &h.cfg.kinds, h.dir.path()).unwrap();
    let r = check_drift(&h.exec, &healer).await.unwrap();
    assert_eq!(r.healed.len(), 1);
    assert_eq!(r.healed[0].2, State::Succeeded);
    assert_eq!(h.world.user("alice").unwrap()["email"], "a@x.example");
    assert_eq!(healer.metrics().drift_corrected, 1);
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
    let git = frontend(&cfg);
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

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook_request(headers: &[(&str, String)], body: &[u8]) -> http::Request<Bytes> {
    let mut b = http::Request::builder().method("POST").uri("/git/webhook");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Bytes::copy_from_slice(body)).unwrap()
}

#[tokio::test]
async fn webhook_triggers_reconcile_and_bad_signature_is_401() {
    let secret = "webhook-secret-123";
    let h = H::local(
        &format!("interval = \"1h\"\nwebhook_secret = \"{secret}\"\nwebhook_token = \"plain-trigger-token\""),
        false,
    )
    .await;
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
    let shutdown = CancellationToken::new();
    let host = FrontendHost::new(
        &Frontends::new().with(h.git.clone()),
        &h.exec,
        None,
        &shutdown,
        |_| toml::Table::new(),
    );
    let routes = host.routes();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].0.path, "/git/webhook");
    let index = routes[0].1;
    let handles = host.spawn();
    eventually("ready", 10, || async { h.git.is_ready().then_some(()) }).await;
    assert!(
        h.world.user("alice").is_some(),
        "the first pass ran at start"
    );

    let c2 = commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[
                ("alice", "a@x.example"),
                ("bob", "b@x.example"),
            ])),
        )],
        "two",
        "alice@example.com",
    );
    let push = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": c2.to_string(),
        "repository": { "full_name": "acme/desired-state" },
        "pusher": { "name": "alice", "email": "alice@example.com" },
    });
    let body = serde_json::to_vec(&push).unwrap();
    let headers = |sig: String| {
        vec![
            ("x-github-event", "push".to_string()),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
            ),
            ("content-type", "application/json".to_string()),
            ("x-hub-signature-256", sig),
        ]
    };
    // Bad signature, missing signature, wrong token: 401, nothing happens.
    let r = host
        .handle(
            index,
            webhook_request(&headers(github_signature("not-the-secret", &body)), &body),
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = host
        .handle(
            index,
            webhook_request(&[("x-github-event", "push".into())], &body),
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = host
        .handle(
            index,
            webhook_request(&[("authorization", "Bearer wrong-token-xyz".into())], b""),
        )
        .await;
    assert_eq!(r.status(), 401);
    // The tampered body with the original signature is refused too.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let r = host
        .handle(
            index,
            webhook_request(&headers(github_signature(secret, &body)), &tampered),
        )
        .await;
    assert_eq!(r.status(), 401);
    assert!(h.world.user("bob").is_none());
    assert_eq!(h.git.metrics().webhooks_rejected, 4);

    // A signed push event triggers an immediate pass.
    let r = host
        .handle(
            index,
            webhook_request(&headers(github_signature(secret, &body)), &body),
        )
        .await;
    assert_eq!(r.status(), 202, "{:?}", r.body());
    eventually("bob to be applied after the webhook", 10, || async {
        h.world.user("bob").map(|_| ())
    })
    .await;

    // The plain bearer trigger works as well.
    commit(
        &repo,
        &[(
            "state/users.toml",
            Some(&users_file(&[
                ("alice", "a@x.example"),
                ("bob", "b@x.example"),
                ("carol", "c@x.example"),
            ])),
        )],
        "three",
        "alice@example.com",
    );
    let r = host
        .handle(
            index,
            webhook_request(
                &[("authorization", "Bearer plain-trigger-token".into())],
                b"",
            ),
        )
        .await;
    assert_eq!(r.status(), 202);
    eventually("carol to be applied after the trigger", 10, || async {
        h.world.user("carol").map(|_| ())
    })
    .await;
    shutdown.cancel();
    for j in handles {
        j.await.unwrap().unwrap();
    }
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
    let noop_before = h.git.metrics().noop_passes;
    eventually("an unchanged head to make no-op passes", 10, || async {
        (h.git.metrics().noop_passes > noop_before).then_some(())
    })
    .await;
    assert_eq!(h.requests("user.apply").await.len(), 1);
    shutdown.cancel();
    for j in handles {
        j.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------- conformance

struct GitDriver {
    dir: tempfile::TempDir,
    commits: Mutex<HashMap<String, Oid>>,
}

const DRIVER_TOKEN: &str = "conformance-token";

impl GitDriver {
    fn new() -> GitDriver {
        let dir = tempfile::tempdir().unwrap();
        let repo = init_repo(&dir.path().join("repo"));
        commit(
            &repo,
            &[("README.md", Some("conformance\n"))],
            "initial",
            "tester@example.com",
        );
        GitDriver {
            dir,
            commits: Mutex::new(HashMap::new()),
        }
    }

    fn section(&self) -> String {
        format!(
            "repo = \"{}\"\nstate_dir = \"{}\"\ninterval = \"1h\"\nwebhook_token = \"{DRIVER_TOKEN}\"\n",
            self.dir.path().join("repo").display(),
            self.dir.path().join("gitstate").display()
        )
    }
}

#[async_trait]
impl Driver for GitDriver {
    fn frontend(&self) -> Arc<dyn Frontend> {
        let section: toml::Table = toml::from_str(&self.section()).unwrap();
        Arc::new(GitFrontend::from_config(&section, &[], self.dir.path()).unwrap())
    }

    fn user_id(&self) -> String {
        "tester@example.com".into()
    }

    fn config_section(&self) -> String {
        self.section()
    }

    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String> {
        let known = self.commits.lock().unwrap().get(delivery).copied();
        if known.is_none() {
            let repo = Repository::open(self.dir.path().join("repo")).map_err(|e| e.to_string())?;
            let oid = commit(
                &repo,
                &[("deliveries.txt", Some(delivery))],
                &format!("delivery {delivery}\n\nYouops-Run: {command}\n"),
                "tester@example.com",
            );
            self.commits
                .lock()
                .unwrap()
                .insert(delivery.to_string(), oid);
        }
        let (_, index) = host
            .routes()
            .into_iter()
            .find(|(r, _)| r.path == "/git/webhook")
            .ok_or("no webhook route")?;
        let r = host
            .handle(
                index,
                webhook_request(&[("authorization", format!("Bearer {DRIVER_TOKEN}"))], b""),
            )
            .await;
        if r.status() != 202 {
            return Err(format!("webhook answered {}", r.status()));
        }
        Ok(())
    }

    async fn rendered(&self, id: RequestId) -> Vec<State> {
        let Ok(repo) = Repository::open(self.dir.path().join("repo")) else {
            return Vec::new();
        };
        let Ok(notes) = repo.notes(Some(NOTES_REF)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for n in notes.flatten() {
            if let Ok(note) = repo.find_note(Some(NOTES_REF), n.1) {
                for (rid, state) in note_request_states(note.message().unwrap_or("")) {
                    if rid == id.to_string() {
                        if let Ok(s) = state.parse() {
                            out.push(s);
                        }
                    }
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn conformance_suite() {
    let driver = GitDriver::new();
    let report = run_suite(&driver).await.unwrap();
    assert_eq!(report.record.state, State::Succeeded);
    assert_eq!(report.rendered, vec![State::Succeeded]);
    let commit = driver.commits.lock().unwrap()["conformance-1"];
    assert_eq!(
        report.record.request.dedup_key.as_deref(),
        Some(format!("git:{commit}:run:0").as_str())
    );
}
