//! `moat-bench`: the same workloads against Moat and against CNCF Distribution (Debian's `docker-registry`),
//! both started here on loopback with fresh data directories, plus this machine's physical limits (single-core
//! SHA-256 and fsync'd disk writes). Prints a table and JSON lines; kills every server it started, also on error.
//! The many-small-requests workloads (2, 3 and 6) use a hand-written HTTP/1.1 client as light as wrk (`raw.rs`), so
//! that on a 2-core machine the client does not take the CPU the server needs. Workload 6 is Moat's alone: workload
//! 3's manifest GET with the default network settings, then behind 100 IP rules set over Moat's ARM API, then
//! through a private endpoint (127.0.0.2) with 100 IP rules that admit no one. Workload 7 is ACR's `importImage`: a
//! remote import of a 10-layer image from Distribution into a fresh Moat against `skopeo copy` of the same image
//! between the same two servers, and the latency of a same-server (zero copy) import of a large and a 1 KiB image.
//! Workload 8 is a login flood against Moat alone (`logins.rs`): peak RSS and the right logins' p99. Workload 9 is
//! garbage collection of 100,000 blobs, half unreferenced, while 4 KiB pushes run (`gc.rs`): the pushes' rate during
//! the collection against without it, and the collection's duration. Workload 10 is ACR Transfer (`transfer.rs`),
//! 11 the audit trail (`audit_trail.rs`), 12 the monitoring sinks' cost to the data plane (`monitoring.rs`).
//!
//! `cargo run --release -p moat-bench -- [--quick]` or `scripts/bench [--quick]`.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::RngCore;
use sha2::{Digest as _, Sha256};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

mod audit_trail;
mod gc;
mod logins;
mod monitoring;
mod raw;
mod transfer;

const MIB: f64 = 1024.0 * 1024.0;
const FRAME: usize = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// No single server workload may take longer than this: the bench always stops by itself.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(600);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------------------------
// Sizes

struct Sizes {
    quick: bool,
    /// The large blob (workload 1); the RSS push (workload 4) streams it `RSS_REPEAT` times.
    large: usize,
    small_count: usize,
    small_size: usize,
    concurrency: usize,
    manifest_secs: f64,
    pull_repeats: usize,
    /// Workloads 2 and 3 alternate Moat and Distribution this many times; the best round of each is kept.
    rounds: usize,
    disk_bytes: u64,
    /// Workload 7c: same-server imports per image (the best and the median are reported).
    import_calls: usize,
}

const RSS_REPEAT: u64 = 4;

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                quick,
                large: 64 << 20,
                small_count: 200,
                small_size: 4096,
                concurrency: 16,
                manifest_secs: 1.0,
                pull_repeats: 1,
                rounds: 1,
                disk_bytes: 256 << 20,
                import_calls: 5,
            }
        } else {
            Sizes {
                quick,
                large: 1 << 30,
                small_count: 1000,
                small_size: 4096,
                concurrency: 16,
                manifest_secs: 5.0,
                pull_repeats: 3,
                rounds: 2,
                disk_bytes: 1 << 30,
                import_calls: 10,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Request bodies: nothing, one buffer, or a buffer streamed cyclically up to a length (zero-copy slices).

enum BenchBody {
    Full(Option<Bytes>),
    Repeat {
        data: Bytes,
        pos: usize,
        remaining: u64,
    },
}

impl BenchBody {
    fn empty() -> Self {
        BenchBody::Full(None)
    }
    fn full(b: Bytes) -> Self {
        BenchBody::Full(if b.is_empty() { None } else { Some(b) })
    }
    fn repeat(data: Bytes, len: u64) -> Self {
        BenchBody::Repeat {
            data,
            pos: 0,
            remaining: len,
        }
    }
    fn len(&self) -> u64 {
        match self {
            BenchBody::Full(b) => b.as_ref().map_or(0, |b| b.len() as u64),
            BenchBody::Repeat { remaining, .. } => *remaining,
        }
    }
}

impl Body for BenchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            BenchBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BenchBody::Repeat {
                data,
                pos,
                remaining,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = FRAME.min(data.len() - *pos).min(*remaining as usize);
                let s = data.slice(*pos..*pos + n);
                *pos = (*pos + n) % data.len();
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(s))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Servers: child processes killed (and their directories removed) on drop.

struct Server {
    name: &'static str,
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Server {
    /// Spawns `cmd` with its output in `<dir>/<log>` and waits until it listens on `port` (and `file` exists).
    async fn start(
        name: &'static str,
        cmd: Command,
        dir: PathBuf,
        log: &str,
        port: u16,
        file: Option<PathBuf>,
    ) -> Result<Server> {
        let log = dir.join(log);
        let child = spawn(cmd, &log)?;
        let mut s = Server {
            name,
            child,
            dir,
            log,
            port,
        };
        s.wait_ready(file).await?;
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        file_tail(&self.log)
    }

    /// Waits until the port accepts connections (and, for TLS, the CA file exists).
    async fn wait_ready(&mut self, file: Option<PathBuf>) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during startup ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let port_ok = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
                .await
                .is_ok();
            if port_ok && file.as_ref().is_none_or(|f| f.exists()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on 127.0.0.1:{} within {:?}; log:\n{}",
                    self.name,
                    self.port,
                    STARTUP_TIMEOUT,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last 20 lines of a log file.
fn file_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Spawns with the log file as stdout/stderr; the child is killed if this process dies first.
fn spawn(mut cmd: Command, log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))
}

struct Env {
    /// All temporary directories (server data, the disk test file) live under here.
    base: PathBuf,
    moat_bin: PathBuf,
    dist_bin: PathBuf,
    /// Workload 7b's client.
    skopeo_bin: PathBuf,
    counter: AtomicUsize,
}

impl Env {
    fn fresh_dir(&self, what: &str) -> Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let d = self.base.join(format!("{what}-{n}"));
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// The Moat binary with the bench's admin password and none of the caller's `MOAT_*` settings.
    fn moat_command(&self) -> Command {
        let mut cmd = Command::new(&self.moat_bin);
        cmd.env("MOAT_ADMIN_PASSWORD", "bench");
        for v in [
            "MOAT_DATA_DIR",
            "MOAT_LISTEN",
            "MOAT_DOMAIN",
            "MOAT_DATABASE_URL",
            "MOAT_INSECURE_HTTP",
            "MOAT_TLS_CERT",
            "MOAT_TLS_KEY",
        ] {
            cmd.env_remove(v);
        }
        cmd
    }

    async fn start_moat(&self, tls: bool) -> Result<Server> {
        self.start_moat_with(tls, &[]).await
    }

    /// Moat with extra `serve` flags.
    async fn start_moat_with(&self, tls: bool, extra: &[&str]) -> Result<Server> {
        let dir = self.fresh_dir(if tls { "moat-tls" } else { "moat" })?;
        let data = dir.join("data");
        let port = free_port()?;
        let mut cmd = self.moat_command();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        if !tls {
            cmd.arg("--insecure-http");
        }
        cmd.args(extra);
        let ca = tls.then(|| data.join("tls").join("ca.pem"));
        Server::start("moat", cmd, dir, "server.log", port, ca).await
    }

    async fn start_distribution(&self) -> Result<Server> {
        let dir = self.fresh_dir("distribution")?;
        let port = free_port()?;
        let config = dir.join("config.yml");
        // Debian's stock config minus auth and the public listener: filesystem storage, deletes enabled and the
        // in-memory blob descriptor cache; warn-level logs without the access log.
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("reg").display()
            ),
        )?;
        let mut cmd = Command::new(&self.dist_bin);
        cmd.arg("serve").arg(&config);
        Server::start("distribution", cmd, dir, "server.log", port, None).await
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Registry clients: a pooled keep-alive HTTP/1.1 client, or one TLS connection (sequential requests). Workloads 2
// and 3 hammer the server through `raw::Conn` instead (see below); these clients set up their data.

type PlainClient = Client<HttpConnector, BenchBody>;

enum Transport {
    Pool(Box<PlainClient>),
    Tls(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<BenchBody>>),
}

struct Reg {
    /// `http://127.0.0.1:<port>` or `https://…`
    base: String,
    host: String,
    port: u16,
    /// The address connections go to (the login server's, or a private endpoint's).
    ip: std::net::IpAddr,
    transport: Transport,
    /// `Some` for Moat: the admin credentials for the token service.
    moat: bool,
}

fn plain_client() -> PlainClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(conn)
}

async fn tls_sender(
    port: u16,
    ca: &Path,
) -> Result<hyper::client::conn::http1::SendRequest<BenchBody>> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c?)?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::from(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
    let tls = connector
        .connect(name, tcp)
        .await
        .context("TLS handshake with Moat's local CA as the only root")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A failed expectation, quoted precisely: request, status, body.
async fn unexpected(
    method: &Method,
    url: &str,
    resp: Response<Incoming>,
    wanted: &str,
) -> anyhow::Error {
    let status = resp.status();
    let body = match resp.into_body().collect().await {
        Ok(b) => {
            let b = b.to_bytes();
            let s = String::from_utf8_lossy(&b[..b.len().min(2048)]).into_owned();
            s
        }
        Err(e) => format!("<body unreadable: {e}>"),
    };
    anyhow!("{method} {url} -> {status} (wanted {wanted}); body: {body}")
}

impl Reg {
    fn plain(server: &Server) -> Reg {
        Reg {
            base: format!("http://127.0.0.1:{}", server.port),
            host: format!("127.0.0.1:{}", server.port),
            port: server.port,
            ip: [127, 0, 0, 1].into(),
            transport: Transport::Pool(Box::new(plain_client())),
            moat: server.name == "moat",
        }
    }

    async fn tls(server: &Server, ca: &Path) -> Result<Reg> {
        Ok(Reg {
            base: format!("https://127.0.0.1:{}", server.port),
            host: format!("127.0.0.1:{}", server.port),
            port: server.port,
            ip: [127, 0, 0, 1].into(),
            transport: Transport::Tls(tokio::sync::Mutex::new(tls_sender(server.port, ca).await?)),
            moat: true,
        })
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        auth: Option<&HeaderValue>,
        headers: &[(HeaderName, &str)],
        body: BenchBody,
    ) -> Result<Response<Incoming>> {
        let url = self.url(path_or_url);
        let len = body.len();
        let mut b = Request::builder().method(method.clone());
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
        match &self.transport {
            Transport::Pool(_) => b = b.uri(uri).header(hyper::header::HOST, &self.host),
            Transport::Tls(_) => {
                let pq = uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into());
                b = b.uri(pq).header(hyper::header::HOST, &self.host);
            }
        }
        if let Some(a) = auth {
            b = b.header(hyper::header::AUTHORIZATION, a.clone());
        }
        for (k, v) in headers {
            b = b.header(k, *v);
        }
        if method == Method::POST || method == Method::PUT || method == Method::PATCH {
            b = b.header(hyper::header::CONTENT_LENGTH, len);
        }
        let req = b.body(body)?;
        let resp = match &self.transport {
            Transport::Pool(c) => c
                .request(req)
                .await
                .map_err(|e| anyhow!("{method} {url}: {e:?}"))?,
            Transport::Tls(s) => {
                let mut s = s.lock().await;
                s.ready()
                    .await
                    .map_err(|e| anyhow!("{method} {url}: connection: {e}"))?;
                s.send_request(req)
                    .await
                    .map_err(|e| anyhow!("{method} {url}: {e:?}"))?
            }
        };
        Ok(resp)
    }

    /// Sends and checks the status; the response body is read and dropped. Returns the headers.
    async fn expect(
        &self,
        method: Method,
        path_or_url: &str,
        auth: Option<&HeaderValue>,
        headers: &[(HeaderName, &str)],
        body: BenchBody,
        wanted: StatusCode,
    ) -> Result<HeaderMap> {
        let url = self.url(path_or_url);
        let resp = self.send(method.clone(), &url, auth, headers, body).await?;
        if resp.status() != wanted {
            return Err(unexpected(&method, &url, resp, wanted.as_str()).await);
        }
        let (parts, body) = resp.into_parts();
        body.collect()
            .await
            .map_err(|e| anyhow!("{method} {url}: reading the body: {e}"))?;
        Ok(parts.headers)
    }

    /// The `Authorization` value for a repository: a bearer token from Moat's token service, nothing for
    /// Distribution (which runs without auth).
    async fn authorize(&self, repo: &str) -> Result<Option<HeaderValue>> {
        if !self.moat {
            return Ok(None);
        }
        use base64::Engine as _;
        let basic = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:bench")
        ))?;
        let path = format!(
            "/oauth2/token?service={}&scope=repository:{repo}:pull,push",
            self.host
        );
        let url = self.url(&path);
        let resp = self
            .send(Method::GET, &path, Some(&basic), &[], BenchBody::empty())
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(unexpected(&Method::GET, &url, resp, "200").await);
        }
        let body = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value =
            serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
        let token = v
            .get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| anyhow!("GET {url}: no token in {}", String::from_utf8_lossy(&body)))?;
        Ok(Some(HeaderValue::from_str(&format!("Bearer {token}"))?))
    }

    /// Monolithic upload of one streamed body: `POST /blobs/uploads/`, then `PUT <location>?digest=`.
    async fn push_post_put(
        &self,
        repo: &str,
        auth: Option<&HeaderValue>,
        body: BenchBody,
        digest: &str,
    ) -> Result<()> {
        let h = self
            .expect(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                auth,
                &[],
                BenchBody::empty(),
                StatusCode::ACCEPTED,
            )
            .await?;
        let loc = location(&h)?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        self.expect(
            Method::PUT,
            &format!("{loc}{sep}digest={digest}"),
            auth,
            &[(hyper::header::CONTENT_TYPE, "application/octet-stream")],
            body,
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    /// A small blob: `POST ?digest=` with the body; if the server answers 202 (no monolithic POST), `PUT` it.
    async fn push_small(
        &self,
        repo: &str,
        auth: Option<&HeaderValue>,
        data: &Bytes,
        digest: &str,
    ) -> Result<()> {
        let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        let url = self.url(&path);
        let ct = [(hyper::header::CONTENT_TYPE, "application/octet-stream")];
        let resp = self
            .send(
                Method::POST,
                &path,
                auth,
                &ct,
                BenchBody::full(data.clone()),
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                resp.into_body().collect().await?;
                Ok(())
            }
            StatusCode::ACCEPTED => {
                let (parts, body) = resp.into_parts();
                body.collect().await?;
                let loc = location(&parts.headers)?;
                let sep = if loc.contains('?') { '&' } else { '?' };
                self.expect(
                    Method::PUT,
                    &format!("{loc}{sep}digest={digest}"),
                    auth,
                    &ct,
                    BenchBody::full(data.clone()),
                    StatusCode::CREATED,
                )
                .await?;
                Ok(())
            }
            _ => Err(unexpected(&Method::POST, &url, resp, "201 or 202").await),
        }
    }

    /// `GET` a blob, discarding the bytes; returns how many arrived. Follows one redirect.
    async fn pull(&self, repo: &str, auth: Option<&HeaderValue>, digest: &str) -> Result<u64> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let mut url = self.url(&path);
        let mut resp = self
            .send(Method::GET, &url, auth, &[], BenchBody::empty())
            .await?;
        if resp.status().is_redirection() {
            let loc = location(resp.headers())?;
            resp.into_body().collect().await?;
            url = self.url(&loc);
            resp = self
                .send(Method::GET, &url, None, &[], BenchBody::empty())
                .await?;
        }
        if resp.status() != StatusCode::OK {
            return Err(unexpected(&Method::GET, &url, resp, "200").await);
        }
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| anyhow!("GET {url}: body after {n} bytes: {e}"))?;
            if let Some(d) = f.data_ref() {
                n += d.len() as u64;
            }
        }
        Ok(n)
    }
}

