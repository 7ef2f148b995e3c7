//! The core frontend conformance suite, and GitHub App authentication.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use youops_core::frontend::conformance::{self, Driver};
use youops_core::frontend::{Frontend, FrontendHost};
use youops_core::model::{RequestId, State};
use youops_frontend_issue::webhook::sign;
use youops_frontend_issue::GithubFrontend;

use crate::support::*;
use youops_testkit::github::*;

struct IssueDriver {
    fake: FakeGithub,
    base: String,
    next: AtomicUsize,
}

#[async_trait]
impl Driver for IssueDriver {
    fn frontend(&self) -> Arc<dyn Frontend> {
        let section: toml::Table = self.config_section().parse().unwrap();
        Arc::new(GithubFrontend::from_config(&section).unwrap())
    }

    fn user_id(&self) -> String {
        "octo-tester".into()
    }

    fn config_section(&self) -> String {
        // Polling on: the poller sees the same comments and must agree on keys.
        section(&self.base, "200ms")
    }

    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String> {
        let issue = self.fake.issue(1);
        // The same delivery id is the same comment.
        let existing = self
            .fake
            .comments_on(1)
            .into_iter()
            .find(|(_, _, b)| b.ends_with(&format!("<!-- delivery {delivery} -->")));
        let comment = match existing {
            Some((id, _, _)) => self.fake.st().comments[&id].2.clone(),
            None => {
                self.next.fetch_add(1, Ordering::SeqCst);
                self.fake.add_comment(
                    1,
                    &self.user_id(),
                    &format!("/ops {command}\n<!-- delivery {delivery} -->"),
                )
            }
        };
        let payload = comment_event("created", &issue, &comment, &self.user_id());
        let body = serde_json::to_vec(&payload).unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri("/github/webhook")
            .header("content-type", "application/json")
            .header("x-github-event", "issue_comment")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
            .body(bytes::Bytes::from(body))
            .unwrap();
        let (s, text) = send(host, req).await;
        if (200..300).contains(&s) {
            Ok(())
        } else {
            Err(format!("webhook answered {s}: {text}"))
        }
    }

    async fn rendered(&self, id: RequestId) -> Vec<State> {
        // Every body the frontend wrote for this request, in call order.
        let marker = format!("request={id} ");
        let mut states: Vec<State> = self
            .fake
            .calls()
            .into_iter()
            .filter(|c| c.method == "POST" || c.method == "PATCH")
            .filter_map(|c| {
                c.body
                    .get("body")
                    .and_then(|b| b.as_str())
                    .map(String::from)
            })
            .filter(|b| b.contains(&marker))
            .filter_map(|b| {
                youops_frontend_issue::feedback::parse_status_marker(&b).map(|(_, s)| s)
            })
            .fold(Vec::new(), |mut v, s| {
                if v.last() != Some(&s) {
                    v.push(s);
                }
                v
            });
        // An end state is shown once its reaction (written after the status
        // comment) is there too.
        let ended = self
            .fake
            .st()
            .reactions
            .iter()
            .any(|(_, c)| c == "rocket" || c == "-1");
        if states.last().is_some_and(|s| s.is_terminal()) && !ended {
            states.pop();
        }
        states
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let fake = FakeGithub::start().await;
    let base = fake.base();
    fake.add_issue(1, "octo-tester", "A place for commands.");
    let driver = IssueDriver {
        fake: fake.clone(),
        base,
        next: AtomicUsize::new(0),
    };
    let report = conformance::run_suite(&driver).await.unwrap();
    assert_eq!(report.record.state, State::Succeeded);
    assert!(report.rendered.contains(&State::Succeeded));
    let id = report.record.request.id;
    let rocket = fake
        .reactions("comment:5001")
        .contains(&"rocket".to_string());
    assert!(rocket, "🚀 on the command comment of {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_as_a_github_app_installation() {
    let keys = tempfile::tempdir().unwrap();
    let pem = keys.path().join("app.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem)
        .arg("2048")
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem_path = pem.display().to_string();
    let h = Harness::new_with(|base| {
        format!(
            "webhook_secret = \"{SECRET}\"\napp_id = 4242\ninstallation_id = 77\nprivate_key_path = \"{pem_path}\"\napi_base_url = \"{base}\"\nrepos = [\"{REPO}\"]\npoll_interval = \"0s\"\n"
        )
    })
    .await;
    let issue = h.fake.add_issue(31, "alice", "Just a discussion.");
    let c = h.fake.add_comment(31, "alice", "/ops help");
    let (s, _) = h
        .deliver(
            "issue_comment",
            "d-app-31",
            &comment_event("created", &issue, &c, "alice"),
        )
        .await;
    assert_eq!(s, 200);
    // The help reply is written with the installation token, got with the app's JWT.
    let fake = h.fake.clone();
    eventually("a reply written as the app installation", || {
        fake.calls()
            .iter()
            .any(|c| c.method == "POST" && c.path.ends_with("/issues/31/comments") && c.authorized)
            .then_some(())
    })
    .await;
    let claims = h.fake.st().app_jwt_claims.clone();
    assert!(!claims.is_empty(), "no access-token exchange");
    assert!(
        claims
            .iter()
            .all(|c| c["iss"] == json!(4242) || c["iss"] == json!("4242")),
        "{claims:?}"
    );
    assert!(claims[0]["exp"].as_i64().unwrap_or(0) > chrono::Utc::now().timestamp());
    h.shutdown.cancel();
}
