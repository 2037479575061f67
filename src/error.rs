//! The crate's error type: every variant that concerns a file names the file.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in candle-face.
///
/// Variants that concern a file carry its path, so a user always learns *which* file
/// is bad and *why*.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// An image could not be decoded or is unusable.
    #[error("{}: {reason}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A `config.json` (or other JSON file) is invalid.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The JSON file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A weights file is missing, truncated, or does not fit the architecture.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The weights file (or model folder).
        path: PathBuf,
        /// What is wrong: the first missing or mismatched tensor and its shapes.
        reason: String,
    },

    /// A dataset directory cannot be used.
    #[error("{}: {reason}", path.display())]
    Dataset {
        /// The dataset root (or the offending file).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// No face was found in an image where one was required.
    #[error("{}: no face found", path.display())]
    NoFace {
        /// The image file.
        path: PathBuf,
    },

    /// Hugging Face Hub access failed.
    #[error("hub: {0}")]
    Hub(String),

    /// An argument or option is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Anything else, with a message.
    #[error("{0}")]
    Msg(String),

    /// A gallery database refused or failed a request.
    #[error("{server}: {reason}")]
    Database {
        /// The server and table, without password (`postgres://user@host:port/db?table=t`).
        server: String,
        /// What went wrong and what to do about it.
        reason: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An image error for `path` with a reason.
    pub fn image(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// A config error for `path` with a reason.
    pub fn config(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Config {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// A weights error for `path` with a reason.
    pub fn weights(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Weights {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// A dataset error for `path` with a reason.
    pub fn dataset(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::Dataset {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
