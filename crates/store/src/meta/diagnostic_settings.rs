//! Diagnostic settings (migration 0021): one row per setting of a registry, the setting as JSON, written with
//! the activity record of the change in one transaction. See `moat_server::monitor::sinks`.

use super::activity::insert_activity;
use super::MetadataStore;
use crate::error::Result;
use moat_model::activity::ActivityEvent;
use sqlx::Row;

#[derive(Clone, Debug, PartialEq)]
pub struct DiagnosticSettingRow {
    /// Stable while the setting exists (names its consumers).
    pub key: String,
    pub registry_id: String,
    /// As created.
    pub name: String,
    /// `moat_model::monitor::diagnostic_setting::DiagnosticSetting` as JSON.
    pub body: serde_json::Value,
    pub created: String,
    pub updated: String,
}

fn row(r: crate::meta::DbRow) -> DiagnosticSettingRow {
    let body: String = r.get("body");
    DiagnosticSettingRow {
        key: r.get("key"),
        registry_id: r.get("registry_id"),
        name: r.get("name"),
        body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        created: r.get("created"),
        updated: r.get("updated"),
    }
}

const COLUMNS: &str = "key, registry_id, name, body, created, updated";

impl MetadataStore {
    /// Every setting of a registry (by its id), in name order.
    pub async fn diagnostic_settings(
        &self,
        registry_id: &str,
    ) -> Result<Vec<DiagnosticSettingRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM diagnostic_settings WHERE registry_id = $1 ORDER BY name_lower"
        ))
        .bind(registry_id)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(row).collect())
    }

    /// Every setting of every registry (the delivery loop's work list).
    pub async fn all_diagnostic_settings(&self) -> Result<Vec<DiagnosticSettingRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM diagnostic_settings ORDER BY registry_id, name_lower"
        ))
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(row).collect())
    }

    pub async fn diagnostic_setting(
        &self,
        registry_id: &str,
        name: &str,
    ) -> Result<Option<DiagnosticSettingRow>> {
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM diagnostic_settings WHERE registry_id = $1 AND name_lower = $2"
        ))
        .bind(registry_id)
        .bind(name.to_ascii_lowercase())
        .fetch_optional(self.reader())
        .await?;
        Ok(r.map(row))
    }

    /// Creates or replaces a setting (a replacement keeps its key and creation time, so its cursors); records
    /// `activity` in the same transaction. Returns the stored row and whether it was created.
    pub async fn put_diagnostic_setting(
        &self,
        registry_id: &str,
        name: &str,
        body: &serde_json::Value,
        activity: &ActivityEvent,
    ) -> Result<(DiagnosticSettingRow, bool)> {
        let mut tx = self.begin_write().await?;
        let now = crate::time_fmt::now();
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT key FROM diagnostic_settings WHERE registry_id = $1 AND name_lower = $2",
        )
        .bind(registry_id)
        .bind(name.to_ascii_lowercase())
        .fetch_optional(&mut *tx)
        .await?;
        let created = existing.is_none();
        match existing {
            Some(key) => {
                sqlx::query(
                    "UPDATE diagnostic_settings SET body = $1, updated = $2 WHERE key = $3",
                )
                .bind(body.to_string())
                .bind(&now)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO diagnostic_settings(key, registry_id, name, name_lower, body, created, updated)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(uuid::Uuid::new_v4().simple().to_string())
                .bind(registry_id)
                .bind(name)
                .bind(name.to_ascii_lowercase())
                .bind(body.to_string())
                .bind(&now)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
            }
        }
        insert_activity(&mut tx, activity).await?;
        let r = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM diagnostic_settings WHERE registry_id = $1 AND name_lower = $2"
        ))
        .bind(registry_id)
        .bind(name.to_ascii_lowercase())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((row(r), created))
    }

    /// Deletes a setting and its consumers' cursors, with `activity`; `false` if there was none.
    pub async fn delete_diagnostic_setting(
        &self,
        registry_id: &str,
        name: &str,
        activity: &ActivityEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let key: Option<String> = sqlx::query_scalar(
            "DELETE FROM diagnostic_settings WHERE registry_id = $1 AND name_lower = $2 RETURNING key",
        )
        .bind(registry_id)
        .bind(name.to_ascii_lowercase())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(key) = key else {
            return Ok(false);
        };
        forget_sinks(&mut tx, &key).await?;
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Forgets the cursors of sinks whose setting is gone (its registry was deleted): retention stops waiting.
    pub async fn forget_orphan_sinks(&self) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let mut n = 0;
        for table in ["log_consumers", "sink_metric_cursors"] {
            n += sqlx::query(&format!(
                "DELETE FROM {table} WHERE consumer LIKE 'sink:%' AND NOT EXISTS (SELECT 1 FROM diagnostic_settings d
                     WHERE {table}.consumer LIKE 'sink:' || d.key || ':%')"
            ))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The last metric minute (unix seconds) a sink archived; `None` before its first.
    pub async fn sink_metric_minute(&self, consumer: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT minute FROM sink_metric_cursors WHERE consumer = $1")
                .bind(consumer)
                .fetch_optional(self.reader())
                .await?,
        )
    }

    /// Moves a sink's metric cursor forward (never back).
    pub async fn set_sink_metric_minute(&self, consumer: &str, minute: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO sink_metric_cursors(consumer, minute) VALUES ($1, $2)
             ON CONFLICT(consumer) DO UPDATE SET minute = CASE WHEN sink_metric_cursors.minute >= excluded.minute THEN sink_metric_cursors.minute ELSE excluded.minute END",
        )
        .bind(consumer)
        .bind(minute)
        .execute(self.writer())
        .await?;
        Ok(())
    }
}

