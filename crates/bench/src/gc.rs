//! Workload 9, Moat's alone: garbage collection under load. A store of 100,000 blobs of 4 KiB (pushed through the
//! API: monolithic `POST ?digest=`, kept in the database), half of them referenced by 500 manifests of 100 layers,
//! half by nothing. Once every seeded item has waited the grace period, `moat gc --grace G` (through the server's
//! admin socket) collects the unreferenced half while 16 connections push new 4 KiB blobs as fast as they go.
//! Measured: the push rate during the collection against the rate without it (the mean of 10 s before and 10 s
//! after), and the collection's duration. The pushes made during the run are younger than the grace period, so
//! the run collects exactly the seeded garbage.

use super::{auth_line, raw, raw_expect, Reg};
use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BLOB: usize = 4096;
pub const TIMEOUT: Duration = Duration::from_secs(1800);
const LAYERS_PER_MANIFEST: usize = 100;
const CONNECTIONS: usize = 16;
/// The pause between seeding and the pushes (see `gc_under_pushes`).
const QUIET: Duration = Duration::from_secs(5);
const BASELINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, Default)]
pub struct GcFig {
    pub blobs: usize,
    pub seed_rate: f64,
    /// Pushes per second without a collection (mean of before and after).
    pub baseline: f64,
    /// Pushes per second while the collection ran.
    pub during: f64,
    pub gc_secs: f64,
    pub removed_blobs: u64,
    pub removed_links: u64,
}

/// A distinct 4 KiB blob for index `i` of a run (`tag` keeps runs apart) and its digest.
fn blob(tag: u64, i: u64) -> (Vec<u8>, String) {
    let mut b = vec![0u8; BLOB];
    b[..8].copy_from_slice(&tag.to_le_bytes());
    b[8..16].copy_from_slice(&i.to_le_bytes());
    let d = format!("sha256:{}", hex::encode(Sha256::digest(&b)));
    (b, d)
}

/// Where pushes go: an address, the `Host` and the `Authorization` line for one repository.
#[derive(Clone)]
pub struct Target {
    addr: std::net::SocketAddr,
    host: String,
    repo: &'static str,
    auth: Arc<String>,
}

impl Target {
    pub async fn new(reg: &Reg, repo: &'static str) -> Result<Target> {
        Ok(Target {
            addr: (reg.ip, reg.port).into(),
            host: reg.host.clone(),
            repo,
            auth: Arc::new(auth_line(reg.authorize(repo).await?.as_ref())?),
        })
    }
}

/// Pushes blobs `tag`/0.. over `CONNECTIONS` raw connections until `count` are pushed or `stop` is set; counts
/// each acknowledged push in `done`.
pub async fn push(
    to: Target,
    tag: u64,
    count: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut c = raw::Conn::connect_to(to.addr).await?;
        let (host, repo, auth, next, stop, done) = (
            to.host.clone(),
            to.repo,
            to.auth.clone(),
            next.clone(),
            stop.clone(),
            done.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let (bytes, digest) = blob(tag, i);
                c.out.clear();
                write!(
                    c.out,
                    "POST /v2/{repo}/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {BLOB}\r\n\r\n"
                )?;
                c.out.extend_from_slice(&bytes);
                c.send_out().await?;
                let h = raw_expect(&mut c, |_| format!("POST /v2/{repo}/blobs/uploads/?digest={digest}"), &[201]).await?;
                c.skip_body(&h).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// 500 manifests, each naming 100 of the first half of the seeded blobs as layers.
async fn reference_half(reg: &Reg, repo: &str, tag: u64, blobs: usize) -> Result<()> {
    let auth = auth_line(reg.authorize(repo).await?.as_ref())?;
    let mut c = raw::Conn::connect_to((reg.ip, reg.port).into()).await?;
    let (config, config_digest) = blob(tag, 0);
    for (m, first) in (0..blobs / 2).step_by(LAYERS_PER_MANIFEST).enumerate() {
        let layers: Vec<serde_json::Value> = (first..(first + LAYERS_PER_MANIFEST).min(blobs / 2))
            .map(|i| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(tag, i as u64).1, "size": BLOB}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": super::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers,
        }))?;
        c.out.clear();
        write!(
            c.out,
            "PUT /v2/{repo}/manifests/m{m} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
            reg.host,
            super::OCI_MANIFEST,
            body.len()
        )?;
        c.out.extend_from_slice(&body);
        c.send_out().await?;
        let h = raw_expect(&mut c, |_| format!("PUT /v2/{repo}/manifests/m{m}"), &[201]).await?;
        c.skip_body(&h).await?;
    }
    Ok(())
}

/// Pushes for `d` and returns the rate.
async fn rate_for(to: &Target, tag: u64, d: Duration) -> Result<f64> {
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let t = Instant::now();
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    push(to.clone(), tag, u64::MAX, stop, done.clone()).await?;
    timer.await?;
    Ok(done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64())
}

/// Runs workload 9 against the Moat at `reg` whose data directory is `data` (started with the background
/// collector off), collecting with the `moat` binary at `moat_bin`.
pub async fn gc_under_pushes(
    reg: &Reg,
    moat_bin: &Path,
    data: &Path,
    blobs: usize,
) -> Result<GcFig> {
    let run_tag = std::process::id() as u64;
    let seed = Target::new(reg, "bench/gc").await?;
    let load = Target::new(reg, "bench/gcpush").await?;
    let t = Instant::now();
    push(
        seed,
        run_tag,
        blobs as u64,
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    )
    .await
    .context("seeding")?;
    let seed_rate = blobs as f64 / t.elapsed().as_secs_f64();
    reference_half(reg, "bench/gc", run_tag, blobs)
        .await
        .context("referencing half of the seeded blobs")?;
    let seeded = Instant::now();
    eprintln!(
        "  seeded {blobs} blobs ({seed_rate:.0}/s), half referenced by {} manifests",
        blobs / 2 / LAYERS_PER_MANIFEST
    );
    // A quiet moment, so that the run's cutoff (now - grace, in whole seconds) falls after every seeded item and
    // before every push made from here on: the run collects the seeded garbage and nothing else.
    tokio::time::sleep(QUIET).await;
    let before = rate_for(&load, run_tag + 1, BASELINE).await?;
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let pushing = tokio::spawn(push(
        load.clone(),
        run_tag + 2,
        u64::MAX,
        stop.clone(),
        done.clone(),
    ));
    // Let the pushes reach full speed before the collection starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grace = seeded.elapsed().as_secs() - (QUIET.as_secs() - 2);
    let (bin, dir) = (moat_bin.to_path_buf(), data.to_path_buf());
    let before_gc = done.load(Ordering::Relaxed);
    let t = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["gc", "--no-sweep", "-o", "json", "--grace"])
            .arg(grace.to_string())
            .arg("--data-dir")
            .arg(dir)
            .output()
    })
    .await??;
    let gc_secs = t.elapsed().as_secs_f64();
    let during = (done.load(Ordering::Relaxed) - before_gc) as f64 / gc_secs;
    stop.store(true, Ordering::Relaxed);
    pushing.await??;
    if !out.status.success() {
        bail!("moat gc failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let summary: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(serde_json::from_str)
        .transpose()?
        .context("moat gc printed nothing")?;
    let removed = |k: &str| summary["removed"][k].as_u64().unwrap_or(0);
    let after = rate_for(&load, run_tag + 3, BASELINE).await?;
    Ok(GcFig {
        blobs,
        seed_rate,
        baseline: (before + after) / 2.0,
        during,
        gc_secs,
        removed_blobs: removed("blob"),
        removed_links: removed("link"),
    })
}
