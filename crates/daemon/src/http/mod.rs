//! The daemon's HTTP side: [`server::run`] (the lifecycle), the [`router`] with
//! the [`api`], the [`dashboard`] and the [`metrics`] endpoint, the
//! [`state`] the handlers share, and the background [`tasks`].
//!
//! Layers: `server` builds on `router` and `tasks`; `router` on `api`,
//! `dashboard` and `state`; those on `state` and `metrics` only.

pub mod api;
pub mod dashboard;
pub mod metrics;
pub mod router;
pub mod server;
pub mod state;
pub mod tasks;
