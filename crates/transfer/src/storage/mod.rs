//! Where transfer archives live: an Azure Blob Storage container (through the outbound connector, with a SAS
//! token or an account key) or a mounted directory. An archive is written so that nothing is visible under its
//! name until it is complete (Azure: uncommitted blocks, published by one Put Block List; a directory: a hidden
//! partial file, renamed), and a write interrupted by `kill -9` resumes from its last checkpoint.
//!
//! Blocking code (ureq, std::fs): the server calls it on a blocking thread.

pub mod append_blob;
pub mod azure_blob;
mod azure_writer;
mod blob_http;
pub mod local_dir;
pub mod md5;
pub mod shared_key;
mod xml;

use moat_model::storage_uri::StorageUri;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// How the server proves itself to the storage.
#[derive(Clone)]
pub enum Credential {
    /// A SAS token (`sv=…&sig=…`, with or without the leading `?`; a whole SAS URL is accepted too: its query is used).
    Sas(String),
    /// The storage account's key (base64), as `az storage account keys list` prints it.
    SharedKey { account: String, key: String },
    /// No credential: a `LocalDirectory`, or a container that allows anonymous reads.
    None,
}

/// A credential's value never reaches a log line through `{:?}`.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Sas(_) => f.write_str("Sas(<hidden>)"),
            Credential::SharedKey { account, .. } => {
                write!(f, "SharedKey {{ account: {account:?}, key: <hidden> }}")
            }
            Credential::None => f.write_str("None"),
        }
    }
}

/// Why a storage operation failed, worded so a failed pipeline run's message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot reach the storage at {uri}: {why}; check the storage URI and that this server can connect to it")]
    Unreachable { uri: String, why: String },
    #[error("the storage refused the credential for {uri} (HTTP {status}{}): check the SAS token's permissions (an export needs read, add, create, write and list; an import needs read and list, and delete with DeleteSourceBlobOnSuccess) and its expiry time, or the account key registered with `moat storage-account add`", code_suffix(.code))]
    CredentialRefused {
        uri: String,
        status: u16,
        code: Option<String>,
    },
    #[error("{}", not_found(.uri, *.container))]
    NotFound { uri: String, container: bool },
    #[error("the storage at {uri} answered HTTP {status}{}: {message}", code_suffix(.code))]
    Status {
        uri: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("storage I/O at {uri}: {source}")]
    Io {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    /// The outbound connector refused the address (this server itself, or the operator's lists).
    #[error("{0}")]
    Refused(#[from] moat_outbound::Refused),
    #[error(transparent)]
    DirectoryRefused(#[from] moat_outbound::DirectoryDenial),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_deref().map(|c| format!(" {c}")).unwrap_or_default()
}

fn not_found(uri: &str, container: bool) -> String {
    if container {
        format!("the container or directory {uri} does not exist: create it (az storage container create; mkdir or mount for a directory) or correct the URI")
    } else {
        format!("{uri} does not exist")
    }
}

impl StorageError {
    /// The storage error an `io::Error` from an [`ArchiveWriter`]'s `write` carries (or the I/O error itself).
    pub fn from_io(e: std::io::Error, uri: &str) -> StorageError {
        if e.get_ref().is_some_and(|i| i.is::<StorageError>()) {
            let inner = e.into_inner().expect("checked");
            return *inner.downcast::<StorageError>().expect("checked");
        }
        StorageError::Io {
            uri: uri.to_string(),
            source: e,
        }
    }

    /// Wraps this error for `std::io::Write`; [`StorageError::from_io`] takes it out again.
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// Whether retrying later may succeed (the network, a 5xx, a throttled request).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Unreachable { .. } => true,
            StorageError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }
}

/// One archive in a container or directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub name: String,
    pub size: u64,
    pub last_modified: SystemTime,
    /// Azure's ETag (quoted as Azure sends it); for a directory, size and modification time.
    pub etag: String,
    /// Base64, as Azure's `Content-MD5`. A directory has none.
    pub content_md5: Option<String>,
    /// Blob metadata (names lower-cased). A directory has none.
    pub metadata: BTreeMap<String, String>,
}

