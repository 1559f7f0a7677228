//! The garbage collector in the server (the rules and the queue are `moat_store::gc`'s): a background job that
//! runs every `--gc-interval-secs` in one process at a time (a lease in the metadata store), and the local admin
//! socket through which `moat gc` asks the running server to collect now.
//!
//! Why a socket: the server knows which uploads are being written this instant, uses its own grace period and
//! upload TTL, and shares its one writer connection fairly with the pushes it serves; a second process would
//! contend for the database file's lock instead. The socket is `<data dir>/admin.sock`, created under the
//! server's umask (0600 in a 0700 directory): only the data directory's owner reaches it. When it is missing
//! (no server, or a path too long for a socket), `moat gc` collects on the data directory itself, which is also
//! safe while a server runs: every removal re-checks what it removes in its own transaction.

use crate::state::AppState;
use moat_store::gc::{Collector, GcOptions, GcSummary, Removed};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

pub const SOCKET: &str = "admin.sock";
/// While pushes commit, the share of time a run in the server spends in write transactions: pushes keep the rest
/// (the benchmark's workload 9 holds it to keeping 90% of their rate).
const SHARE: f64 = 0.05;
/// The background run walks the blob directory for orphan files this often.
const SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// What `moat gc` asks for. Unset fields take the server's configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    pub dry_run: bool,
    pub grace_secs: Option<u64>,
    pub upload_ttl_secs: Option<u64>,
    pub sweep_files: bool,
    /// `moat gc --days-later`: the policies' ages judged this many days later (tests).
    #[serde(default)]
    pub days_later: u32,
}

/// One line of the answer: each removal, then the summary (or an error).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GcLine {
    Removed(Removed),
    Summary(GcSummary),
    Error(String),
}

fn collector(state: &AppState) -> Collector {
    Collector::new(state.meta.clone(), state.blobs.clone())
}

/// Runs in this process serialise: two at once would only review the same rows twice.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn run(
    state: &AppState,
    opts: &GcOptions,
    report: &mut (dyn FnMut(&Removed) + Send),
) -> Result<GcSummary, moat_store::StoreError> {
    let _one = RUNNING.lock().await;
    let uploads = state.uploads.clone();
    let result = collector(state)
        .run(opts, &move |id| uploads.busy(id), report)
        .await;
    // A collected manifest may be one a cached tag pointed at before it was untagged elsewhere.
    state.manifest_cache.invalidate();
    if let Ok(s) = &result {
        if !s.dry_run {
            crate::monitor::metrics::prom::gc_run(s);
        }
    }
    result
}

/// The background collector: every interval, if this process holds the lease.
pub fn spawn_background(state: &AppState) {
    let interval = state.config.gc_interval;
    if interval.is_zero() {
        return;
    }
    let state = state.clone();
    let holder = uuid::Uuid::new_v4().to_string();
    tokio::spawn(async move {
        let mut last_sweep: Option<Instant> = None;
        // The first run comes soon after a start, so that a server restarted often still collects.
        let mut wait = interval.min(Duration::from_secs(300));
        loop {
            tokio::time::sleep(wait).await;
            wait = interval;
            match state
                .meta
                .take_lease("gc", &holder, interval * 2 + Duration::from_secs(60))
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!("gc: lease: {e}");
                    continue;
                }
            }
            let sweep = last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY);
            let opts = GcOptions {
                grace: state.config.gc_grace,
                dry_run: false,
                upload_ttl: state.config.upload_ttl,
                share: Some(SHARE),
                sweep_files: sweep,
                clock_offset: Duration::ZERO,
            };
            match run(&state, &opts, &mut |_| {}).await {
                Ok(s) => {
                    if sweep {
                        last_sweep = Some(Instant::now());
                    }
                    if !s.removed.is_empty() {
                        tracing::info!(
                            "gc: reclaimed {} bytes ({:?}) in {} ms",
                            s.reclaimed_bytes,
                            s.removed,
                            s.duration_ms
                        );
                    }
                }
                Err(e) => tracing::warn!("gc: {e}"),
            }
        }
    });
}

/// Listens on `<data dir>/admin.sock` for `moat gc`. A socket left by a server that died is replaced; one a live
/// server answers on is left to it.
pub async fn serve_admin_socket(state: &AppState) -> anyhow::Result<()> {
    let path = socket_path(&state.config.data_dir);
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            tracing::warn!(
                "{} is answered by another process: `moat gc` will go to it",
                path.display()
            );
            return Ok(());
        }
        std::fs::remove_file(&path)?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            // E.g. a path longer than a socket address holds: `moat gc` then works on the data directory.
            tracing::warn!("admin socket {}: {e}", path.display());
            return Ok(());
        }
    };
    let state = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(&state, stream).await {
                    tracing::warn!("admin socket: {e}");
                }
            });
        }
    });
    Ok(())
}

/// Removes the socket at shutdown, so that `moat gc` does not try a server that is gone.
pub fn remove_admin_socket(data_dir: &Path) {
    let _ = std::fs::remove_file(socket_path(data_dir));
}

async fn answer(state: &AppState, stream: UnixStream) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One request line, bounded.
    BufReader::new(tokio::io::AsyncReadExt::take(read, 8192))
        .read_line(&mut line)
        .await?;
    let send = |l: &GcLine| {
        let mut s = serde_json::to_string(l).expect("serialisable");
        s.push('\n');
        s
    };
    let req: GcRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            write
                .write_all(send(&GcLine::Error(format!("bad request: {e}"))).as_bytes())
                .await?;
            return Ok(());
        }
    };
    let opts = GcOptions {
        grace: req
            .grace_secs
            .map(Duration::from_secs)
            .unwrap_or(state.config.gc_grace),
        dry_run: req.dry_run,
        upload_ttl: req
            .upload_ttl_secs
            .map(Duration::from_secs)
            .unwrap_or(state.config.upload_ttl),
        share: Some(SHARE),
        sweep_files: req.sweep_files,
        clock_offset: days(req.days_later),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(l) = rx.recv().await {
            if write.write_all(l.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let lines = tx.clone();
    let result = run(state, &opts, &mut move |r| {
        let _ = lines.send(send(&GcLine::Removed(r.clone())));
    })
    .await;
    let last = match result {
        Ok(s) => GcLine::Summary(s),
        Err(e) => GcLine::Error(e.to_string()),
    };
    let _ = tx.send(send(&last));
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// `n` days.
pub fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

/// For a caller outside the server (`moat gc` run with no server): the same run on the stores it opened.
pub async fn run_local(
    meta: moat_store::MetadataStore,
    blobs: Arc<dyn moat_store::BlobStore>,
    opts: &GcOptions,
    report: &mut (dyn FnMut(&Removed) + Send),
) -> Result<GcSummary, moat_store::StoreError> {
    Collector::new(meta, blobs)
        .run(opts, &|_| false, report)
        .await
}
