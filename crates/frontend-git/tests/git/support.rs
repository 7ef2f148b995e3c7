//! Shared harness: the "system" the ops change, the executor and audit
//! store, repositories and commits, and waiting helpers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use git2::{Oid, Repository, RepositoryInitOptions, Signature};
use metrics::{Key, Level, Metadata, Recorder};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use youops_core::config::Config;
use youops_core::runner::BuiltinCall;
use youops_core::{EventBody, Executor, RequestFilter, RequestRecord};
use youops_frontend_git::GitFrontend;
use youops_store::{LogOptions, LogStore};

// ---------------------------------------------------------------- the world

/// The "system" the ops change: users (mirrored to a JSON file an observer
/// `cat`s), and a log of every call.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) users: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    pub(crate) calls: Mutex<Vec<String>>,
    pub(crate) flaky_failures: AtomicUsize,
    pub(crate) json: PathBuf,
}

impl World {
    pub(crate) fn new(dir: &Path) -> Arc<World> {
        let w = Arc::new(World {
            users: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(Vec::new()),
            flaky_failures: AtomicUsize::new(0),
            json: dir.join("users.json"),
        });
        w.write_json();
        w
    }

    pub(crate) fn write_json(&self) {
        let users: Vec<_> = self.users.lock().unwrap().values().cloned().collect();
        std::fs::write(&self.json, serde_json::to_string(&users).unwrap()).unwrap();
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub(crate) fn user(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.users.lock().unwrap().get(name).cloned()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.users.lock().unwrap().keys().cloned().collect()
    }
}

pub(crate) fn arg(call: &BuiltinCall, k: &str) -> String {
    call.args.get(k).map(|v| v.as_text()).unwrap_or_default()
}

/// Open a store, retrying while an earlier handle in this process is still
/// being torn down (the store holds a file lock until its last handle drops).
pub(crate) async fn open_store(path: &Path) -> Arc<LogStore> {
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

pub(crate) async fn executor(cfg: &Config, store: &Path, world: &Arc<World>) -> Executor {
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

pub(crate) const OPS: &str = r#"
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

pub(crate) fn init_repo(path: &Path) -> Repository {
    let mut opts = RepositoryInitOptions::new();
    opts.initial_head("main");
    Repository::init_opts(path, &opts).unwrap()
}

/// Commit with git2: `Some(text)` writes a file, `None` removes it.
pub(crate) fn commit(
    repo: &Repository,
    files: &[(&str, Option<&str>)],
    message: &str,
    email: &str,
) -> Oid {
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
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, args, &[])
}

pub(crate) fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
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

pub(crate) fn users_file(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(n, e)| format!("[[resource]]\nkind = \"user\"\nname = \"{n}\"\nemail = \"{e}\"\n\n"))
        .collect()
}

// ---------------------------------------------------------------- harness

pub(crate) struct H {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) repo_dir: PathBuf,
    pub(crate) world: Arc<World>,
    pub(crate) cfg: Config,
    pub(crate) exec: Executor,
    pub(crate) git: GitFrontend,
    /// What `git` records.
    pub(crate) metrics: Recorded,
}

