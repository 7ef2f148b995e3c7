//! The GitHub REST calls the frontend makes, on the production `octocrab` client.
//!
//! Routes are sent through octocrab's generic verbs with our own lenient payload
//! types that read only the fields we use, so the same types serve webhook
//! payloads, REST answers and the polling path.
//!
//! **Retries.** octocrab's `retry` feature re-sends a request after a 5xx or a
//! transport error — for `POST …/comments` that can post a comment twice when
//! GitHub created it but the answer was lost. The workspace builds octocrab
//! without that feature, and every comment this frontend creates carries a hidden
//! marker (`<!-- youops … -->`) that is looked up before creating it again, so
//! creation is idempotent across our own retries, restarts, and the webhook and
//! polling paths racing. Reactions and labels are idempotent on GitHub's side.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::config::{Auth, GithubConfig, RepoName};

/// Status and body text of an octocrab `_verb` call.
macro_rules! read {
    ($crab:expr, $what:expr, $res:expr) => {{
        let what: &str = $what;
        let res = $res.map_err(|e| ApiError(format!("{what}: {e}")))?;
        let status = res.status();
        let text = $crab
            .body_to_string(res)
            .await
            .map_err(|e| ApiError(format!("{what}: reading the answer: {e}")))?;
        (status, text)
    }};
}

/// Most pages a list call follows (100 items each).
const MAX_PAGES: u32 = 20;

/// A GitHub user as payloads carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Login.
    pub login: String,
    /// `User`, `Bot` or `Organization`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// A label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// Name.
    pub name: String,
}

/// An issue (or pull request) as the REST API and webhooks carry it.
///
/// Only what GitHub always sends is required: webhook payloads may leave out
/// `state`, `labels`, `locked`, `assignee` and more (GitHub's webhook schemas
/// mark them optional, and some actions such as `pinned` carry a reduced
/// issue), and the author may be `null`, so those are optional here; unknown
/// fields are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// Number within the repository.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Markdown body.
    #[serde(default)]
    pub body: Option<String>,
    /// Author; GitHub's schemas let it be `null`.
    #[serde(default)]
    pub user: Option<User>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<Label>,
    /// `open` or `closed`; `None` when a webhook payload left it out (the REST
    /// API always sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Web link.
    pub html_url: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last updated.
    pub updated_at: DateTime<Utc>,
    /// Present on pull requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<serde_json::Value>,
}

impl Issue {
    /// The body, or empty.
    pub fn body_text(&self) -> &str {
        self.body.as_deref().unwrap_or("")
    }

    /// `Some(true)` when open, `Some(false)` when closed (or any other state),
    /// `None` when the payload did not say.
    pub fn is_open(&self) -> Option<bool> {
        self.state.as_deref().map(|s| s == "open")
    }
}

/// An issue comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Id (unique across GitHub).
    pub id: u64,
    /// Markdown body.
    #[serde(default)]
    pub body: Option<String>,
    /// Author.
    pub user: User,
    /// Web link.
    pub html_url: String,
    /// API link of the issue it is on (`…/issues/N`).
    #[serde(default)]
    pub issue_url: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last updated.
    pub updated_at: DateTime<Utc>,
}

impl Comment {
    /// The body, or empty.
    pub fn body_text(&self) -> &str {
        self.body.as_deref().unwrap_or("")
    }

    /// The issue number, from `issue_url`.
    pub fn issue_number(&self) -> Option<u64> {
        self.issue_url
            .as_deref()?
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
    }
}

/// A failed GitHub call.
#[derive(Debug, thiserror::Error)]
#[error("GitHub API: {0}")]
pub struct ApiError(pub String);

/// The API client: octocrab, built on first use (it needs a tokio runtime).
#[derive(Debug)]
pub struct Api {
    cfg: Arc<GithubConfig>,
    crab: OnceCell<octocrab::Octocrab>,
}

/// Reaction names as GitHub spells them.
pub mod reaction {
    /// 👀
    pub const EYES: &str = "eyes";
    /// 🚀
    pub const ROCKET: &str = "rocket";
    /// 👎
    pub const MINUS_ONE: &str = "-1";
}

fn repo_path(repo: &RepoName) -> String {
    format!(
        "/repos/{}/{}",
        urlencoding::encode(&repo.owner),
        urlencoding::encode(&repo.name)
    )
}

