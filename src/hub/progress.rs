//! A byte-count progress bar on stderr (indicatif) fed by hf-hub's download events.

use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Mutex;

/// Downloads smaller than this get no bar: `config.json` and other small files finish before
/// a bar would be readable.
pub const PROGRESS_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// Shows one bar per download of at least [`PROGRESS_MIN_BYTES`], labelled with the file name.
pub(crate) struct DownloadBar {
    label: String,
    target: fn() -> ProgressDrawTarget,
    bar: Mutex<Option<ProgressBar>>,
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
            bar: Mutex::new(None),
        }
    }

    /// The bar's current position and length, when one was started.
    #[cfg(test)]
    fn state(&self) -> Option<(u64, Option<u64>, bool)> {
        let guard = self.bar.lock().ok()?;
        guard
            .as_ref()
            .map(|b| (b.position(), b.length(), b.is_finished()))
    }

    /// Removes the bar after a failed download, leaving the terminal clean for the error.
    pub(crate) fn abandon(&self) {
        if let Ok(mut guard) = self.bar.lock() {
            if let Some(bar) = guard.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl ProgressHandler for DownloadBar {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(event) = event else {
            return;
        };
        let Ok(mut guard) = self.bar.lock() else {
            return;
        };
        match event {
            DownloadEvent::Start { total_bytes, .. } if *total_bytes >= PROGRESS_MIN_BYTES => {
                let bar = ProgressBar::with_draw_target(Some(*total_bytes), (self.target)());
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_message(self.label.clone());
                *guard = Some(bar);
            }
            DownloadEvent::Progress { files } => {
                if let Some(bar) = guard.as_ref() {
                    // One file per download: the latest count is the position.
                    if let Some(p) = files.iter().map(|f| f.bytes_completed).max() {
                        bar.set_position(p);
                    }
                }
            }
            DownloadEvent::AggregateProgress {
                bytes_completed, ..
            } => {
                if let Some(bar) = guard.as_ref() {
                    bar.set_position(*bytes_completed);
                }
            }
            DownloadEvent::Complete => {
                if let Some(bar) = guard.as_ref() {
                    bar.finish();
                }
            }
            DownloadEvent::Start { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hf_hub::progress::{FileProgress, FileStatus};

    fn progress(bytes: u64, total: u64) -> ProgressEvent {
        ProgressEvent::Download(DownloadEvent::Progress {
            files: vec![FileProgress {
                filename: "model.safetensors".into(),
                bytes_completed: bytes,
                total_bytes: total,
                status: FileStatus::InProgress,
            }],
        })
    }

    fn start(total: u64) -> ProgressEvent {
        ProgressEvent::Download(DownloadEvent::Start {
            total_files: 1,
            total_bytes: total,
        })
    }

    #[test]
    fn large_download_tracks_bytes_and_finishes() {
        let total = PROGRESS_MIN_BYTES + 10;
        let h = DownloadBar::with_target("m".into(), ProgressDrawTarget::hidden);
        h.on_progress(&start(total));
        assert_eq!(h.state(), Some((0, Some(total), false)));
        h.on_progress(&progress(1000, total));
        h.on_progress(&progress(total, total));
        assert_eq!(h.state(), Some((total, Some(total), false)));
        h.on_progress(&ProgressEvent::Download(DownloadEvent::Complete));
        assert_eq!(h.state(), Some((total, Some(total), true)));
    }

    #[test]
    fn small_download_gets_no_bar() {
        let h = DownloadBar::with_target("c".into(), ProgressDrawTarget::hidden);
        h.on_progress(&start(PROGRESS_MIN_BYTES - 1));
        h.on_progress(&progress(10, PROGRESS_MIN_BYTES - 1));
        h.on_progress(&ProgressEvent::Download(DownloadEvent::Complete));
        assert_eq!(h.state(), None);
    }

    #[test]
    fn abandon_clears_the_bar() {
        let h = DownloadBar::with_target("m".into(), ProgressDrawTarget::hidden);
        h.on_progress(&start(PROGRESS_MIN_BYTES));
        h.abandon();
        assert_eq!(h.state(), None);
    }
}
