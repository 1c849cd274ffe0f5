use thiserror::Error;

/// Storage failures. Denials (duplicate, not found for a tenant) are values in the records,
/// not errors; these are for the exceptional.
/// `Clone`, so one failed group commit answers every caller in it.
#[derive(Debug, Clone, Error)]
pub enum Error {
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (e.g. a tenant name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store cannot take writes or reads now (disk full, locked, down). Nothing was
    /// half-written; the caller may retry later.
    #[error("storage unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
    },
    /// Anything else: a bug or corruption.
    #[error("storage error: {0}")]
    Other(String),
}

/// Result with the store's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
