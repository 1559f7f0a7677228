//! Workload 11: the audit trail. `N` pull events shaped like the server's (uuid correlation ids, a few identities,
//! addresses and user agents, 100 repositories, 1,000 digests, times 1 ms apart) written through the store's batch
//! writer into a fresh database; then the database bytes per event (file growth, WAL checkpointed, no VACUUM), the
//! audit query by time range (one minute, newest 1,000) and by identity (newest 1,000) on those N records, and the
//! `moat audit -o json --log data` export rate through the real CLI (output counted, not kept).

use anyhow::{Context, Result};
use moat_model::audit::AuditEvent;
use moat_store::meta::AuditFilter;
use moat_store::MetadataStore;
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct TrailFig {
    pub records: u64,
    pub bytes_per_event: f64,
    pub query_time_ms: f64,
    pub query_identity_ms: f64,
    pub export_per_sec: f64,
    /// The export's records per CPU second of `moat audit` (user + system): what the rate would be with a core of
    /// its own, whatever else the machine runs.
    pub export_per_cpu_sec: f64,
}

/// CPU seconds (user + system) of the children this process has waited for.
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage writes one rusage struct, which is plain data.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

fn event(i: u64, t0: i64) -> AuditEvent {
    let us = t0 + i as i64 * 1000;
    AuditEvent {
        time_generated: moat_model::trail::codec::time_text(us),
        category: "ContainerRegistryRepositoryEvents".into(),
        operation_name: "Pull".into(),
        registry: "default".into(),
        login_server: "127.0.0.1:5000".into(),
        repository: Some(format!("team/app{}", i % 100)),
        tag: Some("v1".into()),
        digest: Some(format!("sha256:{:064x}", i % 1000)),
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        size: Some(1_024 + (i % 1000) as i64),
        identity: Some(format!("sp-{}", i % 10)),
        caller_ip_address: Some(format!("10.0.0.{}", i % 50)),
        user_agent: Some(format!("containerd/2.0.{}", i % 3)),
        duration_ms: Some((i % 7) as i64),
        result_type: "Success".into(),
        result_description: "200".into(),
        correlation_id: Some(moat_model::trail::codec::uuid_text(
            &rand::random::<[u8; 16]>(),
        )),
        endpoint: Some("public".into()),
    }
}

fn db_bytes(dir: &Path) -> u64 {
    ["moat.db", "moat.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

pub async fn run(moat_bin: &Path, dir: &Path, n: u64) -> Result<TrailFig> {
    std::fs::create_dir_all(dir)?;
    // `moat audit` opens only a private data directory, as the server keeps it.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let url = format!("sqlite://{}/moat.db", dir.display());
    let meta = MetadataStore::open(&url)
        .await
        .context("opening the bench store")?;
    let t0 = 1_796_630_400_000_000i64;
    // A first batch so that the fixed tables and the dictionary are there before measuring growth.
    let warm = 10_000u64;
    let batch = 4096u64;
    let mut i = 0;
    let write = |from: u64, to: u64| {
        let meta = meta.clone();
        async move {
            let events: Vec<AuditEvent> = (from..to).map(|i| event(i, t0)).collect();
            meta.record_batch(&events).await
        }
    };
    while i < warm {
        write(i, (i + batch).min(warm)).await?;
        i = (i + batch).min(warm);
    }
    checkpoint(&url).await?;
    let before = db_bytes(dir);
    let started = Instant::now();
    while i < n {
        write(i, (i + batch).min(n)).await?;
        i = (i + batch).min(n);
    }
    let write_secs = started.elapsed().as_secs_f64();
    checkpoint(&url).await?;
    let bytes_per_event = (db_bytes(dir) - before) as f64 / (n - warm) as f64;
    eprintln!(
        "  wrote {n} events ({:.0}/s through the batch writer), {bytes_per_event:.1} B each",
        (n - warm) as f64 / write_secs
    );
    // One minute in the middle, newest first, at most 1,000 rows (what `moat audit --since --until -n 1000` asks).
    let mid = t0 + (n as i64 / 2) * 1000;
    let q = AuditFilter {
        since: Some(moat_model::trail::codec::time_text(mid)),
        until: Some(moat_model::trail::codec::time_text(mid + 60_000_000)),
        newest_first: true,
        limit: Some(1000),
        ..Default::default()
    };
    let time_ms = best_of(3, || async { meta.audit_rows(&q).await.map(|r| r.len()) }).await?;
    let q = AuditFilter {
        identity: Some("sp-7".into()),
        newest_first: true,
        limit: Some(1000),
        ..Default::default()
    };
    let identity_ms = best_of(3, || async { meta.audit_rows(&q).await.map(|r| r.len()) }).await?;
    drop(meta);
    // The export through the real CLI. Only it is waited for meanwhile, so the children's CPU time grows by its own.
    let cpu_before = children_cpu_secs();
    let started = Instant::now();
    let (bin, d) = (moat_bin.to_path_buf(), dir.to_path_buf());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args([
                "audit",
                "-o",
                "json",
                "--log",
                "data",
                "--oldest-first",
                "--data-dir",
            ])
            .arg(d)
            .stdout(std::process::Stdio::piped())
            .output()
    })
    .await?
    .context("running moat audit")?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = children_cpu_secs() - cpu_before;
    anyhow::ensure!(
        out.status.success(),
        "moat audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = out.stdout.iter().filter(|b| **b == b'\n').count() as u64;
    anyhow::ensure!(lines == n, "moat audit exported {lines} records of {n}");
    Ok(TrailFig {
        records: n,
        bytes_per_event,
        query_time_ms: time_ms,
        query_identity_ms: identity_ms,
        export_per_sec: n as f64 / secs,
        export_per_cpu_sec: n as f64 / cpu.max(1e-6),
    })
}

async fn checkpoint(url: &str) -> Result<()> {
    use sqlx::ConnectOptions;
    let mut c = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()?
        .connect()
        .await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut c)
        .await?;
    Ok(())
}

async fn best_of<F, Fut>(k: usize, f: F) -> Result<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<usize, moat_store::StoreError>>,
{
    let mut best = f64::MAX;
    for _ in 0..k {
        let s = Instant::now();
        let rows = f().await?;
        anyhow::ensure!(rows > 0, "the query found nothing");
        best = best.min(s.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(best)
}
