//! Blobs in an object store (Azure Blob Storage; Azurite in the tests) through the `object_store` crate.
//!
//! Layout in the container:
//! - `data/<upload id>`: an upload's bytes. Each chunk is staged as blocks (Put Block) while it streams and is
//!   hashed once on the way; the blocks are committed (Put Block List) before the chunk is acknowledged, so an
//!   upload is an ordinary object, listable and removable by the collector, whose size and age say how it stands.
//! - `blobs/<algorithm>/<hex>/<upload id>`: an empty marker that makes the upload's object the blob `digest`.
//!   The bytes stay where they were staged: committing a blob writes this marker, never a second copy of a large
//!   object (a server-side copy is not atomic in Azure and may run asynchronously, and it doubles the bytes
//!   written). Putting the upload id in the marker's name lets one LIST find a blob's object, and one LIST of
//!   each prefix give the collector every blob with its size.
//! - `trash/<algorithm>-<hex>/<upload id>`: a marker moved out of `blobs/` by the collector.
//!
//! The `BlobStore` trait is synchronous (it is called from blocking threads); each call here runs its requests on
//! the store's own small runtime and waits, so that a call from anywhere — a blocking thread or, for the rare
//! calls the collector makes inline, an async one — cannot starve the server's runtime of the thread it waits on.

mod connect;
mod read;
mod sink;
mod url;

pub use connect::AddressCheck;
pub use url::StorageUrl;

use super::midstate::UploadState;
use super::{BlobStore, UploadWriter};
use futures_util::StreamExt;
use moat_model::{Algorithm, Digest};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use read::redact;
use sha2::{Digest as _, Sha512};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The store could not be reached or refused the request: the server answers `503` with `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error("blob storage {store} is unavailable: {reason}")]
pub struct StorageUnavailable {
    pub store: String,
    pub reason: String,
}

/// Bytes staged per block: large enough that a 1 GiB blob is 128 requests, small enough that the blocks in
/// flight keep an upload's memory low.
const BLOCK: usize = 8 << 20;
/// Blocks of one upload in flight at once (its memory is about `BLOCK * (IN_FLIGHT + 1)`).
const IN_FLIGHT: usize = 3;
/// How many digests' objects are remembered for pulls (each a marker LIST saved).
const LOCATIONS: usize = 65_536;

pub struct ObjectBlobStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    store: Arc<dyn ObjectStore>,
    parts: Arc<dyn MultipartStore>,
    /// Requests run here: see the module comment.
    rt: &'static tokio::runtime::Runtime,
    /// `az://<container>`, for messages.
    name: String,
    /// digest → the upload id whose object holds it.
    located: Mutex<HashMap<Digest, String>>,
}

fn data_path(id: &str) -> Path {
    Path::from(format!("data/{id}"))
}

fn blob_prefix(d: &Digest) -> Path {
    Path::from(format!("blobs/{}/{}", d.algorithm().as_str(), d.hex()))
}

