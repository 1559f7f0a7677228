//! Retention: a chain's records up to a cut are removed only after a signed `prune` checkpoint of the chain at the
//! cut is stored (verification starts from it), in small batches (no long write lock). The caller chooses the cut:
//! older than the registry's retention and, when the log has consumers, at or below every covering consumer's
//! cursor.

use super::trail::insert_checkpoint;
use super::MetadataStore;
use crate::error::Result;
use moat_model::trail::{chain_name, ChainState, Checkpoint, CheckpointKind, AUDIT_LOG};

/// Rows deleted per transaction.
const DELETE_BATCH: i64 = 5000;

/// What one prune did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneReport {
    pub chain: String,
    /// The last record removed (the prune checkpoint's `last_seq`).
    pub up_to: i64,
    pub removed: u64,
}

impl MetadataStore {
    /// The greatest seq of `log` whose record of `registry` is older than `cutoff` (stored time form), 0 if none.
    pub async fn trail_cut_by_time(
        &self,
        log: &str,
        registry: Option<&str>,
        cutoff: &str,
    ) -> Result<i64> {
        if log == AUDIT_LOG {
            // Whole runs of the time map that end before the cutoff (records are in about time order).
            let us = moat_model::trail::codec::micros_of(cutoff).unwrap_or(0);
            return Ok(sqlx::query_scalar(
                "SELECT COALESCE(MAX(last_seq), 0) FROM audit_time_map WHERE max_t < $1",
            )
            .bind(us)
            .fetch_one(self.reader())
            .await?);
        }
        let newer: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(seq) FROM activity_events WHERE registry IS NOT DISTINCT FROM $1 AND time >= $2",
        )
        .bind(registry)
        .bind(cutoff)
        .fetch_one(self.reader())
        .await?;
        Ok(match newer {
            Some(s) => s - 1,
            None => self.activity_max_seq().await?,
        })
    }

    /// The checkpoint to sign before pruning `registry`'s chain of `log` up to `cut`: `None` when nothing is left
    /// to prune there. Errors when the chain does not verify up to the cut.
    pub async fn prune_point(
        &self,
        log: &'static str,
        registry: Option<&str>,
        cut: i64,
        time: String,
    ) -> Result<Option<Checkpoint>> {
        let start = self
            .newest_checkpoints()
            .await?
            .remove(&chain_name(log, registry))
            .and_then(|(_, p)| p)
            .map_or(0, |p| p.last_seq);
        if cut <= start {
            return Ok(None);
        }
        let state: ChainState = self.chain_state_at(log, registry, cut).await?;
        if state.last_seq <= start || state.count == 0 {
            return Ok(None);
        }
        Ok(Some(Checkpoint {
            chain: chain_name(log, registry),
            log: log.into(),
            registry: registry.map(str::to_string),
            last_seq: state.last_seq,
            count: state.count,
            state: hex::encode(state.state),
            time,
            kind: CheckpointKind::Prune,
            key_id: String::new(),
            signature: String::new(),
        }))
    }

    /// Stores the signed prune checkpoint `c`, then removes the chain's records up to `c.last_seq`.
    pub async fn prune_trail(&self, c: &Checkpoint) -> Result<PruneReport> {
        let mut tx = self.begin_write().await?;
        insert_checkpoint(&mut tx, c).await?;
        tx.commit().await?;
        let mut removed = 0u64;
        loop {
            let mut tx = self.begin_write().await?;
            let done = if c.log == AUDIT_LOG {
                sqlx::query(
                    "DELETE FROM audit_records WHERE seq IN (SELECT seq FROM audit_records
                         WHERE reg = (SELECT id FROM trail_strings WHERE s = $1) AND seq <= $2 ORDER BY seq LIMIT $3)",
                )
                .bind(c.registry.as_deref().unwrap_or(""))
                .bind(c.last_seq)
                .bind(DELETE_BATCH)
                .execute(&mut *tx)
                .await?
            } else {
                sqlx::query(
                    "DELETE FROM activity_events WHERE seq IN (SELECT seq FROM activity_events
                         WHERE registry IS NOT DISTINCT FROM $1 AND seq <= $2 ORDER BY seq LIMIT $3)",
                )
                .bind(c.registry.as_deref())
                .bind(c.last_seq)
                .bind(DELETE_BATCH)
                .execute(&mut *tx)
                .await?
            };
            tx.commit().await?;
            removed += done.rows_affected();
            if (done.rows_affected() as i64) < DELETE_BATCH {
                break;
            }
            // Let the batch writer in between batches.
            tokio::task::yield_now().await;
        }
        if c.log == AUDIT_LOG {
            sqlx::query(
                "DELETE FROM audit_time_map WHERE last_seq < (SELECT COALESCE(MIN(seq), 0) FROM audit_records)",
            )
            .execute(self.writer())
            .await?;
        }
        Ok(PruneReport {
            chain: c.chain.clone(),
            up_to: c.last_seq,
            removed,
        })
    }
}
