//! A `FrontendHost` served the way the daemon serves it: every frontend route
//! reads the whole body, then goes to `FrontendHost::handle`.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use youops_core::frontend::{FrontendHost, HttpResponse};

/// Serve the host's frontend routes on 127.0.0.1 (a free port, no Nagle) the
/// way the daemon does; the address.
pub async fn serve_host(host: &FrontendHost) -> SocketAddr {
    let mut app = axum::Router::new();
    for (route, index) in host.routes() {
        let host = host.clone();
        app = app.route(
            &route.path,
            axum::routing::post(move |req: Request| async move {
                let (parts, body) = req.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
                    return axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response();
                };
                let res = host
                    .handle(index, http::Request::from_parts(parts, bytes))
                    .await;
                let (parts, body) = res.into_parts();
                Response::from_parts(parts, axum::body::Body::from(body))
            }),
        );
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(l.tap_io(|t| t.set_nodelay(true).unwrap()), app)
            .await
            .unwrap()
    });
    addr
}

/// Hand `req` to the host's route for its path, in process (no listener).
/// Panics when the host has no such route.
pub async fn handle_route(host: &FrontendHost, req: http::Request<Bytes>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let (_, idx) = host
        .routes()
        .into_iter()
        .find(|(r, _)| r.path == path)
        .unwrap_or_else(|| panic!("no route {path}"));
    host.handle(idx, req).await
}
