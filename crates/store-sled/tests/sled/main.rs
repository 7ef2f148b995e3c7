//! The sled store's integration tests, on real temporary directories: the
//! core's audit store conformance suite (`conformance`), and what only real
//! files and processes show (`files`: a store of the patched fork opens, a
//! killed process keeps every acknowledged append).

mod conformance;
mod files;
