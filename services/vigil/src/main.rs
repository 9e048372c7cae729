//! The `vigil` binary. All the work is in the library; see `vigil::cli`.

/// mimalloc instead of glibc malloc: see docs/benchmarks.md (allocation
/// is a fifth of the engine's profile, and glibc's heap grew in the soak).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