async fn forget_sinks(conn: &mut crate::meta::Conn, key: &str) -> Result<()> {
    let pattern = format!("sink:{key}:%");
    for table in ["log_consumers", "sink_metric_cursors"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE consumer LIKE $1"))
            .bind(&pattern)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_keep_their_key_when_replaced_and_take_their_cursors_when_deleted() {
        let db = crate::testing::test_db().await;
        let meta = db.open().await;
        let settings = moat_model::registry::RegistrySettings::new(
            moat_model::registry::Sku::Premium,
            moat_model::Location::parse("local").unwrap(),
        );
        let reg = meta
            .create_registry("default", "d.test", "rg", &settings, false, None)
            .await
            .unwrap();
        let ev = || {
            ActivityEvent::new(
                uuid::Uuid::new_v4().to_string(),
                crate::time_fmt::now(),
                "op",
                "/r",
                "c",
                "1.2.3.4",
                "x",
            )
        };
        let (a, created) = meta
            .put_diagnostic_setting(&reg.id, "Arch", &serde_json::json!({"a": 1}), &ev())
            .await
            .unwrap();
        assert!(created);
        let (b, created) = meta
            .put_diagnostic_setting(&reg.id, "arch", &serde_json::json!({"a": 2}), &ev())
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(a.key, b.key);
        assert_eq!(b.name, "Arch");
        assert_eq!(b.body["a"], 2);
        let consumer = format!("sink:{}:storage", a.key);
        meta.set_consumer_seq(&consumer, "audit", Some("default"), 3)
            .await
            .unwrap();
        meta.set_consumer_seq("sink:gone:storage", "audit", None, 1)
            .await
            .unwrap();
        assert_eq!(meta.forget_orphan_sinks().await.unwrap(), 1);
        assert_eq!(meta.consumer_seq(&consumer, "audit").await.unwrap(), 3);
        assert!(meta
            .delete_diagnostic_setting(&reg.id, "ARCH", &ev())
            .await
            .unwrap());
        assert_eq!(meta.consumer_seq(&consumer, "audit").await.unwrap(), 0);
        assert!(!meta
            .delete_diagnostic_setting(&reg.id, "arch", &ev())
            .await
            .unwrap());
    }
}
