//! Parsing of command arguments, and how records and events are printed.

use youops_core::{AuditEvent, EventBody, RequestId, RequestRecord, State};

use super::failure::{exit, Failure};

pub(crate) fn parse_id(id: &str) -> Result<RequestId, Failure> {
    id.parse().map_err(|_| {
        Failure::new(
            exit::REFUSED,
            format!("`{id}` is not a request id (a 26-character ULID)"),
        )
    })
}

pub(crate) fn parse_args(args: &[String]) -> Result<Vec<(String, String)>, Failure> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    Failure::new(exit::REFUSED, format!("expected name=value, got `{a}`"))
                })
        })
        .collect()
}

/// Human rendering of a record.
pub fn render_record(r: &RequestRecord) -> String {
    let mut s = format!("request {}  {}", r.request.id, r.request.op);
    for (k, v) in &r.request.args {
        s.push_str(&format!(" {k}={}", v.as_text()));
    }
    for (k, v) in &r.request.raw_args {
        s.push_str(&format!(" {k}={v}"));
    }
    s.push('\n');
    s.push_str(&format!("state:   {}", r.state));
    if let Some(ms) = r.duration_ms() {
        s.push_str(&format!(" ({:.2}s)", ms as f64 / 1000.0));
    }
    s.push('\n');
    if let Some(p) = &r.request.actor.principal {
        s.push_str(&format!("by:      {p} via {}\n", r.request.origin.frontend));
    }
    if let Some(reason) = &r.reason {
        s.push_str(&format!("reason:  {reason}\n"));
    }
    if r.state == State::PendingApproval {
        s.push_str(&format!(
            "waiting: {} more approval{}; approve with `youops approve {}`\n",
            r.approvals_needed,
            if r.approvals_needed == 1 { "" } else { "s" },
            r.request.id
        ));
    }
    if let Some(o) = &r.outcome {
        if !o.output.is_empty() {
            s.push_str("output:\n");
            s.push_str(&o.output);
            if !o.output.ends_with('\n') {
                s.push('\n');
            }
        }
    }
    s
}

pub(crate) fn exit_for(r: &RequestRecord) -> u8 {
    match r.state {
        State::Succeeded => exit::OK,
        State::Invalid | State::Denied => exit::REFUSED,
        State::PendingApproval => exit::PENDING,
        _ => exit::FAILED,
    }
}

pub(crate) fn print_record(r: &RequestRecord, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
    } else {
        print!("{}", render_record(r));
    }
}

pub(crate) fn event_line(e: &AuditEvent) -> String {
    let req = e
        .request_id
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".repeat(26));
    let detail = match &e.body {
        EventBody::Received { request } => {
            format!("{} by {}", request.op, request.actor.describe())
        }
        EventBody::Transition(t) => t.reason.clone().unwrap_or_default(),
        EventBody::Approval(a) => a.by.describe(),
        EventBody::Notice { message, .. } => message.clone(),
        _ => String::new(),
    };
    format!(
        "#{:<6} {} {} {:<18} {} [{}]",
        e.seq,
        e.time.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        req,
        e.body.label(),
        detail.replace('\n', " "),
        &e.hash[..12.min(e.hash.len())]
    )
}

pub(crate) fn urlencode(s: &str) -> String {
    youops_core::runner::percent_encode(s)
}
