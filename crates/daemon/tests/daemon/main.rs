//! The daemon's integration tests: real listeners on 127.0.0.1:0, real log
//! stores in temp dirs, the real `youops` binary for lifecycle and CLI, and a
//! real headless Chromium for the dashboard.
//!
//! The sections follow issue 3: health/metrics, API, CLI against a daemon,
//! dashboard, lifecycle; one module each.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod audit;
mod cli;
mod dashboard;
mod durability;
#[cfg(feature = "git")]
mod gitops;
mod health;
mod lifecycle;
mod retention;

/// A command's stdout, as text.
fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
