//! Group commit for finished blob uploads. Each acknowledged blob needs its row committed (an fsync of the
//! WAL); with many small blobs pushed at once, one transaction for all the blobs waiting at that moment pays
//! one fsync instead of one each, and every caller still gets its answer only after its row is durable.

use super::audit::insert_events;
use super::links::{link, Proven};
use super::trail::Dictionary;
use crate::blobs::ReceivedBlob;
use crate::error::{Result, StoreError};
use crate::meta::{begin_write, Dialect, Pool};
use moat_model::audit::AuditEvent;
use moat_model::RepositoryName;
use tokio::sync::{mpsc, oneshot};

pub(crate) struct PendingBlob {
    pub registry_id: String,
    pub repo: RepositoryName,
    /// The proof that the bytes arrived (and, for a small blob, the bytes themselves).
    pub blob: ReceivedBlob,
    pub upload_id: String,
    pub event: AuditEvent,
    pub done: oneshot::Sender<Result<()>>,
}

/// Most blobs one transaction takes: bounds the latency of the first waiter.
const MAX_BATCH: usize = 256;

pub(crate) fn start(
    writer: Pool,
    dialect: Dialect,
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    dictionary: std::sync::Arc<Dictionary>,
) -> mpsc::UnboundedSender<PendingBlob> {
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
            let result = write(&writer, dialect, &batch, &dictionary).await;
            commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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

async fn write(
    writer: &Pool,
    dialect: Dialect,
    batch: &[PendingBlob],
    dictionary: &Dictionary,
) -> Result<()> {
    let mut tx = begin_write(writer, dialect).await?;
    for p in batch {
        link(&mut tx, &Proven::received(&p.registry_id, &p.blob), &p.repo).await?;
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(&p.upload_id)
            .execute(&mut *tx)
            .await?;
    }
    // The batch's events in one chained append (one head update, one dictionary lookup for all).
    let events: Vec<AuditEvent> = batch.iter().map(|p| p.event.clone()).collect();
    let fresh = insert_events(&mut tx, &events, Some(dictionary)).await?;
    tx.commit().await?;
    dictionary.learn(fresh);
    Ok(())
}
