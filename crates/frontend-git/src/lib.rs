//! # youops-frontend-git
//!
//! The GitOps frontend: desired state declared as TOML files in a git
//! repository, pulled on an interval (and at once on `POST /git/webhook`),
//! planned against the actual state and applied through the core executor, one
//! request per change. Commit trailers `Youops-Run: <command>` run once per
//! commit and trailer; results are written back as git notes under
//! `refs/notes/youops`. See `docs/frontends/git.md`.
//!
//! ```
//! use youops_frontend_git::{desired, GitFrontend};
//!
//! let section: toml::Table = toml::from_str(r#"
//!     repo = "/srv/desired-state"
//!     branch = "main"
//!     path = "state"
//!     prune = true
//! "#).unwrap();
//! let kinds: Vec<toml::Table> = vec![toml::from_str(r#"
//!     name = "user"
//!     key = "name"
//!     apply = "user.apply"
//!     delete = "user.delete"
//! "#).unwrap()];
//! let git = GitFrontend::from_config(&section, &kinds, std::path::Path::new("/etc/youops")).unwrap();
//! assert_eq!(git.config().branch, "main");
//!
//! let files = vec![("state/users.toml".to_string(),
//!     "[[resource]]\nkind = \"user\"\nname = \"alice\"\nemail = \"alice@example.com\"\n".to_string())];
//! let state = desired::parse_files(&files, git.kinds()).unwrap();
//! assert_eq!(state.resources["user/alice"].fields["email"], "alice@example.com");
//!
//! let bad = vec![("state/x.toml".to_string(), "[[resource]]\nkind = \"robot\"\nname = \"r\"\n".to_string())];
//! let errors = desired::parse_files(&bad, git.kinds()).unwrap_err();
//! assert!(errors[0].to_string().starts_with("state/x.toml:2: unknown kind `robot`"));
//! ```

pub mod config;
pub mod desired;
pub mod plan;
pub mod repo;
mod signing;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use git2::Oid;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use youops_core::frontend::{
    json_response, simple_response, Frontend, FrontendContext, FrontendError, HttpRequest,
    HttpResponse, HttpRoute, StreamError,
};
use youops_core::{
    Actor, DedupKey, Executor, Lifecycle, Origin, Reply, RequestId, RequestRecord, State,
    Submission,
};

pub use config::{GitConfig, KindSpec, Kinds, Source};
pub use desired::{DesiredError, DesiredState, Resource};
pub use plan::{Action, FieldChange, Plan, PlanEntry};
pub use repo::{NOTES_REF, TRAILER_KEY};

use plan::{diff, Actual, ActualState, Fields};
use state::{Applied, Persisted, Retry};

/// The frontend's name: its config section, the `frontend` of its actors and origins.
pub const NAME: &str = "git";
/// The webhook route.
pub const WEBHOOK_PATH: &str = "/git/webhook";
/// Largest observer output read; an observer printing more is stopped.
const MAX_OBSERVE_OUTPUT: usize = 64 << 20;
/// Head of an observer's stderr kept for the error message.
const OBSERVE_STDERR_KEPT: usize = 4096;
/// Files parsed at once from which parsing is spread over threads.
const PARALLEL_PARSE_MIN_FILES: usize = 16;
/// Drift lines kept per note.
const MAX_DRIFT_LINES: usize = 50;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// Reaching or reading the repository failed.
    #[error("git: {0}")]
    Git(String),
    /// The desired state at the commit has errors; nothing from it was applied.
    #[error("commit {commit}: the desired state has errors, nothing from this commit was applied:\n{}", .errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Desired {
        /// The commit.
        commit: String,
        /// Every problem, with file and line.
        errors: Vec<DesiredError>,
    },
    /// `require_signed` refused the commit.
    #[error("commit {commit} refused: {reason}")]
    Refused {
        /// The commit.
        commit: String,
        /// Why.
        reason: String,
    },
    /// The executor or audit store failed.
    #[error(transparent)]
    Core(#[from] youops_core::Error),
    /// The state file could not be read or written.
    #[error("state: {0}")]
    State(String),
}

impl GitError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GitError::Git(_) => "git_error",
            GitError::Desired { .. } => "desired_state_invalid",
            GitError::Refused { .. } => "commit_refused",
            GitError::Core(e) => e.code(),
            GitError::State(_) => "state_error",
        }
    }
}

/// Counters for metrics (monotonic unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GitMetrics {
    /// Reconcile passes run (including no-op passes).
    pub passes: u64,
    /// Passes that found the head already reconciled and did no work.
    pub noop_passes: u64,
    /// Requests submitted for resource changes (not counting duplicates).
    pub change_requests: u64,
    /// Changes that succeeded.
    pub changes_applied: u64,
    /// Changes that failed (each attempt).
    pub changes_failed: u64,
    /// Trailer commands submitted.
    pub trailer_commands: u64,
    /// Resources found drifted.
    pub drift_detected: u64,
    /// Drifted resources corrected by self-heal.
    pub drift_corrected: u64,
    /// Force-pushes seen.
    pub force_pushes: u64,
    /// Commits refused by `require_signed`.
    pub refused_commits: u64,
    /// Commits whose desired state has errors.
    pub invalid_commits: u64,
    /// Webhook deliveries that triggered a pass.
    pub webhooks_accepted: u64,
    /// Webhook deliveries refused (bad signature or token).
    pub webhooks_rejected: u64,
    /// Gauge: resources drifted now.
    pub drifted_now: u64,
    /// Gauge: changes waiting for a retry.
    pub retries_pending: u64,
}

impl GitMetrics {
    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        put(
            "youops_git_passes_total",
            "counter",
            "Reconcile passes.",
            self.passes,
        );
        put(
            "youops_git_noop_passes_total",
            "counter",
            "Passes that found nothing to do.",
            self.noop_passes,
        );
        put(
            "youops_git_change_requests_total",
            "counter",
            "Requests submitted for resource changes.",
            self.change_requests,
        );
        put(
            "youops_git_changes_applied_total",
            "counter",
            "Resource changes that succeeded.",
            self.changes_applied,
        );
        put(
            "youops_git_changes_failed_total",
            "counter",
            "Resource change attempts that failed.",
            self.changes_failed,
        );
        put(
            "youops_git_trailer_commands_total",
            "counter",
            "Commit-trailer commands submitted.",
            self.trailer_commands,
        );
        put(
            "youops_git_drift_detected_total",
            "counter",
            "Resources found drifted.",
            self.drift_detected,
        );
        put(
            "youops_git_drift_corrected_total",
            "counter",
            "Drifted resources corrected.",
            self.drift_corrected,
        );
        put(
            "youops_git_force_pushes_total",
            "counter",
            "Force-pushes that rewrote seen history.",
            self.force_pushes,
        );
        put(
            "youops_git_refused_commits_total",
            "counter",
            "Commits refused by require_signed.",
            self.refused_commits,
        );
        put(
            "youops_git_invalid_commits_total",
            "counter",
            "Commits whose desired state has errors.",
            self.invalid_commits,
        );
        put(
            "youops_git_webhooks_accepted_total",
            "counter",
            "Webhook deliveries that triggered a pass.",
            self.webhooks_accepted,
        );
        put(
            "youops_git_webhooks_rejected_total",
            "counter",
            "Webhook deliveries refused.",
            self.webhooks_rejected,
        );
        put(
            "youops_git_drifted_resources",
            "gauge",
            "Resources drifted now.",
            self.drifted_now,
        );
        put(
            "youops_git_retries_pending",
            "gauge",
            "Changes waiting for a retry.",
            self.retries_pending,
        );
        s
    }
}

