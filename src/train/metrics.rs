//! The metrics log of a run, `metrics.jsonl`: one line per log interval and per validation.

use std::io::Write;
use std::path::PathBuf;

use super::validate::ValResult;
use crate::{Error, Result};

/// `metrics.jsonl`: one JSON object per line.
pub(crate) struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Opens `path`, dropping lines for steps after `keep_through` (left by a killed run).
    pub fn open(path: PathBuf, keep_through: Option<u64>) -> Result<Self> {
        if let Some(limit) = keep_through {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let kept: String = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= limit)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                crate::fsutil::write_atomic(&path, kept.as_bytes())?;
            }
        } else if path.exists() {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(Self { path })
    }

    /// Appends one line.
    pub fn write(&self, value: serde_json::Value) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io(&self.path, e))?;
        writeln!(f, "{value}").map_err(|e| Error::io(&self.path, e))
    }

    /// Appends a validation record; `flag` (`untrained`, `final`) marks the first and last.
    pub fn validation(
        &self,
        step: u64,
        epoch: f64,
        r: &ValResult,
        flag: Option<&str>,
    ) -> Result<()> {
        let mut line = serde_json::json!({
            "step": step, "epoch": epoch, "val_accuracy": r.accuracy, "val_auc": r.auc,
            "val_threshold": r.threshold, "val_pairs": r.pairs,
        });
        if let Some(flag) = flag {
            line[flag] = true.into();
        }
        self.write(line)
    }
}
