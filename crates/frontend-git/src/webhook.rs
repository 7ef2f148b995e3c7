//! The webhook: `POST /git/webhook`, authenticated by a GitHub
//! `X-Hub-Signature-256` or a bearer token, triggers a pass.

use youops_core::frontend::webhook::{bearer_matches, verify_sha256};
use youops_core::frontend::{json_response, simple_response, HttpRequest, HttpResponse};

use crate::engine::Engine;

/// The webhook route.
pub const WEBHOOK_PATH: &str = "/git/webhook";

impl Engine {
    pub(crate) fn webhook(&self, req: &HttpRequest) -> HttpResponse {
        if req.method() != http::Method::POST {
            return simple_response(http::StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let headers = req.headers();
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let signed = self.cfg.webhook_secret.is_some() && header("x-hub-signature-256").is_some();
        let authorized = match (&self.cfg.webhook_secret, &self.cfg.webhook_token) {
            (Some(secret), _) if signed => {
                verify_sha256(secret.as_bytes(), req.body(), header("x-hub-signature-256")).is_ok()
            }
            (_, Some(token)) => bearer_matches(header("authorization"), token),
            _ => false,
        };
        if !authorized {
            self.metrics.webhooks_rejected.increment(1);
            return json_response(
                http::StatusCode::UNAUTHORIZED,
                &serde_json::json!({ "error": "unauthorized", "message": "a valid X-Hub-Signature-256 or bearer token is required" }),
            );
        }
        if signed {
            match header("x-github-event") {
                Some("ping") => {
                    return json_response(
                        http::StatusCode::OK,
                        &serde_json::json!({ "ok": true, "pong": true }),
                    )
                }
                Some("push") => {
                    let body: serde_json::Value = match serde_json::from_slice(req.body()) {
                        Ok(v) => v,
                        Err(_) => {
                            return json_response(
                                http::StatusCode::BAD_REQUEST,
                                &serde_json::json!({ "error": "bad_request", "message": "the push event body is not JSON" }),
                            )
                        }
                    };
                    let want = format!("refs/heads/{}", self.cfg.branch);
                    let got = body.get("ref").and_then(|r| r.as_str()).unwrap_or("");
                    if got != want {
                        return json_response(
                            http::StatusCode::ACCEPTED,
                            &serde_json::json!({ "triggered": false, "reason": format!("push to `{got}`, not `{want}`") }),
                        );
                    }
                }
                other => {
                    return json_response(
                        http::StatusCode::ACCEPTED,
                        &serde_json::json!({ "triggered": false, "reason": format!("event `{}` is not a push", other.unwrap_or("")) }),
                    )
                }
            }
        }
        self.metrics.webhooks_accepted.increment(1);
        self.trigger.notify_one();
        json_response(
            http::StatusCode::ACCEPTED,
            &serde_json::json!({ "triggered": true }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GitConfig, Kinds};
    use crate::metrics::Metrics;
    use bytes::Bytes;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use std::path::Path;

    /// An engine recording into a debugging recorder of its own.
    fn frontend(extra: &str) -> (Engine, Snapshotter) {
        let section: toml::Table =
            toml::from_str(&format!("repo = \"/nonexistent\"\n{extra}")).unwrap();
        let cfg = GitConfig::parse(&section, Path::new("/")).unwrap();
        let kinds = Kinds::parse(&[], Path::new("/")).unwrap();
        let recorder = DebuggingRecorder::new();
        let metrics = metrics::with_local_recorder(&recorder, Metrics::register);
        (Engine::new(cfg, kinds, metrics), recorder.snapshotter())
    }

    fn post(headers: &[(&str, &str)], body: &str) -> HttpRequest {
        let mut b = http::Request::builder().method("POST").uri(WEBHOOK_PATH);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Bytes::from(body.to_string())).unwrap()
    }

    fn sign(secret: &str, body: &str) -> String {
        youops_core::frontend::webhook::sign_sha256(secret.as_bytes(), body.as_bytes())
    }

    #[test]
    fn webhook_table() {
        let (f, snapshotter) =
            frontend("webhook_secret = \"s3cret-s3cret\"\nwebhook_token = \"t0ken-t0ken\"");
        let push = r#"{"ref":"refs/heads/main","after":"abc"}"#;
        let other = r#"{"ref":"refs/heads/dev"}"#;
        type Case<'a> = (Vec<(&'a str, String)>, &'a str, u16);
        let cases: Vec<Case<'_>> = vec![
            (vec![], push, 401),
            (
                vec![
                    ("x-hub-signature-256", "sha256=00".into()),
                    ("x-github-event", "push".into()),
                ],
                push,
                401,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("wrong-secret", push)),
                    ("x-github-event", "push".into()),
                ],
                push,
                401,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", push)),
                    ("x-github-event", "push".into()),
                ],
                push,
                202,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", other)),
                    ("x-github-event", "push".into()),
                ],
                other,
                202,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", "{}")),
                    ("x-github-event", "ping".into()),
                ],
                "{}",
                200,
            ),
            (
                vec![
                    ("x-hub-signature-256", sign("s3cret-s3cret", "nope")),
                    ("x-github-event", "push".into()),
                ],
                "nope",
                400,
            ),
            (
                vec![("authorization", "Bearer t0ken-t0ken".into())],
                "",
                202,
            ),
            (
                vec![("authorization", "Bearer t0ken-t0keX".into())],
                "",
                401,
            ),
            (vec![("authorization", "Basic t0ken-t0ken".into())], "", 401),
        ];
        for (i, (h, body, status)) in cases.into_iter().enumerate() {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = f.webhook(&post(&h, body));
            assert_eq!(r.status().as_u16(), status, "case {i}: {:?}", r.body());
        }
        let counters: std::collections::HashMap<String, u64> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(k, _, _, v)| match v {
                DebugValue::Counter(n) => Some((k.key().name().to_string(), n)),
                _ => None,
            })
            .collect();
        assert_eq!(counters["youops_git_webhooks_accepted_total"], 2);
        assert_eq!(counters["youops_git_webhooks_rejected_total"], 5);
        assert_eq!(
            counters["youops_git_passes_total"], 0,
            "registered at construction"
        );
    }
}
