//! The progress bar on stderr while a run is going.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::BenchConfig;

/// Makes the run's progress bar: one tick per ended request, out of
/// `--requests` when given. Hidden with `--quiet` or when stderr is not a
/// terminal, so logs and redirected output stay clean.
pub fn progress_bar(config: &BenchConfig) -> ProgressBar {
    if config.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(config.requests, ProgressDrawTarget::stderr());
    let template = match config.requests {
        Some(_) => "{elapsed:>4} [{bar:40}] {pos}/{len} requests, {msg}",
        None => "{elapsed:>4} {spinner} {pos} requests, {msg}",
    };
    // The templates are constants, so a parse failure is a bug caught by
    // the first run; fall back to the default style rather than panic.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("0 failed");
    // Redraw about twice a second without a wake-up per request.
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}