fn location(h: &HeaderMap) -> Result<String> {
    h.get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no Location header in {h:?}"))
}

fn sha256_hex(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB / d.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------------------------
// Data prepared once (not timed)

struct Data {
    /// Random bytes of the large blob; the RSS push streams it `RSS_REPEAT` times.
    large: Bytes,
    large_digest: String,
    rss_digest: String,
    small: Vec<(Bytes, String)>,
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::SeedableRng;
    let mut v = vec![0u8; n];
    // Two generators in parallel (2 cores), each on one half.
    let (a, b) = v.split_at_mut(n / 2);
    std::thread::scope(|s| {
        s.spawn(|| rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(a));
        s.spawn(|| rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15).fill_bytes(b));
    });
    v
}

// ---------------------------------------------------------------------------------------------------------------
// Workloads. Each returns figures for one server; `Server`s are dropped (killed) when a workload ends.

#[derive(Default, Clone, Copy)]
struct LargeFig {
    push: f64,
    pull: f64,
}

async fn large_blob(reg: &Reg, d: &Data, sizes: &Sizes, repo: &str) -> Result<LargeFig> {
    let auth = reg.authorize(repo).await?;
    let t = Instant::now();
    reg.push_post_put(
        repo,
        auth.as_ref(),
        BenchBody::repeat(d.large.clone(), d.large.len() as u64),
        &d.large_digest,
    )
    .await?;
    let push = mib_s(d.large.len() as u64, t.elapsed());
    let mut pull: f64 = 0.0;
    for _ in 0..sizes.pull_repeats {
        let t = Instant::now();
        let n = reg.pull(repo, auth.as_ref(), &d.large_digest).await?;
        let el = t.elapsed();
        if n != d.large.len() as u64 {
            bail!(
                "GET /v2/{repo}/blobs/{}: {n} bytes, wanted {}",
                d.large_digest,
                d.large.len()
            );
        }
        pull = pull.max(mib_s(n, el));
    }
    Ok(LargeFig { push, pull })
}

#[derive(Default, Clone, Copy)]
struct SmallFig {
    push: f64,
    pull: f64,
}

/// `Authorization: …\r\n` for hand-written requests (empty for Distribution).
fn auth_line(auth: Option<&HeaderValue>) -> Result<String> {
    Ok(match auth {
        Some(a) => format!("Authorization: {}\r\n", a.to_str()?),
        None => String::new(),
    })
}

/// Opens `n` raw keep-alive connections (before any timing starts).
async fn raw_conns(reg: &Reg, n: usize) -> Result<Vec<raw::Conn>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(raw::Conn::connect_to((reg.ip, reg.port).into()).await?);
    }
    Ok(v)
}

/// Reads a response head and checks its status; anything else fails, quoting the request and the body.
async fn raw_expect(
    c: &mut raw::Conn,
    what: impl Fn(&raw::Conn) -> String,
    wanted: &[u16],
) -> Result<raw::Head> {
    let h = match c.read_head().await {
        Ok(h) => h,
        Err(e) => return Err(e.context(what(c))),
    };
    if !wanted.contains(&h.status) {
        let body = c.body_text(&h).await;
        bail!(
            "{} -> {} (wanted {wanted:?}); body: {body}",
            what(c),
            h.status
        );
    }
    Ok(h)
}

/// Workload 2 over the raw client: each connection takes the next blob; a push is `POST ?digest=` with the body
/// (plus `PUT <Location>&digest=` when the server answers 202), a pull a `GET` whose length is checked.
async fn small_blobs(reg: Arc<Reg>, d: Arc<Data>, sizes: &Sizes) -> Result<SmallFig> {
    let repo = "bench/small";
    let auth = Arc::new(auth_line(reg.authorize(repo).await?.as_ref())?);
    let n = d.small.len();
    let run = |pull: bool| {
        let (reg, d, auth) = (reg.clone(), d.clone(), auth.clone());
        async move {
            let conns = raw_conns(&reg, sizes.concurrency).await?;
            let next = Arc::new(AtomicUsize::new(0));
            let t = Instant::now();
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|mut c| {
                    let (reg, d, next, auth) = (reg.clone(), d.clone(), next.clone(), auth.clone());
                    tokio::spawn(async move {
                        let host = reg.host.as_str();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= d.small.len() {
                                return Ok::<_, anyhow::Error>(());
                            }
                            let (bytes, digest) = &d.small[i];
                            c.out.clear();
                            if pull {
                                write!(c.out, "GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n")?;
                                c.send_out().await?;
                                let h = raw_expect(&mut c, |_| format!("GET /v2/{repo}/blobs/{digest}"), &[200]).await?;
                                let got = c.skip_body(&h).await?;
                                if got != bytes.len() as u64 {
                                    bail!("GET /v2/{repo}/blobs/{digest}: {got} bytes, wanted {}", bytes.len());
                                }
                                continue;
                            }
                            write!(
                                c.out,
                                "POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                                bytes.len()
                            )?;
                            c.out.extend_from_slice(bytes);
                            c.send_out().await?;
                            let h = raw_expect(&mut c, |_| format!("POST /v2/{repo}/blobs/uploads/?digest={digest}"), &[201, 202]).await?;
                            c.skip_body(&h).await?;
                            if h.status == 202 {
                                // No monolithic POST: PUT the bytes to the upload's Location.
                                let path = raw::same_host_path(&c.location, host)?;
                                let sep = if path.contains('?') { '&' } else { '?' };
                                c.out.clear();
                                write!(
                                    c.out,
                                    "PUT {path}{sep}digest={digest} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                                    bytes.len()
                                )?;
                                c.out.extend_from_slice(bytes);
                                c.send_out().await?;
                                let h = raw_expect(&mut c, |_| format!("PUT <the 202's Location>{sep}digest={digest}"), &[201]).await?;
                                c.skip_body(&h).await?;
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            Ok::<_, anyhow::Error>(n as f64 / t.elapsed().as_secs_f64())
        }
    };
    let push = run(false).await?;
    let pull = run(true).await?;
    Ok(SmallFig { push, pull })
}

/// Workload 3's target: a pushed image whose manifest is fetched by tag, and the pre-serialized request for it.
struct ManifestTarget {
    reg: Arc<Reg>,
    path: String,
    auth: Option<HeaderValue>,
    /// `GET <path>` with the bearer token and the OCI `Accept`, ready for `raw::Conn::send`.
    request: Arc<[u8]>,
    /// The manifest's length: every 200 must carry exactly this many bytes.
    want: u64,
}

/// Pushes a config, a layer and a manifest tagged `latest`, then checks one GET (digest and bytes).
async fn manifest_setup(reg: Arc<Reg>) -> Result<ManifestTarget> {
    let repo = "bench/manifest";
    let auth = reg.authorize(repo).await?;
    let layer = Bytes::from(random_bytes(4096, 7));
    let layer_digest = sha256_hex(&layer);
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    ));
    let config_digest = sha256_hex(&config);
    reg.push_small(repo, auth.as_ref(), &config, &config_digest)
        .await?;
    reg.push_small(repo, auth.as_ref(), &layer, &layer_digest)
        .await?;
    let manifest = Bytes::from(format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    ));
    let manifest_digest = sha256_hex(&manifest);
    let path = format!("/v2/{repo}/manifests/latest");
    reg.expect(
        Method::PUT,
        &path,
        auth.as_ref(),
        &[(hyper::header::CONTENT_TYPE, OCI_MANIFEST)],
        BenchBody::full(manifest.clone()),
        StatusCode::CREATED,
    )
    .await?;
    // One checked GET: the digest and the bytes come back.
    let url = reg.url(&path);
    let resp = reg
        .send(
            Method::GET,
            &path,
            auth.as_ref(),
            &[(hyper::header::ACCEPT, OCI_MANIFEST)],
            BenchBody::empty(),
        )
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(unexpected(&Method::GET, &url, resp, "200").await);
    }
    let dcd = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.into_body().collect().await?.to_bytes();
    if body != manifest || dcd != manifest_digest {
        bail!("GET {url}: got {} bytes with Docker-Content-Digest '{dcd}', wanted the {} bytes pushed ({manifest_digest})", body.len(), manifest.len());
    }
    let request: Arc<[u8]> = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{}Accept: {OCI_MANIFEST}\r\n\r\n",
        reg.host,
        auth_line(auth.as_ref())?
    )
    .into_bytes()
    .into();
    Ok(ManifestTarget {
        reg,
        path,
        auth,
        request,
        want: manifest.len() as u64,
    })
}

