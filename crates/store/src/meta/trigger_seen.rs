//! What an import pipeline's source trigger has imported already: one row per archive (blob name and ETag), so
//! each archive is imported once, whatever the restarts (see migration 0018).

use super::MetadataStore;
use crate::error::Result;

impl MetadataStore {
    /// Whether the trigger of `pipeline` has taken the archive `blob_name` at `etag` already.
    pub async fn trigger_seen(
        &self,
        registry_id: &str,
        pipeline: &str,
        blob_name: &str,
        etag: &str,
    ) -> Result<bool> {
        let row: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM trigger_seen WHERE registry_id = $1 AND pipeline = $2 AND blob_name = $3 AND etag = $4",
        )
        .bind(registry_id)
        .bind(pipeline)
        .bind(blob_name)
        .bind(etag)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.is_some())
    }

    /// Remembers that the run `run_name` imports the archive; true when this call recorded it (false: it was
    /// taken already).
    pub async fn mark_trigger_seen(
        &self,
        registry_id: &str,
        pipeline: &str,
        blob_name: &str,
        etag: &str,
        run_name: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO trigger_seen(registry_id, pipeline, blob_name, etag, run_name, seen_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(registry_id)
        .bind(pipeline)
        .bind(blob_name)
        .bind(etag)
        .bind(run_name)
        .bind(crate::time_fmt::now())
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
