//! Where blob bytes live: `MOAT_STORAGE_URL` (`file://<dir>`, the default `<data dir>/storage`, or
//! `az://<container>`, with the account and its key from object_store's standard Azure environment, or the key
//! from a file named by `AZURE_STORAGE_ACCOUNT_KEY_FILE`; never from the database).

use crate::config::ServeConfig;
use anyhow::Context;
use moat_outbound::{Outbound, ResolveError};
use moat_store::blobs::object::{AddressCheck, StorageUrl};
use moat_store::{BlobStore, LocalBlobStore, ObjectBlobStore};
use std::sync::Arc;

impl ServeConfig {
    pub fn storage(&self) -> StorageUrl {
        self.storage_url
            .clone()
            .unwrap_or_else(|| StorageUrl::File(self.data_dir.join("storage")))
    }
}

/// The storage endpoint is dialled through the outbound connector: it may be a private or loopback address (the
/// operator chose it), but never one where this server listens.
pub fn address_check(outbound: Outbound) -> AddressCheck {
    Arc::new(move |netloc: &str| {
        outbound.resolve(netloc).map_err(|e| match e {
            ResolveError::Refused(r) => {
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, r)
            }
            ResolveError::Lookup(..) => std::io::Error::new(std::io::ErrorKind::NotFound, e),
        })
    })
}

/// Opens the blob store the configuration names. An object store that does not answer fails here, naming it.
pub fn open_blobs(config: &ServeConfig, outbound: Outbound) -> anyhow::Result<Arc<dyn BlobStore>> {
    match config.storage() {
        StorageUrl::File(dir) => {
            Ok(Arc::new(LocalBlobStore::open(&dir).with_context(|| {
                format!("opening the blob store {}", dir.display())
            })?))
        }
        url @ StorageUrl::Azure { .. } => {
            let StorageUrl::Azure { container } = &url else {
                unreachable!()
            };
            let store = ObjectBlobStore::open(&url, address_check(outbound))
                .with_context(|| format!("blob storage az://{container} is not available"))?;
            Ok(Arc::new(store))
        }
    }
}
