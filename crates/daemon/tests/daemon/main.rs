//! The daemon's integration tests: real listeners on 127.0.0.1:0, real log
//! stores in temp dirs, the real `youops` binary for lifecycle and CLI, and a
//! real headless Chromium for the dashboard.
//!
//! One module per promise: health and metrics, the API, the CLI against a
//! daemon, the dashboard, lifecycle, durability, retention, GitOps, faults
//! (the daemon killed under load; needs the `github` feature, whose webhook
//! feeds it), `store copy` (sled sources with the `sled` feature) and the
//! config checks of builds without some frontends (`features`: run with
//! `--no-default-features` for the "not compiled in" cases).

mod support;

mod api;
mod audit;
mod cli;
#[cfg(feature = "postgres")]
mod cluster;
#[cfg(all(feature = "postgres", feature = "slack"))]
mod cluster_slack;
mod dashboard;
mod durability;
#[cfg(feature = "github")]
mod faults;
mod features;
#[cfg(feature = "git")]
mod gitops;
mod health;
mod lifecycle;
mod retention;
mod store_copy;

/// A command's stdout, as text.
fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
