//! The `tads` binary: everything lives in `tads-cli`.

/// mimalloc, as datafusion-cli uses: Arrow and Parquet allocate and free large buffers for every
/// batch, which the system allocator returns to the kernel and faults in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tads_cli::main()
}
