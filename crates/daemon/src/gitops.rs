//! The daemon's handle on the git (GitOps) frontend, [`GitHandle`], which the
//! reconcile API and CLI plan on. A build without the cargo feature `git` has
//! no git frontend: its [`GitHandle`] has no values, so every
//! `Option<GitHandle>` is `None` and the code that plans on one is left out.

/// The running git frontend (`youops_frontend_git::GitFrontend`).
#[cfg(feature = "git")]
pub use youops_frontend_git::GitFrontend as GitHandle;

/// Stands in for the git frontend's handle in a build without it: there is
/// no value of this type.
#[cfg(not(feature = "git"))]
#[derive(Debug, Clone)]
pub enum GitHandle {}

/// What the reconcile API and CLI say in a build without the git frontend
/// (the words a `[frontends.git]` section of such a build is refused with).
pub(crate) const NOT_COMPILED_IN: &str =
    "this build has no git frontend (not compiled in; enable the cargo feature `git`)";
