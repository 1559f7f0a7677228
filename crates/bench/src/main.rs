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

mod arm;
mod audit_trail;
mod blobs;
mod client;
mod gc;
mod import;
mod logins;
mod manifest;
mod monitoring;
mod network;
mod physical;
mod raw;
mod report;
mod servers;
mod transfer;

use arm::*;
use blobs::*;
use client::*;
use import::*;
use manifest::*;
use network::*;
use physical::*;
use servers::*;

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
                "  manifest GET {:.0}/s with the settings vs {:.0}/s without ({:.3}x); 4 KiB push {:.0}/s vs {:.0}/s ({:.3}x); sink backlog max {}, {} at the end of a load; drained in {:.1} s; {} records at the HTTP receiver; moat CPU per GET {:.0} -> {:.0} µs, per push {:.0} -> {:.0} µs",
                f.get_with, f.get_none, f.get_with / f.get_none,
                f.push_with, f.push_none, f.push_with / f.push_none,
                f.backlog_max, f.backlog_end, f.drain_secs, f.http_records,
                monitoring::cpu_us(f.cores_get_none, f.get_none), monitoring::cpu_us(f.cores_get_with, f.get_with),
                monitoring::cpu_us(f.cores_push_none, f.push_none), monitoring::cpu_us(f.cores_push_with, f.push_with),
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
                    "cores_push_none": f.cores_push_none.json(), "cores_push_with": f.cores_push_with.json(),
                    "moat_cpu_us_per_get_none": monitoring::cpu_us(f.cores_get_none, f.get_none),
                    "moat_cpu_us_per_get_with": monitoring::cpu_us(f.cores_get_with, f.get_with),
                    "moat_cpu_us_per_push_none": monitoring::cpu_us(f.cores_push_none, f.push_none),
                    "moat_cpu_us_per_push_with": monitoring::cpu_us(f.cores_push_with, f.push_with)})
            );
        }
    }

    // Report
    let figures = report::Figures {
        large: large_fig,
        tls: tls_fig,
        small: small_fig,
        manifest: manifest_fig,
        rss: rss_fig,
        sha_mibs,
        disk_mibs,
        limit,
        rules: rules_fig,
        import: import_fig,
        skopeo: skopeo_fig,
        local: local_fig,
        login: login_fig,
        gc: gc_fig,
        transfer: transfer_fig,
        monitor: monitor_fig,
    };
    let rows = report::rows(figures);
    let out = report::render(&rows, &sizes, &env, &root, &load_start, import_mib, &errors);
    print!("{out}");
    std::io::stdout().flush()?;
    if !errors.is_empty() {
        std::process::exit(2);
    }
    Ok(())
}
