//! Progress on a terminal: an indicatif bar on stderr, or nothing when stderr is not a terminal
//! or `--quiet` was given.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A bar that counts rows and files.
pub(crate) struct RowBar {
    bar: ProgressBar,
    files: AtomicU64,
    total_files: AtomicU64,
}

impl RowBar {
    /// A bar for `total_rows` rows in `total_files` files; hidden when `quiet` or not on a terminal.
    pub(crate) fn new(total_rows: u64, total_files: u64, quiet: bool) -> Self {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(8)
        };
        let bar = ProgressBar::with_draw_target(Some(total_rows), target);
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({rate} rows/s, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}", crate::si(state.per_sec()));
        });
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self {
            bar,
            files: AtomicU64::new(0),
            total_files: AtomicU64::new(total_files),
        }
    }

    /// Removes the bar from the terminal.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl tads_store::Progress for RowBar {
    fn rows(&self, rows: u64) {
        self.bar.inc(rows);
    }

    fn total(&self, rows: u64, files: u64) {
        self.bar.set_length(rows);
        self.total_files.store(files, Ordering::Relaxed);
    }

    fn phase(&self, name: &str) {
        self.bar.set_position(0);
        self.bar.reset_eta();
        self.bar.set_prefix(name.to_string());
    }

    fn file_done(&self) {
        let done = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.set_message(format!(
            "{done}/{} files",
            self.total_files.load(Ordering::Relaxed)
        ));
    }
}
