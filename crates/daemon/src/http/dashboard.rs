//! The web dashboard: server-rendered HTML, no JavaScript build step.
//!
//! `/` lists pending approvals and recent requests with the audit chain status;
//! `/requests/{id}` shows one request: arguments (secrets masked), every lifecycle
//! event with its hashes, and the output; `/audit` shows the latest events.
//! Everything user-supplied is HTML-escaped.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use youops_core::{
    AuditEvent, EventBody, Request, RequestFilter, RequestId, RequestRecord, State as ReqState,
    Transition,
};

use super::state::AppState;

/// Dashboard routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/requests/{id}", get(request_page))
        .route("/audit", get(audit_page))
}

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#667085; --line:#e4e7ec; --accent:#3b5bdb;
  --ok:#12805c; --okbg:#e3f5ed; --bad:#b42318; --badbg:#fde8e6; --warn:#93600a; --warnbg:#fdf2d8; --run:#175cd3; --runbg:#e1ecfd; --idle:#475467; --idlebg:#eef0f3; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; background:var(--bg); color:var(--ink); }
header { background:#111827; color:#fff; padding:14px 28px; display:flex; align-items:center; gap:24px; }
header a { color:#cbd5e1; text-decoration:none; } header a:hover { color:#fff; }
header .brand { font-weight:700; font-size:17px; color:#fff; letter-spacing:.3px; }
main { max-width:1180px; margin:24px auto; padding:0 24px; }
h1 { font-size:20px; margin:0 0 16px; } h2 { font-size:15px; margin:28px 0 10px; color:#344054; text-transform:uppercase; letter-spacing:.6px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(200px,1fr)); gap:14px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.5px; } .card .v { font-size:22px; font-weight:600; margin-top:2px; }
.card .sub { font-size:13px; font-weight:400; color:var(--muted); margin-top:2px; }
h1 code { font-size:inherit; } h1 .badge { vertical-align:middle; margin-left:8px; font-size:13px; }
table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:10px; overflow:hidden; }
th, td { text-align:left; padding:9px 12px; border-bottom:1px solid var(--line); vertical-align:middle; }
th { background:#f9fafb; color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
tr:last-child td { border-bottom:none; } tbody tr:hover { background:#fafbff; }
a { color:var(--accent); } code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; }
pre { background:#0f172a; color:#e2e8f0; padding:14px; border-radius:10px; overflow:auto; max-height:560px; white-space:pre-wrap; word-break:break-word; }
.badge { display:inline-block; padding:2px 9px; border-radius:999px; font-size:12px; font-weight:600; white-space:nowrap; }
.s-succeeded { color:var(--ok); background:var(--okbg); } .s-failed, .s-timed_out, .s-denied, .s-invalid, .s-rejected { color:var(--bad); background:var(--badbg); }
.s-pending_approval, .s-expired, .s-interrupted, .s-cancelled { color:var(--warn); background:var(--warnbg); } .s-running, .s-approved { color:var(--run); background:var(--runbg); }
.s-received { color:var(--idle); background:var(--idlebg); }
.muted { color:var(--muted); } .empty { padding:18px; color:var(--muted); background:var(--card); border:1px dashed var(--line); border-radius:10px; }
.chain-ok { color:var(--ok); } .chain-bad { color:var(--bad); }
dl { display:grid; grid-template-columns:160px 1fr; gap:6px 14px; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; margin:0; }
dt { color:var(--muted); } dd { margin:0; word-break:break-word; }
.filters a { margin-right:10px; font-size:13px; }
.hash { color:var(--muted); }
"#;

/// A whole dashboard page: the header (every page's links) and `body`.
pub(crate) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t} · YouOps</title><style>{CSS}</style></head><body>\
<header><span class=\"brand\">YouOps</span><a href=\"/\">Requests</a><a href=\"/?state=pending_approval\">Approvals</a><a href=\"/audit\">Audit log</a><a href=\"/cluster\">Cluster</a><a href=\"/metrics\">Metrics</a></header>\
<main>{body}</main></body></html>",
        t = esc(title)
    ))
}

fn badge(state: ReqState) -> String {
    format!(
        "<span class=\"badge s-{s}\" data-state=\"{s}\">{label}</span>",
        s = state.as_str(),
        label = state.as_str().replace('_', " ")
    )
}

/// "3m ago" style age.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
        _ => format!("{}d ago", s / 86400),
    }
}

