//! The cursors of the logs' consumers (migration 0019): how far each sink, webhook, alert rule or aggregator has
//! taken the audit, activity and checkpoint logs. See `moat_server::monitor`.

use super::MetadataStore;
use crate::error::Result;
use sqlx::Row;

/// The logs a consumer can read.
pub const LOGS: [&str; 3] = ["audit", "activity", "checkpoint"];

/// One consumer's cursor on one log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerCursor {
    pub consumer: String,
    pub log: String,
    /// The registry (lower-case) whose records it takes; `None`: every registry.
    pub registry: Option<String>,
    pub seq: i64,
    pub updated: String,
}

impl MetadataStore {
    /// Where `consumer` stands on `log` (0 when it has never read it).
    pub async fn consumer_seq(&self, consumer: &str, log: &str) -> Result<i64> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM log_consumers WHERE consumer = $1 AND log = $2")
                .bind(consumer)
                .bind(log)
                .fetch_optional(self.reader())
                .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Registers `consumer` on `log` at `seq` (a new sink starts at the log's end, or at 0 to take the whole
    /// kept log), or moves it there. A cursor only moves forward: an older `seq` is ignored.
    pub async fn set_consumer_seq(
        &self,
        consumer: &str,
        log: &str,
        registry: Option<&str>,
        seq: i64,
    ) -> Result<()> {
        let mut conn = self.writer().acquire().await?;
        set_consumer_seq_on(&mut conn, consumer, log, registry, seq).await
    }

    /// Forgets a consumer on every log (its setting, webhook or rule was deleted): retention no longer waits for it.
    pub async fn delete_consumer(&self, consumer: &str) -> Result<()> {
        sqlx::query("DELETE FROM log_consumers WHERE consumer = $1")
            .bind(consumer)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    /// Every consumer of `log`, for backlogs (the log's last seq minus each cursor) and retention.
    pub async fn consumers(&self, log: &str) -> Result<Vec<ConsumerCursor>> {
        let rows = sqlx::query(
            "SELECT consumer, log, registry, seq, updated FROM log_consumers WHERE log = $1 ORDER BY consumer",
        )
        .bind(log)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ConsumerCursor {
                consumer: r.get("consumer"),
                log: r.get("log"),
                registry: r.get("registry"),
                seq: r.get("seq"),
                updated: r.get("updated"),
            })
            .collect())
    }

    /// The lowest cursor among the consumers of `log` that take `registry`'s records (those of that registry and
    /// those of every registry); `None` when no consumer does. Retention keeps every record above it.
    pub async fn min_consumer_seq(&self, log: &str, registry: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(seq) FROM log_consumers WHERE log = $1 AND (registry IS NULL OR registry = $2)",
        )
        .bind(log)
        .bind(registry.to_ascii_lowercase())
        .fetch_one(self.reader())
        .await?)
    }
}

/// [`MetadataStore::set_consumer_seq`] on a connection or transaction of the caller (an aggregator moves its
/// cursor in the transaction that stores what it took, so that it takes each record exactly once).
pub async fn set_consumer_seq_on(
    conn: &mut crate::meta::Conn,
    consumer: &str,
    log: &str,
    registry: Option<&str>,
    seq: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO log_consumers(consumer, log, registry, seq, updated) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT(consumer, log) DO UPDATE SET seq = CASE WHEN log_consumers.seq >= excluded.seq THEN log_consumers.seq ELSE excluded.seq END, registry = excluded.registry,
             updated = excluded.updated",
    )
    .bind(consumer)
    .bind(log)
    .bind(registry.map(str::to_ascii_lowercase))
    .bind(seq)
    .bind(crate::time_fmt::now())
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {

    #[tokio::test]
    async fn cursors_only_move_forward_and_bound_retention_per_registry() {
        let db = crate::testing::test_db().await;
        let meta = db.open().await;
        assert_eq!(meta.consumer_seq("sink:a", "audit").await.unwrap(), 0);
        assert_eq!(meta.min_consumer_seq("audit", "app").await.unwrap(), None);
        meta.set_consumer_seq("sink:a", "audit", Some("App"), 10)
            .await
            .unwrap();
        meta.set_consumer_seq("sink:a", "audit", Some("App"), 5)
            .await
            .unwrap();
        assert_eq!(meta.consumer_seq("sink:a", "audit").await.unwrap(), 10);
        meta.set_consumer_seq("metrics", "audit", None, 7)
            .await
            .unwrap();
        meta.set_consumer_seq("sink:b", "audit", Some("other"), 2)
            .await
            .unwrap();
        assert_eq!(
            meta.min_consumer_seq("audit", "app").await.unwrap(),
            Some(7)
        );
        assert_eq!(
            meta.min_consumer_seq("audit", "third").await.unwrap(),
            Some(7)
        );
        assert_eq!(meta.consumers("audit").await.unwrap().len(), 3);
        meta.delete_consumer("metrics").await.unwrap();
        assert_eq!(
            meta.min_consumer_seq("audit", "app").await.unwrap(),
            Some(10)
        );
        assert_eq!(meta.min_consumer_seq("audit", "third").await.unwrap(), None);
    }
}
