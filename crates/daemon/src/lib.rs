//! # youops (daemon)
//!
//! The `youops` binary and the library behind it: config loading, the CLI, the
//! HTTP server (axum on tower) with the JSON API, webhook routes of frontends,
//! health and metrics endpoints and the web dashboard, and the lifecycle
//! (`run(config, options, shutdown)`).
//!
//! The HTTP side (server lifecycle, router, API, dashboard, metrics, shared
//! state) is under [`http`]; the command line is [`cli`], whose commands reach
//! the local store or a daemon through [`client`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cfg = youops_core::config::Config::load("examples/quickstart/youops.toml")?;
//! let opts = youops::RunOptions::default();
//! youops::run(cfg, opts, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod builtins;
pub mod check;
pub mod cli;
pub mod client;
#[cfg(feature = "postgres")]
pub mod cluster;
pub mod frontends;
pub mod gitops;
pub mod http;
pub mod server_config;
pub mod store;
pub mod store_cmd;

pub use http::server::{run, RunOptions};
