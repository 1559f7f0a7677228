//! Workload 7: importImage. (a) A remote import from Distribution into a fresh Moat against (b) `skopeo copy` of the
//! same image between the same two servers (also into a fresh Moat: neither finds a blob already there), then (c)
//! the latency of a same-server import (zero copy: the image's blobs are linked into the target).

use super::*;

/// The imported image's layers.
pub const IMPORT_LAYERS: usize = 10;
/// How often a remote import's `Location` is polled: its `Retry-After: 1` is ignored, so that the polling interval
/// does not dominate the measurement.
pub const IMPORT_POLL: Duration = Duration::from_millis(20);
pub const IMPORT_REPO: &str = "bench/import";
pub const TINY_REPO: &str = "bench/tiny";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Updates a CRC-32 (IEEE; start from `!0`, finish with `!`), for the gzip trailer.
pub fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
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
pub fn gzip_random_layer(len: usize, seed: u64) -> (Vec<u8>, String) {
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
pub struct Image {
    /// The config, then the layers: bytes and digest.
    pub blobs: Vec<(Bytes, String)>,
    pub manifest: Bytes,
    pub manifest_digest: String,
}

impl Image {
    /// `layers` layers of `total / layers` random bytes each (seeded), generated and hashed on 2 threads.
    pub fn random(total: usize, layers: usize, seed: u64) -> Image {
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
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.0.len() as u64).sum::<u64>() + self.manifest.len() as u64
    }

    pub fn mib(&self) -> f64 {
        self.bytes() as f64 / MIB
    }

    /// `64.0 MiB`, `1.6 KiB`.
    pub fn size(&self) -> String {
        if self.bytes() >= 1 << 20 {
            format!("{:.1} MiB", self.mib())
        } else {
            format!("{:.1} KiB", self.bytes() as f64 / 1024.0)
        }
    }

    /// Pushes the blobs (streamed) and the manifest as `repo:tag`.
    pub async fn push(&self, reg: &Reg, repo: &str, tag: &str) -> Result<()> {
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
    pub async fn served_as(
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
pub async fn import_remote(env: &Env, dist_port: u16, img: &Image) -> Result<f64> {
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
pub struct Reap(Child);

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
pub async fn skopeo_copy(env: &Env, dist_port: u16, img: &Image) -> Result<f64> {
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
pub struct LocalImportFig {
    /// Milliseconds per call: best and median, for the large image, then for the 1 KiB one.
    pub large: (f64, f64),
    pub tiny: (f64, f64),
}

pub fn best_and_median(ms: &mut [f64]) -> (f64, f64) {
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
pub async fn import_local(
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
