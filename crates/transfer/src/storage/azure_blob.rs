//! Archives in an Azure Blob Storage container (or Azurite).
//!
//! Writing: the archive is cut into blocks (8 MiB by default) staged with Put Block, a few at a time on worker
//! threads, and published by one Put Block List that also sets `Content-MD5` (of the whole archive, hashed while
//! streaming) and the metadata `category=acr-transfer-blob`. Staged blocks are Azure's own invisible temporary
//! state. A checkpoint is the list of staged block ids and sizes with the MD5 state after them; a resume asks
//! Azure for the blob's uncommitted blocks (`comp=blocklist&blocklisttype=uncommitted`) and continues after them
//! if they are all still there, or starts over if not.
//!
//! Reading: Get Blob streamed; a connection cut midway is resumed with a ranged GET pinned to the blob's ETag
//! (`If-Match`), so a blob replaced meanwhile fails the read instead of splicing two archives.

use super::azure_writer::{AzureWriter, WriterState};
use super::blob_http::{parse_http_date, Auth, Client, Req};
use super::{
    xml, ArchiveEntry, ArchiveStore, ArchiveWriter, Credential, StorageError, StorageOptions,
};
use moat_model::storage_uri::{valid_blob_name, StorageUri};
use serde_json::Value;
use std::io::{self, Read};
use std::sync::Arc;

const READ_ATTEMPTS: usize = 4;

pub struct AzureStore {
    client: Arc<Client>,
    options: StorageOptions,
}

fn default_tls() -> Result<Arc<rustls::ClientConfig>, StorageError> {
    static TLS: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    TLS.get_or_init(|| crate::remote::tls_config(&[]))
        .clone()
        .map_err(StorageError::Invalid)
}

impl AzureStore {
    pub fn new(
        uri: &StorageUri,
        cred: Credential,
        outbound: &moat_outbound::Outbound,
        options: &StorageOptions,
    ) -> Result<AzureStore, StorageError> {
        let StorageUri::AzureBlob {
            endpoint,
            account,
            container,
            ..
        } = uri
        else {
            return Err(StorageError::Invalid(format!(
                "{uri} is not an Azure Blob Storage URI"
            )));
        };
        let tls = match &options.tls {
            Some(t) => t.clone(),
            None => default_tls()?,
        };
        let agent = outbound.agent(
            concat!("moat-transfer/", env!("CARGO_PKG_VERSION")),
            Some(tls),
        );
        Ok(AzureStore {
            client: Arc::new(Client {
                agent,
                endpoint: endpoint.clone(),
                container: container.clone(),
                auth: Auth::from_credential(cred, account)?,
            }),
            options: StorageOptions {
                block_size: options.block_size.clamp(64 << 10, 4000 << 20),
                parallel: options.parallel.clamp(1, 32),
                tls: None,
                list_page: options.list_page.clamp(1, 5000),
            },
        })
    }