impl Api {
    /// A client for `cfg` (nothing is built until the first call).
    pub fn new(cfg: Arc<GithubConfig>) -> Self {
        Api {
            cfg,
            crab: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&octocrab::Octocrab, ApiError> {
        self.crab
            .get_or_try_init(|| async {
                let b = octocrab::Octocrab::builder()
                    .base_uri(self.cfg.api_base_url.as_str())
                    .map_err(|e| ApiError(format!("bad api_base_url: {e}")))?
                    .set_connect_timeout(Some(Duration::from_secs(10)))
                    .set_read_timeout(Some(Duration::from_secs(30)));
                match &self.cfg.auth {
                    Auth::Token(t) => b
                        .personal_token(t.clone())
                        .build()
                        .map_err(|e| ApiError(e.to_string())),
                    Auth::App {
                        app_id,
                        private_key_pem,
                        installation_id,
                    } => {
                        let key =
                            octocrab::EncodingKey::from_rsa_pem(private_key_pem).map_err(|_| {
                                ApiError("the GitHub App key is not an RSA PEM key".into())
                            })?;
                        let app = b
                            .app(octocrab::models::AppId(*app_id), key)
                            .build()
                            .map_err(|e| ApiError(e.to_string()))?;
                        app.installation(octocrab::models::InstallationId(*installation_id))
                            .map_err(|e| ApiError(e.to_string()))
                    }
                }
            })
            .await
    }

    fn decode<T: DeserializeOwned>(
        what: &str,
        status: http::StatusCode,
        text: &str,
    ) -> Result<T, ApiError> {
        if !status.is_success() {
            let msg = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(ApiError(format!("{what}: {status}: {msg}")));
        }
        serde_json::from_str(text).map_err(|e| ApiError(format!("{what}: unexpected answer: {e}")))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let crab = self.client().await?;
        let res = crab._get(path).await;
        let (status, text) = read!(crab, &format!("GET {path}"), res);
        Self::decode(&format!("GET {path}"), status, &text)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        let crab = self.client().await?;
        let what = format!("{method} {path}");
        let res = match method {
            http::Method::POST => crab._post(path, Some(body)).await,
            http::Method::PATCH => crab._patch(path, Some(body)).await,
            _ => crab._delete(path, None::<&()>).await,
        };
        let (status, text) = read!(crab, &what, res);
        Self::decode(&what, status, &text)
    }

    /// Every page of a list call.
    async fn list<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<Vec<T>, ApiError> {
        let mut out = Vec::new();
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        for page in 1..=MAX_PAGES {
            let items: Vec<T> = self
                .get(&format!("{path_and_query}{sep}per_page=100&page={page}"))
                .await?;
            let n = items.len();
            out.extend(items);
            if n < 100 {
                break;
            }
        }
        Ok(out)
    }

    /// Post a comment.
    pub async fn create_comment(
        &self,
        repo: &RepoName,
        issue: u64,
        body: &str,
    ) -> Result<Comment, ApiError> {
        self.send(
            http::Method::POST,
            &format!("{}/issues/{issue}/comments", repo_path(repo)),
            &serde_json::json!({ "body": body }),
        )
        .await
    }

    /// Replace a comment's body.
    pub async fn update_comment(
        &self,
        repo: &RepoName,
        comment_id: u64,
        body: &str,
    ) -> Result<Comment, ApiError> {
        self.send(
            http::Method::PATCH,
            &format!("{}/issues/comments/{comment_id}", repo_path(repo)),
            &serde_json::json!({ "body": body }),
        )
        .await
    }

    /// One issue (or pull request) as it is now.
    pub async fn issue(&self, repo: &RepoName, issue: u64) -> Result<Issue, ApiError> {
        self.get(&format!("{}/issues/{issue}", repo_path(repo)))
            .await
    }

    /// Comments of one issue, oldest first.
    pub async fn issue_comments(
        &self,
        repo: &RepoName,
        issue: u64,
    ) -> Result<Vec<Comment>, ApiError> {
        self.list(&format!("{}/issues/{issue}/comments", repo_path(repo)))
            .await
    }

    /// Comments of every issue of a repository updated at or after `since`.
    pub async fn repo_comments_since(
        &self,
        repo: &RepoName,
        since: DateTime<Utc>,
    ) -> Result<Vec<Comment>, ApiError> {
        self.list(&format!(
            "{}/issues/comments?sort=updated&direction=asc&since={}",
            repo_path(repo),
            urlencoding::encode(&since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        ))
        .await
    }

    /// Issues (and pull requests) updated at or after `since`, any state.
    pub async fn issues_since(
        &self,
        repo: &RepoName,
        since: DateTime<Utc>,
    ) -> Result<Vec<Issue>, ApiError> {
        self.list(&format!(
            "{}/issues?state=all&sort=updated&direction=asc&since={}",
            repo_path(repo),
            urlencoding::encode(&since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        ))
        .await
    }

    /// React to an issue.
    pub async fn react_issue(
        &self,
        repo: &RepoName,
        issue: u64,
        content: &str,
    ) -> Result<(), ApiError> {
        self.send::<serde_json::Value>(
            http::Method::POST,
            &format!("{}/issues/{issue}/reactions", repo_path(repo)),
            &serde_json::json!({ "content": content }),
        )
        .await
        .map(drop)
    }

    /// React to a comment.
    pub async fn react_comment(
        &self,
        repo: &RepoName,
        comment_id: u64,
        content: &str,
    ) -> Result<(), ApiError> {
        self.send::<serde_json::Value>(
            http::Method::POST,
            &format!("{}/issues/comments/{comment_id}/reactions", repo_path(repo)),
            &serde_json::json!({ "content": content }),
        )
        .await
        .map(drop)
    }

    /// Label names of an issue.
    pub async fn labels(&self, repo: &RepoName, issue: u64) -> Result<Vec<String>, ApiError> {
        let v: Vec<Label> = self
            .list(&format!("{}/issues/{issue}/labels", repo_path(repo)))
            .await?;
        Ok(v.into_iter().map(|l| l.name).collect())
    }

    /// Add labels to an issue.
    pub async fn add_labels(
        &self,
        repo: &RepoName,
        issue: u64,
        labels: &[&str],
    ) -> Result<(), ApiError> {
        self.send::<serde_json::Value>(
            http::Method::POST,
            &format!("{}/issues/{issue}/labels", repo_path(repo)),
            &serde_json::json!({ "labels": labels }),
        )
        .await
        .map(drop)
    }

    /// Remove one label from an issue (absent is fine).
    pub async fn remove_label(
        &self,
        repo: &RepoName,
        issue: u64,
        label: &str,
    ) -> Result<(), ApiError> {
        let path = format!(
            "{}/issues/{issue}/labels/{}",
            repo_path(repo),
            urlencoding::encode(label)
        );
        let crab = self.client().await?;
        let res = crab._delete(path.as_str(), None::<&()>).await;
        let (status, text) = read!(crab, &format!("DELETE {path}"), res);
        if status.is_success() || status == http::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Self::decode::<serde_json::Value>(&format!("DELETE {path}"), status, &text).map(drop)
        }
    }

    /// Close an issue as completed.
    pub async fn close_issue(&self, repo: &RepoName, issue: u64) -> Result<(), ApiError> {
        self.send::<serde_json::Value>(
            http::Method::PATCH,
            &format!("{}/issues/{issue}", repo_path(repo)),
            &serde_json::json!({ "state": "closed", "state_reason": "completed" }),
        )
        .await
        .map(drop)
    }

    /// Create a comment unless one carrying `marker` exists already on the
    /// issue, in which case it is replaced (`update`) or left alone. Returns the
    /// comment id.
    pub async fn upsert_marked_comment(
        &self,
        repo: &RepoName,
        issue: u64,
        marker: &str,
        body: &str,
        update: bool,
    ) -> Result<u64, ApiError> {
        let existing = self
            .issue_comments(repo, issue)
            .await?
            .into_iter()
            .find(|c| c.body_text().contains(marker));
        match existing {
            Some(c) if update && c.body_text() != body => {
                self.update_comment(repo, c.id, body).await.map(|c| c.id)
            }
            Some(c) => Ok(c.id),
            None => self.create_comment(repo, issue, body).await.map(|c| c.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_issue_number_comes_from_issue_url() {
        let c: Comment = serde_json::from_value(serde_json::json!({
            "id": 7, "body": "x", "user": {"login": "a", "type": "User"},
            "html_url": "https://github.com/o/r/issues/3#issuecomment-7",
            "issue_url": "https://api.github.com/repos/o/r/issues/3",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(c.issue_number(), Some(3));
    }
}
