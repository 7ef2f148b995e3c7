//! The census after the drain: every request in the store (and in the
//! archive), by front door, op and state.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::ctx::Ctx;

/// Every request in the store, by frontend: (op, state) → count, and the
/// end-to-end durations (created → last update, ms) of terminal ones.
#[derive(Debug, Default)]
pub(crate) struct Census {
    pub(crate) by: BTreeMap<String, BTreeMap<(String, String), u64>>,
    pub(crate) e2e_ms: BTreeMap<String, Vec<u32>>,
    pub(crate) total: u64,
    /// How many of `total` were read from archive files.
    pub(crate) archived: u64,
}

impl Census {
    /// Requests of frontend `fe` in the store (of `op` only, if given).
    pub(crate) fn in_store(&self, fe: &str, op: Option<&str>) -> u64 {
        self.by.get(fe).map_or(0, |m| {
            m.iter()
                .filter(|((o, _), _)| op.is_none_or(|op| op == o))
                .map(|(_, n)| n)
                .sum()
        })
    }
}

/// Every request, through `GET /api/v1/requests` page by page, then those
/// archived out of the store.
pub(crate) async fn census(client: &reqwest::Client, ctx: &Ctx) -> Result<Census, String> {
    let mut c = Census::default();
    let mut live = HashSet::new();
    let mut before: Option<String> = None;
    let token = format!("{}-0", ctx.args.token);
    loop {
        let mut url = format!("{}/api/v1/requests?limit=500", ctx.base);
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let resp = client
            .get(&url)
            .bearer_auth(&token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("GET /api/v1/requests: {e:#}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET /api/v1/requests: HTTP {}", resp.status()));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|e| format!("GET /api/v1/requests: {e:#}"))?;
        for r in v["requests"].as_array().into_iter().flatten() {
            if let Some(id) = r["request"]["id"].as_str() {
                live.insert(id.to_string());
            }
            let fe = r["request"]["origin"]["frontend"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            let op = r["request"]["op"].as_str().unwrap_or("?").to_string();
            let state = r["state"].as_str().unwrap_or("?").to_string();
            let created = r["request"]["created_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            let updated = r["updated_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            if let (Some(a), Some(b)) = (created, updated) {
                let ms = (b - a).num_microseconds().unwrap_or(0).max(0) as f64 / 1000.0;
                c.e2e_ms
                    .entry(fe.clone())
                    .or_default()
                    .push((ms * 1000.0) as u32);
            }
            *c.by.entry(fe).or_default().entry((op, state)).or_default() += 1;
            c.total += 1;
        }
        match v["next_before"].as_str() {
            Some(b) => before = Some(b.to_string()),
            None => break,
        }
    }
    // Requests the daemon archived out of the store (read after the live pages:
    // a record is removed only after its archive file is renamed into place).
    let archived = ctx.archived_requests()?;
    for (id, r) in &archived.reqs {
        if live.contains(id) {
            continue;
        }
        if let (Some(a), Some(b)) = (r.created, r.updated) {
            let us = (b - a).num_microseconds().unwrap_or(0).max(0);
            c.e2e_ms
                .entry(r.frontend.clone())
                .or_default()
                .push(us as u32);
        }
        *c.by
            .entry(r.frontend.clone())
            .or_default()
            .entry((r.op.clone(), r.state.clone()))
            .or_default() += 1;
        c.total += 1;
        c.archived += 1;
    }
    for v in c.e2e_ms.values_mut() {
        v.sort_unstable();
    }
    Ok(c)
}