impl ManifestTarget {
    /// The same request, sent to another address (a private endpoint) with the same Host.
    fn via(&self, reg: Arc<Reg>) -> ManifestTarget {
        ManifestTarget {
            reg,
            path: self.path.clone(),
            auth: self.auth.clone(),
            request: self.request.clone(),
            want: self.want,
        }
    }

    /// One GET through the pooled client (not the raw one) that must answer `wanted`.
    async fn check(&self, wanted: StatusCode) -> Result<()> {
        self.reg
            .expect(
                Method::GET,
                &self.path,
                self.auth.as_ref(),
                &[(hyper::header::ACCEPT, OCI_MANIFEST)],
                BenchBody::empty(),
                wanted,
            )
            .await?;
        Ok(())
    }

    /// `concurrency` raw keep-alive connections, each sending the same pre-serialized request as soon as the previous
    /// response has been read, for `secs`; only 200s with the pushed manifest's length count, anything else fails.
    /// Returns requests per second.
    async fn hammer(&self, concurrency: usize, secs: f64) -> Result<f64> {
        let conns = raw_conns(&self.reg, concurrency).await?;
        let t = Instant::now();
        let deadline = t + Duration::from_secs_f64(secs);
        let want = self.want;
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                let (request, path) = (self.request.clone(), self.path.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        c.send(&request).await?;
                        let h = raw_expect(&mut c, |_| format!("GET {path}"), &[200]).await?;
                        let got = c.skip_body(&h).await?;
                        if got != want {
                            bail!("GET {path}: {got} bytes, wanted {want}");
                        }
                        n += 1;
                    }
                    Ok::<_, anyhow::Error>(n)
                })
            })
            .collect();
        let mut count = 0u64;
        for task in tasks {
            count += task.await??;
        }
        Ok(count as f64 / t.elapsed().as_secs_f64())
    }

    /// A warm-up (not counted), then the measured run of `sizes.manifest_secs`.
    async fn measure(&self, sizes: &Sizes) -> Result<f64> {
        self.hammer(sizes.concurrency, (sizes.manifest_secs / 5.0).max(0.3))
            .await?;
        self.hammer(sizes.concurrency, sizes.manifest_secs).await
    }
}

async fn manifest_get(reg: Arc<Reg>, sizes: &Sizes) -> Result<f64> {
    manifest_setup(reg).await?.measure(sizes).await
}

// Workload 6: the same GET through 100 IP rules, configured over Moat's ARM API.

/// How many IP rules (b) configures; 127.0.0.1 is allowed only by the last one.
const IP_RULES: usize = 100;

#[derive(Default, Clone, Copy)]
struct RulesFig {
    /// (a) the registry's default network settings: no rules.
    open: f64,
    /// (b) `defaultAction: Deny` and `IP_RULES` rules, the loopback client allowed by the last.
    rules: f64,
    /// (c) through an approved private endpoint (127.0.0.2), `IP_RULES` rules none of which admits the client.
    private: f64,
}

/// `defaultAction: Deny` with `n - 1` IP rules `10.0.0.0/24`, `10.0.1.0/24`, … (none contains 127.0.0.1), then
/// `127.0.0.1/32` as the `n`th if `allow_loopback`.
fn deny_rules(n: usize, allow_loopback: bool) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = (0..n - 1)
        .map(|i| serde_json::json!({"action": "Allow", "value": format!("10.{}.{}.0/24", i / 256, i % 256)}))
        .collect();
    if allow_loopback {
        rules.push(serde_json::json!({"action": "Allow", "value": "127.0.0.1/32"}));
    }
    serde_json::json!({"defaultAction": "Deny", "ipRules": rules})
}

/// Moat's management API (ARM) on the same listener, as a service principal with the Owner role.
struct Arm<'a> {
    reg: &'a Reg,
    bearer: HeaderValue,
    /// `/subscriptions/<sub>/resourceGroups/moat/providers/Microsoft.ContainerRegistry/registries/default`
    registry: String,
}

const ARM_API: &str = "api-version=2025-11-01";

/// Sends a JSON (or form) request and returns the parsed JSON answer, failing on any status but `wanted`.
async fn json_call(
    reg: &Reg,
    method: Method,
    path: &str,
    auth: Option<&HeaderValue>,
    content_type: &str,
    body: Bytes,
    wanted: StatusCode,
) -> Result<serde_json::Value> {
    let url = reg.url(path);
    let headers = [(hyper::header::CONTENT_TYPE, content_type)];
    let resp = reg
        .send(
            method.clone(),
            path,
            auth,
            if body.is_empty() { &[] } else { &headers },
            BenchBody::full(body),
        )
        .await?;
    if resp.status() != wanted {
        return Err(unexpected(&method, &url, resp, wanted.as_str()).await);
    }
    let b = resp.into_body().collect().await?.to_bytes();
    serde_json::from_slice(&b).with_context(|| {
        format!(
            "{method} {url}: answer is not JSON: {}",
            String::from_utf8_lossy(&b[..b.len().min(2048)])
        )
    })
}

