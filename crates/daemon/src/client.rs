//! The CLI's client for a running daemon's JSON API.

use std::time::Duration;

use serde_json::Value as Json;
use youops_core::{RequestId, RequestRecord};

use crate::cli::failure::{exit, Failure};

/// A client of `/api/v1`.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the daemon at `base` with bearer `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("youops-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(330))
            .build()
            .map_err(|e| Failure::new(exit::UNAVAILABLE, e.to_string()))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder, any_status: bool) -> Result<Json, Failure> {
        let resp = req.bearer_auth(&self.token).send().await.map_err(|e| {
            Failure::new(
                exit::UNAVAILABLE,
                format!("cannot reach {}: {e}", self.base),
            )
        })?;
        let status = resp.status();
        let body: Json = resp.json().await.unwrap_or(Json::Null);
        if status.is_success() || any_status {
            return Ok(body);
        }
        let msg = body["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("HTTP {status}"));
        let code = match status.as_u16() {
            401 | 403 | 400 | 404 | 409 => exit::REFUSED,
            503 => exit::UNAVAILABLE,
            _ => exit::FAILED,
        };
        Err(Failure::new(code, msg))
    }

    /// GET a JSON document.
    pub async fn get_json(&self, path: &str) -> Result<Json, Failure> {
        self.send(self.http.get(format!("{}{path}", self.base)), false)
            .await
    }

    /// GET a JSON document whatever the status.
    pub async fn get_json_any_status(&self, path: &str) -> Result<Json, Failure> {
        self.send(self.http.get(format!("{}{path}", self.base)), true)
            .await
    }

    /// GET text.
    pub async fn get_text(&self, path: &str) -> Result<String, Failure> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| {
                Failure::new(
                    exit::UNAVAILABLE,
                    format!("cannot reach {}: {e}", self.base),
                )
            })?;
        if !resp.status().is_success() {
            return Err(Failure::new(
                exit::FAILED,
                format!("HTTP {}", resp.status()),
            ));
        }
        resp.text()
            .await
            .map_err(|e| Failure::new(exit::FAILED, e.to_string()))
    }

    /// POST JSON.
    pub async fn post_json(&self, path: &str, body: &Json) -> Result<Json, Failure> {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            false,
        )
        .await
    }

    /// The `request` of an API answer.
    pub fn record(v: &Json) -> Result<RequestRecord, Failure> {
        serde_json::from_value(v["request"].clone()).map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!("unexpected answer from the server: {e}"),
            )
        })
    }

    /// Submit and wait for the end state (or pending approval).
    pub async fn run(
        &self,
        op: &str,
        args: &[(String, String)],
        dry_run: bool,
    ) -> Result<RequestRecord, Failure> {
        let args: serde_json::Map<String, Json> = args
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        let resp = self
            .http
            .post(format!("{}/api/v1/requests?wait=25s", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "op": op, "args": args, "dry_run": dry_run }))
            .send()
            .await
            .map_err(|e| {
                Failure::new(
                    exit::UNAVAILABLE,
                    format!("cannot reach {}: {e}", self.base),
                )
            })?;
        let status = resp.status();
        let body: Json = resp.json().await.unwrap_or(Json::Null);
        if !body["request"].is_null() {
            let rec = Self::record(&body)?;
            if rec.state.is_terminal() || rec.state == youops_core::State::PendingApproval {
                return Ok(rec);
            }
            return self.wait(rec.request.id).await;
        }
        let msg = body["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(Failure::new(
            if status.as_u16() == 503 {
                exit::UNAVAILABLE
            } else {
                exit::REFUSED
            },
            msg,
        ))
    }

    /// Wait until a request ends (or waits for approval).
    pub async fn wait(&self, id: RequestId) -> Result<RequestRecord, Failure> {
        loop {
            let v = self
                .get_json(&format!("/api/v1/requests/{id}?wait=60s"))
                .await?;
            let rec = Self::record(&v)?;
            if rec.state.is_terminal() || rec.state == youops_core::State::PendingApproval {
                return Ok(rec);
            }
        }
    }
}
