//! Azure Monitor alerts (migration 0023): action groups and alert rules as ARM resources (each change written
//! with its activity record), the per-(rule, dimension combination) state of metric rules, and the durable
//! notifications to webhook receivers. A firing is stored with its notifications in one transaction, so a
//! restart neither fires twice nor loses a notification; activity-log rules move their log cursor in the
//! transaction that stores what they fired.

use super::activity::insert_activity;
use super::consumers::set_consumer_seq_on;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use serde_json::Value;
use sqlx::Row;

/// A stored action group or rule.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertResourceRow {
    /// `actionGroup`, `metricAlert` or `activityLogAlert` (`moat_model::monitor::alert::AlertKind::as_str`).
    pub kind: String,
    pub resource_group: String,
    pub id: String,
    pub name: String,
    pub location: String,
    pub tags: Value,
    pub properties: Value,
    /// Receiver name → sealed URL (action groups).
    pub secrets: Value,
    /// Activity-log rules take records after this activity-log seq.
    pub from_seq: i64,
    pub created_at: String,
    pub created_by: String,
    pub updated_at: String,
    pub updated_by: String,
}

fn json_col(row: &DbRow, col: &str) -> Result<Value> {
    let s: String = row.get(col);
    serde_json::from_str(&s).map_err(|e| StoreError::Invalid(format!("stored alert {col}: {e}")))
}

fn resource_from_row(row: DbRow) -> Result<AlertResourceRow> {
    Ok(AlertResourceRow {
        kind: row.get("kind"),
        resource_group: row.get("rg_key"),
        id: row.get("id"),
        name: row.get("name"),
        location: row.get("location"),
        tags: json_col(&row, "tags")?,
        properties: json_col(&row, "properties")?,
        secrets: json_col(&row, "secrets")?,
        from_seq: row.get("from_seq"),
        created_at: row.get("created_at"),
        created_by: row.get("created_by"),
        updated_at: row.get("updated_at"),
        updated_by: row.get("updated_by"),
    })
}

/// The state of one metric rule for one dimension combination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertStateRow {
    /// Canonical JSON of the combination.
    pub dims: String,
    /// `Fired` or `Resolved`.
    pub condition: String,
    pub alert_id: String,
    pub fired_at: String,
    pub resolved_at: Option<String>,
}

/// A notification to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub rule_id: String,
    pub action_group_id: String,
    pub receiver: String,
    /// The common-alert-schema JSON.
    pub payload: String,
}

