use moat_model::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("the manifest references {0} which this repository does not hold")]
    ManifestBlobUnknown(Digest),
    #[error("upload session is unknown or expired")]
    UploadUnknown,
    #[error("content does not match digest {expected} (got {actual})")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{0}")]
    Invalid(String),
    /// A bound on how many of something may exist was reached.
    #[error("{0}")]
    Limit(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