impl<'a> Arm<'a> {
    /// `moat sp create` against the running server's data dir, the client-credentials token, the subscription.
    async fn login(env: &Env, server: &Server, reg: &'a Reg) -> Result<Arm<'a>> {
        let mut cmd = env.moat_command();
        cmd.args([
            "sp",
            "create",
            "--name",
            "bench",
            "--role",
            "Owner",
            "--insecure-http",
        ])
        .arg("--data-dir")
        .arg(server.dir.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", server.port))
        .stdin(Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "moat sp create: {}; stdout: {text}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let sp: serde_json::Value = serde_json::from_str(text.trim())
            .with_context(|| format!("moat sp create: not JSON: {text}"))?;
        let field = |k: &str| {
            sp.get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("moat sp create: no '{k}' in {text}"))
        };
        let (app_id, password, tenant) = (field("appId")?, field("password")?, field("tenant")?);
        let form = format!(
            "grant_type=client_credentials&client_id={app_id}&client_secret={}&scope=https%3A%2F%2Fmanagement.azure.com%2F.default",
            form_escape(&password)
        );
        let path = format!("/{tenant}/oauth2/v2.0/token");
        let tok = json_call(
            reg,
            Method::POST,
            &path,
            None,
            "application/x-www-form-urlencoded",
            Bytes::from(form),
            StatusCode::OK,
        )
        .await?;
        let token = tok
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("POST {path}: no access_token in {tok}"))?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
        let path = "/subscriptions?api-version=2022-12-01";
        let subs = json_call(
            reg,
            Method::GET,
            path,
            Some(&bearer),
            "",
            Bytes::new(),
            StatusCode::OK,
        )
        .await?;
        let sub = subs
            .pointer("/value/0/subscriptionId")
            .and_then(|v| v.as_str())
            .ok_or_else(|| anyhow!("GET {path}: no value[0].subscriptionId in {subs}"))?;
        Ok(Arm {
            reg,
            bearer,
            registry: format!("/subscriptions/{sub}/resourceGroups/moat/providers/Microsoft.ContainerRegistry/registries/default"),
        })
    }

    /// Creates an (auto-approved) private endpoint of the registry listening on `ip`.
    async fn create_private_endpoint(&self, ip: &str) -> Result<()> {
        let sub = self.registry.split('/').nth(2).unwrap_or_default();
        let path = format!("/subscriptions/{sub}/resourceGroups/moat/providers/Microsoft.Network/privateEndpoints/bench?api-version=2024-05-01");
        let body = serde_json::json!({"location": "local", "properties": {
            "privateLinkServiceConnections": [{"name": "bench", "properties": {"privateLinkServiceId": self.registry, "groupIds": ["registry"]}}],
            "ipConfigurations": [{"name": "registry", "properties": {"privateIPAddress": ip}}],
        }});
        json_call(
            self.reg,
            Method::PUT,
            &path,
            Some(&self.bearer),
            "application/json",
            Bytes::from(body.to_string()),
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    /// The registry's `properties.networkRuleSet`.
    async fn network_rule_set(&self) -> Result<serde_json::Value> {
        let path = format!("{}?{ARM_API}", self.registry);
        let r = json_call(
            self.reg,
            Method::GET,
            &path,
            Some(&self.bearer),
            "",
            Bytes::new(),
            StatusCode::OK,
        )
        .await?;
        r.pointer("/properties/networkRuleSet")
            .cloned()
            .ok_or_else(|| anyhow!("GET {path}: no properties.networkRuleSet in {r}"))
    }

    /// PATCHes `properties.networkRuleSet` and checks that the answer carries the rules asked for.
    async fn set_network_rule_set(&self, set: &serde_json::Value) -> Result<()> {
        let path = format!("{}?{ARM_API}", self.registry);
        let body = serde_json::json!({"properties": {"networkRuleSet": set}});
        let r = json_call(
            self.reg,
            Method::PATCH,
            &path,
            Some(&self.bearer),
            "application/json",
            Bytes::from(body.to_string()),
            StatusCode::OK,
        )
        .await?;
        let got = r.pointer("/properties/networkRuleSet");
        let same = |k: &str| got.and_then(|g| g.get(k)) == set.get(k);
        if !same("defaultAction") || !same("ipRules") {
            bail!(
                "PATCH {path}: asked for networkRuleSet {set}, the answer has {}",
                got.map_or("none".into(), |g| g.to_string())
            );
        }
        Ok(())
    }

    /// Creates a Premium registry in resource group `rg1` and returns its ARM id.
    async fn create_registry(&self, name: &str) -> Result<String> {
        let sub = self.registry.split('/').nth(2).unwrap_or_default();
        let id = format!(
            "/subscriptions/{sub}/resourceGroups/rg1/providers/Microsoft.ContainerRegistry/registries/{name}"
        );
        let body = serde_json::json!({"location": "local", "sku": {"name": "Premium"}});
        json_call(
            self.reg,
            Method::PUT,
            &format!("{id}?{ARM_API}"),
            Some(&self.bearer),
            "application/json",
            Bytes::from(body.to_string()),
            StatusCode::CREATED,
        )
        .await?;
        Ok(id)
    }

    /// `POST <target>/importImage` with `body`, then the wait: a same-server import answers 200 when it is done, a
    /// remote one 202 + `Location`, polled every `IMPORT_POLL` (not after its `Retry-After`) until it answers 200.
    /// Returns the time from the POST to that 200, and the 200's JSON (`Null` for a same-server import's empty body).
    async fn import_image(
        &self,
        target: &str,
        body: &serde_json::Value,
    ) -> Result<(Duration, serde_json::Value)> {
        let path = format!("{target}/importImage?{ARM_API}");
        let url = self.reg.url(&path);
        let post = || format!("POST {url} with {body}");
        let headers = [(hyper::header::CONTENT_TYPE, "application/json")];
        let payload = Bytes::from(body.to_string());
        let t = Instant::now();
        let resp = self
            .reg
            .send(
                Method::POST,
                &path,
                Some(&self.bearer),
                &headers,
                BenchBody::full(payload),
            )
            .await?;
        match resp.status() {
            StatusCode::OK => {
                let b = resp
                    .into_body()
                    .collect()
                    .await
                    .with_context(post)?
                    .to_bytes();
                let el = t.elapsed();
                return Ok((el, serde_json::from_slice(&b).unwrap_or_default()));
            }
            StatusCode::ACCEPTED => {}
            _ => {
                return Err(unexpected(&Method::POST, &url, resp, "200 or 202")
                    .await
                    .context(post()))
            }
        }
        let loc = location(resp.headers()).with_context(|| format!("{} -> 202", post()))?;
        resp.into_body().collect().await.with_context(post)?;
        loop {
            tokio::time::sleep(IMPORT_POLL).await;
            let resp = self
                .reg
                .send(
                    Method::GET,
                    &loc,
                    Some(&self.bearer),
                    &[],
                    BenchBody::empty(),
                )
                .await?;
            let status = resp.status();
            if status != StatusCode::OK && status != StatusCode::ACCEPTED {
                return Err(unexpected(&Method::GET, &loc, resp, "200 or 202")
                    .await
                    .context(format!("waiting on the import: {} -> 202", post())));
            }
            let b = resp
                .into_body()
                .collect()
                .await
                .with_context(|| format!("GET {loc}"))?
                .to_bytes();
            if status == StatusCode::OK {
                let el = t.elapsed();
                let v: serde_json::Value = serde_json::from_slice(&b).with_context(|| {
                    format!(
                        "GET {loc} -> 200: not JSON: {}",
                        String::from_utf8_lossy(&b[..b.len().min(2048)])
                    )
                })?;
                if v.get("status").and_then(|s| s.as_str()) != Some("Succeeded") {
                    bail!("GET {loc} -> 200 without status Succeeded: {v}");
                }
                return Ok((el, v));
            }
        }
    }
}

/// `application/x-www-form-urlencoded` escaping of one value.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Workload 6 on one Moat server: (a) manifest GET with the default network settings, (b) with `IP_RULES` rules
/// and `defaultAction: Deny`, alternated `sizes.rounds` times (the best of each kept). Before (b) is first measured,
/// the same rules without the loopback's must make the GET answer 403.
async fn network_rules(env: &Env, sizes: &Sizes) -> Result<RulesFig> {
    let s = env.start_moat(false).await?;
    let target = manifest_setup(Arc::new(Reg::plain(&s))).await?;
    let mut pe_reg = Reg::plain(&s);
    pe_reg.ip = [127, 0, 0, 2].into();
    pe_reg.base = format!("http://127.0.0.2:{}", s.port);
    let private = target.via(Arc::new(pe_reg));
    let arm = Arm::login(env, &s, &target.reg).await?;
    let defaults = arm.network_rule_set().await?;
    if defaults.get("defaultAction").and_then(|v| v.as_str()) != Some("Allow")
        || defaults
            .get("ipRules")
            .and_then(|v| v.as_array())
            .is_none_or(|a| !a.is_empty())
    {
        bail!("the default registry's networkRuleSet is {defaults}, wanted defaultAction Allow and no ipRules");
    }
    let defaults = serde_json::json!({"defaultAction": "Allow", "ipRules": []});
    let rules = deny_rules(IP_RULES, true);
    let mut fig = RulesFig::default();
    for round in 1..=sizes.rounds {
        if round > 1 {
            arm.set_network_rule_set(&defaults).await?;
        }
        target.check(StatusCode::OK).await?;
        eprintln!(
            "  (a) default network settings (round {round}/{})",
            sizes.rounds
        );
        let open = target.measure(sizes).await?;
        eprintln!("    {open:.0} requests/s");
        fig.open = fig.open.max(open);
        if round == 1 {
            // Sanity: the rules are applied — without the loopback's, the same GET is refused.
            arm.set_network_rule_set(&deny_rules(IP_RULES, false))
                .await?;
            target.check(StatusCode::FORBIDDEN).await.context(
                "with defaultAction Deny and no rule containing 127.0.0.1, the manifest GET must answer 403",
            )?;
        }
        arm.set_network_rule_set(&rules).await?;
        target.check(StatusCode::OK).await.context(
            "with 127.0.0.1/32 as the last of the IP rules, the manifest GET must answer 200",
        )?;
        eprintln!(
            "  (b) {IP_RULES} IP rules, defaultAction Deny, 127.0.0.1 allowed by the last (round {round}/{})",
            sizes.rounds
        );
        let with_rules = target.measure(sizes).await?;
        eprintln!("    {with_rules:.0} requests/s");
        fig.rules = fig.rules.max(with_rules);

        // (c) The same request through a private endpoint, with rules that admit no one: the endpoint's traffic
        // is private and skips them, but every request is still classified and gated.
        if round == 1 {
            arm.create_private_endpoint("127.0.0.2").await?;
        }
        arm.set_network_rule_set(&deny_rules(IP_RULES, false))
            .await?;
        target.check(StatusCode::FORBIDDEN).await?;
        private.check(StatusCode::OK).await.context(
            "through the approved private endpoint the manifest GET must answer 200 whatever the IP rules",
        )?;
        eprintln!(
            "  (c) through a private endpoint, {IP_RULES} IP rules admitting no one (round {round}/{})",
            sizes.rounds
        );
        let through = private.measure(sizes).await?;
        eprintln!("    {through:.0} requests/s");
        fig.private = fig.private.max(through);
    }
    drop(arm);
    drop(target);
    drop(s);
    Ok(fig)
}

#[derive(Default, Clone, Copy)]
struct RssFig {
    hwm_mib: f64,
    sampled_peak_mib: f64,
    push: f64,
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn rss_push(reg: &Reg, pid: u32, d: &Data) -> Result<RssFig> {
    let repo = "bench/rss";
    let auth = reg.authorize(repo).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(k) = proc_status_kib(pid, "VmRSS:") {
                    peak = peak.max(k);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let total = d.large.len() as u64 * RSS_REPEAT;
    let t = Instant::now();
    let r = reg
        .push_post_put(
            repo,
            auth.as_ref(),
            BenchBody::repeat(d.large.clone(), total),
            &d.rss_digest,
        )
        .await;
    let el = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler.join().map_err(|_| anyhow!("sampler panicked"))?;
    r?;
    let hwm =
        proc_status_kib(pid, "VmHWM:").ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))?;
    Ok(RssFig {
        hwm_mib: hwm as f64 / 1024.0,
        sampled_peak_mib: sampled as f64 / 1024.0,
        push: mib_s(total, el),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Workload 7: importImage. (a) A remote import from Distribution into a fresh Moat against (b) `skopeo copy` of the
// same image between the same two servers (also into a fresh Moat: neither finds a blob already there), then (c) the
// latency of a same-server import (zero copy: the image's blobs are linked into the target).

/// The imported image's layers.
const IMPORT_LAYERS: usize = 10;
/// How often a remote import's `Location` is polled: its `Retry-After: 1` is ignored, so that the polling interval
/// does not dominate the measurement.
const IMPORT_POLL: Duration = Duration::from_millis(20);
const IMPORT_REPO: &str = "bench/import";
const TINY_REPO: &str = "bench/tiny";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Updates a CRC-32 (IEEE; start from `!0`, finish with `!`), for the gzip trailer.
fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// A layer: `len` random bytes as a valid gzip stream of stored (uncompressed) deflate blocks. Random bytes do not
/// compress anyway, and a client that compresses the uncompressed layers it pushes to a registry (containers/image,
/// so skopeo) sees a gzip layer and copies it as is, as the import does. Returns the gzip bytes and the diff id
/// (the digest of the uncompressed bytes).
fn gzip_random_layer(len: usize, seed: u64) -> (Vec<u8>, String) {
    use rand::SeedableRng;
    const BLOCK: usize = 65535;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(10 + len + 5 * (len / BLOCK + 1) + 8);
    // Magic, deflate, no flags, no mtime, no extra flags, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let (mut sha, mut crc, mut left) = (Sha256::new(), !0u32, len);
    loop {
        let n = left.min(BLOCK);
        left -= n;
        // BFINAL on the last block, BTYPE 00 (stored), then LEN and its complement.
        out.push(u8::from(left == 0));
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(!(n as u16)).to_le_bytes());
        let start = out.len();
        out.resize(start + n, 0);
        rng.fill_bytes(&mut out[start..]);
        sha.update(&out[start..]);
        crc = crc32_update(crc, &out[start..]);
        if left == 0 {
            break;
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    (out, format!("sha256:{}", hex::encode(sha.finalize())))
}

/// Workload 7's image: an OCI manifest, its config and gzip layers of random bytes.
struct Image {
    /// The config, then the layers: bytes and digest.
    blobs: Vec<(Bytes, String)>,
    manifest: Bytes,
    manifest_digest: String,
}

impl Image {
    /// `layers` layers of `total / layers` random bytes each (seeded), generated and hashed on 2 threads.
    fn random(total: usize, layers: usize, seed: u64) -> Image {
        let per = (total / layers).max(1);
        let next = AtomicUsize::new(0);
        let mut made: Vec<(usize, Bytes, String, String)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= layers {
                                return out;
                            }
                            let (gz, diff_id) =
                                gzip_random_layer(per, seed.wrapping_mul(1000) + i as u64);
                            let digest = sha256_hex(&gz);
                            out.push((i, Bytes::from(gz), digest, diff_id));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("layer generation panicked"))
                .collect()
        });
        made.sort_by_key(|m| m.0);
        let diff_ids: Vec<&str> = made.iter().map(|m| m.3.as_str()).collect();
        let config = Bytes::from(
            serde_json::json!({"architecture": "amd64", "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": diff_ids}})
            .to_string(),
        );
        let config_digest = sha256_hex(&config);
        let manifest = Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": made.iter().map(|(_, b, d, _)| serde_json::json!({"mediaType": OCI_LAYER_GZIP, "digest": d, "size": b.len()})).collect::<Vec<_>>(),
            })
            .to_string(),
        );
        let manifest_digest = sha256_hex(&manifest);
        let mut blobs = vec![(config, config_digest)];
        blobs.extend(made.into_iter().map(|(_, b, d, _)| (b, d)));
        Image {
            blobs,
            manifest,
            manifest_digest,
        }
    }

