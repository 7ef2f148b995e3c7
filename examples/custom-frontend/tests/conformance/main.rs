//! The third-party webhook frontend passes the core's frontend conformance suite
//! through its real wire path (signed HTTP requests), and refuses forged ones.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::routing::post;
use axum::Json;
use bytes::Bytes;
use youops_core::frontend::conformance::{run_suite, Driver};
use youops_core::frontend::{Frontend, FrontendHost};
use youops_core::{RequestId, State};
use youops_example_custom_frontend::WebhookFrontend;

const SECRET: &str = "conformance-shared-secret";

type Calls = Arc<Mutex<Vec<serde_json::Value>>>;

/// A callback receiver on 127.0.0.1 recording every lifecycle POST.
async fn callback_server() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/cb",
        post(move |Json(v): Json<serde_json::Value>| {
            let c = c.clone();
            async move {
                c.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/cb"), calls)
}

struct WebhookDriver {
    callback: String,
    calls: Calls,
    frontend: Arc<WebhookFrontend>,
}

fn signed(body: &str, delivery: &str, secret: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method("POST")
        .uri("/hooks/generic")
        .header("content-type", "application/json")
        .header("x-webhook-delivery", delivery)
        .header(
            "x-webhook-signature",
            WebhookFrontend::sign(secret.as_bytes(), body.as_bytes()),
        )
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

#[async_trait]
impl Driver for WebhookDriver {
    fn frontend(&self) -> Arc<dyn Frontend> {
        self.frontend.clone()
    }
    fn user_id(&self) -> String {
        "hook-user".into()
    }
    fn config_section(&self) -> String {
        format!("secret = {SECRET:?}\ncallback_url = {:?}", self.callback)
    }
    async fn deliver(
        &self,
        host: &FrontendHost,
        command: &str,
        delivery: &str,
    ) -> Result<(), String> {
        let (route, index) = host.routes().into_iter().next().ok_or("no route")?;
        assert_eq!(route.path, "/hooks/generic");
        let body = serde_json::json!({ "user": self.user_id(), "command": command }).to_string();
        let resp = host.handle(index, signed(&body, delivery, SECRET)).await;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "delivery answered {}: {:?}",
                resp.status(),
                resp.body()
            ))
        }
    }
    async fn rendered(&self, id: RequestId) -> Vec<State> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c["request_id"] == id.to_string())
            .filter_map(|c| c["state"].as_str().and_then(|s| s.parse().ok()))
            .collect()
    }
}

fn frontend(callback: &str) -> Arc<WebhookFrontend> {
    let section: toml::Table =
        toml::from_str(&format!("secret = {SECRET:?}\ncallback_url = {callback:?}")).unwrap();
    Arc::new(WebhookFrontend::from_config(&section).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn passes_the_conformance_suite() {
    let (callback, calls) = callback_server().await;
    let driver = WebhookDriver {
        frontend: frontend(&callback),
        callback,
        calls,
    };
    let report = run_suite(&driver).await.expect("conformance");
    assert_eq!(report.record.state, State::Succeeded);
    assert_eq!(report.rendered.last(), Some(&State::Succeeded));
}

#[tokio::test]
async fn forged_or_unsigned_deliveries_are_refused() {
    let f = frontend("http://127.0.0.1:9/none");
    let cfg =
        youops_core::config::Config::parse("", std::path::Path::new("."), "t", &|_| None).unwrap();
    let dir = std::env::temp_dir().join(format!("youops-webhook-{}", std::process::id()));
    let store =
        Arc::new(youops_store::LogStore::open(&dir, youops_store::LogOptions::default()).unwrap());
    let exec = youops_core::Executor::builder(&cfg, store)
        .build()
        .await
        .unwrap();
    let ctx = youops_core::frontend::FrontendContext::new(
        "webhook",
        exec,
        toml::Table::new(),
        None,
        Default::default(),
    );
    let body = r#"{"user":"hook-user","command":"help"}"#;
    let cases = [
        (signed(body, "d1", "wrong-secret-wrong-secret"), 401),
        (
            http::Request::builder()
                .method("POST")
                .uri("/hooks/generic")
                .body(Bytes::from(body))
                .unwrap(),
            401,
        ),
        (signed("{not json", "d2", SECRET), 400),
        (signed(body, "", SECRET), 400),
    ];
    for (req, want) in cases {
        let resp = f.handle_http(&ctx, req).await;
        assert_eq!(resp.status().as_u16(), want, "{:?}", resp.body());
    }
    let _ = std::fs::remove_dir_all(dir);
}
