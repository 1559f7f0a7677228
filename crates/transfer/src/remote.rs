//! Reading an image from another registry over the OCI Distribution API: the token dance (Bearer or Basic
//! challenge), manifests with every media type accepted, and blobs streamed into the blob store, hashed once,
//! written once, verified against their digest, resumed with `Range` after a cut connection, several at a time.
//! Blocking code: the server runs it on a blocking thread.

use crate::artifact::Artifact;
use crate::error::ImportError;
use crate::progress::Progress;
use crate::spec::ImageRef;
use base64::Engine;
use bytes::Bytes;
use moat_model::{Algorithm, Digest, Reference};
use moat_store::blobs::Unverified;
use moat_store::gc::BlobPins;
use moat_store::{BlobStore, ReceivedBlob};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Blobs downloaded at once.
const PARALLEL_BLOBS: usize = 4;
/// Attempts per blob, each resuming where the last one stopped.
const ATTEMPTS: usize = 4;
const CHUNK: usize = 1 << 20;
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Username and password for the source registry (`source.credentials`).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A connection to one remote registry, for one repository.
pub struct Remote {
    agent: ureq::Agent,
    /// `https://host[:port]` or `http://…`
    base: String,
    credentials: Option<Credentials>,
    /// The `Authorization` value that the registry accepted, once the challenge is answered.
    auth: Mutex<Option<String>>,
}

