//! Workload 3: a manifest GET by tag, hammered over raw keep-alive connections.

use super::*;

/// Workload 3's target: a pushed image whose manifest is fetched by tag, and the pre-serialized request for it.
pub struct ManifestTarget {
    pub reg: Arc<Reg>,
    pub path: String,
    pub auth: Option<HeaderValue>,
    /// `GET <path>` with the bearer token and the OCI `Accept`, ready for `raw::Conn::send`.
    pub request: Arc<[u8]>,
    /// The manifest's length: every 200 must carry exactly this many bytes.
    pub want: u64,
}

/// Pushes a config, a layer and a manifest tagged `latest`, then checks one GET (digest and bytes).
pub async fn manifest_setup(reg: Arc<Reg>) -> Result<ManifestTarget> {
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
    pub fn via(&self, reg: Arc<Reg>) -> ManifestTarget {
        ManifestTarget {
            reg,
            path: self.path.clone(),
            auth: self.auth.clone(),
            request: self.request.clone(),
            want: self.want,
        }
    }

    /// One GET through the pooled client (not the raw one) that must answer `wanted`.
    pub async fn check(&self, wanted: StatusCode) -> Result<()> {
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
    pub async fn hammer(&self, concurrency: usize, secs: f64) -> Result<f64> {
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
    pub async fn measure(&self, sizes: &Sizes) -> Result<f64> {
        self.hammer(sizes.concurrency, (sizes.manifest_secs / 5.0).max(0.3))
            .await?;
        self.hammer(sizes.concurrency, sizes.manifest_secs).await
    }
}

pub async fn manifest_get(reg: Arc<Reg>, sizes: &Sizes) -> Result<f64> {
    manifest_setup(reg).await?.measure(sizes).await
}
