//! The log store's promises, each shown on real temporary directories or, where
//! a power cut, a failed sync or a full disk is needed, on the file-layer
//! doubles (`SimFs`, `FaultFs`); and the core's store conformance suite.

mod conditional;
mod conformance;
mod dedup;
mod durability;
mod import;
mod index;
mod indexes;
mod open;
mod power_cuts;
mod recovery;
mod retention;
mod support;
