//! The IssueOps frontend against a fake GitHub REST API on 127.0.0.1, driven by
//! signed webhook deliveries with GitHub's real payload shapes and headers.

mod support;

mod comments;
mod conformance;
mod documented;
mod forms;
mod polling;
mod webhook;
