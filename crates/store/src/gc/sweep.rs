//! The parts of a run that look at storage rather than the queue: abandoned uploads, and files no row knows.

use super::{GcOptions, Removed};
use crate::blobs::BlobStore;
use crate::error::Result;
use crate::meta::MetadataStore;
use std::collections::HashSet;
use std::time::SystemTime;

/// Upload sessions idle longer than the upload TTL (skipping one being written right now), and upload objects no
/// session owns that are that old (a monolithic upload has no session while it streams, so age is what tells an
/// abandoned one from a live one).
pub(crate) async fn uploads(
    meta: &MetadataStore,
    blobs: &dyn BlobStore,
    opts: &GcOptions,
    busy: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Removed>> {
    let cutoff = time::OffsetDateTime::now_utc() - opts.upload_ttl;
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT u.id, COALESCE(r.name, u.registry_id), u.repository, u.committed_size
         FROM uploads u LEFT JOIN registries r ON r.id = u.registry_id WHERE u.updated_at < $1 ORDER BY u.id",
    )
    .bind(crate::time_fmt::format(cutoff))
    .fetch_all(meta.reader())
    .await?;
    let mut out = Vec::new();
    for (id, registry, repository, size) in rows {
        if busy(&id) {
            continue;
        }
        if !opts.dry_run {
            let gone = sqlx::query("DELETE FROM uploads WHERE id = $1 AND updated_at < $2")
                .bind(&id)
                .bind(crate::time_fmt::format(cutoff))
                .execute(meta.writer())
                .await?
                .rows_affected();
            if gone == 0 {
                continue;
            }
            blobs.remove_upload(&id)?;
        }
        out.push(Removed::Upload {
            id,
            registry,
            repository,
            size,
        });
    }
    let live: HashSet<String> = sqlx::query_scalar("SELECT id FROM uploads")
        .fetch_all(meta.reader())
        .await?
        .into_iter()
        .collect();
    let too_old = SystemTime::now() - opts.upload_ttl;
    for id in blobs.list_uploads()? {
        if live.contains(&id) || busy(&id) {
            continue;
        }
        let Ok((size, modified)) = blobs.upload_info(&id) else {
            continue;
        };
        if modified >= too_old {
            continue;
        }
        if !opts.dry_run {
            blobs.remove_upload(&id)?;
        }
        out.push(Removed::OrphanUpload {
            id,
            size: size as i64,
        });
    }
    Ok(out)
}

/// Files in the blob directory with no `blobs` row and no pin: the remains of a crash between placing bytes and
/// linking them. Checked and removed inside a write transaction, like every removal of bytes (see `pins.rs`).
pub(crate) async fn orphan_files(
    meta: &MetadataStore,
    blobs: &dyn BlobStore,
    opts: &GcOptions,
) -> Result<Vec<Removed>> {
    let sql_now = meta.dialect().now_secs();
    let files = blobs.list_blobs()?;
    let mut out = Vec::new();
    let mut pacer = super::Pacer::new(meta, opts.share);
    for chunk in files.chunks(256) {
        let mut tx = meta.begin_write().await?;
        let t0 = std::time::Instant::now();
        let mut removed = Vec::new();
        for (digest, size) in chunk {
            let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM blobs WHERE digest = $1")
                .bind(digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let pinned: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT 1 FROM blob_pins WHERE digest = $1 AND expires_at > {sql_now} LIMIT 1"
            ))
            .bind(digest.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if known.is_some() || pinned.is_some() {
                continue;
            }
            if !opts.dry_run {
                blobs.remove_blob(digest)?;
            }
            removed.push(Removed::OrphanFile {
                digest: digest.to_string(),
                size: *size as i64,
            });
        }
        tx.commit().await?;
        out.extend(removed);
        pacer.pace(t0.elapsed()).await;
    }
    Ok(out)
}
