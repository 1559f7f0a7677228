//! Storage: the metadata store (registries, repositories, links, manifests, tags, upload sessions, audit) and
//! the content-addressed blob store. Both keep their word: what they acknowledge is on disk.

pub mod blobs;
pub mod error;
pub mod gc;
pub mod meta;
mod migrate;
#[doc(hidden)]
pub mod testing;
pub mod time_fmt;

pub use blobs::{
    BlobStore, Hashed, LocalBlobStore, ObjectBlobStore, ReceivedBlob, StorageUnavailable,
    UploadState, UploadWriter,
};
pub use error::StoreError;
pub use meta::MetadataStore;
