//! The frontend's name and how a request's origin points back at its
//! repository, issue and comment: written when inbound submits a request, read
//! by feedback to find where to answer.

use youops_core::model::{Origin, RequestRecord};

use crate::config::RepoName;

/// The frontend name.
pub(crate) const NAME: &str = "github";

/// The origin of a request made on issue `issue` (`url`: the issue or comment).
pub(crate) fn origin(repo: &RepoName, issue: u64, url: &str) -> Origin {
    Origin::new(NAME)
        .with_location(repo.to_string())
        .with_ref("repo", repo.to_string())
        .with_ref("issue", issue.to_string())
        .with_ref("url", url)
}

/// Repo, issue, source of a request's origin, if it is one of ours.
pub(crate) fn origin_refs(rec: &RequestRecord) -> Option<(String, u64, Option<u64>)> {
    let o = &rec.request.origin;
    if o.frontend != NAME {
        return None;
    }
    let repo = o.reference.get("repo")?.clone();
    let issue = o.reference.get("issue")?.parse().ok()?;
    let comment = o.reference.get("comment_id").and_then(|c| c.parse().ok());
    Some((repo, issue, comment))
}
