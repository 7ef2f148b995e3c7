//! The PostgreSQL store against throw-away PostgreSQL clusters
//! (`youops_testkit::pg`, reached through a Unix socket): the core's store
//! conformance suite, several nodes on one database, lost COMMIT answers, a
//! server restart under appends, migrations, secrets and retention across
//! nodes, cluster coordination (nodes, fencing, leader election, op locks,
//! a node cut off the database), TLS over TCP to a server with a private CA.
//! Each test has a cluster of its own, each case a database of its own.

mod commit;
mod conformance;
mod coord;
mod election;
mod import;
mod listen;
mod locks;
mod migrations;
mod nodes;
mod partition;
mod partitioned;
mod restart;
mod retention;
mod secrets;
mod support;
mod tls;
