//! The `vigil-bench` binary. All the work is in the library; see `vigil::bench`.

fn main() -> std::process::ExitCode {
    vigil::bench::cli::main()
}
