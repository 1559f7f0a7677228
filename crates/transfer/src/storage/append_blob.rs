//! Append blobs in one container, for archives written a few records at a time (Azure Monitor's resource-log
//! archive: JSON Lines appended to an hourly blob). Each append names the offset it expects the blob to end at
//! (`x-ms-blob-condition-appendpos`), so an append retried after a lost answer fails instead of writing twice,
//! and the caller can read the blob's tail to see what arrived.
//!
//! Blocking (ureq through the outbound connector's agent), like the rest of this module.

use super::blob_http::{Auth, Client, Req};
use super::{Credential, StorageError};
use std::io::Read;
use std::sync::Arc;

/// The most one Append Block takes (Azure's limit for the Blob service version spoken).
pub const MAX_APPEND: usize = 4 << 20;

pub struct AppendBlobs {
    client: Client,
}

impl AppendBlobs {
    /// `endpoint`: the account's blob endpoint (`https://acct.blob.core.windows.net`, Azurite's
    /// `http://127.0.0.1:port/devstoreaccount1`).
    pub fn new(
        endpoint: &str,
        account: &str,
        container: &str,
        cred: Credential,
        outbound: &moat_outbound::Outbound,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<AppendBlobs, StorageError> {
        let tls = match tls {
            Some(t) => t,
            None => crate::remote::tls_config(&[]).map_err(StorageError::Invalid)?,
        };
        let agent = outbound.agent(
            concat!("moat-monitor/", env!("CARGO_PKG_VERSION")),
            Some(tls),
        );
        Ok(AppendBlobs {
            client: Client {
                agent,
                endpoint: endpoint.trim_end_matches('/').to_string(),
                container: container.to_string(),
                auth: Auth::from_credential(cred, account)?,
            },
        })
    }

    /// Creates the container if it is missing; `false`: it existed.
    pub fn create_container(&self) -> Result<bool, StorageError> {
        match self
            .client
            .send(Req::new("PUT", None).q("restype", "container"), &[])
        {
            Ok(_) => Ok(true),
            Err(StorageError::Status { status: 409, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The blob's length, `None` when there is no such blob (or container).
    pub fn length(&self, blob: &str) -> Result<Option<u64>, StorageError> {
        match self.client.send(Req::new("HEAD", Some(blob)), &[]) {
            Ok(r) => Ok(Some(
                r.header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an empty append blob unless one exists (`If-None-Match: *`: an existing blob is never reset).
    pub fn create(&self, blob: &str) -> Result<(), StorageError> {
        let req = Req::new("PUT", Some(blob))
            .h("x-ms-blob-type", "AppendBlob")
            .h("Content-Type", "application/json")
            .h("If-None-Match", "*");
        match self.client.send(req, &[]) {
            Ok(_) => Ok(()),
            Err(StorageError::Status {
                status: 409 | 412, ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Appends `data` (at most [`MAX_APPEND`] bytes) where the blob is expected to end; returns the new length.
    /// A blob that does not end at `at` fails with HTTP 412 (`AppendPositionConditionNotMet`).
    pub fn append(&self, blob: &str, at: u64, data: &[u8]) -> Result<u64, StorageError> {
        if data.len() > MAX_APPEND {
            return Err(StorageError::Invalid(format!(
                "an append of {} bytes is over Azure's 4 MiB per block",
                data.len()
            )));
        }
        let req = Req::new("PUT", Some(blob))
            .q("comp", "appendblock")
            .h("x-ms-blob-condition-appendpos", at.to_string());
        self.client.send(req, data)?;
        Ok(at + data.len() as u64)
    }

    /// The blob's bytes from `from` to its end (a tail: what a retry checks).
    pub fn read_from(&self, blob: &str, from: u64) -> Result<Vec<u8>, StorageError> {
        let req = Req::new("GET", Some(blob)).h("x-ms-range", format!("bytes={from}-"));
        let resp = match self.client.send(req, &[]) {
            Ok(r) => r,
            // A range at the very end of the blob: nothing after it.
            Err(StorageError::Status { status: 416, .. }) => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        resp.into_reader()
            .take(64 << 20)
            .read_to_end(&mut buf)
            .map_err(|e| StorageError::Io {
                uri: self.client.url(Some(blob)),
                source: e,
            })?;
        Ok(buf)
    }

    /// The URL of a blob, without credentials (for messages).
    pub fn url(&self, blob: &str) -> String {
        self.client.url(Some(blob))
    }
}
