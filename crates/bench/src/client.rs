//! The bench's HTTP clients: request bodies (nothing, a buffer, or a buffer streamed cyclically), the pooled
//! keep-alive client or one TLS connection to a registry with its token dance, and the helpers the raw client
//! (`raw.rs`) is driven with.

use super::*;

// Request bodies: nothing, one buffer, or a buffer streamed cyclically up to a length (zero-copy slices).

pub enum BenchBody {
    Full(Option<Bytes>),
    Repeat {
        data: Bytes,
        pos: usize,
        remaining: u64,
    },
}

impl BenchBody {
    pub fn empty() -> Self {
        BenchBody::Full(None)
    }
    pub fn full(b: Bytes) -> Self {
        BenchBody::Full(if b.is_empty() { None } else { Some(b) })
    }
    pub fn repeat(data: Bytes, len: u64) -> Self {
        BenchBody::Repeat {
            data,
            pos: 0,
            remaining: len,
        }
    }
    pub fn len(&self) -> u64 {
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

// Registry clients: a pooled keep-alive HTTP/1.1 client, or one TLS connection (sequential requests). Workloads 2
// and 3 hammer the server through `raw::Conn` instead (see below); these clients set up their data.

pub type PlainClient = Client<HttpConnector, BenchBody>;

pub enum Transport {
    Pool(Box<PlainClient>),
    Tls(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<BenchBody>>),
}

pub struct Reg {
    /// `http://127.0.0.1:<port>` or `https://…`
    pub base: String,
    pub host: String,
    pub port: u16,
    /// The address connections go to (the login server's, or a private endpoint's).
    pub ip: std::net::IpAddr,
    pub transport: Transport,
    /// `Some` for Moat: the admin credentials for the token service.
    pub moat: bool,
}

pub fn plain_client() -> PlainClient {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(conn)
}

pub async fn tls_sender(
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
pub async fn unexpected(
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
    pub fn plain(server: &Server) -> Reg {
        Reg {
            base: format!("http://127.0.0.1:{}", server.port),
            host: format!("127.0.0.1:{}", server.port),
            port: server.port,
            ip: [127, 0, 0, 1].into(),
            transport: Transport::Pool(Box::new(plain_client())),
            moat: server.name == "moat",
        }
    }

    pub async fn tls(server: &Server, ca: &Path) -> Result<Reg> {
        Ok(Reg {
            base: format!("https://127.0.0.1:{}", server.port),
            host: format!("127.0.0.1:{}", server.port),
            port: server.port,
            ip: [127, 0, 0, 1].into(),
            transport: Transport::Tls(tokio::sync::Mutex::new(tls_sender(server.port, ca).await?)),
            moat: true,
        })
    }

    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    pub async fn send(
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
    pub async fn expect(
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
    pub async fn authorize(&self, repo: &str) -> Result<Option<HeaderValue>> {
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
    pub async fn push_post_put(
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
    pub async fn push_small(
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
    pub async fn pull(&self, repo: &str, auth: Option<&HeaderValue>, digest: &str) -> Result<u64> {
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

pub fn location(h: &HeaderMap) -> Result<String> {
    h.get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no Location header in {h:?}"))
}

pub fn sha256_hex(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB / d.as_secs_f64()
}

/// `Authorization: …\r\n` for hand-written requests (empty for Distribution).
pub fn auth_line(auth: Option<&HeaderValue>) -> Result<String> {
    Ok(match auth {
        Some(a) => format!("Authorization: {}\r\n", a.to_str()?),
        None => String::new(),
    })
}

/// Opens `n` raw keep-alive connections (before any timing starts).
pub async fn raw_conns(reg: &Reg, n: usize) -> Result<Vec<raw::Conn>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(raw::Conn::connect_to((reg.ip, reg.port).into()).await?);
    }
    Ok(v)
}

/// Reads a response head and checks its status; anything else fails, quoting the request and the body.
pub async fn raw_expect(
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
