//! The whole HTTP surface in one [`router`]: health, readiness and metrics
//! endpoints, the API, the dashboard and the frontends' webhook routes, behind
//! the drain guard, timeouts, the body limit, request ids and tracing.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, on, MethodFilter};
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use youops_core::config::Config;

use super::state::AppState;
use crate::server_config::ServerConfig;

/// The whole HTTP surface.
pub fn router(state: AppState, cfg: &Config) -> Router {
    let server = ServerConfig::of_checked(cfg);
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(super::api::router())
        .merge(super::dashboard::router())
        .merge(super::cluster_page::router());
    for (route, index) in state.host().routes() {
        let filter = MethodFilter::try_from(route.method.clone()).unwrap_or(MethodFilter::POST);
        app = app.route(
            &route.path,
            on(
                filter,
                move |State(st): State<AppState>, req: Request| async move {
                    frontend_http(st, index, req).await
                },
            ),
        );
    }
    app.layer(middleware::from_fn_with_state(state.clone(), drain_guard))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, server.request_timeout.0))
        .layer(RequestBodyLimitLayer::new(server.body_limit.0 as usize))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), http_request_id = %id)
            })
            .on_failure(log_failure),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// A 5xx answer, in the log: ERROR, except 503 (shutting down, not ready),
/// which the daemon answers on purpose and a client is told to retry.
fn log_failure(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    match class {
        Class::StatusCode(StatusCode::SERVICE_UNAVAILABLE) => {
            tracing::info!(?latency, "answered 503 (unavailable; the client may retry)")
        }
        Class::StatusCode(code) => {
            tracing::error!(status = code.as_u16(), ?latency, "request failed")
        }
        Class::Error(e) => tracing::error!(error = %e, ?latency, "request failed"),
    }
}

async fn frontend_http(st: AppState, index: usize, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            // The body limit layer turns oversized bodies into this error.
            let too_big = std::error::Error::source(&e)
                .map(|s| s.to_string().contains("length limit"))
                .unwrap_or(false)
                || e.to_string().contains("length limit");
            let status = if too_big {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return (status, format!("could not read the request body: {e}")).into_response();
        }
    };
    let req = http::Request::from_parts(parts, bytes);
    let resp = st.host().handle(index, req).await;
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::from(body))
}

async fn drain_guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.draining() && req.method() != axum::http::Method::GET {
        st.metrics().refused_draining();
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": { "code": "shutting_down", "message": "YouOps is shutting down and takes no new requests" } })),
        )
            .into_response();
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("5"));
        return resp;
    }
    next.run(req).await
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(st): State<AppState>) -> Response {
    let frontends = st.host().readiness();
    let accepting = st.exec().is_accepting() && !st.draining();
    let ready = accepting && frontends.iter().all(|(_, r)| *r);
    let body = json!({
        "ready": ready,
        "accepting": accepting,
        "frontends": frontends.iter().map(|(n, r)| json!({ "name": n, "ready": r })).collect::<Vec<_>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(st): State<AppState>) -> Response {
    let exec = st.exec();
    let size = exec.store().size_on_disk().await.unwrap_or(0) as f64;
    let chain = st.chain_status().await;
    let text = st.metrics().render(&[
        (
            "youops_pending_approvals",
            "Requests waiting for approval.",
            exec.pending_approvals() as f64,
        ),
        (
            "youops_running_requests",
            "Requests running or queued for a lock.",
            exec.running() as f64,
        ),
        (
            "youops_audit_store_bytes",
            "Audit store size on disk.",
            size,
        ),
        (
            "youops_audit_verified_seq",
            "Audit events verified by the incremental chain check.",
            chain.verified_through as f64,
        ),
        (
            "youops_audit_chain_intact",
            "1 if the incremental chain check found no broken record.",
            if chain.broken.is_none() { 1.0 } else { 0.0 },
        ),
        (
            "youops_uptime_seconds",
            "Seconds since start.",
            st.uptime().as_secs_f64(),
        ),
    ]);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response()
}
