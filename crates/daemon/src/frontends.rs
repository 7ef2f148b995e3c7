//! Which built-in frontends a config enables, and their config checks.
//!
//! A frontend is enabled by the presence of its `[frontends.NAME]` section.
//! Each built-in frontend this build has (cargo features `slack`, `github`,
//! `git`) is a factory in [`registry`]; a section of one it left out is "not
//! compiled in". Embedders that register their own frontends pass their
//! section names as `extra`, so those sections are left for them to check.
//!
//! Frontends register their metrics when they are constructed, with the
//! `metrics` recorder current then: [`build_parts`] builds them under a new
//! server's [`Metrics`] recorder, which [`Built::into_options`] hands to
//! [`run`](crate::run), so `/metrics` shows theirs beside the daemon's.

#[cfg(feature = "git")]
use std::path::PathBuf;
use std::sync::Arc;

use youops_core::config::{Config, ConfigIssue};
use youops_core::frontend::factory::FrontendRegistry;
#[cfg(feature = "git")]
use youops_core::frontend::factory::FrontendSection;
#[cfg(feature = "git")]
use youops_core::frontend::Frontend;
use youops_core::frontend::Frontends;
#[cfg(feature = "git")]
use youops_frontend_git::GitFactory;

use crate::gitops::GitHandle;
use crate::http::metrics::Metrics;

/// The git frontend's section name (`youops_frontend_git::NAME`, which a
/// build without it cannot name).
const GIT: &str = "git";

/// Where the git frontend keeps its clone and state: beside the audit store.
#[cfg(feature = "git")]
pub fn git_state_dir(cfg: &Config) -> PathBuf {
    let store = cfg.store_path();
    let name = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "youops-data".into());
    store.with_file_name(format!("{name}-git"))
}

/// The git factory of the daemon: state beside the audit store.
#[cfg(feature = "git")]
fn git_factory() -> GitFactory {
    GitFactory::with_state_dir(git_state_dir)
}

/// The factories of the built-in frontends this build has.
pub fn registry() -> FrontendRegistry {
    #[allow(unused_mut)] // a build without any built-in frontend adds none
    let mut r = FrontendRegistry::new();
    #[cfg(feature = "slack")]
    r.register(youops_frontend_chat::SlackFactory);
    #[cfg(feature = "github")]
    r.register(youops_frontend_issue::GithubFactory);
    #[cfg(feature = "git")]
    r.register(git_factory());
    r
}

/// The git frontend, if the config enables it.
#[cfg(feature = "git")]
pub fn git(cfg: &Config) -> Option<Result<GitHandle, Vec<String>>> {
    let section = FrontendSection::of(cfg, youops_frontend_git::NAME)?;
    Some(git_factory().build_git(&section).map_err(render))
}

/// Every problem with the `[frontends.*]` sections and `[[kinds]]`, except
/// sections named in `extra`, each on its line when known.
pub fn issues(cfg: &Config, extra: &[&str]) -> Vec<ConfigIssue> {
    let mut out = registry().check(cfg, extra);
    if !cfg.kinds.is_empty() && cfg.frontend(GIT).is_none() {
        out.push(ConfigIssue {
            line: cfg.line_of("kinds"),
            path: "kinds".into(),
            message: "resource kinds are declared but [frontends.git] is not configured".into(),
        });
    }
    out
}

/// [`issues`], one line each (without the file).
pub fn check(cfg: &Config, extra: &[&str]) -> Vec<String> {
    render(issues(cfg, extra))
}

fn render(issues: Vec<ConfigIssue>) -> Vec<String> {
    issues.iter().map(ToString::to_string).collect()
}

/// Build the built-in frontends the config enables. Their metrics go to the
/// recorder current now (see [`Metrics::with_recorder`]); [`build_parts`]
/// gives them a server's own.
pub fn build(cfg: &Config, extra: &[&str]) -> Result<Frontends, Vec<String>> {
    build_here(cfg, extra).map(|b| b.frontends)
}

/// The built-in frontends the config enables, with a handle on the git
/// frontend among them (the daemon computes plans on it for
/// `youops reconcile --once --dry-run --server …`).
#[derive(Default)]
#[non_exhaustive]
pub struct Built {
    /// Every enabled built-in frontend, to run.
    pub frontends: Frontends,
    /// The git frontend, also in `frontends` (the same instance).
    pub git: Option<GitHandle>,
    /// The server metrics whose recorder `frontends` record into.
    pub metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("frontends", &self.frontends.names())
            .field("git", &self.git.is_some())
            .finish()
    }
}

impl Built {
    /// Put these frontends into `opts` (and the git handle and the metrics
    /// they record into beside them).
    pub fn into_options(self, opts: &mut crate::RunOptions) {
        opts.frontends = self.frontends;
        opts.git = self.git;
        opts.metrics = self.metrics;
    }
}

/// Like [`build`], keeping a handle on the git frontend, and recording into a
/// new server's [`Metrics`] (in [`Built::metrics`]).
pub fn build_parts(cfg: &Config, extra: &[&str]) -> Result<Built, Vec<String>> {
    let metrics = Arc::new(Metrics::new());
    let mut built = metrics.with_recorder(|| build_here(cfg, extra))?;
    built.metrics = Some(metrics);
    Ok(built)
}

/// The frontends, recording into the current recorder.
fn build_here(cfg: &Config, extra: &[&str]) -> Result<Built, Vec<String>> {
    let problems = check(cfg, extra);
    if !problems.is_empty() {
        return Err(problems);
    }
    let registry = registry();
    let mut built = Built::default();
    let mut problems = Vec::new();
    for (factory, section) in registry.sections(cfg) {
        // The git frontend is built as itself, to keep a handle on it.
        #[cfg(feature = "git")]
        let frontend = if section.name() == GIT {
            git_factory().build_git(&section).map(|g| {
                built.git = Some(g.clone());
                Arc::new(g) as Arc<dyn Frontend>
            })
        } else {
            factory.build(&section)
        };
        #[cfg(not(feature = "git"))]
        let frontend = factory.build(&section);
        match frontend {
            Ok(f) => built.frontends.push(f),
            Err(e) => problems.extend(e),
        }
    }
    if problems.is_empty() {
        Ok(built)
    } else {
        Err(render(problems))
    }
}
