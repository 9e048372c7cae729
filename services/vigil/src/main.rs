//! The `vigil` binary. All the work is in the library; see `vigil::cli`.

/// mimalloc instead of glibc malloc: see docs/benchmarks.md (allocation
/// was a fifth of the engine's profile with glibc's).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
