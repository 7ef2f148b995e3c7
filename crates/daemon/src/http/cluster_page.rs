//! The dashboard's `/cluster` page: this node, the leader lease, every node
//! with its last heartbeat, and the op lock leases. A daemon that runs alone
//! says so. Everything read from the database is HTML-escaped.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use super::dashboard::{esc, page};
use super::state::{AppState, ClusterStatus};

/// The cluster page's route.
pub fn router() -> Router<AppState> {
    Router::new().route("/cluster", get(cluster_page))
}

async fn cluster_page(State(st): State<AppState>) -> Response {
    let Some(source) = st.cluster() else {
        let body = "<h1>Cluster</h1><div class=\"empty\" data-cluster=\"alone\">This daemon runs \
                    alone: it is not a node of a cluster (a cluster is several daemons on one \
                    PostgreSQL store, each with its own <code>[server] node_id</code>).</div>";
        return page("Cluster", body).into_response();
    };
    match source.status().await {
        Ok(status) => page("Cluster", &render(&status)).into_response(),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reading the cluster's status");
            let body = format!(
                "<h1>Cluster</h1><div class=\"empty\">The cluster's status could not be read: \
                 {}</div>",
                esc(&format!("{e:#}"))
            );
            (StatusCode::SERVICE_UNAVAILABLE, page("Cluster", &body)).into_response()
        }
    }
}

/// Whole seconds from `now` to `t` (negative: in the past).
fn secs_until(t: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (t - now).num_seconds()
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The page's body.
fn render(s: &ClusterStatus) -> String {
    let now = s.checked_at;
    let leads = match s.leading {
        Some(epoch) => format!("leads under epoch {epoch}"),
        None => "follows".to_string(),
    };
    let mut body = format!(
        "<h1>Cluster</h1><div class=\"cards\">\
         <div class=\"card\"><div class=\"k\">This node</div><div class=\"v mono\" data-node=\"self\">{}</div>\
         <div class=\"sub\">incarnation {}; {leads}</div></div>",
        esc(&s.node),
        s.incarnation
    );
    let leader = match &s.leader {
        None => "<div class=\"v\">none</div><div class=\"sub\">no node ever held the lease</div>"
            .to_string(),
        Some(l) => {
            let expiry = if l.expired {
                "expired: nobody leads".to_string()
            } else {
                format!("expires in {} s", secs_until(l.expires_at, now).max(0))
            };
            format!(
                "<div class=\"v mono\" data-leader=\"{h}\">{h}</div>\
                 <div class=\"sub\">incarnation {}; epoch {}; {expiry}</div>",
                l.holder_incarnation,
                l.epoch,
                h = esc(&l.holder)
            )
        }
    };
    body.push_str(&format!(
        "<div class=\"card\"><div class=\"k\">Leader</div>{leader}</div></div>"
    ));
    body.push_str(&nodes_table(s, now));
    body.push_str(&locks_table(s, now));
    body
}

fn nodes_table(s: &ClusterStatus, now: DateTime<Utc>) -> String {
    let mut out = String::from(
        "<h2>Nodes</h2><table><thead><tr><th>Node</th><th>Incarnation</th><th>Started</th>\
         <th>Last heartbeat</th><th>Fenced</th></tr></thead><tbody>",
    );
    for n in &s.nodes {
        let fenced = if n.is_fenced() {
            "<span class=\"badge s-failed\">fenced</span>".to_string()
        } else {
            "<span class=\"muted\">no</span>".to_string()
        };
        out.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{} s ago</td><td>{fenced}</td></tr>",
            esc(&n.node),
            n.incarnation,
            time(n.started_at),
            (-secs_until(n.heartbeat_at, now)).max(0),
        ));
    }
    out.push_str("</tbody></table>");
    out
}

fn locks_table(s: &ClusterStatus, now: DateTime<Utc>) -> String {
    if s.locks.is_empty() {
        return "<h2>Op locks</h2><div class=\"empty\">No op lock is held.</div>".to_string();
    }
    let mut out = String::from(
        "<h2>Op locks</h2><table><thead><tr><th>Key</th><th>Request</th><th>Node</th>\
         <th>Acquired</th><th>Expires</th></tr></thead><tbody>",
    );
    for l in &s.locks {
        let expires = if l.expired {
            "<span class=\"badge s-expired\">expired</span>".to_string()
        } else {
            format!("in {} s", secs_until(l.expires_at, now).max(0))
        };
        let id = esc(&l.request_id);
        out.push_str(&format!(
            "<tr><td class=\"mono\">{}</td><td><a class=\"mono\" href=\"/requests/{id}\">{id}</a></td>\
             <td class=\"mono\">{} <span class=\"muted\">({})</span></td><td>{}</td><td>{expires}</td></tr>",
            esc(&l.key),
            esc(&l.holder),
            l.holder_incarnation,
            time(l.acquired_at),
        ));
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::state::{ClusterLeader, ClusterLock, ClusterNodeStatus};

    #[test]
    fn escapes_what_it_reads_and_counts_seconds() {
        let now = Utc::now();
        let s = ClusterStatus {
            node: "<n1>".into(),
            incarnation: 3,
            leading: Some(7),
            leader: Some(ClusterLeader {
                holder: "<n1>".into(),
                holder_incarnation: 3,
                epoch: 7,
                expires_at: now + chrono::Duration::seconds(4),
                expired: false,
            }),
            nodes: vec![ClusterNodeStatus {
                node: "<n1>".into(),
                incarnation: 3,
                started_at: now,
                heartbeat_at: now - chrono::Duration::seconds(2),
                fenced: Some(3),
            }],
            locks: vec![ClusterLock {
                key: "db&<x>".into(),
                request_id: "R\"1".into(),
                holder: "<n1>".into(),
                holder_incarnation: 3,
                acquired_at: now,
                expires_at: now + chrono::Duration::seconds(9),
                expired: false,
            }],
            checked_at: now,
        };
        let html = render(&s);
        assert!(!html.contains("<n1>") && !html.contains("<x>"), "{html}");
        assert!(html.contains("&lt;n1&gt;") && html.contains("db&amp;&lt;x&gt;"));
        assert!(html.contains("href=\"/requests/R&quot;1\""), "{html}");
        assert!(html.contains("leads under epoch 7"), "{html}");
        assert!(
            html.contains("2 s ago") && html.contains("in 9 s"),
            "{html}"
        );
        assert!(html.contains(">fenced<"), "{html}");
    }
}