fn actor_text(r: &RequestRecord) -> String {
    let a = &r.request.actor;
    match &a.principal {
        Some(p) => format!(
            "{} <span class=\"muted\">({}:{})</span>",
            esc(p),
            esc(&a.frontend),
            esc(&a.external_id)
        ),
        None => format!(
            "<span class=\"muted\">{}:{}</span>",
            esc(&a.frontend),
            esc(&a.external_id)
        ),
    }
}

fn args_text(r: &RequestRecord) -> String {
    let mut parts: Vec<String> = r
        .request
        .args
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(&v.as_text())))
        .collect();
    if parts.is_empty() {
        parts = r
            .request
            .raw_args
            .iter()
            .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
            .collect();
    }
    parts.join(" ")
}

fn request_rows(list: &[RequestRecord], now: DateTime<Utc>) -> String {
    let mut rows = String::new();
    for r in list {
        let id = r.request.id.to_string();
        rows.push_str(&format!(
            "<tr data-request-id=\"{id}\"><td>{badge}</td><td><a href=\"/requests/{id}\"><code>{op}</code></a> <span class=\"mono muted\">{args}</span>{dry}</td>\
<td>{actor}</td><td>{frontend}</td><td title=\"{created}\">{age}</td><td class=\"mono\"><a href=\"/requests/{id}\">{id}</a></td></tr>",
            badge = badge(r.state),
            op = esc(&r.request.op),
            args = args_text(r),
            dry = if r.request.dry_run { " <span class=\"badge s-received\">dry run</span>" } else { "" },
            actor = actor_text(r),
            frontend = esc(&r.request.origin.frontend),
            created = r.request.created_at.to_rfc3339(),
            age = age(r.request.created_at, now),
        ));
    }
    rows
}

fn request_table(list: &[RequestRecord], now: DateTime<Utc>) -> String {
    if list.is_empty() {
        return "<div class=\"empty\">No requests yet. Submit one with <code>youops run OP k=v</code> or <code>POST /api/v1/requests</code>.</div>".into();
    }
    format!(
        "<table id=\"requests\"><thead><tr><th>State</th><th>Op</th><th>Actor</th><th>Frontend</th><th>Age</th><th>Id</th></tr></thead><tbody>{}</tbody></table>",
        request_rows(list, now)
    )
}

#[derive(Debug, Deserialize)]
struct IndexQuery {
    #[serde(default)]
    state: Option<String>,
}

