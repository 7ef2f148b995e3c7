//! `youops-cluster-bench`: YouOps daemons on one throw-away PostgreSQL, beside
//! the embedded store and raw PostgreSQL (see [`youops_perf::cluster`]).

// The daemon's allocator (see `main.rs`), so the driver costs what it would there.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    youops_perf::cluster::main()
}
