//! # youops-perf
//!
//! The benchmark tools of YouOps (not part of the product): the open-loop load
//! generator `youops-load` ([`load`]), the soak driver `youops-soak`
//! ([`soak`]), the disk baseline `youops-fsync-probe` ([`fsyncprobe`]) and
//! the cluster benchmark `youops-cluster-bench` ([`cluster`]).
//! Each binary under `src/bin/` is a thin `main` over this library, which
//! holds what they share once: duration flags ([`cli`]), the `fdatasync`
//! probe, what they read from `/proc` ([`procfs`]) and the percentile rule
//! ([`stats`]).

pub mod cli;
pub mod cluster;
pub mod fsyncprobe;
pub mod load;
pub mod procfs;
pub mod soak;
pub mod stats;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The guard of `m`, poisoned or not: a panicked sender leaves its samples
/// usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The drivers' HTTP client: one keep-alive pool (HTTP/1.1) of up to `pool`
/// idle connections per host, no Nagle, `timeout` per request. Built inside
/// `rt`, whose reactor it then uses.
pub(crate) fn http_client(
    rt: &tokio::runtime::Runtime,
    pool: usize,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    rt.block_on(async {
        reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .timeout(timeout)
            .build()
    })
}
