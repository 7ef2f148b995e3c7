//! `youops-soak`: a soak driver that pushes mixed traffic through every front
//! door of a running `youops serve` and checks that nothing is lost and
//! nothing grows (see [`youops_perf::soak`]).

// The daemon's allocator (see `main.rs`), so the driver costs what it would there.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    youops_perf::soak::main()
}
