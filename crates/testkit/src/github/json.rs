//! GitHub's JSON shapes as the fake writes them: users, the repository,
//! labels, issues and comments, and the decoding of an app JWT.

use chrono::Utc;
use serde_json::{json, Value};

use super::REPO;

/// Now, as GitHub writes times (seconds).
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A GitHub user (of `type` `Bot` when the login ends in `[bot]`).
pub fn user_json(login: &str) -> Value {
    let bot = login.ends_with("[bot]");
    json!({
        "login": login, "id": 1000 + login.len(), "node_id": "MDQ6VXNlcjE=",
        "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4", "gravatar_id": "",
        "url": format!("https://api.github.com/users/{login}"),
        "html_url": format!("https://github.com/{login}"),
        "type": if bot { "Bot" } else { "User" }, "site_admin": false
    })
}

/// The repository [`REPO`], owned by `acme`.
pub fn repo_json() -> Value {
    json!({
        "id": 4242, "node_id": "R_kgDOA", "name": "ops", "full_name": REPO, "private": false,
        "owner": user_json("acme"), "html_url": format!("https://github.com/{REPO}"),
        "default_branch": "main"
    })
}

/// A repository label called `name`.
pub fn label_json(name: &str) -> Value {
    json!({ "id": 7, "node_id": "LA_1", "url": format!("https://api.github.com/repos/{REPO}/labels/{name}"),
            "name": name, "color": "ededed", "default": false, "description": null })
}

fn no_reactions() -> Value {
    json!({ "url": "", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
            "confused": 0, "heart": 0, "rocket": 0, "eyes": 0 })
}

/// An open issue of `repo` labelled `youops`, with API URLs under `base`.
pub(crate) fn issue_json(base: &str, repo: &str, number: u64, author: &str, body: &str) -> Value {
    let t = now();
    json!({
        "url": format!("{base}/repos/{repo}/issues/{number}"),
        "repository_url": format!("{base}/repos/{repo}"),
        "labels_url": format!("{base}/repos/{repo}/issues/{number}/labels{{/name}}"),
        "comments_url": format!("{base}/repos/{repo}/issues/{number}/comments"),
        "events_url": format!("{base}/repos/{repo}/issues/{number}/events"),
        "html_url": format!("https://github.com/{repo}/issues/{number}"),
        "id": 900000 + number, "node_id": "I_kwDOA", "number": number,
        "title": "[youops] request", "user": user_json(author),
        "labels": [label_json("youops")], "state": "open", "locked": false,
        "assignee": null, "assignees": [], "milestone": null, "comments": 0,
        "created_at": t, "updated_at": t, "closed_at": null,
        "author_association": "MEMBER", "active_lock_reason": null, "body": body,
        "reactions": no_reactions(),
        "timeline_url": "", "performed_via_github_app": null, "state_reason": null
    })
}

/// Comment `id` on issue `issue` of `repo`.
pub(crate) fn comment_json(
    base: &str,
    repo: &str,
    (id, issue): (u64, u64),
    author: &str,
    body: &str,
) -> Value {
    let t = now();
    json!({
        "url": format!("{base}/repos/{repo}/issues/comments/{id}"),
        "html_url": format!("https://github.com/{repo}/issues/{issue}#issuecomment-{id}"),
        "issue_url": format!("{base}/repos/{repo}/issues/{issue}"),
        "id": id, "node_id": "IC_kwDOA", "user": user_json(author),
        "created_at": t, "updated_at": t, "author_association": "MEMBER", "body": body,
        "reactions": no_reactions(),
        "performed_via_github_app": null
    })
}

/// Decode one base64url (no padding) JWT segment as JSON.
pub fn base64url_json(seg: &str) -> Option<Value> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in seg.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    serde_json::from_slice(&out).ok()
}

/// Decode `%XX` escapes (invalid ones are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