pub(crate) fn kinds_toml(observe: bool) -> String {
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

pub(crate) fn config(dir: &Path, section: &str, observe: bool) -> Config {
    let text = format!("{OPS}\n[frontends.git]\n{section}\n{}", kinds_toml(observe));
    Config::parse(&text, dir, "test", &|_| None).unwrap()
}

/// The frontend of `cfg`, recording into a recorder of its own.
pub(crate) fn frontend(cfg: &Config) -> (GitFrontend, Recorded) {
    Recorded::build(|| {
        GitFrontend::from_config(cfg.frontend("git").unwrap(), &cfg.kinds, &cfg.base_dir).unwrap()
    })
}

// ---------------------------------------------------------------- metrics

/// The metrics of one frontend: a [`DebuggingRecorder`] that was the local
/// recorder while the frontend was built (the frontend registers its handles
/// then), so tests never share a process-global recorder.
pub(crate) struct Recorded {
    recorder: DebuggingRecorder,
}

impl Recorded {
    /// Run `build` (that constructs a frontend) with a new recorder as the
    /// local one.
    pub(crate) fn build<T>(build: impl FnOnce() -> T) -> (T, Recorded) {
        let recorder = DebuggingRecorder::new();
        let built = metrics::with_local_recorder(&recorder, build);
        (built, Recorded { recorder })
    }

    /// The counter `name` (0 when never registered).
    pub(crate) fn counter(&self, name: &str) -> u64 {
        match self.value(name) {
            Some(DebugValue::Counter(n)) => n,
            None => 0,
            Some(v) => panic!("{name} is not a counter: {v:?}"),
        }
    }

    /// The gauge `name` (0 when never registered).
    pub(crate) fn gauge(&self, name: &str) -> f64 {
        match self.value(name) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            None => 0.0,
            Some(v) => panic!("{name} is not a gauge: {v:?}"),
        }
    }

    fn value(&self, name: &str) -> Option<DebugValue> {
        let snapshot = self.recorder.snapshotter().snapshot().into_vec();
        // Taking a snapshot resets the counters and gauges it reads to 0:
        // put every value back, so that reading is not a side effect.
        let md = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let mut found = None;
        for (key, _, _, value) in snapshot {
            let key: &Key = key.key();
            match &value {
                DebugValue::Counter(n) => self.recorder.register_counter(key, &md).increment(*n),
                DebugValue::Gauge(v) => self.recorder.register_gauge(key, &md).set(v.into_inner()),
                DebugValue::Histogram(_) => {}
            }
            if key.name() == name {
                found = Some(value);
            }
        }
        found
    }
}

impl H {
    /// A local repository with desired state under `state/`.
    pub(crate) async fn local(extra: &str, observe: bool) -> H {
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

    pub(crate) async fn with_section(
        dir: tempfile::TempDir,
        repo_dir: PathBuf,
        section: &str,
        observe: bool,
    ) -> H {
        let world = World::new(dir.path());
        let cfg = config(dir.path(), section, observe);
        let exec = executor(&cfg, &dir.path().join("store"), &world).await;
        let (git, metrics) = frontend(&cfg);
        H {
            dir,
            repo_dir,
            world,
            cfg,
            exec,
            git,
            metrics,
        }
    }

    pub(crate) fn repo(&self) -> Repository {
        Repository::open(&self.repo_dir).unwrap()
    }

    /// Stop the executor, reopen the store, build a new executor and frontend:
    /// what a daemon restart does.
    pub(crate) async fn restart(&mut self) {
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
        (self.git, self.metrics) = frontend(&self.cfg);
    }

    pub(crate) async fn notices(&self, kind: &str) -> Vec<(String, serde_json::Value)> {
        notices(&self.exec, kind).await
    }

    pub(crate) async fn requests(&self, op: &str) -> Vec<RequestRecord> {
        let filter = RequestFilter {
            op: Some(op.into()),
            ..Default::default()
        };
        let mut v = self.exec.list(&filter, None, 1000).await.unwrap();
        v.reverse();
        v
    }

    pub(crate) fn git_note(&self, commit: Oid) -> String {
        git(
            &self.repo_dir,
            &["notes", "--ref", "youops", "show", &commit.to_string()],
        )
    }
}

pub(crate) fn ulid_like() -> String {
    format!("{:?}", Instant::now()).replace(|c: char| !c.is_ascii_alphanumeric(), "")
}

pub(crate) async fn notices(exec: &Executor, kind: &str) -> Vec<(String, serde_json::Value)> {
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

pub(crate) use youops_testkit::eventually_within as eventually;

pub(crate) fn github_signature(secret: &str, body: &[u8]) -> String {
    youops_testkit::sign::github_signature(secret.as_bytes(), body)
}

pub(crate) fn webhook_request(headers: &[(&str, String)], body: &[u8]) -> http::Request<Bytes> {
    let mut b = http::Request::builder().method("POST").uri("/git/webhook");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Bytes::copy_from_slice(body)).unwrap()
}
