//! The storage error.

use thiserror::Error;

/// What a storage call can fail with.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A uniqueness constraint was violated (e.g. a key hash that already exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or failed.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database cannot be reached or ran out of a resource (connections, disk): the
    /// request itself is not at fault, and trying again at once would fail alike.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Migrations failed or the schema is newer than this binary.
    #[error("migration error: {0}")]
    Migration(String),
    /// A stored value could not be read back (a bug or a corrupted row).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;
