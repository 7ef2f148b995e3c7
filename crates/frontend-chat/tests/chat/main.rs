//! Integration tests of the Slack frontend against a fake Slack Web API (and
//! Socket Mode websocket) on 127.0.0.1, with requests signed the way Slack signs
//! them and fed through the same `FrontendHost` the daemon uses.

mod support;

mod approvals;
mod commands;
mod conformance;
mod delivery;
mod http_endpoints;
mod socket_mode;
