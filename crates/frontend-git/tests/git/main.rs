//! Integration tests of the GitOps frontend: real repositories in temp dirs
//! (made with git2, and with the `git` CLI as a real peer for remotes, pushes,
//! force-pushes, signing and reading notes), a real sled audit store, the real
//! executor, the frontend host the daemon uses, and the core conformance suite.

mod support;

mod conformance;
mod drift;
mod reconcile;
mod remote;
mod signed;
mod trailers;
mod webhook;
