//! Group commit for finished blob uploads. Each acknowledged blob needs its row committed (an fsync of the
//! WAL); with many small blobs pushed at once, one transaction for all the blobs waiting at that moment pays
//! one fsync instead of one each, and every caller still gets its answer only after its row is durable.

use super::audit::insert_event;
use super::content::link;
use crate::error::{Result, StoreError};
use moat_model::audit::AuditEvent;
use moat_model::{Digest, RepositoryName};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

pub(crate) struct PendingBlob {
    pub registry_id: String,
    pub repo: RepositoryName,
    pub digest: Digest,
    pub size: u64,
    pub upload_id: String,
    /// The bytes of a small blob, stored in the database instead of a file.
    pub inline: Option<bytes::Bytes>,
    pub event: AuditEvent,
    pub done: oneshot::Sender<Result<()>>,
}

/// Most blobs one transaction takes: bounds the latency of the first waiter.
const MAX_BATCH: usize = 256;

pub(crate) fn start(writer: SqlitePool) -> mpsc::UnboundedSender<PendingBlob> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PendingBlob>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let result = write(&writer, &batch).await;
            for p in batch {
                let _ = p.done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Invalid(format!("blob commit failed: {e}"))),
                });
            }
        }
    });
    tx
}

async fn write(writer: &SqlitePool, batch: &[PendingBlob]) -> Result<()> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let now = crate::time_fmt::now();
    for p in batch {
        sqlx::query("INSERT OR IGNORE INTO blobs(digest, size, created_at) VALUES (?, ?, ?)")
            .bind(p.digest.as_str())
            .bind(p.size as i64)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        if let Some(data) = &p.inline {
            sqlx::query("INSERT OR IGNORE INTO blob_data(digest, data) VALUES (?, ?)")
                .bind(p.digest.as_str())
                .bind(data.as_ref())
                .execute(&mut *tx)
                .await?;
        }
        link(&mut tx, &p.registry_id, &p.repo, &p.digest).await?;
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(&p.upload_id)
            .execute(&mut *tx)
            .await?;
        insert_event(&mut tx, &p.event).await?;
    }
    tx.commit().await?;
    Ok(())
}
