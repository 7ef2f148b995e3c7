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

mod engine;
mod error;
mod load;
mod metrics;

mod apply;
mod observe;

mod drift;
mod reconcile;
mod trailers;

mod service;
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use youops_core::config::{Config, ConfigIssue};
use youops_core::frontend::factory::{FrontendFactory, FrontendSection};
use youops_core::frontend::{
    simple_response, Frontend, FrontendContext, FrontendError, HttpRequest, HttpResponse, HttpRoute,
};
use youops_core::Executor;

pub use config::{GitConfig, KindSpec, Kinds, Source};
pub use desired::{DesiredError, DesiredState, Resource};
pub use drift::DriftReport;
pub use engine::NAME;
pub use error::GitError;
pub use plan::{Action, FieldChange, Plan, PlanEntry};
pub use repo::{NOTES_REF, TRAILER_KEY};
pub use webhook::WEBHOOK_PATH;

use engine::Engine;

/// The GitOps frontend (name `git`).
#[derive(Debug, Clone)]
pub struct GitFrontend {
    engine: Arc<Engine>,
}

impl GitFrontend {
    /// Build from `[frontends.git]` (with its `[[frontends.git.kinds]]`) and
    /// the config's top-level `[[kinds]]` (deprecated); relative paths resolve
    /// against `base_dir`. Returns every problem at once (without lines: see
    /// [`GitFactory`]).
    pub fn from_config(
        section: &toml::Table,
        kinds: &[toml::Table],
        base_dir: &Path,
    ) -> Result<GitFrontend, Vec<String>> {
        let mut cfg = Config::default();
        cfg.base_dir = base_dir.to_path_buf();
        cfg.kinds = kinds.to_vec();
        Self::from_section(&FrontendSection::new(NAME, section, &cfg))
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    /// Build from the section and its config's kinds; every problem at once,
    /// on its line.
    pub fn from_section(s: &FrontendSection<'_>) -> Result<GitFrontend, Vec<ConfigIssue>> {
        match (GitConfig::from_section(s), Kinds::from_section(s)) {
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
    ///
    /// Its metrics (`youops_git_*`, see `docs/frontends/git.md`) are
    /// registered here, with the `metrics` recorder current now: the global
    /// one, or one installed with `metrics::with_local_recorder` around this
    /// call (how the daemon gives each server its own).
    pub fn new(cfg: GitConfig, kinds: Kinds) -> GitFrontend {
        GitFrontend {
            engine: Arc::new(Engine::new(cfg, kinds, crate::metrics::Metrics::register())),
        }
    }

    /// Keep state (and, unless `checkout_dir` is set, the clone) under `dir`
    /// (the daemon passes `<store dir>/git`). The metrics stay with the
    /// recorder of the construction.
    pub fn with_state_dir(self, dir: impl Into<PathBuf>) -> GitFrontend {
        let mut cfg = self.engine.cfg.clone();
        cfg.set_state_dir(dir.into());
        let metrics = self.engine.metrics.clone();
        GitFrontend {
            engine: Arc::new(Engine::new(cfg, self.engine.kinds.clone(), metrics)),
        }
    }

    /// The checked config.
    pub fn config(&self) -> &GitConfig {
        &self.engine.cfg
    }

    /// The declared kinds.
    pub fn kinds(&self) -> &Kinds {
        &self.engine.kinds
    }

    /// Ask the running frontend for a pass now (what the webhook does).
    pub fn trigger(&self) {
        self.engine.trigger.notify_one();
    }

    /// The YouOps note of `commit` in the repository (the clone, for remotes).
    pub fn note(&self, commit: &str) -> Option<String> {
        let repo = repo::open(&self.engine.cfg).ok()?;
        repo::read_note(&repo, commit)
    }
}

/// The factory of the GitOps frontend, for a
/// [`FrontendRegistry`](youops_core::frontend::factory::FrontendRegistry).
/// Its checks include the kinds' ops against the config's catalog.
#[derive(Debug, Clone, Copy, Default)]
pub struct GitFactory {
    state_dir: Option<fn(&Config) -> PathBuf>,
}

impl GitFactory {
    /// A factory whose frontends keep their state (and, unless
    /// `checkout_dir` is set, their clone) where `state_dir` says for the
    /// config (the daemon: beside the audit store).
    pub fn with_state_dir(state_dir: fn(&Config) -> PathBuf) -> GitFactory {
        GitFactory {
            state_dir: Some(state_dir),
        }
    }

    /// The frontend itself, for callers that need more than a
    /// [`Frontend`] (reconcile plans).
    pub fn build_git(
        &self,
        section: &FrontendSection<'_>,
    ) -> Result<GitFrontend, Vec<ConfigIssue>> {
        let git = GitFrontend::from_section(section)?;
        Ok(match self.state_dir {
            Some(dir) => git.with_state_dir(dir(section.config())),
            None => git,
        })
    }
}

impl FrontendFactory for GitFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check(&self, section: &FrontendSection<'_>) -> Vec<ConfigIssue> {
        match GitFrontend::from_section(section) {
            Ok(g) => g.kinds().check_catalog_at(section),
            Err(e) => e,
        }
    }

    fn build(&self, section: &FrontendSection<'_>) -> Result<Arc<dyn Frontend>, Vec<ConfigIssue>> {
        Ok(Arc::new(self.build_git(section)?))
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
    frontend.engine.pass(exec, dry_run, true).await
}

/// One pass as the running frontend makes it on an interval tick or a webhook:
/// like [`reconcile_once`], except that a head already reconciled, with no
/// retry due, is not planned again: the pass fetches, sees the head unchanged
/// and returns a plan with [`Plan::unchanged_head`] set, having parsed,
/// observed and submitted nothing.
pub async fn poll_once(exec: &Executor, frontend: &GitFrontend) -> Result<Plan, GitError> {
    frontend.engine.pass(exec, false, false).await
}

/// One drift check: observe the kinds that have an observer, compare with the
/// desired state of the last reconciled commit, record new drift in the audit
/// log and the commit's note, and correct it where `self_heal` says so.
pub async fn check_drift(exec: &Executor, frontend: &GitFrontend) -> Result<DriftReport, GitError> {
    frontend.engine.drift(exec).await
}

#[async_trait]
impl Frontend for GitFrontend {
    fn name(&self) -> &str {
        NAME
    }

    async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError> {
        // Reconciling (and updating notes as requests end) happens once per
        // cluster: on the leader.
        let failed = std::sync::Mutex::new(None);
        ctx.while_leader(|term, lost| {
            let mut cx = ctx.clone();
            cx.shutdown = lost;
            let (engine, failed) = (self.engine.clone(), &failed);
            async move {
                // Without the last leader's state, reconciling could apply
                // again what it applied: wait for the next term instead.
                match engine.begin_term(&cx.executor, term).await {
                    Ok(()) => {
                        if let Err(e) = engine.serve(cx).await {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        }
                    }
                    Err(e) => {
                        tracing::error!(frontend = NAME, error = %e, "not reconciling this term");
                        cx.shutdown.cancelled().await;
                    }
                }
                engine.end_term();
            }
        })
        .await;
        let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
        failed.map_or(Ok(()), Err)
    }

    fn is_ready(&self) -> bool {
        self.engine.ready.load(Ordering::SeqCst)
    }

    fn http_routes(&self) -> Vec<HttpRoute> {
        vec![HttpRoute::post(WEBHOOK_PATH)]
    }

    async fn handle_http(&self, _ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
        if req.uri().path() != WEBHOOK_PATH {
            return simple_response(http::StatusCode::NOT_FOUND, "not found");
        }
        self.engine.webhook(&req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_config_reports_section_and_kind_problems_together() {
        let section: toml::Table = toml::from_str("repo = \"\"").unwrap();
        let kinds: Vec<toml::Table> = vec![toml::from_str("name = \"x\"").unwrap()];
        let e = GitFrontend::from_config(&section, &kinds, Path::new("/")).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }
}
