//! Input from GitHub: the signed webhook and the poller, decoded into issues and
//! comments, and what each does (a request from an issue form, commands from a
//! comment, voids on edits and deletes). Both paths share one dedup scheme (see
//! `keys`), so a delivery, its redelivery and the poller never run anything
//! twice.
//!
//! Inbound uses feedback's markers and renderers (to skip our own comments and
//! to answer a command or an unreadable form); feedback never uses inbound.

mod comment;
pub mod forms;
mod issue;
mod keys;
mod poll;
mod receive;
mod record;
pub mod webhook;

/// Most command lines one comment may carry.
pub(crate) const MAX_COMMANDS: usize = 10;

/// How an item reached us.
#[derive(Debug, Clone)]
pub(crate) struct Via {
    /// `webhook` or `poll`.
    pub(crate) path: &'static str,
    /// The webhook delivery id.
    pub(crate) delivery: Option<String>,
}
