//! The JSON API under `/api/v1`. Bearer tokens map to principals (constant-time
//! digest comparison in the policy); missing token → 401, not allowed → 403, bad
//! body → 400 with a message saying what is wrong. User input never yields a 500.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use youops_core::catalog::OpSpec;
use youops_core::policy::Place;
use youops_core::{Actor, Error, Origin, RequestFilter, RequestId, State as ReqState, Submission};

use super::state::AppState;

mod cluster;
mod reconcile;
pub use reconcile::PlanView;

/// The API routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/ops", get(list_ops))
        .route("/api/v1/ops/{name}", get(show_op))
        .route("/api/v1/requests", post(submit).get(list_requests))
        .route("/api/v1/requests/{id}", get(get_request))
        .route("/api/v1/requests/{id}/approve", post(approve))
        .route("/api/v1/requests/{id}/deny", post(deny))
        .route("/api/v1/requests/{id}/cancel", post(cancel))
        .route("/api/v1/requests/{id}/retry", post(retry))
        .route("/api/v1/commands", post(command))
        .route("/api/v1/reconcile/plan", post(reconcile::plan))
        .route("/api/v1/audit", get(audit_events))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/audit/export", get(audit_export))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/cluster", get(cluster::status))
}

/// An API error: status + `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            extra: None,
        }
    }

    fn with(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let Some(extra) = self.extra {
            if let (Some(obj), Some(ext)) = (body.as_object_mut(), extra.as_object()) {
                for (k, v) in ext {
                    obj.insert(k.clone(), v.clone());
                }
            }
        }
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"youops\""),
            );
        }
        // Unavailable for now (shutting down, the store unreachable): a
        // request that slipped past the drain guard gets its Retry-After too.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        resp
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Parse(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::UnknownIdentity { .. } | Error::Forbidden(_) | Error::Approval(_) => {
                StatusCode::FORBIDDEN
            }
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "internal error in API");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn bad_json(r: JsonRejection) -> ApiError {
    // A body over `[server] body_limit` that came without a Content-Length (the
    // limit layer answers those with a length itself) trips while it is read.
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "the request body is larger than the server's body_limit",
        );
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("bad JSON body: {}", r.body_text()),
    )
}

/// The principal a request's bearer token maps to.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        state.metrics().auth_failed();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>` header",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let principal = token.and_then(|t| {
        state
            .exec()
            .loaded()
            .policy
            .resolve_token(t)
            .map(String::from)
    });
    principal.ok_or_else(|| {
        state.metrics().auth_failed();
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not valid",
        )
    })
}

fn api_actor(principal: &str) -> Actor {
    let mut a = Actor::new("api", principal);
    a.principal = Some(principal.to_string());
    a
}

fn api_origin() -> Origin {
    Origin::new("api")
}

fn parse_id(id: &str) -> ApiResult<RequestId> {
    id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`{id}` is not a request id (a 26-character ULID)"),
        )
    })
}

#[derive(Serialize)]
struct OpView<'a> {
    name: &'a str,
    description: &'a str,
    usage: String,
    params: serde_json::Value,
    approvals: u32,
    lock: Option<&'a str>,
    runner: &'static str,
}

fn op_view(op: &OpSpec) -> OpView<'_> {
    OpView {
        name: &op.name,
        description: &op.description,
        usage: op.usage(),
        params: serde_json::to_value(&op.params).unwrap_or_default(),
        approvals: op.approvals,
        lock: op.lock.as_deref(),
        runner: op.runner.kind(),
    }
}

async fn whoami(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let p = authenticate(&st, &headers)?;
    let loaded = st.exec().loaded();
    let roles = loaded
        .policy
        .principal(&p)
        .map(|s| s.roles.clone())
        .unwrap_or_default();
    Ok(Json(json!({ "principal": p, "roles": roles })))
}

async fn list_ops(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let p = authenticate(&st, &headers)?;
    let loaded = st.exec().loaded();
    let place = Place {
        frontend: "api",
        location: "",
    };
    let ops: Vec<_> = loaded
        .policy
        .visible_ops(&p, &loaded.catalog, place)
        .into_iter()
        .map(op_view)
        .collect();
    Ok(Json(json!({ "ops": ops })))
}

