//! The fake's one handler: the App token exchange, then `/repos/{o}/{r}/issues/…`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::json::{issue_json, label_json, now, percent_decode, user_json};
use super::{Call, FakeGithub, FakeState, BOT};
use crate::fault::{Fault, Peer};

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }),
        ),
    )
        .into_response()
}

fn page<T: Clone>(items: Vec<T>, query: &BTreeMap<String, String>) -> Vec<T> {
    let per: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    items.into_iter().skip((page - 1) * per).take(per).collect()
}

fn since_ok(v: &Value, query: &BTreeMap<String, String>) -> bool {
    match query.get("since") {
        None => true,
        Some(s) => {
            let since: chrono::DateTime<chrono::Utc> = s.parse().unwrap();
            let upd: chrono::DateTime<chrono::Utc> =
                v["updated_at"].as_str().unwrap().parse().unwrap();
            upd >= since
        }
    }
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "message": text }))).into_response()
}

/// Keep (when recording) and show (to the observer) a call.
fn record(st: &mut FakeState, call: Call) {
    if let Some(observe) = &st.options.observe {
        observe(&call);
    }
    if st.options.record {
        st.calls.push(call);
    }
}

/// GitHub App: exchange the app's JWT for an installation token.
fn access_token(st: &mut FakeState, auth_header: &str) -> Response {
    let claims = auth_header
        .strip_prefix("Bearer ")
        .and_then(|jwt| jwt.split('.').nth(1))
        .and_then(super::base64url_json);
    st.app_jwt_claims
        .push(claims.clone().unwrap_or(Value::Null));
    if claims.is_some_and(|c| c["iss"] == json!(4242) || c["iss"] == json!("4242")) {
        return created(json!({
            "token": "ghs_installation_token",
            "expires_at": (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            "permissions": { "issues": "write" },
            "repository_selection": "all"
        }));
    }
    message(
        StatusCode::UNAUTHORIZED,
        "A JSON web token could not be decoded",
    )
}

/// The fault for this comment post, if any (counting it down).
fn comment_fault(st: &mut FakeState) -> Option<Fault> {
    match (st.fault, st.fault_left) {
        (Some(f), None) => Some(f),
        (Some(f), Some(left)) if left > 0 => {
            st.fault_left = Some(left - 1);
            Some(f)
        }
        _ => None,
    }
}

pub(super) async fn handle(
    AxState(fake): AxState<FakeGithub>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query_s = req.uri().query().unwrap_or("").to_string();
    let auth_header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let fault = {
        let mut st = fake.st();
        let is_comment_post = method == "POST"
            && {
                let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                matches!(segs.as_slice(), ["repos", _, _, "issues", n, "comments"] if n.parse::<u64>().is_ok())
            };
        if is_comment_post {
            comment_fault(&mut st)
        } else {
            None
        }
    };
    let call = Call {
        method,
        path,
        query: query_s,
        body,
        authorized: false,
    };
    match fault {
        None => answer(&mut fake.st(), call, &auth_header),
        Some(fault) => {
            let mut call = call;
            call.authorized = true;
            record(&mut fake.st(), call);
            match fault {
                Fault::Status(s) => message(StatusCode::from_u16(s).unwrap(), "Server Error"),
                Fault::RateLimited(secs) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", secs.to_string())],
                    axum::Json(json!({ "message": "API rate limit exceeded" })),
                )
                    .into_response(),
                Fault::Hang => std::future::pending().await,
                Fault::Drop => {
                    fake.conns.cut(peer);
                    StatusCode::OK.into_response()
                }
            }
        }
    }
}

