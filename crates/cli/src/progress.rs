//! Progress on a terminal: an indicatif bar on stderr, or nothing when stderr is not a terminal
//! or `--quiet` was given.
//!
//! With `TADS_PROGRESS=json` in the environment (as `tads serve` runs its jobs), the bar also
//! writes its state to stderr as lines `tads-progress {"phase":…,"rows":…,"total":…,"files":…,
//! "total_files":…}`, at most four a second and once more when it finishes, whether or not
//! stderr is a terminal.

use std::io::IsTerminal;
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A bar that counts rows and files.
pub(crate) struct RowBar {
    bar: ProgressBar,
    files: AtomicU64,
    total_files: AtomicU64,
    /// With `TADS_PROGRESS=json`: when the last line was written.
    json: Option<Mutex<Option<Instant>>>,
}

/// The prefix of a machine-readable progress line on stderr.
pub(crate) const PROGRESS_PREFIX: &str = "tads-progress ";

/// The environment variable that asks for machine-readable progress lines.
pub(crate) const PROGRESS_ENV: &str = "TADS_PROGRESS";

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
        let json = (std::env::var(PROGRESS_ENV).as_deref() == Ok("json")).then(|| Mutex::new(None));
        Self {
            bar,
            files: AtomicU64::new(0),
            total_files: AtomicU64::new(total_files),
            json,
        }
    }

    /// Removes the bar from the terminal.
    pub(crate) fn finish(&self) {
        self.report(true);
        self.bar.finish_and_clear();
    }

    /// Writes a `tads-progress` line (with `TADS_PROGRESS=json`), unless one was written less
    /// than a quarter of a second ago and this is not `last`.
    fn report(&self, last: bool) {
        let Some(json) = &self.json else { return };
        let Ok(mut at) = json.lock() else { return };
        if !last && at.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
            return;
        }
        *at = Some(Instant::now());
        let line = serde_json::json!({
            "phase": self.bar.prefix(),
            "rows": self.bar.position(),
            "total": self.bar.length(),
            "files": self.files.load(Ordering::Relaxed),
            "total_files": self.total_files.load(Ordering::Relaxed),
        });
        let _ = writeln!(std::io::stderr().lock(), "{PROGRESS_PREFIX}{line}");
    }
}

impl tads_store::Progress for RowBar {
    fn rows(&self, rows: u64) {
        self.bar.inc(rows);
        self.report(false);
    }

    fn total(&self, rows: u64, files: u64) {
        self.bar.set_length(rows);
        self.total_files.store(files, Ordering::Relaxed);
        self.report(true);
    }

    fn phase(&self, name: &str) {
        // Files are stored in a job's last phase only: a one pass that falls back to sorting
        // stores its files again, and counts them from 0 again.
        self.files.store(0, Ordering::Relaxed);
        self.bar.set_message(String::new());
        self.bar.set_position(0);
        self.bar.reset_eta();
        self.bar.set_prefix(name.to_string());
        self.report(true);
    }

    fn file_done(&self) {
        let done = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.set_message(format!(
            "{done}/{} files",
            self.total_files.load(Ordering::Relaxed)
        ));
    }
}
