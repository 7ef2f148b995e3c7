//! # youops (daemon)
//!
//! The `youops` binary and the library behind it: config loading, the CLI, the
//! HTTP server (axum on tower) with the JSON API, webhook routes of frontends,
//! health and metrics endpoints and the web dashboard, and the lifecycle
//! (`run(config, options, shutdown)`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cfg = youops_core::config::Config::load("examples/quickstart/youops.toml")?;
//! let opts = youops::server::RunOptions::default();
//! youops::server::run(cfg, opts, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod check;
pub mod cli;
pub mod client;
pub mod dashboard;
pub mod frontends;
pub mod metrics;
pub mod server;
pub mod store;
pub mod store_cmd;

pub use server::{run, RunOptions};