async fn show_op(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = authenticate(&st, &headers)?;
    let loaded = st.exec().loaded();
    let place = Place {
        frontend: "api",
        location: "",
    };
    let visible = loaded.policy.visible_ops(&p, &loaded.catalog, place);
    match visible.into_iter().find(|o| o.name == name) {
        Some(op) => Ok(Json(
            json!({ "op": op_view(op), "help": st.exec().help(&api_actor(&p), &api_origin(), Some(&name))? }),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no op `{name}` that you may run"),
        )),
    }
}

/// `POST /api/v1/requests` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Op name.
    pub op: String,
    /// Arguments: strings, numbers or booleans.
    #[serde(default)]
    pub args: BTreeMap<String, serde_json::Value>,
    /// Dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Dedup key (also from the `Idempotency-Key` header).
    #[serde(default)]
    pub dedup_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    #[serde(default)]
    wait: Option<String>,
}

/// Wait until the request ends or waits for people (approvals).
async fn settled(st: &AppState, id: RequestId) -> youops_core::Result<youops_core::RequestRecord> {
    st.exec()
        .wait_for(id, |r| r.state == ReqState::PendingApproval)
        .await
}

fn wait_duration(st: &AppState, q: &WaitQuery) -> ApiResult<Option<Duration>> {
    // Stay inside the HTTP request timeout so a long wait answers 2xx, not 408.
    let cap = st
        .request_timeout()
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    match &q.wait {
        None => Ok(None),
        Some(w) => youops_core::units::parse_duration(w)
            .map(|d| Some(d.min(cap)))
            .map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("wait: {e}"))
            }),
    }
}

async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<WaitQuery>,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> ApiResult<Response> {
    let p = authenticate(&st, &headers)?;
    let Json(body) = body.map_err(bad_json)?;
    let wait = wait_duration(&st, &q)?;
    let mut sub = Submission::new(body.op, api_actor(&p), api_origin()).dry_run(body.dry_run);
    for (k, v) in body.args {
        let text = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "args.{k}: expected a string, number or boolean, got {}",
                        json_kind(&other)
                    ),
                ))
            }
        };
        sub.args.push((k, text));
    }
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_string());
    if let Some(key) = body.dedup_key.or(idem) {
        if key.is_empty() || key.len() > 256 {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "dedup key must be 1-256 characters",
            ));
        }
        // An idempotency key guards against a client retrying a request:
        // its claim expires after `[store] dedup_ttl`.
        sub = sub.dedup_with(youops_core::DedupKey::delivery(format!("api:{p}:{key}")));
    }
    if let Some(ua) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        sub.provenance
            .insert("client".into(), ua.chars().take(100).collect());
    }
    let ticket = st.exec().submit(sub).await?;
    let mut record = ticket.record.clone();
    match record.state {
        ReqState::Invalid => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                record.reason.clone().unwrap_or_default(),
            )
            .with(json!({ "request": record })))
        }
        ReqState::Denied => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "denied",
                record.reason.clone().unwrap_or_default(),
            )
            .with(json!({ "request": record })))
        }
        _ => {}
    }
    if let Some(d) = wait {
        record = match tokio::time::timeout(d, settled(&st, record.request.id)).await {
            Ok(r) => r?,
            // Not settled in time: the state it is in now, not the one at submit.
            Err(_) => st.exec().get(record.request.id).await?,
        };
    }
    let status = if ticket.duplicate {
        StatusCode::OK
    } else if record.state.is_terminal() {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let url = format!("/api/v1/requests/{}", record.request.id);
    let mut resp = (
        status,
        Json(json!({ "request": record, "duplicate": ticket.duplicate })),
    )
        .into_response();
    if let Ok(v) = header::HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    principal: Option<String>,
    #[serde(default)]
    frontend: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    before: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

fn parse_time(field: &str, s: &str) -> ApiResult<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field}: `{s}` is not an RFC 3339 time ({e})"),
            )
        })
}

async fn list_requests(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&st, &headers)?;
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let mut filter = RequestFilter::default();
    if let Some(s) = &q.state {
        for part in s.split(',').filter(|p| !p.is_empty()) {
            filter.states.push(part.parse().map_err(|e: String| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("state: {e}"),
                )
            })?);
        }
    }
    filter.op = q.op;
    filter.principal = q.principal;
    filter.frontend = q.frontend;
    if let Some(s) = &q.since {
        filter.since = Some(parse_time("since", s)?);
    }
    if let Some(s) = &q.until {
        filter.until = Some(parse_time("until", s)?);
    }
    let before = q.before.as_deref().map(parse_id).transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let list = st.exec().list(&filter, before, limit).await?;
    let next = if list.len() == limit {
        list.last().map(|r| r.request.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({ "requests": list, "next_before": next })))
}

