//! # youops-core
//!
//! The core every YouOps frontend stands on: one request model, one command
//! grammar, one permission policy, one executor, one hash-chained audit log.
//! It knows nothing of Slack, GitHub or git: frontends turn their wire input into
//! [`Submission`]s and render [`Lifecycle`] events back in their own format.
//!
//! ```
//! use std::sync::Arc;
//! use youops_core::{config::Config, audit::MemoryStore, Executor, Actor, Origin, Submission, State};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let toml = r#"
//! [[ops]]
//! name = "greet"
//! runner = { type = "builtin", name = "greet" }
//! roles = ["ops"]
//! [[ops.params]]
//! name = "who"
//! type = "string"
//!
//! [principals.alice]
//! roles = ["ops"]
//! identities = { cli = ["alice"] }
//! "#;
//! let dir = tempfile::tempdir()?;
//! let cfg = Config::parse(toml, dir.path(), "inline", &|_| None)?;
//! // The in-memory store; the daemon's durable one is `youops_store::LogStore`.
//! let store = Arc::new(MemoryStore::new());
//! let exec = Executor::builder(&cfg, store)
//!     .builtin("greet", |call: youops_core::runner::BuiltinCall| async move {
//!         Ok(format!("hello {}", call.args["who"].as_text()))
//!     })
//!     .build()
//!     .await?;
//! let sub = Submission::new("greet", Actor::new("cli", "alice"), Origin::new("cli")).arg("who", "world");
//! let ticket = exec.submit(sub).await?;
//! let done = exec.wait(ticket.record.request.id).await?;
//! assert_eq!(done.state, State::Succeeded);
//! assert_eq!(done.outcome.unwrap().output, "hello world");
//! assert!(exec.store().verify().await?.ok());
//! # Ok(()) }
//! ```

pub mod audit;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod error;
pub mod executor;
pub mod frontend;
pub mod grammar;
pub mod model;
pub mod policy;
pub mod runner;
pub mod units;

pub use error::{Error, Result};
pub use executor::{Executor, ExecutorBuilder, Inbound, Lifecycle, Loaded, Reply, Ticket};
pub use model::{
    Actor, AuditEvent, DedupKey, EventBody, NewEvent, Origin, Request, RequestFilter, RequestId,
    RequestRecord, RunOutcome, State, Submission, Transition, Value,
};