async fn index(State(st): State<AppState>, Query(q): Query<IndexQuery>) -> Response {
    let now = Utc::now();
    let exec = st.exec();
    let mut filter = RequestFilter::default();
    if let Some(s) = q.state.as_deref().filter(|s| !s.is_empty()) {
        match s.parse::<ReqState>() {
            Ok(state) => filter.states.push(state),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    page("Bad filter", &format!("<p>{}</p>", esc(&e))),
                )
                    .into_response()
            }
        }
    }
    let recent = exec.list(&filter, None, 50).await.unwrap_or_default();
    let pending_filter = RequestFilter {
        states: vec![ReqState::PendingApproval],
        ..Default::default()
    };
    let pending = exec
        .list(&pending_filter, None, 50)
        .await
        .unwrap_or_default();
    let chain = st.chain_status().await;
    let chain_html = match &chain.broken {
        None => format!(
            "<span class=\"chain-ok\" id=\"chain-status\" data-ok=\"true\">intact</span><div class=\"sub\">{} events verified</div>",
            chain.verified_through
        ),
        Some(b) => format!(
            "<span class=\"chain-bad\" id=\"chain-status\" data-ok=\"false\">BROKEN at #{}</span><div class=\"sub\">{}</div>",
            b.seq,
            esc(&b.reason)
        ),
    };
    let mut body = String::from("<h1>Operations</h1><div class=\"cards\">");
    body.push_str(&format!(
        "<div class=\"card\"><div class=\"k\">Pending approvals</div><div class=\"v\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Running now</div><div class=\"v\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Ops in catalog</div><div class=\"v\">{}</div></div>\
<div class=\"card\"><div class=\"k\">Audit chain</div><div class=\"v\">{chain_html}</div></div></div>",
        exec.pending_approvals(),
        exec.running(),
        exec.loaded().catalog.len(),
    ));
    body.push_str("<h2>Pending approvals</h2>");
    if pending.is_empty() {
        body.push_str("<div class=\"empty\">Nothing is waiting for approval.</div>");
    } else {
        let mut rows = String::new();
        for r in &pending {
            let id = r.request.id.to_string();
            rows.push_str(&format!(
                "<tr><td><a href=\"/requests/{id}\"><code>{op}</code></a> <span class=\"mono muted\">{args}</span></td><td>{actor}</td><td>{needed} more</td><td>{exp}</td><td><code>youops approve {id}</code></td></tr>",
                op = esc(&r.request.op),
                args = args_text(r),
                actor = actor_text(r),
                needed = r.approvals_needed,
                exp = r.expires_at.map(|e| format!("expires in {}m", (e - now).num_minutes().max(0))).unwrap_or_default(),
            ));
        }
        body.push_str(&format!(
            "<table id=\"pending\"><thead><tr><th>Request</th><th>Requested by</th><th>Approvals</th><th>Window</th><th>How</th></tr></thead><tbody>{rows}</tbody></table>"
        ));
    }
    body.push_str("<h2>Recent requests</h2><div class=\"filters\">");
    for s in [
        "",
        "running",
        "pending_approval",
        "succeeded",
        "failed",
        "denied",
    ] {
        let label = if s.is_empty() { "all" } else { s };
        body.push_str(&format!(
            "<a href=\"/?state={s}\">{}</a>",
            label.replace('_', " ")
        ));
    }
    body.push_str("</div>");
    body.push_str(&request_table(&recent, now));
    page("Operations", &body).into_response()
}

/// What a transition's reason says beyond "<verb> by <who made it>", which
/// the line already shows: `denied by bob: too risky` → `too risky`,
/// `approved by bob` → nothing, `approved by alice, bob` → all of it.
fn beyond_actor<'r>(reason: &'r str, by: &youops_core::Actor) -> Option<&'r str> {
    let Some(p) = &by.principal else {
        return Some(reason);
    };
    let rest = reason
        .split_once(' ')
        .and_then(|(_verb, rest)| rest.strip_prefix("by "))
        .and_then(|rest| rest.strip_prefix(p.as_str()));
    match rest {
        Some("") => None,
        Some(rest) if rest.starts_with(':') => Some(rest[1..].trim()).filter(|r| !r.is_empty()),
        _ => Some(reason),
    }
}

/// A state change: the new state, who made it, and what the reason adds.
fn transition_detail(t: &Transition) -> String {
    let mut s = badge(t.to);
    if let Some(by) = &t.by {
        s.push_str(&format!(" by {}", esc(&by.describe())));
    }
    let reason = match &t.by {
        Some(by) => t.reason.as_deref().and_then(|r| beyond_actor(r, by)),
        None => t.reason.as_deref(),
    };
    if let Some(r) = reason {
        s.push_str(&format!(" — {}", esc(r)));
    }
    s
}

fn event_detail(e: &AuditEvent) -> String {
    match &e.body {
        EventBody::Received { request } => format!(
            "received from {} by {}",
            esc(&request.origin.frontend),
            esc(&request.actor.describe())
        ),
        EventBody::Transition(t) => transition_detail(t),
        EventBody::Approval(a) => format!(
            "{} by {}{}",
            if a.approve { "approval" } else { "denial" },
            esc(&a.by.describe()),
            a.reason
                .as_ref()
                .map(|r| format!(": {}", esc(r)))
                .unwrap_or_default()
        ),
        EventBody::Notice {
            source,
            kind,
            message,
            ..
        } => {
            format!(
                "<span class=\"muted\">{}/{}</span> {}",
                esc(source),
                esc(kind),
                esc(message)
            )
        }
        EventBody::Checkpoint {
            archived_through_seq,
            ..
        } => format!("checkpoint after #{archived_through_seq}"),
        _ => String::new(),
    }
}

