use moat_model::Digest;

/// Why an import failed. Each is reported to the caller as ACR reports import failures (`InvalidParameters`),
/// with a message that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("source image '{0}' was not found")]
    ImageNotFound(String),
    #[error("the source registry refused the credentials: {0}")]
    Unauthorized(String),
    #[error("the source registry at {url} answered {status}: {detail}")]
    RemoteStatus {
        url: String,
        status: u16,
        detail: String,
    },
    #[error("the source registry could not be read: {0}")]
    Remote(String),
    /// The outbound connector refused an address (this server itself, or the operator's lists).
    #[error("{0}")]
    Refused(#[from] moat_outbound::Refused),
    #[error("the source registry sent bytes for {expected} that hash to {actual}: the import was stopped and nothing was written")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the image has more than {0} manifests")]
    TooManyManifests(usize),
    #[error("manifest {digest} is not valid: {why}")]
    BadManifest { digest: String, why: String },
    /// Whoever runs the import asked it to stop (its job was cancelled or handed to another process).
    #[error("the import was stopped")]
    Stopped,
    #[error("storage error: {0}")]
    Store(#[from] moat_store::StoreError),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}
