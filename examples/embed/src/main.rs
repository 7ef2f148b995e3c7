//! Embedding `youops-core` in your own tool, without the daemon.
//!
//! The tool declares one op backed by a Rust function (a builtin runner), maps
//! its own user to a principal, and runs requests through the same executor,
//! policy, approvals and hash-chained audit log the daemon uses.
//!
//! ```text
//! cargo run -p youops-example-embed -- scale replicas=3
//! ```

use std::sync::Arc;

use youops_core::audit::AuditStore;
use youops_core::config::Config;
use youops_core::runner::BuiltinCall;
use youops_core::{Actor, Executor, Origin, State, Submission};
use youops_store::{LogOptions, LogStore};

const CATALOG: &str = r#"
[[ops]]
name = "scale"
description = "Scale the worker pool"
runner = { type = "builtin", name = "scale" }
timeout = "10s"
[[ops.params]]
name = "replicas"
type = "int"
min = 1
max = 20

[principals.operator]
roles = ["ops"]
identities = { tool = ["operator"] }

[[grants]]
roles = ["ops"]
ops = ["scale"]
"#;

/// The op's implementation: any async Rust function.
async fn scale(call: BuiltinCall) -> Result<String, String> {
    let n = call.args["replicas"].as_text();
    Ok(format!(
        "worker pool scaled to {n} replicas (request {})",
        call.request_id
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "scale".into());
    let dir = tempfile::tempdir()?;
    let cfg = Config::parse(CATALOG, dir.path(), "embedded catalog", &|_| None)?;
    let store = Arc::new(LogStore::open(
        dir.path().join("audit"),
        LogOptions::default(),
    )?);
    let exec = Executor::builder(&cfg, store.clone())
        .builtin("scale", scale)
        .build()
        .await?;

    let mut sub = Submission::new(op, Actor::new("tool", "operator"), Origin::new("tool"));
    for a in args {
        let (k, v) = a.split_once('=').ok_or("arguments are name=value")?;
        sub = sub.arg(k, v);
    }
    if sub.args.is_empty() {
        sub = sub.arg("replicas", "3");
    }
    let ticket = exec.submit(sub).await?;
    let done = exec.wait(ticket.record.request.id).await?;
    println!("{} -> {}", done.request.op, done.state);
    if let Some(o) = &done.outcome {
        println!("{}", o.output);
    }
    if let Some(r) = &done.reason {
        println!("reason: {r}");
    }
    let report = store.verify().await?;
    println!(
        "audit chain intact: {} ({} events)",
        report.ok(),
        report.checked
    );
    exec.shutdown(std::time::Duration::from_secs(5)).await?;
    std::process::exit(if done.state == State::Succeeded { 0 } else { 1 });
}
