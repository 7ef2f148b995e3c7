//! The daemon's HTTP side: [`server::run`] (the lifecycle), the [`router`] with
//! the [`api`], the [`dashboard`] (and its [`cluster_page`]) and the
//! [`metrics`] endpoint, the [`state`] the handlers share, and the background
//! [`tasks`].
//!
//! Layers: `server` builds on `router` and `tasks`; `router` on `api`,
//! `dashboard`, `cluster_page` and `state`; `cluster_page` on `dashboard`'s
//! layout; those on `state` and `metrics` only.

pub mod api;
pub mod cluster_page;
pub mod dashboard;
pub mod metrics;
pub mod router;
pub mod server;
pub mod state;
pub mod tasks;
