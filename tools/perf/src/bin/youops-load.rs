//! `youops-load`: an open-loop load generator for `POST /api/v1/requests`
//! (see [`youops_perf::load`]).

// The daemon's allocator (see `main.rs`), so the driver costs what it would there.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    youops_perf::load::main()
}
