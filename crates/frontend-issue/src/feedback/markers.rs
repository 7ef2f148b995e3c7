//! The hidden markers (`<!-- youops:… -->`) that identify the comments this
//! frontend writes, so that they are found again instead of posted twice, and
//! are never read as commands.

use youops_core::model::State;

/// The hidden marker that identifies a status comment on an issue. `key` is
/// `issue` for the request made by the issue body (one comment, reused when an
/// edit replaces the request) or `request-<id>` for a comment command.
pub fn status_marker(key: &str) -> String {
    format!("<!-- youops:status key={key} ")
}

/// The hidden marker of the reply to command comment `comment_id`.
pub fn reply_marker(comment_id: u64) -> String {
    format!("<!-- youops:reply comment={comment_id} -->")
}

/// The comment id a reply marker names, if `body` carries one.
pub fn replied_comment(body: &str) -> Option<u64> {
    let rest = body.split("<!-- youops:reply comment=").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

/// The request id and state a status comment shows (from its marker).
pub fn parse_status_marker(body: &str) -> Option<(String, State)> {
    let rest = body.split("<!-- youops:status ").nth(1)?;
    let end = rest.find("-->")?;
    let mut id = None;
    let mut state = None;
    for part in rest[..end].split_whitespace() {
        if let Some(v) = part.strip_prefix("request=") {
            id = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("state=") {
            state = v.parse().ok();
        }
    }
    Some((id?, state?))
}

/// Whether a comment was written by this frontend.
pub(crate) fn is_ours(body: &str) -> bool {
    body.contains("<!-- youops:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        assert_eq!(replied_comment(&reply_marker(42)), Some(42));
        let body = format!(
            "{}request=01ARZ3NDEKTSV4RRFFQ69G5FAV state=pending_approval -->\nx",
            status_marker("issue")
        );
        assert_eq!(
            parse_status_marker(&body),
            Some((
                "01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string(),
                State::PendingApproval
            ))
        );
    }
}
