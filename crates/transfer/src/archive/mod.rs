//! The transfer archive: what an export pipeline run writes and an import pipeline run reads. It is a tar of an
//! OCI image layout, so that any OCI tool opens it (`skopeo copy oci-archive:<file>:<tag> …`):
//!
//! ```text
//! oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! index.json                  one descriptor per exported artifact (annotations: ref.name, io.moat.repository, io.moat.tag)
//! moat-transfer.json          the contents list: every entry that follows, in order, with digest and size; the
//!                             artifacts with the manifests and blobs each needs; exporter, time, signing key
//! moat-transfer.json.sig      Ed25519 over the exact bytes of moat-transfer.json (absent when unsigned)
//! blobs/  blobs/<alg>/        directories
//! blobs/<alg>/<hex> …         manifests first, then the other blobs, each group by digest
//! ```
//!
//! Everything an importer must check before it stores a byte is at the head, so a reader verifies the
//! signature first and then streams each blob through a hasher into the blob store. The bytes are a function of
//! the [`ExportSet`] and the signer alone, so a resumed export regenerates the same stream and the archive's
//! sha256 (the run's `catalogDigest`) does not depend on how many attempts it took.

mod collect;
mod contents;
mod hasher;
mod read;
mod signed;
mod tar;
mod write;

pub use collect::{collect_export, MAX_ARTIFACTS, MAX_EXPORT_MANIFESTS};
pub use contents::{Contents, ContentsArtifact, ContentsEntry};
pub use read::{read_archive, ArchiveReader, Pinner, ReadArchive, StorePinner};
pub use signed::{BadPublicKey, TransferPublicKey, TransferSigner, TrustPolicy};
pub use write::{archive_size, write_archive, ArchiveSummary, WriteStep};

use moat_model::Digest;
use moat_store::meta::ManifestRecord;
use std::collections::BTreeMap;

/// One exported artifact: an entry of `index.json`, and of a run's `importedArtifacts` on the other side.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportedArtifact {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    /// Size of the root manifest.
    pub size: u64,
    /// Every manifest this artifact needs, children and referrers before the manifests they belong to, the root
    /// last (the order `MetadataStore::import_remote` writes in).
    pub manifests: Vec<Digest>,
    /// Every blob those manifests reference, by digest.
    pub blobs: Vec<Digest>,
}

impl ExportedArtifact {
    /// `repo:tag` or `repo@digest`, as ACR's `importedArtifacts` lists them.
    pub fn reference(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.repository),
            None => format!("{}@{}", self.repository, self.digest),
        }
    }
}

/// What an export writes: the artifacts, every manifest (once, whatever number of artifacts share it), every
/// other blob (once) and the bytes of those kept in the metadata store, plus what the contents list records
/// about the export. Serialisable, so a run can keep it with its checkpoint and resume with the same bytes.
#[derive(Clone, Debug)]
pub struct ExportSet {
    pub artifacts: Vec<ExportedArtifact>,
    pub manifests: Vec<ManifestRecord>,
    pub blobs: Vec<(Digest, u64)>,
    /// Bytes of small blobs kept in the metadata store rather than the blob store.
    pub inline: BTreeMap<Digest, bytes::Bytes>,
    /// The exporting registry's login server.
    pub exporter: String,
    /// When the set was collected (RFC 3339): part of the signed contents, fixed so that rewrites are identical.
    pub created: String,
}

/// How an archive failed to be written or read. Every message says what is wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(
        "artifact '{0}' does not exist in the registry: check the repository and tag (or digest)"
    )]
    ArtifactNotFound(String),
    #[error(
        "'{artifact}' is not an artifact reference (repo, repo:tag or repo@sha256:<hex>): {why}"
    )]
    BadArtifact { artifact: String, why: String },
    #[error("a pipeline run exports at most {max} artifacts; {given} were given: split it into several runs")]
    TooManyArtifacts { given: usize, max: usize },
    #[error("no artifact to export: name at least one (repo:tag or repo@digest)")]
    NoArtifacts,
    #[error("the export needs more than {0} manifests (images, their children and referrers): split it into several runs")]
    TooManyManifests(usize),
    #[error("manifest {digest} is not valid: {why}")]
    BadManifest { digest: String, why: String },
    #[error("blob {0} of the export is missing from the blob store: the registry is damaged, restore it or push the image again")]
    BlobMissing(Digest),
    #[error("the archive is not a transfer archive: {0}")]
    NotAnArchive(String),
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    #[error("the archive is truncated: it ended {0}")]
    Truncated(String),
    #[error("the archive's contents list was tampered with or its signature is corrupt: the signature does not verify with the key it names ({0})")]
    BadSignature(String),
    #[error("the archive is not signed, and this import requires a signature by a trusted exporter key: export it again from a Moat server whose key is trusted (`moat transfer-key show` there)")]
    Unsigned,
    #[error("the archive is signed by {key} (key {kid}), which this import does not trust: add it to the import pipeline's trustedExporterKeys or the server's [transfer] trusted_keys if you trust that exporter")]
    UntrustedSigner { key: String, kid: String },
    #[error("blob {digest} in the archive hashes to {actual}: the archive is corrupt or was tampered with")]
    DigestMismatch { digest: Digest, actual: Digest },
    #[error("the archive's digest is {actual}, not the {expected} the run expected (catalogDigest): it is not the archive that was exported, or it changed since")]
    CatalogMismatch { expected: Digest, actual: Digest },
    #[error("storage error: {0}")]
    Store(#[from] moat_store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The caller stopped the write or read (a cancelled job, a checkpoint that failed).
    #[error("{0}")]
    Stopped(String),
}

impl From<tar::TarError> for ArchiveError {
    fn from(e: tar::TarError) -> Self {
        match e {
            tar::TarError::Truncated => {
                ArchiveError::Truncated("in the middle of a tar header".into())
            }
            tar::TarError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ArchiveError::Truncated("early".into())
            }
            tar::TarError::Io(e) => ArchiveError::Io(e),
            other => ArchiveError::Corrupt(other.to_string()),
        }
    }
}

/// Blobs at most this size are read into memory on import and kept in the metadata store, as small uploads are.
pub const INLINE_MAX: u64 = 64 * 1024;

/// The name of a blob in the layout.
pub(crate) fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

#[cfg(test)]
mod tests;
