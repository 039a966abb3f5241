//! The `tads` binary: everything lives in `tads-cli`.
fn main() -> std::process::ExitCode {
    tads_cli::main()
}