async fn request_page(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(rid) = id.parse::<RequestId>() else {
        return (
            StatusCode::BAD_REQUEST,
            page("Bad id", "<p>That is not a request id.</p>"),
        )
            .into_response();
    };
    let exec = st.exec();
    let rec = match exec.get(rid).await {
        Ok(r) => r,
        Err(_) => {
            return (
                StatusCode::NOT_FOUND,
                page("Not found", &format!("<h1>No request {}</h1>", esc(&id))),
            )
                .into_response()
        }
    };
    let events = exec.events(rid).await.unwrap_or_default();
    let mut body = request_summary(&rec, Utc::now());
    request_output(&mut body, &rec);
    events_table(&mut body, &events);
    let r = &rec.request;
    page(&format!("{} {}", r.op, r.id), &body).into_response()
}

/// The heading and the `<dl>` of a request's facts, from the op to the digest.
fn request_summary(rec: &RequestRecord, now: DateTime<Utc>) -> String {
    let r = &rec.request;
    let mut body = format!(
        "<h1><code>{op}</code> {badge}</h1><dl>\
<dt>Request</dt><dd class=\"mono\" id=\"request-id\">{id}</dd>\
<dt>Requested by</dt><dd>{actor}</dd><dt>Frontend</dt><dd>{frontend}{loc}</dd>\
<dt>Created</dt><dd title=\"{created_full}\">{created} <span class=\"muted\">({age})</span></dd>",
        op = esc(&r.op),
        badge = badge(rec.state),
        id = r.id,
        actor = actor_text(rec),
        frontend = esc(&r.origin.frontend),
        loc = if r.origin.location.is_empty() {
            String::new()
        } else {
            format!(" · {}", esc(&r.origin.location))
        },
        created = r.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        created_full = r.created_at.to_rfc3339(),
        age = age(r.created_at, now),
    );
    let args = args_cell(r);
    body.push_str(&format!("<dt>Arguments</dt><dd id=\"args\">{args}</dd>"));
    if r.dry_run {
        body.push_str("<dt>Dry run</dt><dd>yes — nothing was executed</dd>");
    }
    for (k, v) in &r.provenance {
        body.push_str(&format!(
            "<dt>{}</dt><dd class=\"mono\">{}</dd>",
            esc(k),
            esc(v)
        ));
    }
    if let Some(reason) = &rec.reason {
        body.push_str(&format!("<dt>Reason</dt><dd>{}</dd>", esc(reason)));
    }
    if rec.state == ReqState::PendingApproval {
        body.push_str(&format!(
            "<dt>Approvals</dt><dd>{} more needed{}</dd>",
            rec.approvals_needed,
            rec.expires_at
                .map(|e| format!(", window closes {}", e.to_rfc3339()))
                .unwrap_or_default()
        ));
    }
    if let Some(o) = &rec.outcome {
        body.push_str(&format!(
            "<dt>Duration</dt><dd>{:.3}s</dd><dt>Exit</dt><dd>{}</dd>",
            o.duration_ms as f64 / 1000.0,
            match (o.exit_code, o.signal) {
                (Some(c), _) => format!("status {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "—".into(),
            }
        ));
    }
    body.push_str(&format!(
        "<dt>Digest</dt><dd class=\"mono hash\">{}</dd></dl>",
        esc(&r.digest)
    ));
    body
}

/// The arguments of a request, parsed then as given.
fn args_cell(r: &Request) -> String {
    if r.args.is_empty() && r.raw_args.is_empty() {
        "<span class=\"muted\">none</span>".to_string()
    } else {
        let mut s = String::new();
        for (k, v) in &r.args {
            s.push_str(&format!(
                "<div class=\"mono\">{}={}</div>",
                esc(k),
                esc(&v.as_text())
            ));
        }
        for (k, v) in &r.raw_args {
            s.push_str(&format!(
                "<div class=\"mono\">{}={} <span class=\"muted\">(as given)</span></div>",
                esc(k),
                esc(v)
            ));
        }
        s
    }
}

/// The output of a finished request, if any, after `body`.
fn request_output(body: &mut String, rec: &RequestRecord) {
    if let Some(o) = &rec.outcome {
        body.push_str("<h2>Output</h2>");
        if o.output_truncated_bytes > 0 {
            body.push_str(&format!(
                "<p class=\"muted\">{} bytes were left out by the output cap; the start and the end are shown.</p>",
                o.output_truncated_bytes
            ));
        }
        if o.output.is_empty() {
            body.push_str("<div class=\"empty\">No output.</div>");
        } else {
            body.push_str(&format!("<pre id=\"output\">{}</pre>", esc(&o.output)));
        }
    }
}

/// The lifecycle and audit events of a request, as a table after `body`.
fn events_table(body: &mut String, events: &[AuditEvent]) {
    body.push_str("<h2>Lifecycle &amp; audit</h2><table id=\"events\"><thead><tr><th>#</th><th>Time</th><th>Event</th><th>Hash</th></tr></thead><tbody>");
    for e in events {
        body.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td title=\"{}\">{}</td><td>{}</td><td class=\"mono hash\" title=\"prev {}\">{}…</td></tr>",
            e.seq,
            e.time.to_rfc3339(),
            e.time.format("%H:%M:%S%.3f"),
            event_detail(e),
            esc(&e.prev_hash),
            esc(&e.hash[..16.min(e.hash.len())]),
        ));
    }
    body.push_str("</tbody></table>");
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: Option<u64>,
}