    /// Blobs and manifest: what a copy moves.
    fn bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.0.len() as u64).sum::<u64>() + self.manifest.len() as u64
    }

    fn mib(&self) -> f64 {
        self.bytes() as f64 / MIB
    }

    /// `64.0 MiB`, `1.6 KiB`.
    fn size(&self) -> String {
        if self.bytes() >= 1 << 20 {
            format!("{:.1} MiB", self.mib())
        } else {
            format!("{:.1} KiB", self.bytes() as f64 / 1024.0)
        }
    }

    /// Pushes the blobs (streamed) and the manifest as `repo:tag`.
    async fn push(&self, reg: &Reg, repo: &str, tag: &str) -> Result<()> {
        let auth = reg.authorize(repo).await?;
        for (b, d) in &self.blobs {
            if b.len() < FRAME {
                reg.push_small(repo, auth.as_ref(), b, d).await?;
            } else {
                reg.push_post_put(
                    repo,
                    auth.as_ref(),
                    BenchBody::repeat(b.clone(), b.len() as u64),
                    d,
                )
                .await?;
            }
        }
        reg.expect(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            auth.as_ref(),
            &[(hyper::header::CONTENT_TYPE, OCI_MANIFEST)],
            BenchBody::full(self.manifest.clone()),
            StatusCode::CREATED,
        )
        .await?;
        Ok(())
    }

    /// Whether `repo:tag` serves this image's manifest, byte for byte: `Err` if it is missing, the digest otherwise.
    async fn served_as(
        &self,
        reg: &Reg,
        repo: &str,
        tag: &str,
    ) -> Result<std::result::Result<(), String>> {
        let auth = reg.authorize(repo).await?;
        let path = format!("/v2/{repo}/manifests/{tag}");
        let url = reg.url(&path);
        let resp = reg
            .send(
                Method::GET,
                &path,
                auth.as_ref(),
                &[(hyper::header::ACCEPT, OCI_MANIFEST)],
                BenchBody::empty(),
            )
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(unexpected(&Method::GET, &url, resp, "200").await);
        }
        let dcd = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await?.to_bytes();
        if body == self.manifest && dcd == self.manifest_digest {
            Ok(Ok(()))
        } else {
            Ok(Err(format!(
                "GET {url}: {} bytes with Docker-Content-Digest '{dcd}', not the {} bytes pushed ({})",
                body.len(),
                self.manifest.len(),
                self.manifest_digest
            )))
        }
    }
}

/// (a) `importImage` of `IMPORT_REPO:v1` from Distribution (`127.0.0.1:<port>`, no scheme: HTTPS is tried, then
/// plain HTTP, as skopeo does) into a fresh Moat, timed from the POST to the poll's 200. Returns MiB/s.
async fn import_remote(env: &Env, dist_port: u16, img: &Image) -> Result<f64> {
    let s = env.start_moat(false).await?;
    let reg = Reg::plain(&s);
    let arm = Arm::login(env, &s, &reg).await?;
    let body = serde_json::json!({
        "source": {"registryUri": format!("127.0.0.1:{dist_port}"), "sourceImage": format!("{IMPORT_REPO}:v1")},
        "targetTags": [format!("{IMPORT_REPO}:v1")],
        "mode": "Force",
    });
    let (el, done) = arm.import_image(&arm.registry, &body).await?;
    // Not timed: every blob came over the wire (a fresh store has none), and the tag serves the manifest pushed.
    let blob_bytes = img.bytes() - img.manifest.len() as u64;
    let props = done.get("properties").cloned().unwrap_or_default();
    let got = props.get("bytesDone").and_then(|v| v.as_u64());
    if got != Some(blob_bytes) {
        eprintln!("  warning: the import reports bytesDone {got:?}, the image's blobs are {blob_bytes} bytes: {props}");
    }
    if let Err(e) = img.served_as(&reg, IMPORT_REPO, "v1").await? {
        bail!("after the import: {e}");
    }
    eprintln!("  {:.2} s ({props})", el.as_secs_f64());
    Ok(mib_s(img.bytes(), el))
}

