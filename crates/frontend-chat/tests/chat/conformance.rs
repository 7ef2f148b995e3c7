//! The frontend conformance suite, through signed slash commands.

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use youops_core::frontend::conformance::{self, Driver};
use youops_core::frontend::{Frontend, FrontendHost};
use youops_core::{RequestId, State};
use youops_frontend_chat::SlackFrontend;

use crate::support::*;

struct SlackDriver {
    fake: FakeSlack,
}

#[async_trait]
impl Driver for SlackDriver {
    fn frontend(&self) -> Arc<dyn Frontend> {
        let t: toml::Table = self.config_section().parse().unwrap();
        Arc::new(SlackFrontend::from_config(&t).unwrap())
    }

    fn user_id(&self) -> String {
        "U_CONFORMANCE".into()
    }

    fn config_section(&self) -> String {
        section(&self.fake, "")
    }

    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String> {
        // Slack never redelivers a slash command; each invocation has a unique
        // trigger_id, which is the dedup key. A redelivery is the same request again.
        let body = slash_body(&self.fake, "U_CONFORMANCE", "C1", command, delivery);
        let res = post_to(
            host,
            signed(
                "/slack/commands",
                "application/x-www-form-urlencoded",
                body,
                now(),
                SECRET,
            ),
        )
        .await;
        if res.status() != StatusCode::OK {
            return Err(format!("slash command got {}", res.status()));
        }
        Ok(())
    }

    async fn rendered(&self, id: RequestId) -> Vec<State> {
        let mut out = Vec::new();
        for c in self.fake.calls() {
            if !(c.method == "chat.postMessage" || c.method == "chat.update") {
                continue;
            }
            let t = c.text();
            if !t.contains(&id.to_string()) {
                continue;
            }
            if let Some(i) = t.find("state: `") {
                let rest = &t[i + 8..];
                if let Some(end) = rest.find('`') {
                    if let Ok(s) = serde_json::from_value::<State>(serde_json::Value::String(
                        rest[..end].into(),
                    )) {
                        out.push(s);
                    }
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_through_signed_slash_commands() {
    let driver = SlackDriver {
        fake: FakeSlack::start().await,
    };
    let report = conformance::run_suite(&driver).await.expect("conformance");
    assert_eq!(report.record.state, State::Succeeded);
    assert!(report.rendered.contains(&State::Succeeded));
    assert!(report
        .record
        .request
        .dedup_key
        .as_deref()
        .unwrap()
        .starts_with("slack:command:T1:"));
}
