//! The one error type of `youops-core`. Every variant has a stable [`Error::code`] so
//! every frontend renders it the same way.
//!
//! An operation that ran and failed is not an `Err`: it is a request in state
//! `failed` (see [`crate::model::State`]). Invalid and denied requests are recorded
//! too and come back as tickets in those states. `Err` is for what never became a
//! request (a command that does not parse, an unknown request id) or for refusals of
//! actions on an existing request (approve, cancel, ...).

use crate::audit::StoreError;
use crate::grammar::ParseError;

/// Errors of the core API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Command text that does not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// No request with that id.
    #[error("no request `{0}`")]
    NotFound(String),
    /// The identity maps to no principal.
    #[error("{frontend} user `{external_id}` is not mapped to a YouOps principal; ask an admin to add it to `identities.{frontend}` of a principal")]
    UnknownIdentity {
        /// Frontend.
        frontend: String,
        /// Identity within it.
        external_id: String,
    },
    /// The policy refused an action on an existing request.
    #[error("{0}")]
    Forbidden(String),
    /// An approval or denial that the rules refuse (self-approval, expired, digest mismatch, ...).
    #[error("approval refused: {0}")]
    Approval(String),
    /// The request is not in a state that allows the action.
    #[error("{0}")]
    Conflict(String),
    /// The executor is shutting down and takes no new requests.
    #[error("YouOps is shutting down and takes no new requests")]
    ShuttingDown,
    /// Too many requests.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The audit store failed.
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    /// Anything else that is the system's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Parse(_) => "parse_error",
            Error::NotFound(_) => "not_found",
            Error::UnknownIdentity { .. } => "unknown_identity",
            Error::Forbidden(_) => "forbidden",
            Error::Approval(_) => "approval_refused",
            Error::Conflict(_) => "conflict",
            Error::ShuttingDown => "shutting_down",
            Error::RateLimited(_) => "rate_limited",
            Error::Store(StoreError::Locked(_)) => "store_locked",
            Error::Store(_) => "store_error",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether the error is the caller's doing (4xx) rather than the system's (5xx).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            Error::Store(_) | Error::Internal(_) | Error::ShuttingDown
        )
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