fn trash_prefix(d: &Digest) -> Path {
    Path::from(format!("trash/{}-{}", d.algorithm().as_str(), d.hex()))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

impl ObjectBlobStore {
    /// Connects to the container and checks that it answers: a store that is down or a container that does not
    /// exist fails here, so that `serve` can say so and exit.
    pub fn open(url: &StorageUrl, check: AddressCheck) -> io::Result<ObjectBlobStore> {
        let StorageUrl::Azure { container } = url else {
            return Err(io::Error::other("not an object store URL"));
        };
        // reqwest is built without a default TLS provider: the server's is ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container);
        // A key may come from a file (a mounted secret) rather than the environment, never from the database.
        if let Ok(file) = std::env::var("AZURE_STORAGE_ACCOUNT_KEY_FILE") {
            let key = std::fs::read_to_string(&file).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("reading AZURE_STORAGE_ACCOUNT_KEY_FILE: {e}"),
                )
            })?;
            b = b.with_access_key(key.trim());
        }
        let emulator = std::env::var("AZURE_STORAGE_USE_EMULATOR")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
        // The endpoint object_store will use: the resolver is told its port (it is given only names).
        let endpoint = if emulator {
            Some(
                std::env::var("AZURITE_BLOB_STORAGE_URL")
                    .unwrap_or_else(|_| "http://127.0.0.1:10000".into()),
            )
        } else {
            std::env::var("AZURE_STORAGE_ENDPOINT").ok()
        };
        let plain = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let port = endpoint
            .as_deref()
            .and_then(|e| {
                let authority = e.split("://").nth(1)?.split('/').next()?;
                authority.rsplit_once(':')?.1.parse::<u16>().ok()
            })
            .unwrap_or(if plain { 80 } else { 443 });
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120))
            .with_allow_http(plain)
            .with_dns_resolver(Arc::new(connect::CheckedDns {
                check: std::panic::AssertUnwindSafe(check.clone()),
                port,
            }));
        // A few quick retries: a store that stays down gets a 503 promptly rather than a request that hangs.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        let azure: MicrosoftAzure = b
            .with_client_options(options)
            .with_retry(retry)
            .with_http_connector(connect::CheckedConnector { check })
            .build()
            .map_err(|e| io::Error::other(format!("az://{container}: {e}")))?;
        let azure = Arc::new(azure);
        let rt = Box::leak(Box::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("moat-objstore")
                .enable_all()
                .build()?,
        ));
        let inner = Arc::new(Inner {
            store: azure.clone(),
            parts: azure,
            rt,
            name: format!("az://{container}"),
            located: Mutex::new(HashMap::new()),
        });
        let probe = inner.clone();
        inner.run(async move {
            probe
                .store
                .list_with_delimiter(Some(&Path::from("blobs")))
                .await
                .map_err(|e| probe.err(e))
        })?;
        Ok(ObjectBlobStore { inner })
    }

    /// `az://<container>`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

