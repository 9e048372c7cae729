//! The `vigil` binary. All the work is in the library; see `vigil::cli`.

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