async fn get_request(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&st, &headers)?;
    let id = parse_id(&id)?;
    let wait = wait_duration(&st, &q)?;
    let mut record = st.exec().get(id).await?;
    if let Some(d) = wait {
        if !record.state.is_terminal() {
            record = match tokio::time::timeout(d, settled(&st, id)).await {
                Ok(r) => r?,
                // Not settled in time: answer with the state it is in now (it may
                // have moved on, e.g. to `running`), not the one before the wait.
                Err(_) => st.exec().get(id).await?,
            };
        }
    }
    let events = st.exec().events(id).await?;
    Ok(Json(json!({ "request": record, "events": events })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn optional_body(body: Result<Json<DecisionBody>, JsonRejection>) -> ApiResult<DecisionBody> {
    match body {
        Ok(Json(b)) => Ok(b),
        Err(JsonRejection::MissingJsonContentType(_)) => Ok(DecisionBody::default()),
        Err(e) => Err(bad_json(e)),
    }
}

async fn approve(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = authenticate(&st, &headers)?;
    let id = parse_id(&id)?;
    let body = optional_body(body)?;
    let rec = st
        .exec()
        .approve(id, &api_actor(&p), body.digest.as_deref())
        .await?;
    Ok(Json(json!({ "request": rec })))
}

async fn deny(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DecisionBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = authenticate(&st, &headers)?;
    let id = parse_id(&id)?;
    let body = optional_body(body)?;
    let rec = st.exec().deny(id, &api_actor(&p), body.reason).await?;
    Ok(Json(json!({ "request": rec })))
}

async fn cancel(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = authenticate(&st, &headers)?;
    let id = parse_id(&id)?;
    let rec = st.exec().cancel(id, &api_actor(&p)).await?;
    Ok(Json(json!({ "request": rec })))
}

async fn retry(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let p = authenticate(&st, &headers)?;
    let id = parse_id(&id)?;
    let t = st
        .exec()
        .retry(id, &api_actor(&p), api_origin(), None)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "request": t.record, "duplicate": t.duplicate })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    text: String,
}

async fn command(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CommandBody>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = authenticate(&st, &headers)?;
    let Json(body) = body.map_err(bad_json)?;
    let reply = st
        .exec()
        .command(&body.text, &api_actor(&p), &api_origin(), None)
        .await?;
    Ok(Json(match reply {
        youops_core::Reply::Submitted(t) => {
            json!({ "request": t.record, "duplicate": t.duplicate })
        }
        youops_core::Reply::Help(h) => json!({ "help": h }),
        youops_core::Reply::Record(r) => json!({ "request": r }),
        youops_core::Reply::Duplicate(r) => json!({ "request": r, "duplicate": true }),
        _ => json!({}),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    request: Option<String>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn audit_events(
    State(st): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&st, &headers)?;
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let events = match &q.request {
        Some(id) => st.exec().events(parse_id(id)?).await?,
        None => st
            .exec()
            .store()
            .events(q.after.unwrap_or(0), q.limit.unwrap_or(500).clamp(1, 5000))
            .await
            .map_err(Error::from)?,
    };
    Ok(Json(json!({ "events": events })))
}

async fn audit_verify(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authenticate(&st, &headers)?;
    let report = st.exec().store().verify().await.map_err(Error::from)?;
    st.set_chain_status(&report);
    let status = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(json!({ "report": report, "ok": report.ok() }))).into_response())
}

async fn audit_export(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    authenticate(&st, &headers)?;
    let store = st.exec().store().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut after = 0;
        loop {
            let batch = match store.events(after, 1000).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            if batch.is_empty() {
                return;
            }
            let mut chunk = String::new();
            for e in &batch {
                after = e.seq;
                if let Ok(line) = serde_json::to_string(e) {
                    chunk.push_str(&line);
                    chunk.push('\n');
                }
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unavailable_answer_says_when_to_retry() {
        // Shutting down: a request that passed the drain guard just before
        // draining began reaches a stopped executor.
        let resp = ApiError::from(Error::ShuttingDown).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "5");
        let resp = ApiError::new(StatusCode::FORBIDDEN, "forbidden", "no").into_response();
        assert!(!resp.headers().contains_key(header::RETRY_AFTER));
    }
}
