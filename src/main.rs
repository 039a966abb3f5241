//! The `tads` binary: everything lives in `tads-cli`.

use std::ffi::{c_int, c_long};

/// mimalloc, as datafusion-cli uses: Arrow and Parquet allocate and free large buffers for every
/// batch, which the system allocator returns to the kernel and faults in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(unsafe_code)] // mimalloc's C API: the binary's only unsafe code.
unsafe extern "C" {
    /// mimalloc's own setter of its options (linked in with the allocator above).
    fn mi_option_set(option: c_int, value: c_long);
    /// mimalloc's own getter of its options.
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// `mi_option_purge_delay` in the `mi_option_t` enum of the mimalloc (v3) that
/// `libmimalloc-sys` builds: how long freed memory stays mapped before it is given back to the
/// kernel, in milliseconds; -1 for never.
const MI_OPTION_PURGE_DELAY: c_int = 15;

/// The commands that run once over a dataset and exit.
const BATCH_COMMANDS: [&str; 5] = ["generate", "train", "score", "eval", "demo"];

/// Keeps freed memory mapped for reuse in the batch commands, unless `MIMALLOC_PURGE_DELAY` says
/// otherwise.
///
/// mimalloc gives memory freed for a second back to the kernel (`madvise`). A batch job frees
/// and allocates buffers of the same sizes file after file (a scored file is tens of MB), so
/// each new file had its buffers faulted in and zeroed by the kernel again; on a virtual machine
/// that returns free memory to its host, each fault also goes to the host. On 10M rows (2 cores)
/// `tads score` spent 2.2–3.3 s in the kernel, and 1.4–1.7 s with freed memory kept. The peak
/// is what the job holds anyway; the long-running commands (`watch`, `serve`, ...) keep
/// mimalloc's default and give memory back after a burst.
fn keep_freed_memory_in_batch_commands() {
    let command = std::env::args().nth(1).unwrap_or_default();
    if BATCH_COMMANDS.contains(&command.as_str())
        && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
    {
        // SAFETY: a C call taking two integers; mimalloc's options may be set at any time.
        #[allow(unsafe_code)]
        unsafe {
            mi_option_set(MI_OPTION_PURGE_DELAY, -1)
        };
    }
}

fn main() -> std::process::ExitCode {
    keep_freed_memory_in_batch_commands();
    tads_cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3's default purge delay is 1000 ms; the index names that option.
        // SAFETY: as above.
        let before = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                before, 1000,
                "mimalloc's purge delay has another index or default"
            );
        }
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
