//! A byte-count progress bar on stderr (indicatif) for one download.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Downloads smaller than this get no bar: `config.json` and other small files finish before
/// a bar would be readable.
pub const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// Shows one bar per download of at least [`PROGRESS_MIN_BYTES`], labelled with the file name.
pub(crate) struct DownloadBar {
    label: String,
    target: fn() -> ProgressDrawTarget,
    bar: Option<ProgressBar>,
}

impl DownloadBar {
    /// A bar drawn on stderr (indicatif hides it when stderr is not a terminal).
    pub(crate) fn stderr(label: String) -> Self {
        Self::with_target(label, ProgressDrawTarget::stderr)
    }

    /// A bar drawn on `target` (tests use a hidden one).
    pub(crate) fn with_target(label: String, target: fn() -> ProgressDrawTarget) -> Self {
        Self {
            label,
            target,
            bar: None,
        }
    }

    /// The bar's current position and length, when one was started.
    #[cfg(test)]
    fn state(&self) -> Option<(u64, Option<u64>, bool)> {
        self.bar
            .as_ref()
            .map(|b| (b.position(), b.length(), b.is_finished()))
    }

    /// A download of `total` bytes begins (`None`: size unknown, no bar); `done` of them are
    /// already on disk (a resumed download).
    pub(crate) fn start(&mut self, total: Option<u64>, done: u64) {
        let Some(total) = total.filter(|t| *t >= PROGRESS_MIN_BYTES) else {
            return;
        };
        let bar = ProgressBar::with_draw_target(Some(total), (self.target)());
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(self.label.clone());
        bar.set_position(done);
        self.bar = Some(bar);
    }

    /// `bytes` of the file are on disk.
    pub(crate) fn set_position(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }

    /// The download completed: the bar stays, full.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// Removes the bar after a failed download, leaving the terminal clean for the error.
    pub(crate) fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_download_tracks_bytes_and_finishes() {
        let total = PROGRESS_MIN_BYTES + 10;
        let mut h = DownloadBar::with_target("m".into(), ProgressDrawTarget::hidden);
        h.start(Some(total), 0);
        assert_eq!(h.state(), Some((0, Some(total), false)));
        h.set_position(1000);
        h.set_position(total);
        assert_eq!(h.state(), Some((total, Some(total), false)));
        h.finish();
        assert_eq!(h.state(), Some((total, Some(total), true)));
    }

    #[test]
    fn resumed_download_starts_at_the_bytes_on_disk() {
        let total = PROGRESS_MIN_BYTES * 2;
        let mut h = DownloadBar::with_target("m".into(), ProgressDrawTarget::hidden);
        h.start(Some(total), 1234);
        assert_eq!(h.state(), Some((1234, Some(total), false)));
    }

    #[test]
    fn small_or_unknown_download_gets_no_bar() {
        let mut h = DownloadBar::with_target("c".into(), ProgressDrawTarget::hidden);
        h.start(Some(PROGRESS_MIN_BYTES - 1), 0);
        h.set_position(10);
        h.finish();
        assert_eq!(h.state(), None);
        h.start(None, 0);
        assert_eq!(h.state(), None);
    }

    #[test]
    fn abandon_clears_the_bar() {
        let mut h = DownloadBar::with_target("m".into(), ProgressDrawTarget::hidden);
        h.start(Some(PROGRESS_MIN_BYTES), 0);
        h.abandon();
        assert_eq!(h.state(), None);
    }
}