#[derive(Debug, Default)]
struct Counters {
    passes: AtomicU64,
    noop_passes: AtomicU64,
    change_requests: AtomicU64,
    changes_applied: AtomicU64,
    changes_failed: AtomicU64,
    trailer_commands: AtomicU64,
    drift_detected: AtomicU64,
    drift_corrected: AtomicU64,
    force_pushes: AtomicU64,
    refused_commits: AtomicU64,
    invalid_commits: AtomicU64,
    webhooks_accepted: AtomicU64,
    webhooks_rejected: AtomicU64,
    drifted_now: AtomicU64,
    retries_pending: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

type DesiredErrors = Vec<DesiredError>;
type ParsedFile = Result<Vec<Resource>, DesiredErrors>;

/// The files of a desired state, `(path, blob id)`, sorted.
type FileSet = Vec<(String, Oid)>;

#[derive(Debug, Default)]
struct Parsed {
    /// Parsed desired-state files by (path, blob id): unchanged files are not re-parsed.
    files: HashMap<(String, Oid), ParsedFile>,
    /// The last desired state combined without errors, and its files: the next
    /// one is made from it by swapping the resources of the files that changed,
    /// so a commit touching one file of many costs that file, not all of them.
    last: Option<(FileSet, Arc<DesiredState>)>,
}

#[derive(Debug, Default)]
struct Work {
    state: Option<Persisted>,
    parsed: Parsed,
}

#[derive(Debug)]
struct Inner {
    cfg: GitConfig,
    kinds: Kinds,
    work: tokio::sync::Mutex<Work>,
    trigger: Notify,
    ready: AtomicBool,
    dirty: AtomicBool,
    counters: Counters,
    /// Kinds whose observer is failing, with the error last put on the audit
    /// record (so a lasting failure is recorded once, not on every check).
    observe_failing: std::sync::Mutex<HashMap<String, String>>,
}

/// The GitOps frontend (name `git`).
#[derive(Debug, Clone)]
pub struct GitFrontend {
    inner: Arc<Inner>,
}

/// What a drift check found and did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DriftReport {
    /// The commit whose desired state was compared.
    pub commit: Option<String>,
    /// Drifted resources (create/update/delete needed to match the declaration).
    pub drifted: Vec<PlanEntry>,
    /// Of those, newly drifted since the last check (these were put on the audit record).
    pub new: Vec<String>,
    /// Self-heal requests and their states.
    pub healed: Vec<(String, RequestId, State)>,
    /// Kinds whose actual state could not be observed.
    pub kind_errors: Vec<String>,
}

/// The actual state a pass plans against: the observers' output for kinds
/// that have one; for the others, what YouOps last applied (exact), read in
/// place from the state rather than copied.
struct Current<'a> {
    observed: &'a BTreeMap<String, Actual>,
    applied: &'a BTreeMap<String, Applied>,
    /// Kinds without an observer.
    recorded: HashSet<&'a str>,
}

impl<'a> Current<'a> {
    fn new(
        kinds: &'a Kinds,
        observed: &'a BTreeMap<String, Actual>,
        applied: &'a BTreeMap<String, Applied>,
    ) -> Current<'a> {
        Current {
            observed,
            applied,
            recorded: kinds
                .iter()
                .filter(|k| k.observe.is_none())
                .map(|k| k.name.as_str())
                .collect(),
        }
    }
}

impl ActualState for Current<'_> {
    fn has(&self, kind: &str) -> bool {
        self.observed.contains_key(kind) || self.recorded.contains(kind)
    }

    fn exact(&self, kind: &str) -> bool {
        match self.observed.get(kind) {
            Some(a) => a.exact,
            None => self.recorded.contains(kind),
        }
    }

    fn by_key(&self, kind: &str) -> Option<&plan::ActualKind> {
        self.observed.by_key(kind)
    }

    fn keyed(&self) -> Box<dyn Iterator<Item = (&str, &plan::ActualKind)> + '_> {
        self.observed.keyed()
    }

    fn by_id(&self) -> Box<dyn Iterator<Item = (&str, &str, &str, &Fields)> + '_> {
        Box::new(
            self.applied
                .iter()
                .filter(|(_, a)| {
                    self.recorded.contains(a.kind.as_str()) && !self.observed.contains_key(&a.kind)
                })
                .map(|(id, a)| (id.as_str(), a.kind.as_str(), a.key.as_str(), &a.fields)),
        )
    }
}

async fn blocking<T, F>(f: F) -> Result<T, GitError>
where
    F: FnOnce() -> Result<T, String> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GitError::Git(format!("git task failed: {e}")))?
        .map_err(GitError::Git)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

async fn settled(exec: &Executor, id: RequestId) -> Result<RequestRecord, GitError> {
    Ok(exec
        .wait_for(id, |r| {
            r.state.is_terminal() || r.state == State::PendingApproval
        })
        .await?)
}

impl GitFrontend {
    /// Build from `[frontends.git]` and the config's `[[kinds]]`; relative paths
    /// resolve against `base_dir`. Returns every problem at once.
    pub fn from_config(
        section: &toml::Table,
        kinds: &[toml::Table],
        base_dir: &Path,
    ) -> Result<GitFrontend, Vec<String>> {
        let cfg = GitConfig::parse(section, base_dir);
        let kinds = Kinds::parse(kinds, base_dir);
        match (cfg, kinds) {
            (Ok(cfg), Ok(kinds)) => Ok(Self::new(cfg, kinds)),
            (c, k) => Err(c
                .err()
                .unwrap_or_default()
                .into_iter()
                .chain(k.err().unwrap_or_default())
                .collect()),
        }
    }