pub trait ArchiveStore: Send + Sync {
    /// Starts (or, with `resume` = a state returned by `ArchiveWriter::checkpoint`, continues) writing archive `name`
    /// under a temporary name / as uncommitted blocks: nothing is visible under `name` until `commit`. A resume
    /// state that no longer matches what the storage holds (blocks expired, partial file gone) starts over:
    /// `durable_len` says where the caller continues (0 then).
    fn begin_write(
        &self,
        name: &str,
        resume: Option<serde_json::Value>,
    ) -> Result<Box<dyn ArchiveWriter>, StorageError>;
    fn open_read(&self, name: &str) -> Result<Box<dyn std::io::Read + Send>, StorageError>;
    /// Archives only (no temporary names), in name order.
    fn list(&self) -> Result<Vec<ArchiveEntry>, StorageError>;
    /// One archive's entry, or `None` if there is none by that name.
    fn stat(&self, name: &str) -> Result<Option<ArchiveEntry>, StorageError>;
    /// Deletes an archive; one that is already gone is not an error (a retried `DeleteSourceBlobOnSuccess`).
    fn delete(&self, name: &str) -> Result<(), StorageError>;
    /// For `response.target.uri` / `source.uri`.
    fn uri_of(&self, name: &str) -> String;
}

pub trait ArchiveWriter: std::io::Write + Send {
    /// Bytes already durable in the target (after a resume: where the caller's stream must continue from).
    fn durable_len(&self) -> u64;
    /// Makes what was written durable and returns a state to persist; `begin_write(name, Some(state))` resumes
    /// there. A small unfinished tail (under one block) may be left out of the state, so that checkpoints after
    /// every small blob do not turn into thousands of tiny blocks: after a resume, continue from `durable_len`.
    fn checkpoint(&mut self) -> Result<serde_json::Value, StorageError>;
    /// Publishes the archive under its name atomically, with blob metadata `category=acr-transfer-blob` and
    /// Content-MD5 (Azure; a directory gets the file alone). Replaces an archive of the same name.
    fn commit(self: Box<Self>) -> Result<(), StorageError>;
    /// Gives up: a directory's partial file is removed; Azure's uncommitted blocks expire on their own (7 days)
    /// or are replaced by the next write of the same name.
    fn abort(self: Box<Self>);
}

/// Blob metadata every committed export archive carries; ACR's source trigger imports only blobs that have it.
pub const CATEGORY_KEY: &str = "category";
pub const CATEGORY_VALUE: &str = "acr-transfer-blob";

/// Tuning for Azure uploads.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Bytes per staged block (Azure allows up to 4,000 MiB and 50,000 blocks per blob).
    pub block_size: usize,
    /// Blocks uploaded at once.
    pub parallel: usize,
    /// TLS roots for https endpoints (`None`: the system's).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Blobs per List Blobs page (Azure's maximum is 5,000; tests page with fewer).
    pub list_page: u32,
}

impl Default for StorageOptions {
    fn default() -> StorageOptions {
        StorageOptions {
            block_size: 8 << 20,
            parallel: 4,
            tls: None,
            list_page: 5000,
        }
    }
}

/// The store a storage URI names, with its credential.
pub fn open(
    uri: &StorageUri,
    cred: Credential,
    outbound: &moat_outbound::Outbound,
) -> Result<Box<dyn ArchiveStore>, StorageError> {
    open_with(uri, cred, outbound, &StorageOptions::default())
}

pub fn open_with(
    uri: &StorageUri,
    cred: Credential,
    outbound: &moat_outbound::Outbound,
    options: &StorageOptions,
) -> Result<Box<dyn ArchiveStore>, StorageError> {
    match uri {
        StorageUri::AzureBlob { .. } => Ok(Box::new(azure_blob::AzureStore::new(
            uri, cred, outbound, options,
        )?)),
        StorageUri::LocalDirectory { dir } => match cred {
            Credential::None => Ok(Box::new(local_dir::LocalDir::new(
                outbound.check_directory(dir)?,
            ))),
            other => Err(StorageError::Invalid(format!(
                "a local directory ({uri}) takes no credential, but {} was given",
                match other {
                    Credential::Sas(_) => "a SAS token",
                    _ => "an account key",
                }
            ))),
        },
    }
}

/// An archive name that works in both kinds of store: a blob name that is also one file name.
pub fn check_archive_name(name: &str) -> Result<(), StorageError> {
    let ok = moat_model::storage_uri::valid_blob_name(name)
        && !name.contains(['/', '\\'])
        && !name.starts_with('.')
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "'{}' is not an archive name: 1 to 255 bytes, no '/', '\\' or control characters, not starting or ending with '.'",
            moat_model::text::escape(name)
        )))
    }
}
