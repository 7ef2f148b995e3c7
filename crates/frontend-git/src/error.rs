//! The crate's error type and its stable codes.

use crate::desired::DesiredError;

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
