//! Which built-in frontends a config enables, and their config checks.
//!
//! A frontend is enabled by the presence of its `[frontends.NAME]` section.
//! Embedders that register their own frontends pass their section names as
//! `extra`, so those sections are left for them to check.

use std::path::PathBuf;
use std::sync::Arc;

use youops_core::config::Config;
use youops_core::frontend::Frontends;
use youops_frontend_chat::SlackFrontend;
use youops_frontend_git::GitFrontend;
use youops_frontend_issue::GithubFrontend;

/// Frontend sections this build knows.
pub const KNOWN: [&str; 3] = ["git", "github", "slack"];

/// Where the git frontend keeps its clone and state: beside the audit store.
pub fn git_state_dir(cfg: &Config) -> PathBuf {
    let store = cfg.store_path();
    let name = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "youops-data".into());
    store.with_file_name(format!("{name}-git"))
}

/// The git frontend, if the config enables it.
pub fn git(cfg: &Config) -> Option<Result<GitFrontend, Vec<String>>> {
    let section = cfg.frontend("git")?;
    Some(
        GitFrontend::from_config(section, &cfg.kinds, &cfg.base_dir)
            .map(|g| g.with_state_dir(git_state_dir(cfg))),
    )
}

/// Every problem with the `[frontends.*]` sections and `[[kinds]]`, except
/// sections named in `extra`.
pub fn check(cfg: &Config, extra: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for name in cfg.frontends.keys() {
        if extra.contains(&name.as_str()) || KNOWN.contains(&name.as_str()) {
            continue;
        }
        out.push(format!(
            "frontends.{name}: unknown frontend (this build has: {})",
            KNOWN.join(", ")
        ));
    }
    if let Some(section) = cfg.frontend("github") {
        if let Err(problems) = GithubFrontend::from_config(section) {
            out.extend(problems);
        }
    }
    if let Some(section) = cfg.frontend("slack") {
        if let Err(problems) = SlackFrontend::from_config(section) {
            out.extend(problems);
        }
    }
    match git(cfg) {
        Some(Ok(g)) => out.extend(g.kinds().check_catalog(&cfg.catalog())),
        Some(Err(problems)) => out.extend(problems),
        None if !cfg.kinds.is_empty() => out.push(
            "kinds: resource kinds are declared but [frontends.git] is not configured".into(),
        ),
        None => {}
    }
    out
}

/// Build the built-in frontends the config enables.
pub fn build(cfg: &Config, extra: &[&str]) -> Result<Frontends, Vec<String>> {
    build_parts(cfg, extra).map(|b| b.frontends)
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
    pub git: Option<GitFrontend>,
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
    /// Put these frontends into `opts` (and the git handle beside them).
    pub fn into_options(self, opts: &mut crate::RunOptions) {
        opts.frontends = self.frontends;
        opts.git = self.git;
    }
}

/// Like [`build`], keeping a handle on the git frontend.
pub fn build_parts(cfg: &Config, extra: &[&str]) -> Result<Built, Vec<String>> {
    let problems = check(cfg, extra);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut set = Frontends::new();
    let mut git_handle = None;
    if let Some(Ok(g)) = git(cfg) {
        set.push(Arc::new(g.clone()));
        git_handle = Some(g);
    }
    if let Some(section) = cfg.frontend("github") {
        set.push(Arc::new(GithubFrontend::from_config(section)?));
    }
    if let Some(section) = cfg.frontend("slack") {
        set.push(Arc::new(SlackFrontend::from_config(section)?));
    }
    Ok(Built {
        frontends: set,
        git: git_handle,
    })
}
