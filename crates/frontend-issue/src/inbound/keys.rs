//! Dedup keys, built from GitHub's own ids so that a webhook delivery, its
//! redelivery and the poller finding the same issue or comment all claim the same
//! key, and nothing runs twice:
//!
//! - an issue body: `github:<owner/repo>#<number>:body:<sha256 of the body>` (an
//!   edit that changes the body is a new request; a title edit is not),
//! - a command line in a comment: `github:<owner/repo>:comment:<id>:<line>`.
//!
//! Commands that act on an existing request (approve, deny, cancel) claim their
//! line's key with a `comment_command` notice on that request, which is also how
//! an edit of the comment later finds the approval it voids.
//!
//! An issue body's claim never expires (there is one per request issue). A
//! comment line's claim expires with the store's dedup window
//! (`[store] dedup_ttl`), and a comment older than that window is never run:
//! its claim held for the window from when it ran, which was after it was
//! written, so age alone then tells that it was handled.

use sha2::{Digest, Sha256};

use crate::config::RepoName;

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

/// The dedup key of an issue body.
pub(crate) fn body_key(repo: &RepoName, issue: u64, body: &str) -> String {
    format!(
        "github:{}#{issue}:body:{}",
        repo.key(),
        short_hash(&body.replace("\r\n", "\n"))
    )
}

/// The dedup key of command line `line` of a comment.
pub(crate) fn comment_key(repo: &RepoName, comment_id: u64, line: usize) -> String {
    format!("github:{}:comment:{comment_id}:{line}", repo.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_case_insensitive_in_the_repo() {
        let a = RepoName::parse("Acme/Ops").unwrap();
        let b = RepoName::parse("acme/ops").unwrap();
        assert_eq!(comment_key(&a, 5, 0), comment_key(&b, 5, 0));
        assert_eq!(body_key(&a, 1, "x\r\ny"), body_key(&b, 1, "x\ny"));
        assert_ne!(body_key(&a, 1, "x"), body_key(&a, 1, "y"));
    }
}
