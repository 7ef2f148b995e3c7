//! # youops-testkit
//!
//! What the workspace's tests, benches and tools share (not part of the
//! product, `publish = false`): a fake Slack Web API ([`slack`]) and a fake
//! GitHub REST API ([`github`]) on 127.0.0.1 that record every call and
//! misbehave on demand ([`fault`]), serving a `FrontendHost` the way the daemon
//! does ([`host`]), waiting loops ([`wait`]), request signing ([`sign`]) and
//! the benches' open-loop load generator ([`loadgen`]), and a throw-away
//! PostgreSQL cluster reached through a Unix socket ([`pg`]).
//!
//! The frontend conformance suites stay in `youops-core`'s `test-util`
//! feature, so that this crate depends on core and never the other way round.

pub mod fault;
pub mod github;
pub mod host;
pub mod loadgen;
pub mod pg;
pub mod sign;
pub mod slack;
pub mod sockproxy;
pub mod wait;

pub use fault::Fault;
pub use github::FakeGithub;
pub use host::{handle_route, serve_host};
pub use slack::FakeSlack;
pub use wait::{eventually, eventually_within};