async fn audit_page(State(st): State<AppState>, Query(q): Query<AuditQuery>) -> Response {
    let store = st.exec().store();
    let (head, _) = store.head().await.unwrap_or((0, String::new()));
    let after = q.after.unwrap_or(head.saturating_sub(100));
    let events = store.events(after, 100).await.unwrap_or_default();
    let chain = st.chain_status().await;
    let mut body = format!(
        "<h1>Audit log</h1><p>{} events; chain {}. Verify offline with <code>youops audit export &gt; log.jsonl</code> and <code>youops audit verify --file log.jsonl</code>.</p>",
        head,
        match &chain.broken {
            None => format!("<span class=\"chain-ok\">intact through #{}</span>", chain.verified_through),
            Some(b) => format!("<span class=\"chain-bad\">broken at #{}: {}</span>", b.seq, esc(&b.reason)),
        }
    );
    body.push_str("<table><thead><tr><th>#</th><th>Time</th><th>Request</th><th>Event</th><th>Hash</th></tr></thead><tbody>");
    for e in events.iter().rev() {
        let req = e
            .request_id
            .map(|id| format!("<a class=\"mono\" href=\"/requests/{id}\">{id}</a>"))
            .unwrap_or_default();
        body.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{req}</td><td>{}</td><td class=\"mono hash\">{}…</td></tr>",
            e.seq,
            e.time.format("%Y-%m-%d %H:%M:%S"),
            event_detail(e),
            esc(&e.hash[..16.min(e.hash.len())])
        ));
    }
    body.push_str("</tbody></table>");
    page("Audit log", &body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<script>alert('x')</script>&"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
    }

    #[test]
    fn a_transition_line_says_who_once() {
        let mut bob = youops_core::Actor::new("api", "bob");
        bob.principal = Some("bob".into());
        let mut e = Transition::to(ReqState::Approved).by(bob.clone());
        e.reason = Some("approved by bob".into());
        let line = transition_detail(&e);
        assert_eq!(line.matches("bob").count(), 2, "{line}"); // "bob (api:bob)"
        assert!(!line.contains('—'), "{line}");
        // More than the actor: kept.
        assert_eq!(
            beyond_actor("approved by alice, bob", &bob),
            Some("approved by alice, bob")
        );
        assert_eq!(
            beyond_actor("denied by bob: too risky", &bob),
            Some("too risky")
        );
        assert_eq!(beyond_actor("denied by bob", &bob), None);
        assert_eq!(
            beyond_actor("denied by bobby", &bob),
            Some("denied by bobby")
        );
        assert_eq!(
            beyond_actor("timed out after 5s", &bob),
            Some("timed out after 5s")
        );
    }

    #[test]
    fn ages() {
        let now = Utc::now();
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s ago");
        assert_eq!(age(now - chrono::Duration::seconds(125), now), "2m ago");
        assert_eq!(age(now - chrono::Duration::seconds(7300), now), "2h 1m ago");
        assert_eq!(age(now - chrono::Duration::days(3), now), "3d ago");
    }
}
