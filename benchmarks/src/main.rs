//! The `vigil-bench` binary. All the work is in the library; see the `vigil_bench` library.

/// mimalloc instead of glibc malloc: see docs/benchmarks.md (allocation
/// was a fifth of the engine's profile with glibc's).
#[cfg(not(feature = "heap-count"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The same, counting live heap bytes for `soak` (see `vigil_bench::heap`).
#[cfg(feature = "heap-count")]
#[global_allocator]
static GLOBAL: vigil_bench::heap::Counting<mimalloc::MiMalloc> =
    vigil_bench::heap::Counting(mimalloc::MiMalloc);

fn main() -> std::process::ExitCode {
    vigil_bench::cli::main()
}