/// Record the call and answer it from the state.
fn answer(st: &mut FakeState, mut call: Call, auth_header: &str) -> Response {
    // A personal token, or the installation token handed out below.
    call.authorized = st.options.lenient
        || [
            "Bearer test-token",
            "Bearer ghs_installation_token",
            "token ghs_installation_token",
        ]
        .contains(&auth_header);
    let (method, path, body) = (call.method.clone(), call.path.clone(), call.body.clone());
    let query: BTreeMap<String, String> = call
        .query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    let authorized = call.authorized;
    record(st, call);
    if method == "POST" && path == "/app/installations/77/access_tokens" {
        return access_token(st, auth_header);
    }
    if !authorized {
        return message(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /repos/{o}/{r}/issues/...
    if segs.len() < 4 || segs[0] != "repos" || segs[3] != "issues" {
        return not_found();
    }
    let repo = format!("{}/{}", segs[1], segs[2]);
    let rest = &segs[4..];
    match (method.as_str(), rest) {
        ("GET", []) => {
            let v: Vec<Value> = st
                .issues
                .iter()
                .filter(|((r, _), i)| *r == repo && since_ok(i, &query))
                .map(|(_, i)| i.clone())
                .collect();
            ok(json!(page(v, &query)))
        }
        ("GET", ["comments"]) => {
            let v: Vec<Value> = st
                .comments
                .values()
                .filter(|(r, _, c)| *r == repo && since_ok(c, &query))
                .map(|(_, _, c)| c.clone())
                .collect();
            ok(json!(page(v, &query)))
        }
        ("PATCH", ["comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.comments.get_mut(&id) {
                Some((_, _, c)) => {
                    c["body"] = body["body"].clone();
                    c["updated_at"] = json!(now());
                    ok(c.clone())
                }
                None => not_found(),
            }
        }
        ("POST", ["comments", id, "reactions"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            if !st.comments.contains_key(&id) && !st.options.lenient {
                return not_found();
            }
            let content = body["content"].as_str().unwrap_or("").to_string();
            st.reactions
                .push((format!("comment:{id}"), content.clone()));
            created(
                json!({ "id": 1, "node_id": "REA_1", "user": user_json(BOT), "content": content, "created_at": now() }),
            )
        }
        (m, [n, tail @ ..]) => {
            let Ok(n) = n.parse::<u64>() else {
                return not_found();
            };
            if !st.issues.contains_key(&(repo.clone(), n)) {
                if !st.options.lenient {
                    return not_found();
                }
                let issue = issue_json(&st.base, &repo, n, "octocat", "");
                st.issues.insert((repo.clone(), n), issue);
            }
            on_issue(st, m, (&repo, n), tail, &body, &query)
        }
        _ => not_found(),
    }
}

/// `…/issues/{n}` and below, of an issue that exists.
fn on_issue(
    st: &mut FakeState,
    m: &str,
    (repo, n): (&str, u64),
    tail: &[&str],
    body: &Value,
    query: &BTreeMap<String, String>,
) -> Response {
    let key = (repo.to_string(), n);
    match (m, tail) {
        ("GET", []) => ok(st.issues[&key].clone()),
        ("PATCH", []) => {
            let issue = st.issues.get_mut(&key).unwrap();
            if let Some(s) = body.get("state") {
                issue["state"] = s.clone();
            }
            issue["updated_at"] = json!(now());
            ok(issue.clone())
        }
        ("GET", ["comments"]) => {
            let v: Vec<Value> = st
                .comments
                .values()
                .filter(|(r, i, _)| r == repo && *i == n)
                .map(|(_, _, c)| c.clone())
                .collect();
            ok(json!(page(v, query)))
        }
        ("POST", ["comments"]) => {
            let text = body["body"].as_str().unwrap_or("").to_string();
            let c = FakeGithub::new_comment_in(st, repo, n, BOT, &text);
            if std::mem::take(&mut st.lose_next_comment_answer) {
                return message(StatusCode::BAD_GATEWAY, "Server Error");
            }
            created(c)
        }
        ("POST", ["reactions"]) => {
            let content = body["content"].as_str().unwrap_or("").to_string();
            st.reactions.push((format!("issue:{n}"), content.clone()));
            created(
                json!({ "id": 1, "node_id": "REA_1", "user": user_json(BOT), "content": content, "created_at": now() }),
            )
        }
        ("GET", ["labels"]) => ok(st.issues[&key]["labels"].clone()),
        ("POST", ["labels"]) => {
            let issue = st.issues.get_mut(&key).unwrap();
            let labels = issue["labels"].as_array_mut().unwrap();
            for l in body["labels"].as_array().cloned().unwrap_or_default() {
                let name = l.as_str().unwrap();
                if !labels.iter().any(|x| x["name"] == name) {
                    labels.push(label_json(name));
                }
            }
            ok(Value::Array(labels.clone()))
        }
        ("DELETE", ["labels", name]) => {
            let name = percent_decode(name);
            let issue = st.issues.get_mut(&key).unwrap();
            let labels = issue["labels"].as_array_mut().unwrap();
            let before = labels.len();
            labels.retain(|x| x["name"] != name.as_str());
            if labels.len() == before {
                return message(StatusCode::NOT_FOUND, "Label does not exist");
            }
            ok(Value::Array(labels.clone()))
        }
        _ => not_found(),
    }
}