impl Inner {
    /// Runs `fut` on the store's runtime and waits for it, from any thread.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        let wait = move || {
            rx.recv()
                .expect("the store's runtime runs every task to its end")
        };
        // Called on one of the server's async workers (the collector's few inline calls), the wait hands the
        // worker's other tasks to another thread first: a store that is slow to answer stalls only this call.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// An object_store error as an I/O error: not-found and already-exists keep their kinds; anything else means
    /// the store did not do what was asked, which the server answers with a 503.
    pub(crate) fn err(&self, e: object_store::Error) -> io::Error {
        match e {
            object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
            object_store::Error::AlreadyExists { .. } => {
                io::Error::new(io::ErrorKind::AlreadyExists, e)
            }
            other => io::Error::other(StorageUnavailable {
                store: self.name.clone(),
                reason: redact(&other.to_string()),
            }),
        }
    }

    async fn list(&self, prefix: &Path) -> io::Result<Vec<object_store::ObjectMeta>> {
        let mut out = Vec::new();
        let mut s = self.store.list(Some(prefix));
        while let Some(m) = s.next().await {
            out.push(m.map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    /// The upload ids named by markers under `prefix` (`<prefix>/<id>`).
    async fn marker_ids(&self, prefix: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .filter(|id| valid_id(id))
            .collect())
    }

    async fn delete(&self, path: &Path) -> io::Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Moves markers from one prefix to another (a copy of an empty object, then a delete): false if none.
    async fn move_markers(&self, from: &Path, to: &Path) -> io::Result<bool> {
        let ids = self.marker_ids(from).await?;
        for id in &ids {
            self.store
                .put(&to.clone().join(id.as_str()), PutPayload::new())
                .await
                .map_err(|e| self.err(e))?;
            self.delete(&from.clone().join(id.as_str())).await?;
        }
        Ok(!ids.is_empty())
    }

    /// The upload id whose object holds `d`, if it is stored.
    async fn locate(&self, d: &Digest) -> io::Result<Option<String>> {
        if let Some(id) = self.located.lock().expect("lock").get(d) {
            return Ok(Some(id.clone()));
        }
        let id = self.marker_ids(&blob_prefix(d)).await?.into_iter().min();
        if let Some(id) = &id {
            let mut m = self.located.lock().expect("lock");
            if m.len() >= LOCATIONS {
                m.clear();
            }
            m.insert(d.clone(), id.clone());
        }
        Ok(id)
    }

    fn forget(&self, d: &Digest) {
        self.located.lock().expect("lock").remove(d);
    }
}

impl BlobStore for ObjectBlobStore {
    /// An empty committed object: listable and removable by the collector from the start (blocks staged for an
    /// object with no committed list are invisible, and only expire after a week).
    fn create_upload(&self, id: &str, _durable: bool) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad upload id"));
        }
        let i = self.inner.clone();
        let path = data_path(id);
        self.inner.run(async move {
            i.parts
                .complete_multipart(&path, &String::new(), vec![])
                .await
                .map(|_| ())
                .map_err(|e| i.err(e))
        })
    }

    fn open_upload(
        &self,
        id: &str,
        committed: u64,
        state: Option<UploadState>,
    ) -> io::Result<UploadWriter> {
        let state = match state {
            Some(st) if st.size() == committed => st,
            None if committed == 0 => UploadState::default(),
            // The blocks of the acknowledged chunks are known only from the state the row keeps.
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "this upload's state was not kept: start the upload again",
                ))
            }
        };
        Ok(UploadWriter::new(
            Box::new(sink::BlockSink::new(
                self.inner.clone(),
                data_path(id),
                state.parts,
            )),
            state.hash,
        ))
    }

    /// The upload's blocks are committed by the writer; the blob is the marker naming its object.
    fn commit_upload(&self, id: &str, digest: &Digest) -> io::Result<()> {
        let i = self.inner.clone();
        let (id, digest) = (id.to_string(), digest.clone());
        self.inner.run(async move {
            let prefix = blob_prefix(&digest);
            if !i.marker_ids(&prefix).await?.is_empty() {
                // Same digest, same bytes: the stored copy wins and the upload is dropped.
                return i.delete(&data_path(&id)).await;
            }
            i.store
                .put(&prefix.clone().join(id.as_str()), PutPayload::new())
                .await
                .map_err(|e| i.err(e))?;
            Ok(())
        })
    }

    fn remove_upload(&self, id: &str) -> io::Result<()> {
        let i = self.inner.clone();
        let path = data_path(id);
        self.inner.run(async move {
            // Committing an empty list discards the blocks staged by an unacknowledged chunk; then the object goes.
            match i
                .parts
                .complete_multipart(&path, &String::new(), vec![])
                .await
            {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(i.err(e)),
            }
            i.delete(&path).await
        })
    }

    /// Upload objects no blob marker (live or trashed) names.
    fn list_uploads(&self) -> io::Result<Vec<String>> {
        let i = self.inner.clone();
        self.inner.run(async move {
            let mut named: HashSet<String> = HashSet::new();
            for prefix in ["blobs", "trash"] {
                named.extend(i.marker_ids(&Path::from(prefix)).await?);
            }
            Ok(i.list(&Path::from("data"))
                .await?
                .into_iter()
                .filter_map(|m| m.location.filename().map(str::to_string))
                .filter(|id| valid_id(id) && !named.contains(id))
                .collect())
        })
    }

    fn upload_info(&self, id: &str) -> io::Result<(u64, SystemTime)> {
        let i = self.inner.clone();
        let path = data_path(id);
        self.inner.run(async move {
            let m = i.store.head(&path).await.map_err(|e| i.err(e))?;
            Ok((m.size, SystemTime::from(m.last_modified)))
        })
    }

    fn list_blobs(&self) -> io::Result<Vec<(Digest, u64)>> {
        let i = self.inner.clone();
        self.inner.run(async move {
            let sizes: HashMap<String, u64> = i
                .list(&Path::from("data"))
                .await?
                .into_iter()
                .filter_map(|m| Some((m.location.filename()?.to_string(), m.size)))
                .collect();
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for m in i.list(&Path::from("blobs")).await? {
                let parts: Vec<&str> = m.location.as_ref().split('/').collect();
                let [_, alg, hex, id] = parts[..] else {
                    continue;
                };
                let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() else {
                    continue;
                };
                if seen.insert(d.clone()) {
                    out.push((d, sizes.get(id).copied().unwrap_or(0)));
                }
            }
            Ok(out)
        })
    }

    fn open_blob(&self, digest: &Digest, start: u64, len: u64) -> io::Result<Box<dyn Read + Send>> {
        if len == 0 {
            return Ok(Box::new(io::empty()));
        }
        // A remembered location may be stale (another node collected the blob and a push put it back under
        // another upload's object): on a miss it is looked up once more.
        let mut retried = false;
        loop {
            let i = self.inner.clone();
            let d = digest.clone();
            let Some(id) = self.inner.run(async move { i.locate(&d).await })? else {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{digest} is not stored"),
                ));
            };
            let opts = GetOptions {
                range: Some(GetRange::Bounded(start..start + len)),
                ..GetOptions::default()
            };
            match self.stream(data_path(&id), opts) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && !retried => {
                    self.inner.forget(digest);
                    retried = true;
                }
                r => return Ok(Box::new(r?)),
            }
        }
    }

    /// Asks the store each time: another node may have collected the blob since this one last read it (a
    /// pull's remembered location is only a shortcut, and a GET of a removed object fails as not found).
    fn blob_exists(&self, digest: &Digest) -> bool {
        let i = self.inner.clone();
        let prefix = blob_prefix(digest);
        self.inner
            .run(async move { i.marker_ids(&prefix).await })
            .is_ok_and(|ids| !ids.is_empty())
    }

    fn remove_blob(&self, digest: &Digest) -> io::Result<()> {
        self.inner.forget(digest);
        let i = self.inner.clone();
        let prefix = blob_prefix(digest);
        self.inner.run(async move {
            for id in i.marker_ids(&prefix).await? {
                i.delete(&data_path(&id)).await?;
                i.delete(&prefix.clone().join(id.as_str())).await?;
            }
            Ok(())
        })
    }

    fn trash_blob(&self, digest: &Digest) -> io::Result<bool> {
        self.inner.forget(digest);
        let i = self.inner.clone();
        let (from, to) = (blob_prefix(digest), trash_prefix(digest));
        self.inner
            .run(async move { i.move_markers(&from, &to).await })
    }

    fn list_trash(&self) -> io::Result<Vec<Digest>> {
        let i = self.inner.clone();
        self.inner.run(async move {
            let out: HashSet<Digest> = i
                .list(&Path::from("trash"))
                .await?
                .into_iter()
                .filter_map(|m| {
                    let mut parts = m.location.parts();
                    parts.next()?;
                    let (a, h) = parts
                        .next()?
                        .as_ref()
                        .split_once('-')
                        .map(|(a, h)| (a.to_string(), h.to_string()))?;
                    format!("{a}:{h}").parse().ok()
                })
                .collect();
            Ok(out.into_iter().collect())
        })
    }

    fn restore_blob(&self, digest: &Digest) -> io::Result<()> {
        let i = self.inner.clone();
        let (from, to) = (trash_prefix(digest), blob_prefix(digest));
        self.inner
            .run(async move { i.move_markers(&from, &to).await.map(|_| ()) })
    }

    fn empty_trash(&self, digest: &Digest) -> io::Result<()> {
        let i = self.inner.clone();
        let prefix = trash_prefix(digest);
        self.inner.run(async move {
            for id in i.marker_ids(&prefix).await? {
                i.delete(&data_path(&id)).await?;
                i.delete(&prefix.clone().join(id.as_str())).await?;
            }
            Ok(())
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn digest_upload(&self, id: &str, algorithm: Algorithm) -> io::Result<Digest> {
        if algorithm == Algorithm::Sha256 {
            return Err(io::Error::other("sha256 is computed while streaming"));
        }
        let mut r = self.read_upload(id)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut h = Sha512::new();
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(Digest::from_bytes(Algorithm::Sha512, &h.finalize()))
    }
}