    /// A frontend from checked parts.
    pub fn new(cfg: GitConfig, kinds: Kinds) -> GitFrontend {
        GitFrontend {
            inner: Arc::new(Inner {
                cfg,
                kinds,
                work: tokio::sync::Mutex::new(Work::default()),
                trigger: Notify::new(),
                ready: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                counters: Counters::default(),
                observe_failing: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Keep state (and, unless `checkout_dir` is set, the clone) under `dir`
    /// (the daemon passes `<store dir>/git`).
    pub fn with_state_dir(self, dir: impl Into<PathBuf>) -> GitFrontend {
        let mut cfg = self.inner.cfg.clone();
        cfg.set_state_dir(dir.into());
        Self::new(cfg, self.inner.kinds.clone())
    }

    /// The checked config.
    pub fn config(&self) -> &GitConfig {
        &self.inner.cfg
    }

    /// The declared kinds.
    pub fn kinds(&self) -> &Kinds {
        &self.inner.kinds
    }

    /// Ask the running frontend for a pass now (what the webhook does).
    pub fn trigger(&self) {
        self.inner.trigger.notify_one();
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> GitMetrics {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GitMetrics {
            passes: g(&c.passes),
            noop_passes: g(&c.noop_passes),
            change_requests: g(&c.change_requests),
            changes_applied: g(&c.changes_applied),
            changes_failed: g(&c.changes_failed),
            trailer_commands: g(&c.trailer_commands),
            drift_detected: g(&c.drift_detected),
            drift_corrected: g(&c.drift_corrected),
            force_pushes: g(&c.force_pushes),
            refused_commits: g(&c.refused_commits),
            invalid_commits: g(&c.invalid_commits),
            webhooks_accepted: g(&c.webhooks_accepted),
            webhooks_rejected: g(&c.webhooks_rejected),
            drifted_now: g(&c.drifted_now),
            retries_pending: g(&c.retries_pending),
        }
    }

    /// The YouOps note of `commit` in the repository (the clone, for remotes).
    pub fn note(&self, commit: &str) -> Option<String> {
        let repo = repo::open(&self.inner.cfg).ok()?;
        repo::read_note(&repo, commit)
    }
}

/// One reconcile pass, as `youops reconcile --once [--dry-run]` runs it: fetch,
/// plan the branch head against the actual state and, unless `dry_run`, run new
/// commit trailers, apply the changes, write notes and record the result. A dry
/// run submits nothing and changes nothing.
pub async fn reconcile_once(
    exec: &Executor,
    frontend: &GitFrontend,
    dry_run: bool,
) -> Result<Plan, GitError> {
    frontend.inner.pass(exec, dry_run, true).await
}

/// One pass as the running frontend makes it on an interval tick or a webhook:
/// like [`reconcile_once`], except that a head already reconciled, with no
/// retry due, is not planned again: the pass fetches, sees the head unchanged
/// and returns a plan with [`Plan::unchanged_head`] set, having parsed,
/// observed and submitted nothing.
pub async fn poll_once(exec: &Executor, frontend: &GitFrontend) -> Result<Plan, GitError> {
    frontend.inner.pass(exec, false, false).await
}

/// One drift check: observe the kinds that have an observer, compare with the
/// desired state of the last reconciled commit, record new drift in the audit
/// log and the commit's note, and correct it where `self_heal` says so.
pub async fn check_drift(exec: &Executor, frontend: &GitFrontend) -> Result<DriftReport, GitError> {
    frontend.inner.drift(exec).await
}

impl Inner {
    fn actor(&self, info: &repo::CommitInfo) -> Actor {
        let a = Actor::new(NAME, info.author_email.clone());
        if info.author_name.is_empty() {
            a
        } else {
            a.with_display(info.author_name.clone())
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.cfg.retry_base;
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        base.saturating_mul(factor).min(self.cfg.retry_max)
    }

    fn save(&self, st: &Persisted) -> Result<(), GitError> {
        self.counters.retries_pending.store(
            st.retries.values().filter(|r| !r.gave_up).count() as u64,
            Ordering::Relaxed,
        );
        st.save(&self.cfg.state_dir).map_err(GitError::State)
    }

    fn load(&self, work: &mut Work) -> Result<(), GitError> {
        if work.state.is_none() {
            work.state = Some(Persisted::load(&self.cfg.state_dir).map_err(GitError::State)?);
        }
        Ok(())
    }

    async fn commit_info(self: &Arc<Self>, commit: Oid) -> Result<repo::CommitInfo, GitError> {
        let me = self.clone();
        blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::commit_info(&r, commit)
        })
        .await
    }

    /// Verify a commit's signature when `require_signed` is on: `Ok(None)` when
    /// not required, `Ok(Some(description))` when good, `Err(reason)` when refused.
    async fn check_signature(
        self: &Arc<Self>,
        commit: Oid,
        author_email: &str,
    ) -> Result<Result<Option<String>, String>, GitError> {
        if !self.cfg.require_signed {
            return Ok(Ok(None));
        }
        let me = self.clone();
        let email = author_email.to_string();
        blocking(move || {
            let r = repo::open(&me.cfg)?;
            Ok(match repo::signature(&r, commit)? {
                None => Err("the commit is not signed".to_string()),
                Some((sig, payload)) => signing::verify(&me.cfg, &sig, &payload, &email).map(Some),
            })
        })
        .await
    }

    async fn publish_note(self: &Arc<Self>, exec: &Executor, st: &mut Persisted, commit: &str) {
        if let Ok((seq, hash)) = exec.store().head().await {
            st.note(commit, &self.cfg.branch).audit_hash = Some(format!("seq {seq} {hash}"));
        }
        let text = st.note(commit, &self.cfg.branch).render(commit);
        let me = self.clone();
        let commit = commit.to_string();
        let r = blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::write_note(&r, &commit, &text)?;
            if me.cfg.push_notes {
                repo::push_notes(&r, &me.cfg)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(frontend = NAME, error = %e, "writing the git note failed");
        }
    }

    /// The desired state at `commit` (files parsed once per blob; the state
    /// combined incrementally from the last one).
    async fn desired(
        self: &Arc<Self>,
        work: &mut Work,
        commit: Oid,
    ) -> Result<Arc<DesiredState>, GitError> {
        let me = self.clone();
        let mut parsed = std::mem::take(&mut work.parsed);
        let (result, parsed) = tokio::task::spawn_blocking(move || {
            let r = me.desired_blocking(&mut parsed, commit);
            (r, parsed)
        })
        .await
        .map_err(|e| GitError::Git(format!("git task failed: {e}")))?;
        work.parsed = parsed;
        match result.map_err(GitError::Git)? {
            Ok(d) => Ok(d),
            Err(errors) => Err(GitError::Desired {
                commit: commit.to_string(),
                errors,
            }),
        }
    }

    fn desired_blocking(
        &self,
        parsed: &mut Parsed,
        commit: Oid,
    ) -> Result<Result<Arc<DesiredState>, DesiredErrors>, String> {
        let r = repo::open(&self.cfg)?;
        let files = match repo::desired_files(&r, commit, &self.cfg.path) {
            Ok(f) => f,
            Err(msg) => {
                return Ok(Err(vec![DesiredError {
                    file: if self.cfg.path.is_empty() {
                        "(root)".into()
                    } else {
                        self.cfg.path.clone()
                    },
                    line: 0,
                    message: msg,
                }]))
            }
        };
        if let Some((last_files, state)) = &parsed.last {
            if *last_files == files {
                return Ok(Ok(state.clone()));
            }
        }
        // Read the new blobs, then parse them (on several threads when there are many:
        // a first pass or a restart parses every file).
        let mut todo: Vec<((String, Oid), Result<String, String>)> = Vec::new();
        for (path, oid) in &files {
            let k = (path.clone(), *oid);
            if !parsed.files.contains_key(&k) {
                let text = repo::blob_text(&r, *oid);
                todo.push((k, text));
            }
        }
        let parse = |(k, text): ((String, Oid), Result<String, String>)| {
            let file = match text {
                Ok(text) => desired::parse_file(&k.0, &text, &self.kinds),
                Err(msg) => Err(vec![DesiredError {
                    file: k.0.clone(),
                    line: 0,
                    message: msg,
                }]),
            };
            (k, file)
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > 1 && todo.len() >= PARALLEL_PARSE_MIN_FILES {
            let per = todo.len().div_ceil(threads);
            let mut chunks = Vec::new();
            while todo.len() > per {
                chunks.push(todo.split_off(todo.len() - per));
            }
            chunks.push(todo);
            let done = std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .into_iter()
                    .map(|c| scope.spawn(move || c.into_iter().map(parse).collect::<Vec<_>>()))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join())
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(|_| "parsing desired-state files panicked".to_string())?;
            parsed.files.extend(done.into_iter().flatten());
        } else {
            parsed.files.extend(todo.into_iter().map(parse));
        }
        let ok = files
            .iter()
            .all(|k| parsed.files.get(k).is_some_and(|f| f.is_ok()));
        let resources = |k: &(String, Oid)| -> Option<&[Resource]> {
            match parsed.files.get(k) {
                Some(Ok(rs)) => Some(rs.as_slice()),
                _ => None,
            }
        };
        // From the last good state: drop the files that went, add those that came
        // (when the files that went are still parsed: a broken commit in between
        // evicts them, and then everything is combined afresh).
        let mut next = None;
        if ok {
            if let Some((last_files, last)) = parsed.last.take() {
                let new_set: HashSet<&(String, Oid)> = files.iter().collect();
                let old_set: HashSet<&(String, Oid)> = last_files.iter().collect();
                let removed: Option<Vec<&[Resource]>> = last_files
                    .iter()
                    .filter(|k| !new_set.contains(k))
                    .map(resources)
                    .collect();
                let added: Option<Vec<&[Resource]>> = files
                    .iter()
                    .filter(|k| !old_set.contains(k))
                    .map(resources)
                    .collect();
                if let (Some(removed), Some(added)) = (removed, added) {
                    let mut state =
                        Arc::try_unwrap(last).unwrap_or_else(|shared| (*shared).clone());
                    if desired::recombine(&mut state, removed, added) {
                        next = Some(Ok(state));
                    }
                }
            }
        }
        let result = match next {
            Some(r) => r,
            None => desired::combine(files.iter().map(|k| {
                parsed
                    .files
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| Ok(Vec::new()))
            })),
        };
        let keep: HashSet<&(String, Oid)> = files.iter().collect();
        parsed.files.retain(|k, _| keep.contains(k));
        Ok(match result {
            Ok(state) => {
                let state = Arc::new(state);
                parsed.last = Some((files, state.clone()));
                Ok(state)
            }
            Err(errors) => Err(errors),
        })
    }

    /// Run `kind`'s observer and parse what it printed. Anything but a clean
    /// exit with complete, UTF-8, well-formed JSON within the time limit and the
    /// size cap is an error naming the cause; the observer's process group is
    /// killed whatever happens, so nothing it started outlives the check.
    async fn observe(&self, kind: &KindSpec, argv: &[String]) -> Result<plan::ActualKind, String> {
        use tokio::io::AsyncReadExt;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&self.cfg.base_dir)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        for k in ["PATH", "HOME", "LANG", "TZ"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("YOUOPS_KIND", &kind.name);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run observer `{}`: {e}", argv[0]))?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take())
        else {
            return Err("observer pipes were not set up".into());
        };
        // stderr: keep the head, drain the rest so a chatty observer cannot block.
        let err_task = tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = OBSERVE_STDERR_KEPT.saturating_sub(head.len());
                head.extend_from_slice(&buf[..n.min(room)]);
            }
            head
        });
        enum End {
            Exited(std::process::ExitStatus, Vec<u8>),
            TooLarge,
            Failed(String),
        }
        let run = async {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) if out.len() + n > MAX_OBSERVE_OUTPUT => return End::TooLarge,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        return End::Failed(format!("cannot read the observer's output: {e}"))
                    }
                }
            }
            match child.wait().await {
                Ok(status) => End::Exited(status, out),
                Err(e) => End::Failed(format!("cannot wait for the observer: {e}")),
            }
        };
        let end = tokio::time::timeout(kind.observe_timeout, run).await;
        // Whatever happened, nothing the observer started lives on.
        if let Some(pg) = pgid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pg),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill().await;
        let stderr_head = match tokio::time::timeout(Duration::from_secs(1), err_task).await {
            Ok(Ok(h)) => h,
            _ => Vec::new(),
        };
        let (status, out) = match end {
            Err(_) => {
                return Err(format!(
                    "observer did not finish within {} (observe_timeout); it was killed",
                    youops_core::units::HumanDuration(kind.observe_timeout)
                ))
            }
            Ok(End::TooLarge) => {
                return Err(format!(
                    "observer printed more than {} MiB; it was stopped and its output ignored",
                    MAX_OBSERVE_OUTPUT >> 20
                ))
            }
            Ok(End::Failed(e)) => return Err(e),
            Ok(End::Exited(status, out)) => (status, out),
        };
        if !status.success() {
            let err = String::from_utf8_lossy(&stderr_head);
            let err: String = err.trim().chars().take(300).collect();
            return Err(format!("observer exited with {status}: {err}"));
        }
        let text = String::from_utf8(out).map_err(|e| {
            format!(
                "observer output is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            )
        })?;
        plan::parse_observed(&text, &kind.key)
    }

    /// The actual state of the kinds that have an observer (their observers'
    /// output), and the kinds that could not be observed with why.
    async fn observed(&self) -> (BTreeMap<String, Actual>, Vec<(String, String)>) {
        let mut out = BTreeMap::new();
        let mut errors = Vec::new();
        for k in self.kinds.iter() {
            if let Some(argv) = &k.observe {
                match self.observe(k, argv).await {
                    Ok(resources) => {
                        out.insert(
                            k.name.clone(),
                            Actual {
                                resources,
                                exact: false,
                            },
                        );
                    }
                    Err(e) => errors.push((k.name.clone(), e)),
                }
            }
        }
        (out, errors)
    }

    /// Put observer failures on the audit record (`observe_failed`: the kind,
    /// why, and the declared resources left unchecked) and recoveries
    /// (`observe_recovered`); a failure that lasts with the same error is
    /// recorded once. Returns the errors as plan lines.
    async fn report_observe(
        &self,
        exec: &Executor,
        desired: &DesiredState,
        observed: &BTreeMap<String, Actual>,
        errors: Vec<(String, String)>,
    ) -> Result<Vec<String>, GitError> {
        let (new, recovered) = {
            let mut failing = self
                .observe_failing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let new: Vec<(String, String)> = errors
                .iter()
                .filter(|(k, e)| failing.get(k) != Some(e))
                .cloned()
                .collect();
            let recovered: Vec<String> = failing
                .keys()
                .filter(|k| observed.contains_key(*k))
                .cloned()
                .collect();
            for k in &recovered {
                failing.remove(k);
            }
            for (k, e) in &new {
                failing.insert(k.clone(), e.clone());
            }
            (new, recovered)
        };
        for (kind, error) in &new {
            tracing::warn!(kind = %kind, error = %error, "observer failed; the kind is left unplanned");
            let unchecked: Vec<String> = desired
                .resources
                .values()
                .filter(|r| &r.kind == kind)
                .map(|r| r.id())
                .collect();
            let shown: Vec<&str> = unchecked.iter().take(10).map(String::as_str).collect();
            let more = match unchecked.len().saturating_sub(shown.len()) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            exec.notice(
                None,
                NAME,
                "observe_failed",
                format!(
                    "kind `{kind}`: {error}; its {} declared resource(s) ({}{more}) were not compared, no drift was recorded and nothing was applied for them",
                    unchecked.len(),
                    shown.join(", "),
                ),
                serde_json::json!({
                    "kind": kind,
                    "error": error,
                    "branch": self.cfg.branch,
                    "resources": unchecked,
                }),
            )
            .await?;
        }
        for kind in &recovered {
            exec.notice(
                None,
                NAME,
                "observe_recovered",
                format!(
                    "kind `{kind}`: the observer works again; its resources are compared again"
                ),
                serde_json::json!({ "kind": kind, "branch": self.cfg.branch }),
            )
            .await?;
        }
        Ok(errors
            .into_iter()
            .map(|(k, e)| format!("kind `{k}`: {e}"))
            .collect())
    }

    fn submission(
        &self,
        exec: &Executor,
        e: &PlanEntry,
        commit: &str,
        actor: &Actor,
        dedup: String,
        extra: &[(&str, String)],
    ) -> Option<Submission> {
        let kind = self.kinds.get(&e.kind)?;
        let (op, args): (&str, Vec<(String, String)>) = match e.action {
            Action::Create | Action::Update => (
                &kind.apply,
                e.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            Action::Delete => {
                let op = kind.delete.as_deref()?;
                let loaded = exec.loaded();
                let params: Option<BTreeSet<String>> = loaded
                    .catalog
                    .get(op)
                    .map(|o| o.params.iter().map(|p| p.name.clone()).collect());
                let args = e
                    .fields
                    .iter()
                    .filter(|(k, _)| match &params {
                        Some(p) => p.contains(*k),
                        None => **k == kind.key,
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (op, args)
            }
            Action::Unchanged | Action::Orphan => return None,
        };
        let id = e.id();
        let origin = Origin::new(NAME)
            .with_location(self.cfg.location.clone())
            .with_ref("commit", commit)
            .with_ref("resource", id.clone())
            .with_ref("action", e.action.as_str());
        let mut sub = Submission::new(op, actor.clone(), origin)
            .dedup(dedup)
            .provenance("commit", commit)
            .provenance("branch", self.cfg.branch.clone())
            .provenance("resource", id)
            .provenance("action", e.action.as_str());
        if let Some(l) = &e.location {
            sub = sub.provenance("path", l.clone());
        }
        for (k, v) in extra {
            sub = sub.provenance(*k, v.clone());
        }
        sub.args = args;
        Some(sub)
    }

    async fn pass(
        self: &Arc<Self>,
        exec: &Executor,
        dry_run: bool,
        full: bool,
    ) -> Result<Plan, GitError> {
        let mut guard = self.work.lock().await;
        let work = &mut *guard;
        self.load(work)?;
        bump(&self.counters.passes, 1);
        let me = self.clone();
        let head = blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::fetch(&r, &me.cfg)?;
            repo::head(&r, &me.cfg)
        })
        .await?;
        let mut plan = Plan {
            branch: self.cfg.branch.clone(),
            commit: head.map(|h| h.to_string()),
            dry_run,
            ..Default::default()
        };
        let Some(head) = head else {
            let st = work.state.as_mut().expect("loaded");
            if !dry_run && !st.initialized {
                st.initialized = true;
                self.save(st)?;
            }
            return Ok(plan);
        };
        let head_s = head.to_string();
        if !dry_run {
            self.history(exec, work, head).await?;
        }
        {
            let st = work.state.as_ref().expect("loaded");
            let now = now_ms();
            let due = st
                .retries
                .values()
                .any(|r| !r.gave_up && !r.waiting && r.next_at_ms.is_some_and(|t| t <= now));
            if !full
                && st.target.as_deref() == Some(head_s.as_str())
                && !due
                && !self.dirty.swap(false, Ordering::SeqCst)
            {
                bump(&self.counters.noop_passes, 1);
                plan.unchanged_head = true;
                return Ok(plan);
            }
        }
        let info = self.commit_info(head).await?;
        match self.check_signature(head, &info.author_email).await? {
            Ok(sig) => {
                if !dry_run {
                    let st = work.state.as_mut().expect("loaded");
                    st.note(&head_s, &self.cfg.branch).signature = sig;
                }
            }
            Err(reason) => {
                if !dry_run {
                    self.refuse(
                        exec,
                        work.state.as_mut().expect("loaded"),
                        &info,
                        &reason,
                        "its desired state was not applied",
                    )
                    .await?;
                }
                return Err(GitError::Refused {
                    commit: head_s,
                    reason,
                });
            }
        }
        let desired = match self.desired(work, head).await {
            Ok(d) => d,
            Err(GitError::Desired { commit, errors }) => {
                if !dry_run {
                    let st = work.state.as_mut().expect("loaded");
                    self.report_invalid(exec, st, &commit, &errors).await?;
                }
                return Err(GitError::Desired { commit, errors });
            }
            Err(e) => return Err(e),
        };
        let st = work.state.as_mut().expect("loaded");
        let (observed, errors) = self.observed().await;
        let actual = Current::new(&self.kinds, &observed, &st.applied);
        plan.entries = plan::plan_with(&desired, &actual, &self.kinds, self.cfg.prune);
        if dry_run {
            plan.kind_errors = errors
                .into_iter()
                .map(|(k, e)| format!("kind `{k}`: {e}"))
                .collect();
            return Ok(plan);
        }
        plan.kind_errors = self
            .report_observe(exec, &desired, &observed, errors)
            .await?;
        self.apply(exec, st, &mut plan, &head_s, &info).await?;
        Ok(plan)
    }

    async fn refuse(
        self: &Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        info: &repo::CommitInfo,
        reason: &str,
        consequence: &str,
    ) -> Result<(), GitError> {
        if !st.report_once(format!("refused:{}", info.id)) {
            return Ok(());
        }
        bump(&self.counters.refused_commits, 1);
        exec.notice(
            None,
            NAME,
            "commit_refused",
            format!(
                "commit {} by {} on {} refused ({reason}); {consequence}",
                short(&info.id),
                info.author_email,
                self.cfg.branch
            ),
            serde_json::json!({
                "commit": info.id,
                "author": info.author_email,
                "summary": info.summary,
                "branch": self.cfg.branch,
                "location": self.cfg.location,
                "reason": reason,
            }),
        )
        .await?;
        st.note(&info.id, &self.cfg.branch)
            .errors
            .push(format!("refused: {reason}; {consequence}"));
        self.publish_note(exec, st, &info.id).await;
        self.save(st)
    }

    async fn report_invalid(
        self: &Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        commit: &str,
        errors: &[DesiredError],
    ) -> Result<(), GitError> {
        if !st.report_once(format!("invalid:{commit}")) {
            return Ok(());
        }
        bump(&self.counters.invalid_commits, 1);
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        exec.notice(
            None,
            NAME,
            "desired_state_invalid",
            format!(
                "commit {} on {}: the desired state has {} error(s), nothing from it was applied: {}",
                short(commit),
                self.cfg.branch,
                lines.len(),
                lines.first().cloned().unwrap_or_default()
            ),
            serde_json::json!({ "commit": commit, "branch": self.cfg.branch, "errors": lines }),
        )
        .await?;
        st.note(commit, &self.cfg.branch).errors = lines;
        self.publish_note(exec, st, commit).await;
        self.save(st)
    }

    /// Submit one request per change, wait for each to settle, record results.
    async fn apply(
        self: &Arc<Self>,
        exec: &Executor,
        st: &mut Persisted,
        plan: &mut Plan,
        head: &str,
        info: &repo::CommitInfo,
    ) -> Result<(), GitError> {
        let actor = self.actor(info);
        let now = now_ms();
        let changing: HashSet<String> = plan.changes().map(|e| e.id()).collect();
        // A new commit supersedes retries of older ones; a resource that no
        // longer needs a change needs no retry.
        st.retries
            .retain(|id, r| r.commit == head && changing.contains(id));
        let mut pending = Vec::new();
        for (idx, e) in plan.entries.iter_mut().enumerate() {
            if !e.action.is_change() {
                continue;
            }
            let id = e.id();
            let action = e.action.as_str();
            let attempt = match st.retries.get(&id) {
                Some(r) if r.action == action => {
                    if r.gave_up {
                        e.remark = Some(format!("not retried for this commit: {}", r.reason));
                        continue;
                    }
                    if !r.waiting {
                        if let Some(t) = r.next_at_ms.filter(|t| *t > now) {
                            e.remark = Some(format!(
                                "attempt {} due in {}s",
                                r.attempt + 1,
                                (t - now + 999) / 1000
                            ));
                            continue;
                        }
                    }
                    r.attempt
                }
                _ => 0,
            };
            let dedup = format!("git:{head}:{id}:{action}:{attempt}");
            let Some(sub) = self.submission(
                exec,
                e,
                head,
                &actor,
                dedup,
                &[("attempt", (attempt + 1).to_string())],
            ) else {
                continue;
            };
            match exec.submit(sub).await {
                Ok(t) => {
                    if !t.duplicate {
                        bump(&self.counters.change_requests, 1);
                    }
                    pending.push((idx, t.record.request.id, attempt));
                }
                Err(err) => {
                    let next = attempt + 1;
                    let delay = self.backoff(next);
                    e.remark = Some(format!(
                        "not submitted ({err}); retry in {}s",
                        delay.as_secs()
                    ));
                    st.retries.insert(
                        id,
                        Retry {
                            commit: head.to_string(),
                            action: action.to_string(),
                            attempt: next,
                            next_at_ms: Some(now + delay.as_millis() as i64),
                            waiting: false,
                            gave_up: false,
                            request: None,
                            reason: err.to_string(),
                        },
                    );
                }
            }
        }
        let records =
            futures::future::join_all(pending.iter().map(|(_, id, _)| settled(exec, *id))).await;
        let now = now_ms();
        for ((idx, rid, attempt), rec) in pending.into_iter().zip(records) {
            let rec = rec?;
            let e = &mut plan.entries[idx];
            let id = e.id();
            let action = e.action.as_str();
            e.request = Some(rid);
            e.state = Some(rec.state);
            let op = rec.request.op.clone();
            let reason = rec
                .reason
                .clone()
                .or_else(|| rec.outcome.as_ref().and_then(|o| o.error.clone()))
                .unwrap_or_else(|| rec.state.to_string());
            let mut retry = Retry {
                commit: head.to_string(),
                action: action.to_string(),
                attempt,
                next_at_ms: None,
                waiting: false,
                gave_up: false,
                request: Some(rid.to_string()),
                reason: reason.clone(),
            };
            match rec.state {
                State::Succeeded => {
                    bump(&self.counters.changes_applied, 1);
                    st.retries.remove(&id);
                    st.drifted.remove(&id);
                    if e.action == Action::Delete {
                        st.applied.remove(&id);
                    } else {
                        st.applied.insert(
                            id.clone(),
                            Applied {
                                kind: e.kind.clone(),
                                key: e.key.clone(),
                                fields: e.fields.clone(),
                                commit: head.to_string(),
                            },
                        );
                    }
                }
                State::PendingApproval => {
                    retry.waiting = true;
                    retry.reason = "waiting for approval".into();
                    e.remark = Some("waiting for approval".into());
                    st.retries.insert(id.clone(), retry);
                }
                State::Failed | State::TimedOut | State::Interrupted => {
                    bump(&self.counters.changes_failed, 1);
                    retry.attempt = attempt + 1;
                    let delay = self.backoff(retry.attempt);
                    retry.next_at_ms = Some(now + delay.as_millis() as i64);
                    e.remark = Some(format!(
                        "attempt {} {}; retry in {}s",
                        attempt + 1,
                        rec.state,
                        delay.as_secs_f64().ceil() as u64
                    ));
                    st.retries.insert(id.clone(), retry);
                }
                _ => {
                    bump(&self.counters.changes_failed, 1);
                    retry.gave_up = true;
                    e.remark = Some(format!("{}: {reason}", rec.state));
                    st.retries.insert(id.clone(), retry);
                }
            }
            st.note(head, &self.cfg.branch).set_request(
                &rid.to_string(),
                rec.state.as_str(),
                &format!("{action} {id} ({op})"),
            );
        }
        st.target = Some(head.to_string());
        let unchanged = plan.count(Action::Unchanged);
        let lines: Vec<String> = plan
            .entries
            .iter()
            .filter(|e| e.action != Action::Unchanged)
            .map(|e| match &e.remark {
                Some(r) => format!("{}  [{r}]", e.line()),
                None => e.line(),
            })
            .chain(std::iter::once(format!("= {unchanged} unchanged")))
            .collect();
        st.note(head, &self.cfg.branch).plan = lines;
        self.publish_note(exec, st, head).await;
        self.save(st)
    }

    /// Trailers of commits new since the last one seen, in commit order;
    /// force-push detection.
    async fn history(
        self: &Arc<Self>,
        exec: &Executor,
        work: &mut Work,
        head: Oid,
    ) -> Result<(), GitError> {
        let st = work.state.as_mut().expect("loaded");
        let head_s = head.to_string();
        if !st.initialized {
            // The first sync of an existing branch is a baseline: trailers of
            // history written before YouOps watched the branch do not run.
            st.initialized = true;
            st.last_seen = Some(head_s);
            return self.save(st);
        }
        if st.last_seen.as_deref() == Some(head_s.as_str()) {
            return Ok(());
        }
        let last = st.last_seen.clone();
        let me = self.clone();
        let scan = blocking(move || {
            let r = repo::open(&me.cfg)?;
            repo::scan(&r, last.as_deref(), head)
        })
        .await?;
        if let Some(fp) = &scan.force_push {
            bump(&self.counters.force_pushes, 1);
            let msg = format!(
                "branch {} of {} was rewritten (force-push): {} is no longer in its history, head is now {}; {} seen commit(s) dropped{}; nothing is re-run because of it",
                self.cfg.branch,
                self.cfg.location,
                short(&fp.old),
                short(&fp.new),
                fp.dropped.len(),
                if fp.unknown_old { " (the old head is no longer in the repository)" } else { "" },
            );
            exec.notice(
                None,
                NAME,
                "force_push",
                msg,
                serde_json::json!({
                    "branch": self.cfg.branch,
                    "location": self.cfg.location,
                    "old_head": fp.old,
                    "new_head": fp.new,
                    "merge_base": fp.base,
                    "dropped": fp.dropped,
                    "rewritten_not_rerun": fp.skipped_rewritten,
                }),
            )
            .await?;
        }
        for c in &scan.commits {
            if c.trailers.is_empty() {
                continue;
            }
            self.run_trailers(exec, work, c).await?;
            let st = work.state.as_mut().expect("loaded");
            st.last_seen = Some(c.id.clone());
            self.save(st)?;
        }
        let st = work.state.as_mut().expect("loaded");
        st.last_seen = Some(head_s);
        self.save(st)
    }

    async fn run_trailers(
        self: &Arc<Self>,
        exec: &Executor,
        work: &mut Work,
        c: &repo::CommitInfo,
    ) -> Result<(), GitError> {
        let oid = Oid::from_str(&c.id).map_err(|e| GitError::Git(e.to_string()))?;
        match self.check_signature(oid, &c.author_email).await? {
            Ok(sig) => {
                let st = work.state.as_mut().expect("loaded");
                st.note(&c.id, &self.cfg.branch).signature = sig;
            }
            Err(reason) => {
                let st = work.state.as_mut().expect("loaded");
                return self
                    .refuse(exec, st, c, &reason, "its trailer commands did not run")
                    .await;
            }
        }
        // A broken commit changes nothing: its trailers do not run either.
        if let Err(e) = self.desired(work, oid).await {
            let st = work.state.as_mut().expect("loaded");
            return match e {
                GitError::Desired { commit, errors } => {
                    self.report_invalid(exec, st, &commit, &errors).await
                }
                other => Err(other),
            };
        }
        let st = work.state.as_mut().expect("loaded");
        let actor = self.actor(c);
        for (i, text) in c.trailers.iter().enumerate() {
            let origin = Origin::new(NAME)
                .with_location(self.cfg.location.clone())
                .with_ref("commit", c.id.clone())
                .with_ref("trailer", i.to_string());
            let provenance = BTreeMap::from([
                ("commit".to_string(), c.id.clone()),
                ("branch".to_string(), self.cfg.branch.clone()),
                ("trailer".to_string(), i.to_string()),
            ]);
            let what = format!("trailer {i}: {text}");
            let cmd = match youops_core::grammar::parse(text) {
                Ok(cmd) => cmd,
                Err(e) => {
                    if st.report_once(format!("trailer:{}:{i}", c.id)) {
                        exec.notice(
                            None,
                            NAME,
                            "trailer_invalid",
                            format!(
                                "commit {} trailer {i} `{text}` does not parse: {e}",
                                short(&c.id)
                            ),
                            serde_json::json!({ "commit": c.id, "trailer": i }),
                        )
                        .await?;
                    }
                    st.note(&c.id, &self.cfg.branch)
                        .replies
                        .push(format!("{what}: does not parse: {e}"));
                    continue;
                }
            };
            let dedup = format!("git:{}:run:{i}", c.id);
            match exec
                .execute_command(
                    cmd,
                    &actor,
                    &origin,
                    Some(DedupKey::lifetime(dedup)),
                    provenance,
                )
                .await
            {
                Ok(Reply::Submitted(t)) => {
                    if !t.duplicate {
                        bump(&self.counters.trailer_commands, 1);
                    }
                    let rec = settled(exec, t.record.request.id).await?;
                    st.note(&c.id, &self.cfg.branch).set_request(
                        &rec.request.id.to_string(),
                        rec.state.as_str(),
                        &what,
                    );
                }
                Ok(Reply::Help(h)) => {
                    let first = h.lines().next().unwrap_or("").to_string();
                    st.note(&c.id, &self.cfg.branch)
                        .replies
                        .push(format!("{what}: {first}"));
                }
                Ok(Reply::Record(r)) => st
                    .note(&c.id, &self.cfg.branch)
                    .replies
                    .push(format!("{what}: request {} is {}", r.request.id, r.state)),
                Ok(_) => {}
                Err(e) => st
                    .note(&c.id, &self.cfg.branch)
                    .replies
                    .push(format!("{what}: {e}")),
            }
        }
        self.publish_note(exec, st, &c.id).await;
        Ok(())
    }

    async fn drift(self: &Arc<Self>, exec: &Executor) -> Result<DriftReport, GitError> {
        let mut guard = self.work.lock().await;
        let work = &mut *guard;
        self.load(work)?;
        let mut report = DriftReport::default();
        if !self.kinds.iter().any(|k| k.observe.is_some()) {
            return Ok(report);
        }
        let Some(target) = work.state.as_ref().expect("loaded").target.clone() else {
            return Ok(report);
        };
        report.commit = Some(target.clone());
        let oid = Oid::from_str(&target).map_err(|e| GitError::Git(e.to_string()))?;
        let desired = self.desired(work, oid).await?;
        let st = work.state.as_mut().expect("loaded");
        let (actual, errors) = self.observed().await;
        report.kind_errors = self.report_observe(exec, &desired, &actual, errors).await?;
        let drifted: Vec<PlanEntry> = diff(&desired, &actual, &self.kinds, self.cfg.prune)
            .into_iter()
            .filter(|e| e.action.is_change() && !st.retries.contains_key(&e.id()))
            .collect();
        let ids: BTreeSet<String> = drifted.iter().map(|e| e.id()).collect();
        // Kinds that could not be observed keep their previous drift status.
        let observed: BTreeSet<&String> = actual.keys().collect();
        let previous: BTreeSet<String> = st
            .drifted
            .iter()
            .filter(|id| !observed.iter().any(|k| id.starts_with(&format!("{k}/"))))
            .cloned()
            .collect();
        report.new = ids.difference(&st.drifted).cloned().collect();
        st.drifted = ids.union(&previous).cloned().collect();
        self.counters
            .drifted_now
            .store(st.drifted.len() as u64, Ordering::Relaxed);
        if !report.new.is_empty() {
            bump(&self.counters.drift_detected, report.new.len() as u64);
            let details: Vec<serde_json::Value> = drifted
                .iter()
                .filter(|e| report.new.contains(&e.id()))
                .map(|e| {
                    serde_json::json!({
                        "resource": e.id(),
                        "action": e.action.as_str(),
                        "fields": e.changes.iter().map(|c| c.field.clone()).collect::<Vec<_>>(),
                    })
                })
                .collect();
            exec.notice(
                None,
                NAME,
                "drift",
                format!(
                    "drift from commit {} on {}: {} resource(s) differ from the declaration: {}",
                    short(&target),
                    self.cfg.branch,
                    report.new.len(),
                    report.new.join(", ")
                ),
                serde_json::json!({ "commit": target, "branch": self.cfg.branch, "resources": details }),
            )
            .await?;
            let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
            let note = st.note(&target, &self.cfg.branch);
            for e in drifted.iter().filter(|e| report.new.contains(&e.id())) {
                note.drift
                    .push(format!("{stamp} drift {} {}", e.action.sign(), e.id()));
            }
        }
        let heal: Vec<&PlanEntry> = drifted
            .iter()
            .filter(|e| {
                self.kinds
                    .get(&e.kind)
                    .and_then(|k| k.self_heal)
                    .unwrap_or(self.cfg.self_heal)
            })
            .collect();
        if !heal.is_empty() {
            let info = self.commit_info(oid).await?;
            let actor = self.actor(&info);
            st.heal_seq += 1;
            let seq = st.heal_seq;
            self.save(st)?;
            let mut pending = Vec::new();
            for e in heal {
                let dedup = format!("git:{target}:{}:{}:heal-{seq}", e.id(), e.action.as_str());
                let Some(sub) = self.submission(
                    exec,
                    e,
                    &target,
                    &actor,
                    dedup,
                    &[("reason", "self-heal".to_string())],
                ) else {
                    continue;
                };
                let t = exec.submit(sub).await?;
                pending.push((e, t.record.request.id));
            }
            let records =
                futures::future::join_all(pending.iter().map(|(_, id)| settled(exec, *id))).await;
            for ((e, rid), rec) in pending.into_iter().zip(records) {
                let rec = rec?;
                let id = e.id();
                if rec.state == State::Succeeded {
                    bump(&self.counters.drift_corrected, 1);
                    st.drifted.remove(&id);
                    if e.action == Action::Delete {
                        st.applied.remove(&id);
                    } else {
                        st.applied.insert(
                            id.clone(),
                            Applied {
                                kind: e.kind.clone(),
                                key: e.key.clone(),
                                fields: e.fields.clone(),
                                commit: target.clone(),
                            },
                        );
                    }
                }
                let note = st.note(&target, &self.cfg.branch);
                note.set_request(
                    &rid.to_string(),
                    rec.state.as_str(),
                    &format!("self-heal {} {id} ({})", e.action.as_str(), rec.request.op),
                );
                report.healed.push((id, rid, rec.state));
            }
            self.counters
                .drifted_now
                .store(st.drifted.len() as u64, Ordering::Relaxed);
        }
        report.drifted = drifted;
        if !report.new.is_empty() || !report.healed.is_empty() {
            let note = st.note(&target, &self.cfg.branch);
            let excess = note.drift.len().saturating_sub(MAX_DRIFT_LINES);
            note.drift.drain(..excess);
            self.publish_note(exec, st, &target).await;
        }
        self.save(st)?;
        Ok(report)
    }

    /// A request of ours ended: update its note; wake a pass if a change waited on it.
    async fn on_lifecycle(self: &Arc<Self>, exec: &Executor, ev: &Lifecycle) -> bool {
        if !ev.record.state.is_terminal() {
            return false;
        }
        let Some(commit) = ev.record.request.origin.reference.get("commit").cloned() else {
            return false;
        };
        let id = ev.record.request.id.to_string();
        let mut guard = self.work.lock().await;
        if self.load(&mut guard).is_err() {
            return false;
        }
        let st = guard.state.as_mut().expect("loaded");
        let mut wake = false;
        if st
            .retries
            .values()
            .any(|r| r.waiting && r.request.as_deref() == Some(id.as_str()))
        {
            self.dirty.store(true, Ordering::SeqCst);
            wake = true;
        }
        let stale = st.notes.get(&commit).is_some_and(|n| {
            n.requests
                .iter()
                .any(|r| r.id == id && r.state != ev.record.state.as_str())
        });
        if stale {
            st.note(&commit, &self.cfg.branch)
                .set_request(&id, ev.record.state.as_str(), "");
            self.publish_note(exec, st, &commit).await;
            if let Err(e) = self.save(st) {
                tracing::warn!(frontend = NAME, error = %e, "saving git frontend state failed");
            }
        }
        wake
    }

    async fn next_retry(&self) -> Option<tokio::time::Instant> {
        let guard = self.work.lock().await;
        let st = guard.state.as_ref()?;
        let t = st
            .retries
            .values()
            .filter(|r| !r.gave_up && !r.waiting)
            .filter_map(|r| r.next_at_ms)
            .min()?;
        let wait = (t - now_ms()).max(0) as u64;
        Some(tokio::time::Instant::now() + Duration::from_millis(wait))
    }

    fn webhook(&self, req: &HttpRequest) -> HttpResponse {
        if req.method() != http::Method::POST {
            return simple_response(http::StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let headers = req.headers();
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let mut signed = false;
        let mut authorized = false;
        if let (Some(secret), Some(sig)) = (&self.cfg.webhook_secret, header("x-hub-signature-256"))
        {
            signed = true;
            if let Some(given) = sig
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h.trim()).ok())
            {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
                mac.update(req.body());
                let want = mac.finalize().into_bytes();
                authorized = want.as_slice().ct_eq(&given).into();
            }
        } else if let (Some(token), Some(auth)) = (&self.cfg.webhook_token, header("authorization"))
        {
            if let Some(given) = auth.strip_prefix("Bearer ") {
                let a = Sha256::digest(given.trim().as_bytes());
                let b = Sha256::digest(token.as_bytes());
                authorized = a.ct_eq(&b).into();
            }
        }
        if !authorized {
            bump(&self.counters.webhooks_rejected, 1);
            return json_response(
                http::StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "unauthorized", "message": "a valid X-Hub-Signature-256 or bearer token is required" }),
            );
        }
        if signed {
            match header("x-github-event") {
                Some("ping") => {
                    return json_response(
                        http::StatusCode::OK,
                        &serde_json::json!({ "ok": true, "pong": true }),
                    )
                }
                Some("push") => {
                    let body: serde_json::Value = match serde_json::from_slice(req.body()) {
                        Ok(v) => v,
                        Err(_) => {
                            return json_response(
                                http::StatusCode::BAD_REQUEST,
                                &serde_json::json!({ "error": "bad_request", "message": "the push event body is not JSON" }),
                            )
                        }
                    };
                    let want = format!("refs/heads/{}", self.cfg.branch);
                    let got = body.get("ref").and_then(|r| r.as_str()).unwrap_or("");
                    if got != want {
                        return json_response(
                            http::StatusCode::ACCEPTED,
                            &serde_json::json!({ "triggered": false, "reason": format!("push to `{got}`, not `{want}`") }),
                        );
                    }
                }
                other => {
                    return json_response(
                        http::StatusCode::ACCEPTED,
                        &serde_json::json!({ "triggered": false, "reason": format!("event `{}` is not a push", other.unwrap_or("")) }),
                    )
                }
            }
        }
        bump(&self.counters.webhooks_accepted, 1);
        self.trigger.notify_one();
        json_response(
            http::StatusCode::ACCEPTED,
            &serde_json::json!({ "triggered": true }),
        )
    }
}

