use moat_model::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database cannot be reached (named in the message, without its password).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database holds migrations this binary does not know: a newer version of Moat has upgraded it.
    #[error(
        "the database schema is at version {database}, newer than this binary's {binary}: \
         run the newer Moat (or restore a backup made before the upgrade)"
    )]
    SchemaTooNew { database: i64, binary: i64 },
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