/// A notification waiting for its receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: i64,
    pub rule_id: String,
    pub action_group_id: String,
    pub receiver: String,
    pub payload: String,
    pub attempts: i64,
    pub state: String,
    pub last_error: Option<String>,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn insert_notifications(
    conn: &mut crate::meta::Conn,
    items: &[NewNotification],
) -> Result<()> {
    let now = crate::time_fmt::now();
    let due = now_ms();
    for n in items {
        sqlx::query(
            "INSERT INTO alert_notifications(rule_id, action_group_id, receiver, payload, next_try, created)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&n.rule_id)
        .bind(&n.action_group_id)
        .bind(&n.receiver)
        .bind(&n.payload)
        .bind(due)
        .bind(&now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl MetadataStore {
    /// Creates or replaces a resource (keyed by kind, resource group and name in any case) with its activity
    /// record; returns whether it was created. A replaced resource keeps its id's spelling, creation and
    /// `from_seq`.
    pub async fn put_alert_resource(
        &self,
        r: &AlertResourceRow,
        activity: &ActivityEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM alert_resources WHERE kind = $1 AND rg_key = $2 AND name_key = $3",
        )
        .bind(&r.kind)
        .bind(r.resource_group.to_ascii_lowercase())
        .bind(r.name.to_ascii_lowercase())
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_some() {
            sqlx::query(
                "UPDATE alert_resources SET location = $1, tags = $2, properties = $3, secrets = $4, updated_at = $5,
                 updated_by = $6 WHERE kind = $7 AND rg_key = $8 AND name_key = $9",
            )
            .bind(&r.location)
            .bind(r.tags.to_string())
            .bind(r.properties.to_string())
            .bind(r.secrets.to_string())
            .bind(&r.updated_at)
            .bind(&r.updated_by)
            .bind(&r.kind)
            .bind(r.resource_group.to_ascii_lowercase())
            .bind(r.name.to_ascii_lowercase())
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "INSERT INTO alert_resources(kind, rg_key, name_key, id, name, location, tags, properties, secrets,
                 from_seq, created_at, created_by, updated_at, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&r.kind)
            .bind(r.resource_group.to_ascii_lowercase())
            .bind(r.name.to_ascii_lowercase())
            .bind(&r.id)
            .bind(&r.name)
            .bind(&r.location)
            .bind(r.tags.to_string())
            .bind(r.properties.to_string())
            .bind(r.secrets.to_string())
            .bind(r.from_seq)
            .bind(&r.created_at)
            .bind(&r.created_by)
            .bind(&r.updated_at)
            .bind(&r.updated_by)
            .execute(&mut *tx)
            .await?;
        }
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(exists.is_none())
    }

    pub async fn alert_resource(
        &self,
        kind: &str,
        rg: &str,
        name: &str,
    ) -> Result<Option<AlertResourceRow>> {
        sqlx::query(
            "SELECT * FROM alert_resources WHERE kind = $1 AND rg_key = $2 AND name_key = $3",
        )
        .bind(kind)
        .bind(rg.to_ascii_lowercase())
        .bind(name.to_ascii_lowercase())
        .fetch_optional(self.reader())
        .await?
        .map(resource_from_row)
        .transpose()
    }

    /// A resource by its id in any case.
    pub async fn alert_resource_by_id(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<AlertResourceRow>> {
        sqlx::query("SELECT * FROM alert_resources WHERE kind = $1 AND lower(id) = $2")
            .bind(kind)
            .bind(id.trim_end_matches('/').to_ascii_lowercase())
            .fetch_optional(self.reader())
            .await?
            .map(resource_from_row)
            .transpose()
    }

    /// Every resource of `kind`, in `rg` or in the whole subscription, by name.
    pub async fn alert_resources(
        &self,
        kind: &str,
        rg: Option<&str>,
    ) -> Result<Vec<AlertResourceRow>> {
        let rows = match rg {
            Some(rg) => {
                sqlx::query("SELECT * FROM alert_resources WHERE kind = $1 AND rg_key = $2 ORDER BY rg_key, name_key")
                    .bind(kind)
                    .bind(rg.to_ascii_lowercase())
                    .fetch_all(self.reader())
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM alert_resources WHERE kind = $1 ORDER BY rg_key, name_key")
                    .bind(kind)
                    .fetch_all(self.reader())
                    .await?
            }
        };
        rows.into_iter().map(resource_from_row).collect()
    }

    /// Deletes a resource (and a rule's states) with its activity record; false when there was none.
    pub async fn delete_alert_resource(
        &self,
        kind: &str,
        rg: &str,
        name: &str,
        activity: &ActivityEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let id: Option<String> = sqlx::query_scalar(
            "DELETE FROM alert_resources WHERE kind = $1 AND rg_key = $2 AND name_key = $3 RETURNING id",
        )
        .bind(kind)
        .bind(rg.to_ascii_lowercase())
        .bind(name.to_ascii_lowercase())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM alert_states WHERE rule_key = $1")
            .bind(id.to_ascii_lowercase())
            .execute(&mut *tx)
            .await?;
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The activity log's last seq (0 when empty): where a new activity-log rule starts.
    pub async fn activity_last_seq(&self) -> Result<i64> {
        let rows = self
            .activity_rows(&super::ActivityFilter {
                limit: Some(1),
                newest_first: true,
                ..Default::default()
            })
            .await?;
        Ok(rows.first().map(|(s, _)| *s).unwrap_or(0))
    }

    /// Every stored state of a metric rule (`rule_key`: its lower-case id).
    pub async fn alert_states(&self, rule_key: &str) -> Result<Vec<AlertStateRow>> {
        let rows = sqlx::query(
            "SELECT dims, condition, alert_id, fired_at, resolved_at FROM alert_states WHERE rule_key = $1 ORDER BY dims",
        )
        .bind(rule_key)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AlertStateRow {
                dims: r.get(0),
                condition: r.get(1),
                alert_id: r.get(2),
                fired_at: r.get(3),
                resolved_at: r.get(4),
            })
            .collect())
    }

    /// Stores a metric rule's transitions and the notifications they send, together.
    pub async fn record_alert_transitions(
        &self,
        rule_key: &str,
        states: &[AlertStateRow],
        notifications: &[NewNotification],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = crate::time_fmt::now();
        for s in states {
            sqlx::query(
                "INSERT INTO alert_states(rule_key, dims, condition, alert_id, fired_at, resolved_at, updated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT(rule_key, dims) DO UPDATE SET condition = excluded.condition,
                   alert_id = excluded.alert_id, fired_at = excluded.fired_at,
                   resolved_at = excluded.resolved_at, updated = excluded.updated",
            )
            .bind(rule_key)
            .bind(&s.dims)
            .bind(&s.condition)
            .bind(&s.alert_id)
            .bind(&s.fired_at)
            .bind(&s.resolved_at)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        insert_notifications(&mut tx, notifications).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores what activity-log rules fired on records up to `seq` and moves `consumer`'s cursor there.
    pub async fn take_activity_alerts(
        &self,
        consumer: &str,
        seq: i64,
        notifications: &[NewNotification],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_notifications(&mut tx, notifications).await?;
        set_consumer_seq_on(&mut tx, consumer, "activity", None, seq).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Pending notifications whose next attempt is due, oldest first.
    pub async fn due_alert_notifications(&self, limit: i64) -> Result<Vec<NotificationRow>> {
        let rows = sqlx::query(
            "SELECT id, rule_id, action_group_id, receiver, payload, attempts, state, last_error
             FROM alert_notifications WHERE state = 'pending' AND next_try <= $1 ORDER BY id LIMIT $2",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(notification_from_row).collect())
    }

    /// Every notification of a rule (newest last), for operators and tests.
    pub async fn alert_notifications(&self, rule_id: Option<&str>) -> Result<Vec<NotificationRow>> {
        let rows = sqlx::query(
            "SELECT id, rule_id, action_group_id, receiver, payload, attempts, state, last_error
             FROM alert_notifications WHERE $1 IS NULL OR lower(rule_id) = lower($2) ORDER BY id",
        )
        .bind(rule_id)
        .bind(rule_id)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(notification_from_row).collect())
    }

    /// A notification delivered (`state` = `delivered`) or given up (`failed`, with why).
    pub async fn finish_alert_notification(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE alert_notifications SET state = $1, attempts = attempts + 1, last_error = COALESCE($2, last_error),
             delivered_at = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(error)
        .bind(crate::time_fmt::now())
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// A failed attempt: try again in `delay_ms`.
    pub async fn retry_alert_notification(
        &self,
        id: i64,
        delay_ms: i64,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE alert_notifications SET attempts = attempts + 1, last_error = $1, next_try = $2 WHERE id = $3",
        )
        .bind(error)
        .bind(now_ms() + delay_ms)
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// How many notifications wait for delivery (a backlog for the metrics endpoint).
    pub async fn pending_alert_notifications(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM alert_notifications WHERE state = 'pending'")
                .fetch_one(self.reader())
                .await?,
        )
    }
}

fn notification_from_row(r: DbRow) -> NotificationRow {
    NotificationRow {
        id: r.get(0),
        rule_id: r.get(1),
        action_group_id: r.get(2),
        receiver: r.get(3),
        payload: r.get(4),
        attempts: r.get(5),
        state: r.get(6),
        last_error: r.get(7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(name: &str) -> AlertResourceRow {
        AlertResourceRow {
            kind: "metricAlert".into(),
            resource_group: "RG1".into(),
            id: format!("/subscriptions/s/resourceGroups/RG1/providers/Microsoft.Insights/metricAlerts/{name}"),
            name: name.into(),
            location: "global".into(),
            tags: json!({}),
            properties: json!({"severity": 2}),
            secrets: json!({}),
            from_seq: 0,
            created_at: "t0".into(),
            created_by: "a".into(),
            updated_at: "t0".into(),
            updated_by: "a".into(),
        }
    }

    fn ev() -> ActivityEvent {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!("e{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        ActivityEvent::new(
            id,
            crate::time_fmt::now(),
            "Microsoft.Insights/metricAlerts/write",
            "/x",
            "a",
            "127.0.0.1",
            "c",
        )
    }

    #[tokio::test]
    async fn rules_states_and_notifications_survive_as_written() {
        let db = crate::testing::test_db().await;
        let meta = db.open().await;
        assert!(meta.put_alert_resource(&row("Big"), &ev()).await.unwrap());
        let mut changed = row("BIG");
        changed.id = "/other".into();
        changed.properties = json!({"severity": 3});
        assert!(!meta.put_alert_resource(&changed, &ev()).await.unwrap());
        let got = meta
            .alert_resource("metricAlert", "rg1", "big")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name, "Big");
        assert!(got.id.ends_with("/metricAlerts/Big"), "{}", got.id);
        assert_eq!(got.properties["severity"], 3);
        assert_eq!(
            meta.alert_resources("metricAlert", None)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(meta
            .alert_resource_by_id("metricAlert", &got.id.to_uppercase())
            .await
            .unwrap()
            .is_some());

        let key = got.id.to_ascii_lowercase();
        let fired = AlertStateRow {
            dims: "[]".into(),
            condition: "Fired".into(),
            alert_id: "a1".into(),
            fired_at: "t1".into(),
            resolved_at: None,
        };
        let n = NewNotification {
            rule_id: got.id.clone(),
            action_group_id: "g".into(),
            receiver: "hook".into(),
            payload: "{}".into(),
        };
        meta.record_alert_transitions(&key, std::slice::from_ref(&fired), std::slice::from_ref(&n))
            .await
            .unwrap();
        assert_eq!(meta.alert_states(&key).await.unwrap(), vec![fired]);
        let due = meta.due_alert_notifications(10).await.unwrap();
        assert_eq!(due.len(), 1);
        meta.retry_alert_notification(due[0].id, 60_000, "down")
            .await
            .unwrap();
        assert!(meta.due_alert_notifications(10).await.unwrap().is_empty());
        assert_eq!(meta.pending_alert_notifications().await.unwrap(), 1);
        meta.finish_alert_notification(due[0].id, "delivered", None)
            .await
            .unwrap();
        assert_eq!(meta.pending_alert_notifications().await.unwrap(), 0);
        assert_eq!(
            meta.alert_notifications(Some(&got.id)).await.unwrap()[0].attempts,
            2
        );

        meta.take_activity_alerts("alerts:activity", 7, &[n])
            .await
            .unwrap();
        assert_eq!(
            meta.consumer_seq("alerts:activity", "activity")
                .await
                .unwrap(),
            7
        );
        assert!(meta
            .delete_alert_resource("metricAlert", "rg1", "BIG", &ev())
            .await
            .unwrap());
        assert!(meta.alert_states(&key).await.unwrap().is_empty());
        assert!(!meta
            .delete_alert_resource("metricAlert", "rg1", "BIG", &ev())
            .await
            .unwrap());
    }
}