fn log_pass(r: Result<Plan, GitError>) {
    match r {
        Ok(p) if p.unchanged_head => {}
        Ok(p) => tracing::info!(
            frontend = NAME,
            commit = p.commit.as_deref().unwrap_or(""),
            changes = p.changes().count(),
            "reconciled"
        ),
        Err(e) => {
            tracing::warn!(frontend = NAME, code = e.code(), error = %e, "reconcile pass failed")
        }
    }
}

#[async_trait]
impl Frontend for GitFrontend {
    fn name(&self) -> &str {
        NAME
    }

    fn prometheus(&self) -> String {
        self.metrics().prometheus()
    }

    async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError> {
        let inner = self.inner.clone();
        let exec = ctx.executor.clone();
        let mut life = ctx.lifecycle();
        tokio::select! {
            r = inner.pass(&exec, false, true) => log_pass(r),
            _ = ctx.shutdown.cancelled() => return Ok(()),
        }
        inner.ready.store(true, Ordering::SeqCst);
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(start + inner.cfg.interval, inner.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drift =
            tokio::time::interval_at(start + inner.cfg.drift_interval, inner.cfg.drift_interval);
        drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let observers = inner.kinds.iter().any(|k| k.observe.is_some());
        enum Wake {
            Stop,
            Pass,
            Drift,
            Event(Box<Result<Lifecycle, StreamError>>),
        }
        loop {
            let retry_at = inner.next_retry().await;
            let retry = async move {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let wake = tokio::select! {
                _ = ctx.shutdown.cancelled() => Wake::Stop,
                _ = tick.tick() => Wake::Pass,
                _ = inner.trigger.notified() => Wake::Pass,
                _ = retry => Wake::Pass,
                _ = drift.tick(), if observers => Wake::Drift,
                ev = life.recv() => Wake::Event(Box::new(ev)),
            };
            let pass = match wake {
                Wake::Stop => break,
                Wake::Pass => true,
                Wake::Drift => {
                    tokio::select! {
                        r = inner.drift(&exec) => {
                            if let Err(e) = r {
                                tracing::warn!(frontend = NAME, code = e.code(), error = %e, "drift check failed");
                            }
                        }
                        _ = ctx.shutdown.cancelled() => break,
                    }
                    false
                }
                Wake::Event(ev) => match *ev {
                    Ok(ev) => inner.on_lifecycle(&exec, &ev).await,
                    Err(StreamError::Lagged(_)) => {
                        inner.dirty.store(true, Ordering::SeqCst);
                        true
                    }
                    Err(StreamError::Closed) => break,
                },
            };
            if pass {
                tokio::select! {
                    r = inner.pass(&exec, false, false) => log_pass(r),
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    fn http_routes(&self) -> Vec<HttpRoute> {
        vec![HttpRoute::post(WEBHOOK_PATH)]
    }

    async fn handle_http(&self, _ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
        if req.uri().path() != WEBHOOK_PATH {
            return simple_response(http::StatusCode::NOT_FOUND, "not found");
        }
        self.inner.webhook(&req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frontend(extra: &str) -> GitFrontend {
        let section: toml::Table =
            toml::from_str(&format!("repo = \"/nonexistent\"\n{extra}")).unwrap();
        GitFrontend::from_config(&section, &[], Path::new("/")).unwrap()
    }

    fn post(headers: &[(&str, &str)], body: &str) -> HttpRequest {
        let mut b = http::Request::builder().method("POST").uri(WEBHOOK_PATH);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Bytes::from(body.to_string())).unwrap()
    }

    fn sign(secret: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn webhook_table() {
        let f = frontend("webhook_secret = \"s3cret-s3cret\"\nwebhook_token = \"t0ken-t0ken\"");
        let push = r#"{"ref":"refs/heads/main","after":"abc"}"#;
        let other = r#"{"ref":"refs/heads/dev"}"#;
        type Case<'a> = (Vec<(&'a str, String)>, &'a str, u16);
        let cases: Vec<Case> = vec![
            (vec![], push, 401),
            (
                vec![
                    ("x-hub-signature-256", "sha256=00".into()),
                    ("x-github-event", "push".into()),
                ],
                push,
                401,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("wrong-secret", push)),
                    ("x-github-event", "push".into()),
                ],
                push,
                401,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", push)),
                    ("x-github-event", "push".into()),
                ],
                push,
                202,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", other)),
                    ("x-github-event", "push".into()),
                ],
                other,
                202,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", "{}")),
                    ("x-github-event", "ping".into()),
                ],
                "{}",
                200,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", "nope")),
                    ("x-github-event", "push".into()),
                ],
                "nope",
                400,
            ),
            (
                vec![("authorization", "Bearer t0ken-t0ken".into())],
                "",
                202,
            ),
            (
                vec![("authorization", "Bearer t0ken-t0keX".into())],
                "",
                401,
            ),
            (vec![("authorization", "Basic t0ken-t0ken".into())], "", 401),
        ];
        for (i, (h, body, status)) in cases.into_iter().enumerate() {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = f.inner.webhook(&post(&h, body));
            assert_eq!(r.status().as_u16(), status, "case {i}: {:?}", r.body());
        }
        let m = f.metrics();
        assert_eq!(m.webhooks_accepted, 2);
        assert_eq!(m.webhooks_rejected, 5);
        assert!(m
            .prometheus()
            .contains("youops_git_webhooks_rejected_total 5\n"));
    }

    #[test]
    fn backoff_is_capped_exponential() {
        let f = frontend("retry_base = \"1s\"\nretry_max = \"10s\"");
        let d: Vec<u64> = (1..=6).map(|a| f.inner.backoff(a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(f.inner.backoff(1000).as_secs(), 10);
    }

    #[test]
    fn from_config_reports_section_and_kind_problems_together() {
        let section: toml::Table = toml::from_str("repo = \"\"").unwrap();
        let kinds: Vec<toml::Table> = vec![toml::from_str("name = \"x\"").unwrap()];
        let e = GitFrontend::from_config(&section, &kinds, Path::new("/")).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    proptest::proptest! {
        /// Planning against the recorded state (a merge in id order) plans exactly
        /// what looking every resource up does.
        #[test]
        fn merge_plans_like_lookups(
            declared in proptest::collection::btree_map("[a-e]{1,2}", (0u8..3, proptest::bool::ANY), 0..12),
            recorded in proptest::collection::btree_map(("(user|group|gone)", "[a-e]{1,2}"), (0u8..3, proptest::bool::ANY), 0..12),
            prune in proptest::bool::ANY,
        ) {
            let kinds: Vec<toml::Table> = vec![
                toml::from_str("name = \"user\"\napply = \"u.apply\"\ndelete = \"u.delete\"").unwrap(),
                toml::from_str("name = \"group\"\napply = \"g.apply\"").unwrap(),
            ];
            let kinds = Kinds::parse(&kinds, Path::new("/")).unwrap();
            let fields = |key: &str, v: u8, extra: bool| -> BTreeMap<String, String> {
                let mut f = BTreeMap::from([("name".to_string(), key.to_string()), ("v".to_string(), v.to_string())]);
                if extra {
                    f.insert("x".into(), "1".into());
                }
                f
            };
            let text: String = declared
                .iter()
                .enumerate()
                .map(|(i, (key, (v, extra)))| {
                    let kind = if i % 3 == 2 { "group" } else { "user" };
                    let x = if *extra { "x = \"1\"\n" } else { "" };
                    format!("[[resource]]\nkind = \"{kind}\"\nname = \"{key}\"\nv = \"{v}\"\n{x}")
                })
                .collect();
            let desired = desired::parse_files(&[("s.toml".into(), text)], &kinds).unwrap();
            let applied: BTreeMap<String, Applied> = recorded
                .iter()
                .map(|((kind, key), (v, extra))| {
                    (
                        desired::resource_id(kind, key),
                        Applied {
                            kind: kind.clone(),
                            key: key.clone(),
                            fields: fields(key, *v, *extra),
                            commit: "c".into(),
                        },
                    )
                })
                .collect();
            let observed = BTreeMap::new();
            let merged = plan::plan_with(&desired, &Current::new(&kinds, &observed, &applied), &kinds, prune);
            let lookup: BTreeMap<String, Actual> = ["user", "group"]
                .iter()
                .map(|k| {
                    let resources = applied
                        .values()
                        .filter(|a| a.kind == *k)
                        .map(|a| (a.key.clone(), a.fields.clone()))
                        .collect();
                    (k.to_string(), Actual { resources, exact: true })
                })
                .collect();
            let looked_up = diff(&desired, &lookup, &kinds, prune);
            proptest::prop_assert_eq!(merged, looked_up);
        }
    }
}
