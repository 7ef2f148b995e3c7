//! Exit codes and [`Failure`], the error every command returns.

use youops_core::audit::StoreError;
use youops_core::Error;

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The op did not succeed; the chain is broken.
    pub const FAILED: u8 = 1;
    /// Invalid, denied, bad usage.
    pub const REFUSED: u8 = 2;
    /// Waiting for approval.
    pub const PENDING: u8 = 3;
    /// Bad config (EX_CONFIG is 78; 64 is EX_USAGE, which the design names).
    pub const CONFIG: u8 = 64;
    /// Store locked, server unreachable.
    pub const UNAVAILABLE: u8 = 69;
}

/// A failure with an exit code and a message for stderr.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// Message.
    pub message: String,
}

impl Failure {
    /// A failure.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Store(StoreError::Locked(_)) => exit::UNAVAILABLE,
            Error::Store(_) | Error::Internal(_) => exit::FAILED,
            _ => exit::REFUSED,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Error::Store(e).into()
    }
}

pub(crate) type CliResult = Result<u8, Failure>;
