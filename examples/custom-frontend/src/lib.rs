//! A third-party YouOps frontend built only on `youops-core`'s public API: a
//! generic signed webhook.
//!
//! Any system that can send an HMAC-signed HTTP POST can run ops:
//!
//! ```text
//! POST /hooks/generic
//! X-Webhook-Delivery: 5f0c...            (unique per delivery; redeliveries reuse it)
//! X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body with the shared secret>
//! {"user": "alice", "command": "deploy service=api version=v1.2.3"}
//! ```
//!
//! Lifecycle events of its requests are POSTed as JSON to `callback_url`.
//! Config section: `[frontends.webhook]` with `secret`, optional `callback_url`
//! and `path`.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use youops_core::frontend::delivery::{self, DeliveryError, RetryPolicy};
use youops_core::frontend::lifecycle::{follow, LifecycleHandler};
use youops_core::frontend::webhook::{sign_sha256, verify_sha256};
use youops_core::frontend::{
    json_response, Frontend, FrontendContext, FrontendError, HttpRequest, HttpResponse, HttpRoute,
};
use youops_core::model::RequestRecord;
use youops_core::{Actor, Error, Inbound, Origin, Reply};

/// The frontend's name (and config section).
pub const NAME: &str = "webhook";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    secret: String,
    #[serde(default)]
    callback_url: Option<String>,
    #[serde(default = "default_path")]
    path: String,
}

fn default_path() -> String {
    "/hooks/generic".into()
}

/// A generic signed-webhook frontend.
#[derive(Debug)]
pub struct WebhookFrontend {
    secret: Vec<u8>,
    callback_url: Option<String>,
    path: String,
    http: reqwest::Client,
    ready: AtomicBool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivery {
    user: String,
    command: String,
}

impl WebhookFrontend {
    /// Build from `[frontends.webhook]`; every problem at once.
    pub fn from_config(section: &toml::Table) -> Result<Self, Vec<String>> {
        let s: Settings = toml::Value::Table(section.clone())
            .try_into()
            .map_err(|e: toml::de::Error| vec![format!("frontends.{NAME}: {}", e.message())])?;
        let mut problems = Vec::new();
        if s.secret.len() < 16 {
            problems.push(format!(
                "frontends.{NAME}.secret: use at least 16 characters"
            ));
        }
        if !s.path.starts_with('/') {
            problems.push(format!("frontends.{NAME}.path: must start with /"));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(WebhookFrontend {
            secret: s.secret.into_bytes(),
            callback_url: s.callback_url,
            path: s.path,
            http: reqwest::Client::new(),
            ready: AtomicBool::new(false),
        })
    }

    /// The signature header value for `body` (what senders compute).
    pub fn sign(secret: &[u8], body: &[u8]) -> String {
        sign_sha256(secret, body)
    }

    /// POST one request's state to the callback URL, with core's retries;
    /// every retry and give-up is an audit notice.
    async fn callback(&self, ctx: &FrontendContext, url: &str, r: &RequestRecord) {
        let body = json!({
            "request_id": r.request.id.to_string(),
            "op": r.request.op,
            "state": r.state.as_str(),
            "reason": r.reason,
            "output": r.outcome.as_ref().map(|o| o.output.clone()),
            "audit_hash": r.last_hash,
            "url": ctx.request_url(r.request.id),
        });
        let delivery = delivery::Delivery {
            executor: &ctx.executor,
            frontend: NAME,
            request: Some(r.request.id),
            what: format!("callback to {url}"),
            shutdown: &ctx.shutdown,
        };
        let policy = RetryPolicy {
            max_attempts: 3,
            first_backoff: std::time::Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        delivery
            .run(&policy, || async {
                let resp = self
                    .http
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| DeliveryError::transient(e.to_string()))?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    s if s.is_server_error() || s.as_u16() == 429 => {
                        Err(DeliveryError::transient(format!("HTTP {s}")))
                    }
                    s => Err(DeliveryError::permanent(format!("HTTP {s}"))),
                }
            })
            .await;
    }
}

#[async_trait]
impl LifecycleHandler for WebhookFrontend {
    async fn on_record(&self, ctx: &FrontendContext, record: &RequestRecord) {
        if let Some(url) = &self.callback_url {
            self.callback(ctx, url, record).await;
        }
    }
}

fn error(status: http::StatusCode, code: &str, message: &str) -> HttpResponse {
    json_response(
        status,
        &json!({ "error": { "code": code, "message": message } }),
    )
}

#[async_trait]
impl Frontend for WebhookFrontend {
    fn name(&self) -> &str {
        NAME
    }

    async fn run(&self, ctx: FrontendContext) -> Result<(), FrontendError> {
        self.ready.store(true, Ordering::SeqCst);
        follow(&ctx, ctx.lifecycle(), self).await;
        self.ready.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn http_routes(&self) -> Vec<HttpRoute> {
        vec![HttpRoute::post(self.path.clone())]
    }

    async fn handle_http(&self, ctx: &FrontendContext, req: HttpRequest) -> HttpResponse {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if verify_sha256(&self.secret, req.body(), header("x-webhook-signature")).is_err() {
            return error(
                http::StatusCode::UNAUTHORIZED,
                "bad_signature",
                "missing or wrong X-Webhook-Signature",
            );
        }
        let Some(delivery) =
            header("x-webhook-delivery").filter(|d| !d.is_empty() && d.len() <= 128)
        else {
            return error(
                http::StatusCode::BAD_REQUEST,
                "bad_request",
                "X-Webhook-Delivery header (1-128 characters) is required",
            );
        };
        let body: Bytes = req.body().clone();
        let d: Delivery = match serde_json::from_slice(&body) {
            Ok(d) => d,
            Err(e) => {
                return error(
                    http::StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("body: {e}"),
                )
            }
        };
        let actor = Actor::new(NAME, d.user);
        let origin = Origin::new(NAME);
        // Every command claims the delivery id: a redelivery does nothing twice.
        let inbound = Inbound::parse(&d.command, actor, origin).map(|i| {
            i.dedup(youops_core::DedupKey::delivery(format!(
                "{NAME}:{delivery}"
            )))
            .provenance("delivery", delivery)
        });
        let reply = match inbound {
            Ok(inbound) => ctx.executor.handle(inbound).await,
            Err(e) => Err(e),
        };
        match reply {
            Ok(Reply::Submitted(t)) => {
                let status = if t.duplicate {
                    http::StatusCode::OK
                } else {
                    http::StatusCode::ACCEPTED
                };
                json_response(
                    status,
                    &json!({ "request_id": t.record.request.id.to_string(), "state": t.record.state.as_str(), "duplicate": t.duplicate, "reason": t.record.reason }),
                )
            }
            Ok(Reply::Help(h)) => json_response(http::StatusCode::OK, &json!({ "help": h })),
            Ok(Reply::Record(r)) => json_response(
                http::StatusCode::OK,
                &json!({ "request_id": r.request.id.to_string(), "state": r.state.as_str() }),
            ),
            Ok(Reply::Duplicate(r)) => json_response(
                http::StatusCode::OK,
                &json!({ "request_id": r.request.id.to_string(), "state": r.state.as_str(), "duplicate": true }),
            ),
            Ok(_) => json_response(http::StatusCode::OK, &json!({})),
            Err(e @ Error::Parse(_)) => {
                error(http::StatusCode::BAD_REQUEST, e.code(), &e.to_string())
            }
            Err(e) if e.is_user_error() => {
                error(http::StatusCode::FORBIDDEN, e.code(), &e.to_string())
            }
            Err(e) => error(
                http::StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                &e.to_string(),
            ),
        }
    }
}
