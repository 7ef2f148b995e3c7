//! The crate's error type and its stable codes.
//!
//! [`GithubError`] gathers what a caller of this crate can see fail: a GitHub
//! REST call ([`ApiError`]), a refused webhook signature ([`SignatureError`]), a
//! delivery body that cannot be decoded, the config, and issue forms (an op
//! that gets none, a body that cannot be read). The specific types stay as they
//! are (their texts are HTTP bodies and issue comments) and convert into it
//! with `?`.

use youops_core::config::ConfigIssue;

use crate::github::ApiError;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GithubError {
    /// A GitHub REST call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A webhook delivery's signature was refused (the 401 text).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A webhook delivery body that cannot be decoded (the 400 text).
    #[error("{0}")]
    Payload(String),
    /// The `[frontends.github]` section has problems (every one of them).
    #[error("{}", .0.join("; "))]
    Config(Vec<String>),
    /// The op gets no issue form (why), or its form could not be written.
    #[error("{0}")]
    NoForm(String),
    /// An issue body that cannot be read as its op's form (every problem).
    #[error("unreadable form: {}", .0.join("; "))]
    Form(Vec<String>),
}

impl GithubError {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GithubError::Api(_) => "github_api_error",
            GithubError::Signature(_) => "signature_invalid",
            GithubError::Payload(_) => "bad_payload",
            GithubError::Config(_) => "config_invalid",
            GithubError::NoForm(_) => "no_issue_form",
            GithubError::Form(_) => "form_unreadable",
        }
    }
}

impl From<Vec<ConfigIssue>> for GithubError {
    fn from(issues: Vec<ConfigIssue>) -> Self {
        GithubError::Config(issues.iter().map(ToString::to_string).collect())
    }
}

/// Why a delivery's signature was refused (the 401 text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` (and maybe only the SHA-1 one).
    Missing {
        /// A SHA-1 `X-Hub-Signature` was present.
        sha1_only: bool,
    },
    /// Not `sha256=<64 hex digits>`.
    Malformed,
    /// The HMAC does not match.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Missing { sha1_only: true } => f.write_str(
                "only a SHA-1 X-Hub-Signature was sent; YouOps requires X-Hub-Signature-256 (set a webhook secret)",
            ),
            SignatureError::Missing { sha1_only: false } => {
                f.write_str("missing X-Hub-Signature-256 (set a secret on the webhook)")
            }
            SignatureError::Malformed => {
                f.write_str("X-Hub-Signature-256 is not of the form sha256=<hex>")
            }
            SignatureError::Mismatch => {
                f.write_str("X-Hub-Signature-256 does not match the body (wrong webhook secret?)")
            }
        }
    }
}

impl std::error::Error for SignatureError {}

#[cfg(test)]
mod tests;
