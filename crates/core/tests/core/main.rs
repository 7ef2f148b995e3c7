//! Integration tests of `youops-core` with real components: the log store
//! (`youops-store`) in a temp dir, real processes for `exec` runners, a real
//! local HTTP server for `http` runners. Each test proves one promise of the core.

mod support;

mod approvals;
mod cluster;
mod exec_runner;
mod http_runner;
mod lifecycle;
mod locks;
mod requests;
mod store_conformance;
mod tamper;
