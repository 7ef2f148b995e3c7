//! The log store's promises, each shown on real temporary directories or, where
//! a power cut, a failed sync or a full disk is needed, on the file-layer
//! doubles (`SimFs`, `FaultFs`).

mod dedup;
mod durability;
mod indexes;
mod open;
mod power_cuts;
mod recovery;
mod retention;
mod support;