fn is_loopback_host(host: &str) -> bool {
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads the bundles of PEM certificates to trust besides the system's, for a rustls client configuration.
pub fn tls_config(extra: &[std::path::PathBuf]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
    let mut files: Vec<&std::path::Path> = extra.iter().map(|p| p.as_path()).collect();
    if system.exists() {
        files.push(system);
    }
    for path in files {
        let pem = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            let _ = roots.add(cert);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A transport failure, or the outbound connector's refusal it carries.
fn transport(t: ureq::Transport, context: &str) -> ImportError {
    match moat_outbound::refusal(&t) {
        Some(r) => ImportError::Refused(r),
        None if context.is_empty() => ImportError::Remote(t.to_string()),
        None => ImportError::Remote(format!("{context}: {t}")),
    }
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge.
fn challenge_params(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_string();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches(',').trim_start();
        out.push((key, value));
    }
    out
}

fn status_detail(r: ureq::Response) -> String {
    let mut body = String::new();
    let _ = r.into_reader().take(2048).read_to_string(&mut body);
    body.trim().to_string()
}

impl Remote {
    /// Connects to `uri` (`host[:port]`, or with an explicit `http://`/`https://`). A loopback host without a
    /// scheme is tried over HTTPS, then plain HTTP, as docker treats local registries. Every connection goes
    /// through `outbound`, the server's one connector.
    pub fn connect(
        uri: &str,
        credentials: Option<Credentials>,
        outbound: &moat_outbound::Outbound,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Remote, ImportError> {
        let uri = uri.trim().trim_end_matches('/');
        if uri.is_empty() || uri.contains(char::is_whitespace) {
            return Err(ImportError::InvalidInput(format!(
                "registryUri '{uri}' is not a registry address"
            )));
        }
        let (schemes, host): (&[&str], &str) = if let Some(h) = uri.strip_prefix("https://") {
            (&["https"], h)
        } else if let Some(h) = uri.strip_prefix("http://") {
            (&["http"], h)
        } else if is_loopback_host(uri) {
            (&["https", "http"], uri)
        } else {
            (&["https"], uri)
        };
        let host = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let agent = outbound.agent(concat!("moat-import/", env!("CARGO_PKG_VERSION")), tls);
        let mut first_error: Option<String> = None;
        for scheme in schemes {
            let remote = Remote {
                agent: agent.clone(),
                base: format!("{scheme}://{host}"),
                credentials: credentials.clone(),
                auth: Mutex::new(None),
            };
            match agent.get(&format!("{}/v2/", remote.base)).call() {
                Ok(_) | Err(ureq::Error::Status(_, _)) => return Ok(remote),
                Err(ureq::Error::Transport(t)) => {
                    if let Some(r) = moat_outbound::refusal(&t) {
                        return Err(ImportError::Refused(r));
                    }
                    let text = t.to_string();
                    // Plain HTTP only when the peer does not speak TLS at all: a certificate that fails
                    // verification is an answer, and credentials must not then go out in clear.
                    let speaks_tls =
                        !text.contains("InvalidContentType") && !text.contains("corrupt message");
                    let first = first_error.get_or_insert(text);
                    if speaks_tls {
                        return Err(ImportError::Remote(format!("cannot reach {host}: {first}")));
                    }
                }
            }
        }
        Err(ImportError::Remote(format!(
            "cannot reach {host}: {}",
            first_error.unwrap_or_default()
        )))
    }

    /// Answers a `401` challenge: a token from the realm (with the credentials, if any) or Basic.
    fn authenticate(&self, challenge: &str, repo: &str) -> Result<(), ImportError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = self.credentials.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        });
        if scheme.eq_ignore_ascii_case("basic") {
            let basic = basic.ok_or_else(|| {
                ImportError::Unauthorized(
                    "the registry asks for credentials: give source.credentials".into(),
                )
            })?;
            *self.auth.lock().expect("lock") = Some(basic);
            return Ok(());
        }
        let params = challenge_params(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let realm = get("realm")
            .ok_or_else(|| ImportError::Remote(format!("unusable challenge '{challenge}'")))?;
        let mut req = self
            .agent
            .get(&realm)
            .query("scope", &format!("repository:{repo}:pull"));
        if let Some(service) = get("service") {
            req = req.query("service", &service);
        }
        if let Some(b) = &basic {
            req = req.set("Authorization", b);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(401 | 403, r)) => {
                return Err(ImportError::Unauthorized(status_detail(r)))
            }
            Err(ureq::Error::Status(code, r)) => {
                return Err(ImportError::RemoteStatus {
                    url: realm,
                    status: code,
                    detail: status_detail(r),
                })
            }
            Err(ureq::Error::Transport(t)) => return Err(transport(t, "")),
        };
        let body: serde_json::Value = resp
            .into_json()
            .map_err(|e| ImportError::Remote(format!("token endpoint {realm}: {e}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| ImportError::Remote(format!("token endpoint {realm} sent no token")))?;
        *self.auth.lock().expect("lock") = Some(format!("Bearer {token}"));
        Ok(())
    }

    /// One GET on the registry, answering its challenge once. `None` for a 404.
    fn get(
        &self,
        path: &str,
        repo: &str,
        accept: Option<&str>,
        from: u64,
    ) -> Result<Option<ureq::Response>, ImportError> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let mut req = self.agent.get(&url);
            if let Some(a) = self.auth.lock().expect("lock").clone() {
                req = req.set("Authorization", &a);
            }
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if from > 0 {
                req = req.set("Range", &format!("bytes={from}-"));
            }
            match req.call() {
                Ok(r) => return Ok(Some(r)),
                Err(ureq::Error::Status(401, r)) if attempt == 0 => {
                    let challenge = r.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge, repo)?;
                }
                Err(ureq::Error::Status(401, r)) => {
                    return Err(ImportError::Unauthorized(status_detail(r)))
                }
                Err(ureq::Error::Status(404, _)) => return Ok(None),
                Err(ureq::Error::Status(code, r)) => {
                    return Err(ImportError::RemoteStatus {
                        url,
                        status: code,
                        detail: status_detail(r),
                    })
                }
                Err(ureq::Error::Transport(t)) => return Err(transport(t, &url)),
            }
        }
        Err(ImportError::Unauthorized(format!(
            "{url} keeps asking for credentials"
        )))
    }

    /// A manifest's media type and bytes, checked against its digest (the requested one, or the one the registry
    /// names in `Docker-Content-Digest` for a tag).
    fn manifest(
        &self,
        image: &ImageRef,
        reference: &Reference,
    ) -> Result<(Digest, String, Vec<u8>), ImportError> {
        let repo = image.repository.as_str();
        let path = format!("/v2/{repo}/manifests/{reference}");
        let shown = || match reference {
            Reference::Tag(t) => format!("{repo}:{t}"),
            Reference::Digest(d) => format!("{repo}@{d}"),
        };
        let resp = self
            .get(&path, repo, Some(ACCEPT_MANIFESTS), 0)?
            .ok_or_else(|| ImportError::ImageNotFound(shown()))?;
        let media_type = resp.content_type().to_string();
        let named: Option<Digest> = resp
            .header("docker-content-digest")
            .and_then(|d| d.parse().ok());
        let mut body = Vec::new();
        resp.into_reader()
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| ImportError::Remote(format!("reading manifest {}: {e}", shown())))?;
        if body.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ImportError::BadManifest {
                digest: shown(),
                why: "larger than 4 MiB".into(),
            });
        }
        let digest = match (reference, named) {
            (Reference::Digest(d), _) => d.clone(),
            (Reference::Tag(_), Some(d)) => d,
            (Reference::Tag(_), None) => Digest::of(Algorithm::Sha256, &body),
        };
        Ok((digest, media_type, body))
    }

    /// The image's manifests (an index with every child).
    pub fn collect(&self, image: &ImageRef, progress: &Progress) -> Result<Artifact, ImportError> {
        let (digest, media_type, body) = self.manifest(image, &image.reference)?;
        let mut artifact = Artifact::default();
        let mut queue = vec![(digest, media_type, body)];
        while let Some((digest, media_type, body)) = queue.pop() {
            for child in artifact.add(&digest, &media_type, body)? {
                queue.push(self.manifest(image, &Reference::Digest(child))?);
            }
            Progress::add(&progress.manifests, 1);
        }
        Ok(artifact.finish())
    }

    /// Downloads one blob into the store under its digest: hashed once on the way, resumed with `Range` when
    /// the connection is cut, verified before it is named. The proof that it arrived is what lets the import
    /// link it (DESIGN principle 6).
    fn fetch_blob(
        &self,
        f: &Fetch,
        digest: &Digest,
        size: u64,
    ) -> Result<ReceivedBlob, ImportError> {
        let id = uuid::Uuid::new_v4().to_string();
        f.store.create_upload(&id, false)?;
        let result = self.fetch_into(f, &id, digest, size);
        if result.is_err() {
            let _ = f.store.remove_upload(&id);
        }
        result
    }

    fn fetch_into(
        &self,
        f: &Fetch,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<ReceivedBlob, ImportError> {
        let Fetch {
            store,
            repo,
            progress,
            cancel,
            pins,
        } = *f;
        let path = format!("/v2/{repo}/blobs/{digest}");
        let mut writer = store.open_upload(id, 0, None)?;
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            if cancel.load(Ordering::Relaxed) {
                return Err(ImportError::Remote("cancelled".into()));
            }
            let from = writer.size();
            let resp = match self.get(&path, repo, None, from) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Err(ImportError::ImageNotFound(format!(
                        "{repo}@{digest} (blob)"
                    )))
                }
                Err(ImportError::Remote(e)) => {
                    last_error = e;
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if from > 0 && resp.status() != 206 {
                // The registry ignored the range: start over (RFC 7233 is what resuming needs).
                Progress::sub(&progress.bytes_done, from);
                drop(writer);
                store.remove_upload(id)?;
                store.create_upload(id, false)?;
                writer = store.open_upload(id, 0, None)?;
            }
            let mut reader = resp.into_reader();
            let mut cut = false;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    return Err(ImportError::Remote("cancelled".into()));
                }
                let mut buf = Vec::with_capacity(CHUNK);
                match (&mut reader).take(CHUNK as u64).read_to_end(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if writer.size() + n as u64 > size {
                            return Err(ImportError::Remote(format!(
                                "{repo}@{digest}: the registry sent more than the {size} bytes the manifest gives"
                            )));
                        }
                        writer.write(Bytes::from(buf))?;
                        Progress::add(&progress.bytes_done, n as u64);
                    }
                    Err(e) => {
                        last_error = format!("{path}: {e}");
                        cut = true;
                        break;
                    }
                }
            }
            if !cut && writer.size() == size {
                writer.sync()?;
                return ReceivedBlob::commit(store, id, writer.finish()?, digest, pins).map_err(
                    |e| match e {
                        Unverified::Mismatch { actual } => ImportError::DigestMismatch {
                            expected: digest.clone(),
                            actual,
                        },
                        Unverified::Io(e) => e.into(),
                    },
                );
            }
            if !cut {
                last_error = format!(
                    "{path}: the body ended after {} of {size} bytes",
                    writer.size()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(ImportError::Remote(format!(
            "{repo}@{digest}: gave up after {ATTEMPTS} attempts: {last_error}"
        )))
    }

    /// Downloads every blob in `blobs`, `PARALLEL_BLOBS` at a time; the first failure stops the rest. `pins` holds
    /// every one of them against the collector until the import links them. `done` is told of each blob as it is
    /// received (a durable job records it there); when it answers false the downloads stop with
    /// [`ImportError::Stopped`].
    pub fn fetch_blobs(
        &self,
        store: &dyn BlobStore,
        repo: &str,
        blobs: &[(Digest, u64)],
        progress: &Progress,
        pins: &BlobPins,
        done: &(dyn Fn(&ReceivedBlob) -> bool + Sync),
    ) -> Result<Vec<ReceivedBlob>, ImportError> {
        let received = Mutex::new(Vec::with_capacity(blobs.len()));
        let queue = Mutex::new(blobs.iter());
        let cancel = AtomicBool::new(false);
        let fetch = Fetch {
            store,
            repo,
            progress,
            cancel: &cancel,
            pins,
        };
        let first_error: Mutex<Option<ImportError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_BLOBS.min(blobs.len()) {
                s.spawn(|| loop {
                    let Some((digest, size)) = queue.lock().expect("lock").next() else {
                        return;
                    };
                    match self.fetch_blob(&fetch, digest, *size) {
                        Ok(blob) => {
                            let go_on = done(&blob);
                            received.lock().expect("lock").push(blob);
                            Progress::add(&progress.layers_done, 1);
                            if !go_on {
                                cancel.store(true, Ordering::Relaxed);
                                first_error
                                    .lock()
                                    .expect("lock")
                                    .get_or_insert(ImportError::Stopped);
                                return;
                            }
                        }
                        Err(e) => {
                            cancel.store(true, Ordering::Relaxed);
                            first_error.lock().expect("lock").get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        match first_error.into_inner().expect("lock") {
            Some(e) => Err(e),
            None => Ok(received.into_inner().expect("lock")),
        }
    }
}

/// What every blob download of one import shares.
#[derive(Clone, Copy)]
struct Fetch<'a> {
    store: &'a dyn BlobStore,
    repo: &'a str,
    progress: &'a Progress,
    /// Set by the first failure: the other downloads stop.
    cancel: &'a AtomicBool,
    pins: &'a BlobPins,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1], ("service".into(), "registry.example".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull,push".into()));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("registry.example:5000"));
    }
}