    /// Creates the container (an operator's or a test's step; pipelines expect it to exist, as ACR does).
    /// `false`: it existed already.
    pub fn create_container(&self) -> Result<bool, StorageError> {
        match self
            .client
            .send_retrying(|| Req::new("PUT", None).q("restype", "container"), &[])
        {
            Ok(_) => Ok(true),
            Err(StorageError::Status { status: 409, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), StorageError> {
        if valid_blob_name(name) {
            Ok(())
        } else {
            Err(StorageError::Invalid(format!(
                "'{}' is not a blob name: 1 to 1,024 characters, no control characters, no empty, '.' or '..' segment, not ending in '.' or '/'",
                moat_model::text::escape(name)
            )))
        }
    }

    /// The blob's uncommitted blocks (id, size).
    fn uncommitted(&self, name: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let resp = self.client.send_retrying(
            || {
                Req::new("GET", Some(name))
                    .q("comp", "blocklist")
                    .q("blocklisttype", "uncommitted")
            },
            &[],
        );
        let resp = match resp {
            Err(StorageError::NotFound {
                container: false, ..
            }) => return Ok(vec![]),
            r => r?,
        };
        let body = read_body(resp, &self.client.url(Some(name)))?;
        let mut out = Vec::new();
        for section in xml::elements(&body, "UncommittedBlocks") {
            for b in xml::elements(section, "Block") {
                let id = xml::text(b, "Name").unwrap_or_default();
                let size = xml::text(b, "Size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((id, size));
            }
        }
        Ok(out)
    }
}

fn read_body(resp: ureq::Response, uri: &str) -> Result<String, StorageError> {
    let mut body = String::new();
    resp.into_reader()
        .take(64 << 20)
        .read_to_string(&mut body)
        .map_err(|e| StorageError::Unreachable {
            uri: uri.to_string(),
            why: format!("the answer broke off: {e}"),
        })?;
    Ok(body)
}

fn quoted(etag: &str) -> String {
    if etag.starts_with('"') {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

fn entry_from_xml(blob: &str) -> Option<ArchiveEntry> {
    let name = xml::text(blob, "Name")?;
    let props = xml::elements(blob, "Properties")
        .first()
        .copied()
        .unwrap_or("");
    let metadata = xml::elements(blob, "Metadata")
        .first()
        .map(|m| {
            xml::children(m)
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect()
        })
        .unwrap_or_default();
    Some(ArchiveEntry {
        name,
        size: xml::text(props, "Content-Length")?.parse().ok()?,
        last_modified: parse_http_date(&xml::text(props, "Last-Modified")?)?,
        // List Blobs gives the ETag bare, Get Blob Properties quoted: kept quoted, so both compare equal.
        etag: quoted(&xml::text(props, "Etag").unwrap_or_default()),
        content_md5: xml::text(props, "Content-MD5").filter(|s| !s.is_empty()),
        metadata,
    })
}

impl ArchiveStore for AzureStore {
    fn begin_write(
        &self,
        name: &str,
        resume: Option<Value>,
    ) -> Result<Box<dyn ArchiveWriter>, StorageError> {
        self.check_name(name)?;
        let resumed = match resume.as_ref().and_then(WriterState::from_json) {
            Some(state) => {
                let staged = self.uncommitted(name)?;
                let all_there = state
                    .blocks
                    .iter()
                    .all(|(id, size)| staged.iter().any(|(s, n)| s == id && n == size));
                if all_there {
                    Some(state)
                } else {
                    tracing::warn!(blob = %self.client.url(Some(name)), "the staged blocks of an interrupted export are gone (expired or replaced): writing the archive again from its start");
                    None
                }
            }
            None => {
                // Touching the container now turns a missing container or a refused credential into a clear
                // error before anything is streamed.
                self.client.send_retrying(
                    || {
                        Req::new("GET", None)
                            .q("restype", "container")
                            .q("comp", "list")
                            .q("maxresults", "1")
                    },
                    &[],
                )?;
                None
            }
        };
        Ok(Box::new(AzureWriter::start(
            self.client.clone(),
            name.to_string(),
            resumed,
            &self.options,
        )))
    }

    fn open_read(&self, name: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.check_name(name)?;
        let resp = self
            .client
            .send_retrying(|| Req::new("GET", Some(name)), &[])?;
        let etag = resp.header("etag").map(str::to_string);
        let len = resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        Ok(Box::new(BlobReader {
            client: self.client.clone(),
            name: name.to_string(),
            etag,
            len,
            pos: 0,
            body: Some(Box::new(resp.into_reader())),
        }))
    }

    fn list(&self) -> Result<Vec<ArchiveEntry>, StorageError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let resp = self.client.send_retrying(
                || {
                    let mut r = Req::new("GET", None)
                        .q("restype", "container")
                        .q("comp", "list")
                        .q("include", "metadata")
                        .q("maxresults", self.options.list_page.to_string());
                    if let Some(m) = &marker {
                        r = r.q("marker", m.clone());
                    }
                    r
                },
                &[],
            )?;
            let body = read_body(resp, &self.client.url(None))?;
            out.extend(
                xml::elements(&body, "Blob")
                    .into_iter()
                    .filter_map(entry_from_xml),
            );
            match xml::text(&body, "NextMarker").filter(|m| !m.is_empty()) {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&self, name: &str) -> Result<Option<ArchiveEntry>, StorageError> {
        self.check_name(name)?;
        let resp = match self
            .client
            .send_retrying(|| Req::new("HEAD", Some(name)), &[])
        {
            Err(StorageError::NotFound {
                container: false, ..
            }) => return Ok(None),
            r => r?,
        };
        let metadata = resp
            .headers_names()
            .into_iter()
            .filter_map(|h| {
                let key = h.strip_prefix("x-ms-meta-")?.to_string();
                Some((key, resp.header(&h)?.to_string()))
            })
            .collect();
        let header = |h: &str| resp.header(h).map(str::to_string);
        Ok(Some(ArchiveEntry {
            name: name.to_string(),
            size: header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            last_modified: header("last-modified")
                .and_then(|v| parse_http_date(&v))
                .unwrap_or(std::time::UNIX_EPOCH),
            etag: quoted(&header("etag").unwrap_or_default()),
            content_md5: header("content-md5"),
            metadata,
        }))
    }

    fn delete(&self, name: &str) -> Result<(), StorageError> {
        self.check_name(name)?;
        match self.client.send_retrying(
            || Req::new("DELETE", Some(name)).h("x-ms-delete-snapshots", "include"),
            &[],
        ) {
            Ok(_)
            | Err(StorageError::NotFound {
                container: false, ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn uri_of(&self, name: &str) -> String {
        self.client.url(Some(name))
    }
}

/// Get Blob's body, resumed with a ranged GET after a cut connection.
struct BlobReader {
    client: Arc<Client>,
    name: String,
    etag: Option<String>,
    len: Option<u64>,
    pos: u64,
    body: Option<Box<dyn Read + Send + Sync>>,
}

impl BlobReader {
    fn reopen(&mut self) -> Result<(), StorageError> {
        let (pos, etag, name) = (self.pos, self.etag.clone(), self.name.clone());
        let resp = self.client.send_retrying(
            || {
                let mut r = Req::new("GET", Some(&name)).h("x-ms-range", format!("bytes={pos}-"));
                if let Some(e) = &etag {
                    r = r.h("If-Match", e.clone());
                }
                r
            },
            &[],
        )?;
        self.body = Some(Box::new(resp.into_reader()));
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut attempts = 0;
        loop {
            if self.body.is_none() {
                self.reopen().map_err(StorageError::into_io)?;
            }
            let r = self.body.as_mut().expect("opened").read(out);
            match r {
                Ok(0) if self.len.is_some_and(|l| self.pos < l) => {
                    // ureq ends the body early when the connection closes before Content-Length.
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if attempts + 1 >= READ_ATTEMPTS => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, pos = self.pos, "blob read broke off; resuming");
                }
            }
            attempts += 1;
            if attempts >= READ_ATTEMPTS {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} ended at byte {} of {}",
                        self.client.url(Some(&self.name)),
                        self.pos,
                        self.len.unwrap_or(0)
                    ),
                ));
            }
            self.body = None;
        }
    }
}