/// A child process killed (if still running) and reaped on drop.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// (b) `skopeo copy` of `IMPORT_REPO:v1` from Distribution into a fresh Moat (as `bench/skopeo:v1`), timed from the
/// spawn to the exit. Returns MiB/s.
async fn skopeo_copy(env: &Env, dist_port: u16, img: &Image) -> Result<f64> {
    let s = env.start_moat(false).await?;
    let reg = Reg::plain(&s);
    let log = s.dir.join("skopeo.log");
    let args = [
        "copy".to_string(),
        "--src-tls-verify=false".into(),
        "--dest-tls-verify=false".into(),
        "--dest-creds".into(),
        "admin:bench".into(),
        format!("docker://127.0.0.1:{dist_port}/{IMPORT_REPO}:v1"),
        format!("docker://127.0.0.1:{}/bench/skopeo:v1", s.port),
    ];
    let line = format!("{} {}", env.skopeo_bin.display(), args.join(" "));
    let mut cmd = Command::new(&env.skopeo_bin);
    cmd.args(&args);
    let t = Instant::now();
    let mut child = Reap(spawn(cmd, &log)?);
    let status = loop {
        if let Some(st) = child.0.try_wait()? {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let el = t.elapsed();
    if !status.success() {
        bail!("{line}: {status}; output:\n{}", file_tail(&log));
    }
    // Not timed: skopeo copied the image as it is (had it recompressed the layers, the digest would differ).
    if let Err(e) = img.served_as(&reg, "bench/skopeo", "v1").await? {
        eprintln!("  warning: skopeo did not copy the image as is: {e}");
    }
    eprintln!("  {:.2} s", el.as_secs_f64());
    Ok(mib_s(img.bytes(), el))
}

#[derive(Default, Clone, Copy)]
struct LocalImportFig {
    /// Milliseconds per call: best and median, for the large image, then for the 1 KiB one.
    large: (f64, f64),
    tiny: (f64, f64),
}

fn best_and_median(ms: &mut [f64]) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    (ms[0], median)
}

/// (c) Both images pushed into a fresh Moat's `default` registry, then `calls` same-server imports of each with
/// mode Force, alternately into another registry (same repository) and into `default` under another repository,
/// each time to a fresh tag; each call timed from the POST to its 200.
async fn import_local(
    env: &Env,
    big: &Image,
    tiny: &Image,
    calls: usize,
) -> Result<LocalImportFig> {
    let s = env.start_moat(false).await?;
    let reg = Reg::plain(&s);
    big.push(&reg, IMPORT_REPO, "v1").await?;
    tiny.push(&reg, TINY_REPO, "v1").await?;
    let arm = Arm::login(env, &s, &reg).await?;
    let other = arm.create_registry("benchcopy").await?;
    let mut fig = LocalImportFig::default();
    for (img, repo) in [(big, IMPORT_REPO), (tiny, TINY_REPO)] {
        let mut ms = Vec::with_capacity(calls);
        for i in 0..calls {
            let (target, to) = if i % 2 == 0 {
                (&other, format!("{repo}:c{i}"))
            } else {
                (&arm.registry, format!("{repo}-copy:c{i}"))
            };
            let body = serde_json::json!({
                "source": {"resourceId": arm.registry, "sourceImage": format!("{repo}:v1")},
                "targetTags": [to],
                "mode": "Force",
            });
            let (el, _) = arm.import_image(target, &body).await?;
            ms.push(el.as_secs_f64() * 1000.0);
        }
        if calls > 1 {
            if let Err(e) = img.served_as(&reg, &format!("{repo}-copy"), "c1").await? {
                bail!("after the same-server import: {e}");
            }
        }
        eprintln!(
            "  {} image: {} ms",
            img.size(),
            ms.iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let r = best_and_median(&mut ms);
        if repo == IMPORT_REPO {
            fig.large = r;
        } else {
            fig.tiny = r;
        }
    }
    Ok(fig)
}

// ---------------------------------------------------------------------------------------------------------------
// Physical limits

fn sha_throughput(data: &[u8]) -> (f64, String) {
    let t = Instant::now();
    let digest = Sha256::digest(data);
    (
        mib_s(data.len() as u64, t.elapsed()),
        format!("sha256:{}", hex::encode(digest)),
    )
}

/// The disk's best rate for `total` bytes made durable by one writer: the better of writing everything then one
/// fsync, and writing while a second thread fdatasyncs what is written (a virtual disk that takes writes into a
/// cache pays for them at the flush, and flushing as it goes overlaps the two).
fn disk_throughput(dir: &Path, data: &[u8], total: u64) -> Result<f64> {
    let path = dir.join("disk-test.bin");
    let mut best: f64 = 0.0;
    for flush_while_writing in [false, true] {
        let t = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        let written = Arc::new(AtomicU64::new(0));
        let flusher = flush_while_writing.then(|| {
            let (f, written) = (f.try_clone(), written.clone());
            std::thread::spawn(move || -> Result<()> {
                let f = f?;
                let mut flushed = 0;
                while flushed < total {
                    let w = written.load(Ordering::Acquire);
                    if w - flushed >= 32 << 20 || (w == total && w > flushed) {
                        f.sync_data()?;
                        flushed = w;
                    } else {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(())
            })
        });
        let mut pos = 0usize;
        let mut n_written = 0u64;
        while n_written < total {
            let n = FRAME
                .min(data.len() - pos)
                .min((total - n_written) as usize);
            f.write_all(&data[pos..pos + n])?;
            pos = (pos + n) % data.len();
            n_written += n as u64;
            written.store(n_written, Ordering::Release);
        }
        if let Some(h) = flusher {
            h.join()
                .map_err(|_| anyhow!("disk flusher thread panicked"))??;
        }
        f.sync_all()?;
        best = best.max(mib_s(total, t.elapsed()));
        drop(f);
        std::fs::remove_file(&path)?;
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------------------------
// Report

struct Row {
    metric: &'static str,
    label: &'static str,
    unit: &'static str,
    moat: Option<f64>,
    dist: Option<f64>,
    target: String,
    pass: Option<bool>,
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn json_num(v: Option<f64>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |v| {
        serde_json::json!((v * 100.0).round() / 100.0)
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

fn moat_bin(root: &Path) -> PathBuf {
    if let Some(b) = std::env::var_os("MOAT_BIN") {
        let p = PathBuf::from(b);
        return if p.is_absolute() { p } else { root.join(p) };
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    target.join("release").join("moat")
}

/// One result per (workload, server); an error is kept and reported, and the bench goes on.
fn note<T>(
    errors: &mut Vec<String>,
    what: &str,
    r: Result<Result<T>, tokio::time::error::Elapsed>,
) -> Option<T> {
    match r {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            eprintln!("  ERROR {what}: {e:#}");
            errors.push(format!("{what}: {e:#}"));
            None
        }
        Err(_) => {
            eprintln!("  ERROR {what}: timed out after {WORKLOAD_TIMEOUT:?}");
            errors.push(format!("{what}: timed out after {WORKLOAD_TIMEOUT:?}"));
            None
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    const USAGE: &str = "usage: moat-bench [--quick] [--only N[,N…]]";
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}\n  --only: run only these workloads (1-12; 5, the physical limits, always runs)\n  env: MOAT_BIN (default target/release/moat), DISTRIBUTION_BIN (default /usr/bin/docker-registry), SKOPEO_BIN (default /usr/bin/skopeo), BENCH_TMPDIR; workloads 10 and 12: MOAT_AZURITE (default .tools/azurite), BENCH_PYTHON (default .venv-transfer/bin/python)");
        return Ok(());
    }
    let mut only: Option<Vec<u32>> = None;
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--quick" => {}
            "--only" => {
                let list = rest.next().ok_or_else(|| {
                    anyhow!("--only needs a list of workloads, e.g. --only 1,3 ({USAGE})")
                })?;
                let ns = list
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|n| (1..=12).contains(n))
                    })
                    .collect::<Option<Vec<u32>>>()
                    .ok_or_else(|| {
                        anyhow!("--only {list}: workloads are numbers 1 to 12 ({USAGE})")
                    })?;
                only = Some(ns);
            }
            _ => bail!("unknown argument {a} ({USAGE})"),
        }
    }
    let wants = |n: u32| only.as_ref().is_none_or(|o| o.contains(&n));
    let sizes = Sizes::new(args.iter().any(|a| a == "--quick"));
    let root = repo_root();
    let env = Env {
        base: {
            let tmp = std::env::var_os("BENCH_TMPDIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            let b = tmp.join(format!("moat-bench-{}", std::process::id()));
            std::fs::create_dir_all(&b)?;
            b
        },
        moat_bin: moat_bin(&root),
        dist_bin: std::env::var_os("DISTRIBUTION_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/docker-registry".into()),
        skopeo_bin: std::env::var_os("SKOPEO_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/skopeo".into()),
        counter: AtomicUsize::new(0),
    };
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(env.base.clone());
    for (what, p) in [("moat", &env.moat_bin), ("distribution", &env.dist_bin)] {
        if !p.exists() {
            bail!("{what} binary not found at {} (build Moat with `cargo build --release -p moat`, or set MOAT_BIN / DISTRIBUTION_BIN)", p.display());
        }
    }
    if !env.skopeo_bin.exists() {
        bail!("skopeo not found at {} (workload 7 compares importImage with `skopeo copy`): install it with `sudo apt-get install skopeo` (scripts/test does), or set SKOPEO_BIN", env.skopeo_bin.display());
    }
    let load_start = loadavg();
    if load_start.parse::<f64>().is_ok_and(|l| l > 0.5) {
        eprintln!("warning: load average {load_start} before the bench: other processes compete for the 2 cores, figures will be noisy");
    }
    let moat_age = std::fs::metadata(&env.moat_bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| m.elapsed().ok());
    eprintln!(
        "moat-bench{}: moat = {} (built {} ago), distribution = {}, temp = {}",
        if sizes.quick { " --quick" } else { "" },
        env.moat_bin.display(),
        moat_age.map_or("?".into(), |a| format!("{}s", a.as_secs())),
        env.dist_bin.display(),
        env.base.display()
    );

    // Data and physical limits (generation is not timed; the SHA-256 timing also yields the large digest).
    eprintln!("preparing {} MiB of random data…", sizes.large >> 20);
    let large = Bytes::from(random_bytes(sizes.large, 1));
    let (sha_mibs, large_digest) = {
        let l = large.clone();
        tokio::task::spawn_blocking(move || sha_throughput(&l)).await?
    };
    let rss_digest = {
        let l = large.clone();
        tokio::task::spawn_blocking(move || {
            let mut h = Sha256::new();
            for _ in 0..RSS_REPEAT {
                h.update(&l);
            }
            format!("sha256:{}", hex::encode(h.finalize()))
        })
        .await?
    };
    let small_src = random_bytes(sizes.small_count * sizes.small_size, 2);
    let small = small_src
        .chunks(sizes.small_size)
        .map(|c| {
            let b = Bytes::copy_from_slice(c);
            let d = sha256_hex(&b);
            (b, d)
        })
        .collect();
    let data = Arc::new(Data {
        large,
        large_digest,
        rss_digest,
        small,
    });
    eprintln!(
        "physical limits: SHA-256 {sha_mibs:.0} MiB/s; measuring fsync'd disk writes ({} MiB)…",
        sizes.disk_bytes >> 20
    );
    let disk_mibs = {
        let (dir, l, n) = (env.base.clone(), data.large.clone(), sizes.disk_bytes);
        tokio::task::spawn_blocking(move || -> Result<f64> {
            let mut best: f64 = 0.0;
            for _ in 0..2 {
                best = best.max(disk_throughput(&dir, &l, n)?);
            }
            Ok(best)
        })
        .await??
    };
    let limit = sha_mibs.min(disk_mibs);
    eprintln!("physical limits: disk {disk_mibs:.0} MiB/s; push limit {limit:.0} MiB/s");

    let mut errors = Vec::new();
    let t = WORKLOAD_TIMEOUT;
    let mut large_fig: [Option<LargeFig>; 2] = [None, None];
    let mut small_fig: [Option<SmallFig>; 2] = [None, None];
    let mut manifest_fig: [Option<f64>; 2] = [None, None];
    let mut rss_fig: [Option<RssFig>; 2] = [None, None];
    let names = ["moat", "distribution"];

    async fn start(env: &Env, i: usize) -> Result<Server> {
        if i == 0 {
            env.start_moat(false).await
        } else {
            env.start_distribution().await
        }
    }

    let best = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    // Workload 1 alternates the servers, like 2 and 3: one push on this shared disk is one draw from its moods.
    for round in 1..=sizes.rounds {
        for (i, name) in names.iter().enumerate().filter(|_| wants(1)) {
            eprintln!(
                "[{name}] 1. large blob: push {} MiB, pull ×{} (round {round}/{})",
                sizes.large >> 20,
                sizes.pull_repeats,
                sizes.rounds
            );
            let f = note(
                &mut errors,
                &format!("{name}: large blob"),
                tokio::time::timeout(t, async {
                    let s = start(&env, i).await?;
                    large_blob(&Reg::plain(&s), &data, &sizes, "bench/large").await
                })
                .await,
            );
            if let Some(f) = f {
                eprintln!("  push {:.0} MiB/s, pull {:.0} MiB/s", f.push, f.pull);
                let old = large_fig[i].unwrap_or_default();
                large_fig[i] = Some(LargeFig {
                    push: old.push.max(f.push),
                    pull: old.pull.max(f.pull),
                });
            }
        }
    }
    let mut tls_fig: Option<LargeFig> = None;
    if wants(1) {
        eprintln!(
            "[moat https] 1b. large blob over TLS: push {} MiB, pull ×{}",
            sizes.large >> 20,
            sizes.pull_repeats
        );
        tls_fig = note(
            &mut errors,
            "moat https: large blob",
            tokio::time::timeout(t, async {
                let s = env.start_moat(true).await?;
                let ca = s.dir.join("data").join("tls").join("ca.pem");
                large_blob(&Reg::tls(&s, &ca).await?, &data, &sizes, "bench/large").await
            })
            .await,
        );
        if let Some(f) = tls_fig {
            eprintln!("  push {:.0} MiB/s, pull {:.0} MiB/s", f.push, f.pull);
        }
    }
    for round in 1..=sizes.rounds {
        for (i, name) in names.iter().enumerate().filter(|_| wants(2)) {
            eprintln!(
                "[{name}] 2. {} blobs of {} KiB, {} clients (round {round}/{})",
                sizes.small_count,
                sizes.small_size >> 10,
                sizes.concurrency,
                sizes.rounds
            );
            let f = note(
                &mut errors,
                &format!("{name}: small blobs"),
                tokio::time::timeout(t, async {
                    let s = start(&env, i).await?;
                    small_blobs(Arc::new(Reg::plain(&s)), data.clone(), &sizes).await
                })
                .await,
            );
            if let Some(f) = f {
                eprintln!("  push {:.0} blobs/s, pull {:.0} blobs/s", f.push, f.pull);
                let old = small_fig[i].unwrap_or_default();
                small_fig[i] = Some(SmallFig {
                    push: old.push.max(f.push),
                    pull: old.pull.max(f.pull),
                });
            }
        }
    }
    for round in 1..=sizes.rounds {
        for (i, name) in names.iter().enumerate().filter(|_| wants(3)) {
            eprintln!(
                "[{name}] 3. manifest GET by tag, {} clients, {} s (round {round}/{})",
                sizes.concurrency, sizes.manifest_secs, sizes.rounds
            );
            let f = note(
                &mut errors,
                &format!("{name}: manifest GET"),
                tokio::time::timeout(t, async {
                    let s = start(&env, i).await?;
                    manifest_get(Arc::new(Reg::plain(&s)), &sizes).await
                })
                .await,
            );
            if let Some(f) = f {
                eprintln!("  {f:.0} requests/s");
            }
            manifest_fig[i] = best(manifest_fig[i], f);
        }
    }
    for (i, name) in names.iter().enumerate().filter(|_| wants(4)) {
        eprintln!(
            "[{name}] 4. server RSS during a {} MiB push",
            (sizes.large as u64 * RSS_REPEAT) >> 20
        );
        rss_fig[i] = note(
            &mut errors,
            &format!("{name}: RSS push"),
            tokio::time::timeout(t, async {
                let s = start(&env, i).await?;
                rss_push(&Reg::plain(&s), s.pid(), &data).await
            })
            .await,
        );
        if let Some(f) = rss_fig[i] {
            eprintln!(
                "  VmHWM {:.1} MiB, sampled VmRSS peak {:.1} MiB, push {:.0} MiB/s",
                f.hwm_mib, f.sampled_peak_mib, f.push
            );
        }
    }

    let mut login_fig: [Option<logins::LoginFig>; 2] = [None, None];
    if wants(8) {
        let variants: [(&str, &[&str]); 2] = [
            ("default limits", &[]),
            (
                "login throttle off",
                &[
                    "--login-failures-per-address",
                    "0",
                    "--login-failures-per-identity",
                    "0",
                ],
            ),
        ];
        for (i, (what, flags)) in variants.into_iter().enumerate() {
            eprintln!(
                "[moat] 8. login flood, {what}: {} concurrent token requests, half with wrong passwords",
                logins::LOGINS
            );
            login_fig[i] = note(
                &mut errors,
                &format!("moat: login flood ({what})"),
                tokio::time::timeout(t, async {
                    let s = env.start_moat_with(false, flags).await?;
                    logins::login_flood(s.port, s.pid(), "bench").await
                })
                .await,
            );
            if let Some(f) = login_fig[i] {
                eprintln!(
                    "  peak RSS {:.0} MiB; right logins p50 {:.0} ms, p99 {:.0} ms ({} ok); wrong ones refused {} ({} throttled); {:.1} s",
                    f.peak_rss_mib, f.good_p50_ms, f.good_p99_ms, f.good_ok, f.bad_refused, f.bad_throttled, f.secs
                );
            }
        }
    }

    let mut gc_fig: Option<gc::GcFig> = None;
    if wants(9) {
        let blobs = if sizes.quick { 10_000 } else { 100_000 };
        eprintln!(
            "[moat] 9. garbage collection of {blobs} blobs of {} KiB, half unreferenced, while 16 connections push 4 KiB blobs",
            gc::BLOB >> 10
        );
        gc_fig = note(
            &mut errors,
            "moat: garbage collection under pushes",
            // The collection yields the writer to the pushes, so it takes minutes: its own bound.
            tokio::time::timeout(gc::TIMEOUT, async {
                let s = env
                    .start_moat_with(false, &["--gc-interval-secs", "0"])
                    .await?;
                let data = s.dir.join("data");
                gc::gc_under_pushes(&Reg::plain(&s), &env.moat_bin, &data, blobs).await
            })
            .await,
        );
        if let Some(f) = gc_fig {
            eprintln!(
                "  {} blobs seeded at {:.0}/s; collection {:.1} s ({} blobs, {} links removed); pushes {:.0}/s during it, {:.0}/s without ({:.2}x)",
                f.blobs,
                f.seed_rate,
                f.gc_secs,
                f.removed_blobs,
                f.removed_links,
                f.during,
                f.baseline,
                f.during / f.baseline
            );
        }
    }

    let mut rules_fig: Option<RulesFig> = None;
    if wants(6) {
        eprintln!(
            "[moat] 6. manifest GET by tag through the network rules, {} clients, {} s: default settings vs {IP_RULES} IP rules ({} rounds)",
            sizes.concurrency, sizes.manifest_secs, sizes.rounds
        );
        rules_fig = note(
            &mut errors,
            "moat: manifest GET through network rules",
            tokio::time::timeout(t, network_rules(&env, &sizes)).await,
        );
        if let Some(f) = rules_fig {
            eprintln!(
                "  default {:.0} requests/s, {IP_RULES} IP rules {:.0} requests/s ({:.3}x)",
                f.open,
                f.rules,
                f.rules / f.open
            );
        }
    }

    let (mut import_fig, mut skopeo_fig): (Option<f64>, Option<f64>) = (None, None);
    let mut local_fig: Option<LocalImportFig> = None;
    let mut import_mib = 0.0;
    if wants(7) {
        // Workload 7: the image is made here (not timed) and pushed into Distribution once.
        eprintln!(
            "[moat] 7. importImage: preparing a {} MiB image of {IMPORT_LAYERS} gzip layers and a 1 KiB one…",
            sizes.large >> 20
        );
        let (big, tiny) = {
            let n = sizes.large;
            tokio::task::spawn_blocking(move || {
                (
                    Image::random(n, IMPORT_LAYERS, 70),
                    Image::random(1024, 1, 71),
                )
            })
            .await?
        };
        eprintln!(
            "[distribution] 7. import source: push {IMPORT_REPO}:v1 ({})",
            big.size()
        );
        let dist: Option<Server> = note(
            &mut errors,
            "distribution: push the import source",
            tokio::time::timeout(t, async {
                let s = env.start_distribution().await?;
                big.push(&Reg::plain(&s), IMPORT_REPO, "v1").await?;
                Ok(s)
            })
            .await,
        );

        if let Some(dist) = &dist {
            for round in 1..=sizes.rounds {
                // (a) first in odd rounds, (b) first in even ones.
                for first in [true, false] {
                    if first == (round % 2 == 1) {
                        eprintln!(
                            "[moat] 7a. importImage {IMPORT_REPO}:v1 from distribution into a fresh moat, polled every {} ms (round {round}/{})",
                            IMPORT_POLL.as_millis(),
                            sizes.rounds
                        );
                        let f = note(
                            &mut errors,
                            "moat: importImage from distribution",
                            tokio::time::timeout(t, import_remote(&env, dist.port, &big)).await,
                        );
                        if let Some(f) = f {
                            eprintln!("  {f:.0} MiB/s");
                        }
                        import_fig = best(import_fig, f);
                    } else {
                        eprintln!(
                            "[moat] 7b. skopeo copy {IMPORT_REPO}:v1 from distribution into a fresh moat (round {round}/{})",
                            sizes.rounds
                        );
                        let f = note(
                            &mut errors,
                            "moat: skopeo copy from distribution",
                            tokio::time::timeout(t, skopeo_copy(&env, dist.port, &big)).await,
                        );
                        if let Some(f) = f {
                            eprintln!("  {f:.0} MiB/s");
                        }
                        skopeo_fig = best(skopeo_fig, f);
                    }
                }
            }
        }
        drop(dist);
        eprintln!(
            "[moat] 7c. same-server importImage, {} calls per image ({} and {})",
            sizes.import_calls,
            big.size(),
            tiny.size()
        );
        local_fig = note(
            &mut errors,
            "moat: same-server importImage",
            tokio::time::timeout(t, import_local(&env, &big, &tiny, sizes.import_calls)).await,
        );
        if let Some(f) = local_fig {
            eprintln!(
                "  large: best {:.1} ms, median {:.1} ms; 1 KiB: best {:.1} ms, median {:.1} ms",
                f.large.0, f.large.1, f.tiny.0, f.tiny.1
            );
        }
        import_mib = big.mib();
        drop((big, tiny));
    }

    let mut transfer_fig: Option<transfer::TransferFig> = None;
    if wants(10) {
        eprintln!(
            "[moat] 10. ACR Transfer: a {} MiB image of {IMPORT_LAYERS} gzip layers exported to a LocalDirectory and to Azurite, imported into a second moat; against the disk and azure-storage-blob ({} rounds)",
            sizes.large >> 20,
            sizes.rounds
        );
        let img = {
            let n = sizes.large;
            tokio::task::spawn_blocking(move || Image::random(n, IMPORT_LAYERS, 100)).await?
        };
        transfer_fig = note(
            &mut errors,
            "moat: transfer pipelines",
            tokio::time::timeout(t * 2, transfer::transfer(&env, &img, sizes.rounds)).await,
        );
        if let Some(f) = transfer_fig {
            eprintln!(
                "  archive {:.0} MiB; export to Azurite {:.0} MiB/s vs SDK upload {:.0} ({:.2}x); import {:.0} vs SDK download {:.0} ({:.2}x); LocalDirectory {:.0} vs disk {:.0} ({:.2}x)",
                f.archive_mib, f.export_azure, f.sdk_upload, f.export_azure / f.sdk_upload,
                f.import_azure, f.sdk_download, f.import_azure / f.sdk_download,
                f.export_local, f.disk, f.export_local / f.disk
            );
        }
    }

    if wants(11) {
        let n: u64 = if sizes.quick { 500_000 } else { 10_000_000 };
        eprintln!("[moat] 11. audit trail: {n} pull events; bytes per event, queries by time and identity, export");
        let dir = env.base.join("audit-trail");
        let fig = audit_trail::run(&env.moat_bin, &dir, n).await;
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(f) = note(&mut errors, "moat: audit trail", Ok(fig)) {
            eprintln!(
                "  {:.1} B/event (target <= 120); time range {:.1} ms, identity {:.1} ms (target < 200); export {:.0} records/s (target >= 500,000), {:.0} per CPU second of `moat audit`",
                f.bytes_per_event, f.query_time_ms, f.query_identity_ms, f.export_per_sec, f.export_per_cpu_sec
            );
            println!(
                "{}",
                serde_json::json!({"workload": "audit_trail", "records": f.records,
                    "bytes_per_event": f.bytes_per_event, "query_time_ms": f.query_time_ms,
                    "query_identity_ms": f.query_identity_ms, "export_per_sec": f.export_per_sec,
                    "export_per_cpu_sec": f.export_per_cpu_sec})
            );
        }
    }

    let mut monitor_fig: Option<monitoring::MonitorFig> = None;
    if wants(12) {
        eprintln!(
            "[moat] 12. monitoring: manifest GET and 4 KiB pushes ({} clients, {} s each) with no diagnostic setting vs one to Azurite and one to an HTTP receiver ({} rounds)",
            sizes.concurrency, sizes.manifest_secs, sizes.rounds
        );
        monitor_fig = note(
            &mut errors,
            "moat: monitoring sinks under load",
            tokio::time::timeout(t, monitoring::run(&env, &sizes)).await,
        );
        if let Some(f) = monitor_fig {
            eprintln!(
                "  manifest GET {:.0}/s with the settings vs {:.0}/s without ({:.3}x); 4 KiB push {:.0}/s vs {:.0}/s ({:.3}x); sink backlog max {}, {} at the end of a load; drained in {:.1} s; {} records at the HTTP receiver",
                f.get_with, f.get_none, f.get_with / f.get_none,
                f.push_with, f.push_none, f.push_with / f.push_none,
                f.backlog_max, f.backlog_end, f.drain_secs, f.http_records,
            );
            println!(
                "{}",
                serde_json::json!({"workload": "monitoring", "get_none": f.get_none, "get_with": f.get_with,
                    "push_none": f.push_none, "push_with": f.push_with, "backlog_max": f.backlog_max,
                    "backlog_end": f.backlog_end, "backlog_end_storage": f.backlog_end_storage,
                    "backlog_end_partner": f.backlog_end_partner, "moat_sink_backlog_end": f.sink_gauge_end,
                    "drain_secs": f.drain_secs, "http_records": f.http_records,
                    "requests_with_at_least": f.requests_with,
                    "cores_get_none": f.cores_get_none.json(), "cores_get_with": f.cores_get_with.json(),
                    "cores_push_none": f.cores_push_none.json(), "cores_push_with": f.cores_push_with.json()})
            );
        }
    }

    // Report
    let ge = |m: Option<f64>, d: Option<f64>, k: f64| match (m, d) {
        (Some(m), Some(d)) if d > 0.0 => Some(m >= k * d),
        _ => None,
    };
    let lg = |i: usize| large_fig[i];
    let moat_push = lg(0).map(|f| f.push);
    let dist_push = lg(1).map(|f| f.push);
    let pct_of_limit = moat_push.map(|p| 100.0 * p / limit);
    let moat_hwm = rss_fig[0].map(|f| f.hwm_mib);
    let rules_ratio = rules_fig.filter(|f| f.open > 0.0).map(|f| f.rules / f.open);
    let private_ratio = rules_fig
        .filter(|f| f.open > 0.0)
        .map(|f| f.private / f.open);
    let import_ratio = match (import_fig, skopeo_fig) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let under_50 = |v: Option<f64>| v.map(|ms| ms < 50.0);
    let local = |f: fn(&LocalImportFig) -> f64| local_fig.as_ref().map(f);
    let rows = vec![
        Row {
            metric: "large_push",
            label: "1 large blob push",
            unit: "MiB/s",
            moat: moat_push,
            dist: dist_push,
            target: ">= 3x dist".into(),
            pass: ge(moat_push, dist_push, 3.0),
        },
        Row {
            metric: "large_push_pct_physical",
            label: "1 push % of phys. limit",
            unit: "%",
            moat: pct_of_limit,
            dist: dist_push.map(|p| 100.0 * p / limit),
            target: ">= 50% (moat)".into(),
            pass: pct_of_limit.map(|p| p >= 50.0),
        },
        Row {
            metric: "large_pull",
            label: "1 large blob pull (HTTP)",
            unit: "MiB/s",
            moat: lg(0).map(|f| f.pull),
            dist: lg(1).map(|f| f.pull),
            target: ">= 1x dist".into(),
            pass: ge(lg(0).map(|f| f.pull), lg(1).map(|f| f.pull), 1.0),
        },
        Row {
            metric: "large_push_https",
            label: "1 large push, moat HTTPS",
            unit: "MiB/s",
            moat: tls_fig.map(|f| f.push),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "large_pull_https",
            label: "1 large pull, moat HTTPS",
            unit: "MiB/s",
            moat: tls_fig.map(|f| f.pull),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "small_push",
            label: "2 4 KiB blob push (16 cl.)",
            unit: "blobs/s",
            moat: small_fig[0].map(|f| f.push),
            dist: small_fig[1].map(|f| f.push),
            target: ">= 4x dist".into(),
            pass: ge(
                small_fig[0].map(|f| f.push),
                small_fig[1].map(|f| f.push),
                4.0,
            ),
        },
        Row {
            metric: "small_pull",
            label: "2 4 KiB blob pull (16 cl.)",
            unit: "blobs/s",
            moat: small_fig[0].map(|f| f.pull),
            dist: small_fig[1].map(|f| f.pull),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get",
            label: "3 manifest GET by tag (16 cl.)",
            unit: "req/s",
            moat: manifest_fig[0],
            dist: manifest_fig[1],
            target: ">= 10x dist".into(),
            pass: ge(manifest_fig[0], manifest_fig[1], 10.0),
        },
        Row {
            metric: "rss_push_hwm",
            label: "4 server VmHWM, big push",
            unit: "MiB",
            moat: moat_hwm,
            dist: rss_fig[1].map(|f| f.hwm_mib),
            target: "< 100 MiB (moat)".into(),
            pass: moat_hwm.map(|m| m < 100.0),
        },
        Row {
            metric: "rss_push_sampled_peak",
            label: "4 server VmRSS peak (sampled)",
            unit: "MiB",
            moat: rss_fig[0].map(|f| f.sampled_peak_mib),
            dist: rss_fig[1].map(|f| f.sampled_peak_mib),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "rss_push_throughput",
            label: "4 big push throughput",
            unit: "MiB/s",
            moat: rss_fig[0].map(|f| f.push),
            dist: rss_fig[1].map(|f| f.push),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "physical_sha256",
            label: "5 SHA-256, one core",
            unit: "MiB/s",
            moat: Some(sha_mibs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "physical_disk_fsync",
            label: "5 disk write, fsync'd",
            unit: "MiB/s",
            moat: Some(disk_mibs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "physical_push_limit",
            label: "5 push physical limit",
            unit: "MiB/s",
            moat: Some(limit),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_no_rules",
            label: "6a manifest GET, no rules",
            unit: "req/s",
            moat: rules_fig.map(|f| f.open),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_100_ip_rules",
            label: "6b manifest GET, 100 IP rules",
            unit: "req/s",
            moat: rules_fig.map(|f| f.rules),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_ip_rules_ratio",
            label: "6 ratio (b)/(a)",
            unit: "x",
            moat: rules_ratio,
            dist: None,
            target: ">= 0.95 (within 5%)".into(),
            pass: rules_ratio.map(|r| r >= 0.95),
        },
        Row {
            metric: "manifest_get_private_endpoint",
            label: "6c manifest GET via private endpoint, 100 IP rules",
            unit: "req/s",
            moat: rules_fig.map(|f| f.private),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "manifest_get_private_endpoint_ratio",
            label: "6 ratio (c)/(a)",
            unit: "x",
            moat: private_ratio,
            dist: None,
            target: ">= 0.95 (within 5%)".into(),
            pass: private_ratio.map(|r| r >= 0.95),
        },
        Row {
            metric: "import_remote",
            label: "7a importImage dist->moat",
            unit: "MiB/s",
            moat: import_fig,
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "import_skopeo_copy",
            label: "7b skopeo copy dist->moat",
            unit: "MiB/s",
            moat: skopeo_fig,
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "import_remote_vs_skopeo_ratio",
            label: "7 ratio (a)/(b)",
            unit: "x",
            moat: import_ratio,
            dist: None,
            target: ">= 1.5x skopeo".into(),
            pass: import_ratio.map(|r| r >= 1.5),
        },
        Row {
            metric: "import_local_large_best",
            label: "7c same-srv import large, best",
            unit: "ms",
            moat: local(|f| f.large.0),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.large.0)),
        },
        Row {
            metric: "import_local_large_median",
            label: "7c same-srv import large, median",
            unit: "ms",
            moat: local(|f| f.large.1),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.large.1)),
        },
        Row {
            metric: "import_local_1kib_best",
            label: "7c same-srv import 1 KiB, best",
            unit: "ms",
            moat: local(|f| f.tiny.0),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.tiny.0)),
        },
        Row {
            metric: "import_local_1kib_median",
            label: "7c same-srv import 1 KiB, median",
            unit: "ms",
            moat: local(|f| f.tiny.1),
            dist: None,
            target: "< 50 ms".into(),
            pass: under_50(local(|f| f.tiny.1)),
        },
        Row {
            metric: "login_flood_peak_rss",
            label: "8 1,000 logins: peak RSS",
            unit: "MiB",
            moat: login_fig[0].map(|f| f.peak_rss_mib),
            dist: None,
            target: "< 200 MiB".into(),
            pass: login_fig[0].map(|f| f.peak_rss_mib < 200.0),
        },
        Row {
            metric: "login_flood_good_p99",
            label: "8 1,000 logins: p99 right ones",
            unit: "ms",
            moat: login_fig[0].map(|f| f.good_p99_ms),
            dist: None,
            target: "< 1000 ms".into(),
            pass: login_fig[0].map(|f| f.good_p99_ms < 1000.0),
        },
        Row {
            metric: "login_flood_unthrottled_peak_rss",
            label: "8b same, throttle off: RSS",
            unit: "MiB",
            moat: login_fig[1].map(|f| f.peak_rss_mib),
            dist: None,
            target: "< 200 MiB".into(),
            pass: login_fig[1].map(|f| f.peak_rss_mib < 200.0),
        },
        Row {
            metric: "login_flood_unthrottled_good_p99",
            label: "8b same, throttle off: p99",
            unit: "ms",
            moat: login_fig[1].map(|f| f.good_p99_ms),
            dist: None,
            target: "< 1000 ms".into(),
            pass: login_fig[1].map(|f| f.good_p99_ms < 1000.0),
        },
        Row {
            metric: "gc_push_rate_ratio",
            label: "9 pushes during GC / without",
            unit: "x",
            moat: gc_fig.map(|f| f.during / f.baseline),
            dist: None,
            target: ">= 0.90".into(),
            pass: gc_fig.map(|f| f.during / f.baseline >= 0.9),
        },
        Row {
            metric: "transfer_export_azure",
            label: "10a export to Azurite / SDK upload",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.export_azure),
            dist: transfer_fig.map(|f| f.sdk_upload),
            target: ">= 0.8x".into(),
            pass: transfer_fig.map(|f| f.export_azure >= 0.8 * f.sdk_upload),
        },
        Row {
            metric: "transfer_import_azure",
            label: "10b import from Azurite / SDK download",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.import_azure),
            dist: transfer_fig.map(|f| f.sdk_download),
            target: ">= 0.8x".into(),
            pass: transfer_fig.map(|f| f.import_azure >= 0.8 * f.sdk_download),
        },
        Row {
            metric: "transfer_export_local",
            label: "10c LocalDirectory export / fsync'd disk",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.export_local),
            dist: transfer_fig.map(|f| f.disk),
            target: ">= 0.8x".into(),
            pass: transfer_fig.map(|f| f.export_local >= 0.8 * f.disk),
        },
        Row {
            // The archive's digest is one SHA-256 pass over the whole tar: one core's hashing rate bounds an
            // export wherever the disk is faster.
            metric: "transfer_export_local_vs_sha256",
            label: "10c LocalDirectory export / SHA-256",
            unit: "MiB/s",
            moat: transfer_fig.map(|f| f.export_local),
            dist: transfer_fig.map(|_| sha_mibs),
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "monitoring_manifest_get_ratio",
            label: "12 manifest GET, 2 settings / none",
            unit: "req/s",
            moat: monitor_fig.map(|f| f.get_with),
            dist: monitor_fig.map(|f| f.get_none),
            target: ">= 0.95x".into(),
            pass: monitor_fig.map(|f| f.get_with >= 0.95 * f.get_none),
        },
        Row {
            metric: "monitoring_push_ratio",
            label: "12 4 KiB push, 2 settings / none",
            unit: "blobs/s",
            moat: monitor_fig.map(|f| f.push_with),
            dist: monitor_fig.map(|f| f.push_none),
            target: ">= 0.95x".into(),
            pass: monitor_fig.map(|f| f.push_with >= 0.95 * f.push_none),
        },
        Row {
            metric: "monitoring_sink_backlog_end",
            label: "12 sink backlog at load's end",
            unit: "records",
            moat: monitor_fig.map(|f| f.backlog_end as f64),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "monitoring_sink_drain",
            label: "12 sink backlog drained in",
            unit: "s",
            moat: monitor_fig.map(|f| f.drain_secs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
        Row {
            metric: "gc_duration",
            label: "9 GC, half of 100k blobs",
            unit: "s",
            moat: gc_fig.map(|f| f.gc_secs),
            dist: None,
            target: "-".into(),
            pass: None,
        },
    ];

    let mut out = String::new();
    let git = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok();
    let commit = git
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    out.push_str(&format!(
        "\nMoat vs Distribution ({}; commit {commit}; {cores} cores, {cpu}; load avg {load_start} -> {}; large blob {} MiB (pull best of {}), {} small blobs of {} KiB and {} s manifest run (best of {} rounds), RSS push {} MiB; import image {:.0} MiB in {IMPORT_LAYERS} layers (best of {} rounds), {} same-server imports per image)\n",
        if sizes.quick { "quick" } else { "full" },
        loadavg(),
        sizes.large >> 20,
        sizes.pull_repeats,
        sizes.small_count,
        sizes.small_size >> 10,
        sizes.manifest_secs,
        sizes.rounds,
        (sizes.large as u64 * RSS_REPEAT) >> 20,
        import_mib,
        sizes.rounds,
        sizes.import_calls
    ));
    out.push_str(&format!(
        "{:<32} {:>7} {:>10} {:>12} {:>8}  {:<19} {}\n",
        "workload", "unit", "moat", "distribution", "ratio", "target", "result"
    ));
    out.push_str(&format!("{}\n", "-".repeat(102)));
    for r in &rows {
        let ratio = match (r.moat, r.dist) {
            (Some(m), Some(d)) if d > 0.0 => Some(m / d),
            _ => None,
        };
        let result = match r.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None if r.target != "-" => "n/a",
            None => "",
        };
        out.push_str(&format!(
            "{:<32} {:>7} {:>10} {:>12} {:>8}  {:<19} {}\n",
            r.label,
            r.unit,
            fmt_num(r.moat),
            fmt_num(r.dist),
            ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            r.target,
            result
        ));
    }
    if !errors.is_empty() {
        out.push_str("\nerrors:\n");
        for e in &errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out.push('\n');
    out.push_str(
        &serde_json::json!({
            "bench": "moat-vs-distribution",
            "mode": if sizes.quick { "quick" } else { "full" },
            "commit": commit,
            "cores": cores,
            "cpu": cpu,
            "large_blob_mib": sizes.large >> 20,
            "small_blobs": sizes.small_count,
            "small_blob_kib": sizes.small_size >> 10,
            "concurrency": sizes.concurrency,
            "manifest_secs": sizes.manifest_secs,
            "rss_push_mib": (sizes.large as u64 * RSS_REPEAT) >> 20,
            "distribution": "docker-registry (Debian), filesystem storage, blobdescriptor cache inmemory, log warn, no auth",
            "rounds_small_and_manifest": sizes.rounds,
            "network_ip_rules": IP_RULES,
            "large_pull_best_of": sizes.pull_repeats,
            "import_image_mib": (import_mib * 100.0).round() / 100.0,
            "import_layers": IMPORT_LAYERS,
            "import_rounds": sizes.rounds,
            "import_local_calls": sizes.import_calls,
            "import_poll_ms": IMPORT_POLL.as_millis() as u64,
            "skopeo": env.skopeo_bin.display().to_string(),
            "loadavg_1m_start": load_start,
            "loadavg_1m_end": loadavg(),
            "errors": errors,
        })
        .to_string(),
    );
    out.push('\n');
    for r in &rows {
        let ratio = match (r.moat, r.dist) {
            (Some(m), Some(d)) if d > 0.0 => Some(m / d),
            _ => None,
        };
        out.push_str(
            &serde_json::json!({
                "metric": r.metric,
                "unit": r.unit,
                "moat": json_num(r.moat),
                "distribution": json_num(r.dist),
                "ratio": json_num(ratio),
                "target": r.target,
                "result": r.pass.map(|p| if p { "PASS" } else { "MISS" }),
            })
            .to_string(),
        );
        out.push('\n');
    }
    print!("{out}");
    std::io::stdout().flush()?;
    if !errors.is_empty() {
        std::process::exit(2);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layers are valid gzip whose content is the diff id's (checked with `gzip -dc` where it exists).
    #[test]
    fn gzip_layers_decompress_to_their_diff_id() {
        for len in [0, 1, 65535, 65536, 200_000] {
            let (gz, diff_id) = gzip_random_layer(len, 5);
            let Ok(mut child) = Command::new("gzip")
                .arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
            else {
                return;
            };
            let mut stdin = child.stdin.take().unwrap();
            let writer = std::thread::spawn(move || stdin.write_all(&gz));
            let out = child.wait_with_output().unwrap();
            writer.join().unwrap().unwrap();
            assert!(out.status.success(), "gzip -dc failed for {len} bytes");
            assert_eq!(out.stdout.len(), len);
            assert_eq!(sha256_hex(&out.stdout), diff_id);
        }
    }
}
