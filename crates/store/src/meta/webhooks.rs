//! ACR webhooks and their deliveries (migration 0024). The store keeps the service URI and headers as the opaque
//! sealed strings the server gives it. Deliveries are queued in the transaction that moves the `webhooks`
//! consumer's cursor on the audit log, so an event is queued once, and a crash between the two loses nothing.

use super::activity::insert_activity;
use super::consumers::set_consumer_seq_on;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use serde_json::{json, Value};
use sqlx::Row;

/// The consumer (of the audit log) that queues webhook deliveries.
pub const WEBHOOK_CONSUMER: &str = "webhooks";

/// One webhook as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRow {
    pub registry_id: String,
    pub name: String,
    pub location: String,
    /// A JSON object of the resource's tags.
    pub tags: Value,
    pub enabled: bool,
    pub scope: String,
    pub actions: Vec<String>,
    pub service_uri_sealed: String,
    pub custom_headers_sealed: String,
    /// The custom headers' names (their values are sealed).
    pub header_names: Vec<String>,
    pub created: String,
    pub updated: String,
}

impl WebhookRow {
    /// What the activity log records of it: everything but the secrets.
    fn public(&self) -> Value {
        json!({
            "location": self.location, "tags": self.tags,
            "status": if self.enabled { "enabled" } else { "disabled" },
            "scope": self.scope, "actions": self.actions, "customHeaderNames": self.header_names,
        })
    }
}

/// A delivery to queue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    pub registry_id: String,
    pub webhook: String,
    pub event_id: String,
    pub action: String,
    pub payload: Value,
}

/// One delivery as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRow {
    pub id: i64,
    pub registry_id: String,
    pub webhook: String,
    pub event_id: String,
    pub action: String,
    pub payload: Value,
    pub created: String,
    pub attempts: i64,
    pub next_try: Option<String>,
    /// `Pending`, `Delivered` or `Failed`.
    pub state: String,
    pub request: Option<Value>,
    pub response: Option<Value>,
}

const COLUMNS: &str =
    "registry_id, name, location, tags, enabled, scope, actions, service_uri_sealed, \
    custom_headers_sealed, header_names, created_at, updated_at";
const DELIVERY_COLUMNS: &str =
    "id, registry_id, webhook, event_id, action, payload, created_at, attempts, \
    next_try, state, request, response";

fn json_col(r: &DbRow, col: &str) -> Result<Value> {
    let text: String = r.get(col);
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Invalid(format!("stored webhook {col}: {e}")))
}

fn opt_json_col(r: &DbRow, col: &str) -> Result<Option<Value>> {
    let text: Option<String> = r.get(col);
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| StoreError::Invalid(format!("stored delivery {col}: {e}")))
    })
    .transpose()
}

fn strings(v: Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn from_row(r: DbRow) -> Result<WebhookRow> {
    Ok(WebhookRow {
        registry_id: r.get("registry_id"),
        name: r.get("name"),
        location: r.get("location"),
        tags: json_col(&r, "tags")?,
        enabled: r.get::<i64, _>("enabled") != 0,
        scope: r.get("scope"),
        actions: strings(json_col(&r, "actions")?),
        service_uri_sealed: r.get("service_uri_sealed"),
        custom_headers_sealed: r.get("custom_headers_sealed"),
        header_names: strings(json_col(&r, "header_names")?),
        created: r.get("created_at"),
        updated: r.get("updated_at"),
    })
}

fn delivery_from_row(r: DbRow) -> Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get("id"),
        registry_id: r.get("registry_id"),
        webhook: r.get("webhook"),
        event_id: r.get("event_id"),
        action: r.get("action"),
        payload: json_col(&r, "payload")?,
        created: r.get("created_at"),
        attempts: r.get("attempts"),
        next_try: r.get("next_try"),
        state: r.get("state"),
        request: opt_json_col(&r, "request")?,
        response: opt_json_col(&r, "response")?,
    })
}

impl MetadataStore {
    /// Creates or replaces a webhook (names compared in any case, as ARM does), refusing a new one beyond `limit`
    /// for its registry; `activity` is written with the change. Returns the stored row and whether it is new. A
    /// replacement keeps the creation time and, where `row` leaves them empty (`""`), the sealed secrets.
    pub async fn put_webhook(
        &self,
        row: &WebhookRow,
        limit: usize,
        activity: &ActivityEvent,
    ) -> Result<(WebhookRow, bool)> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM registries WHERE id = $1")
            .bind(&row.registry_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let existing = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM webhooks WHERE registry_id = $1 AND lower(name) = lower($2)"
        ))
        .bind(&row.registry_id)
        .bind(&row.name)
        .fetch_optional(&mut *tx)
        .await?
        .map(from_row)
        .transpose()?;
        let mut new = row.clone();
        let created = existing.is_none();
        match &existing {
            Some(old) => {
                new.name = old.name.clone();
                new.created = old.created.clone();
                if new.service_uri_sealed.is_empty() {
                    new.service_uri_sealed = old.service_uri_sealed.clone();
                }
                if new.custom_headers_sealed.is_empty() {
                    new.custom_headers_sealed = old.custom_headers_sealed.clone();
                    new.header_names = old.header_names.clone();
                }
            }
            None => {
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE registry_id = $1")
                        .bind(&row.registry_id)
                        .fetch_one(&mut *tx)
                        .await?;
                if count as usize >= limit {
                    return Err(StoreError::Limit(format!(
                        "the registry has {count} webhooks, the most its SKU allows ({limit}): delete one or move to a higher SKU"
                    )));
                }
                if new.service_uri_sealed.is_empty() {
                    return Err(StoreError::Invalid(
                        "a new webhook needs a service URI".into(),
                    ));
                }
            }
        }
        sqlx::query(&format!(
            "INSERT INTO webhooks({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
             ON CONFLICT(registry_id, name) DO UPDATE SET location = excluded.location, tags = excluded.tags,
                enabled = excluded.enabled, scope = excluded.scope, actions = excluded.actions,
                service_uri_sealed = excluded.service_uri_sealed,
                custom_headers_sealed = excluded.custom_headers_sealed, header_names = excluded.header_names,
                updated_at = excluded.updated_at"
        ))
        .bind(&new.registry_id)
        .bind(&new.name)
        .bind(&new.location)
        .bind(new.tags.to_string())
        .bind(i64::from(new.enabled))
        .bind(&new.scope)
        .bind(json!(new.actions).to_string())
        .bind(&new.service_uri_sealed)
        .bind(&new.custom_headers_sealed)
        .bind(json!(new.header_names).to_string())
        .bind(&new.created)
        .bind(&new.updated)
        .execute(&mut *tx)
        .await?;
        let record = activity.clone().with_change(
            existing.as_ref().map(WebhookRow::public),
            Some(new.public()),
        );
        insert_activity(&mut tx, &record).await?;
        tx.commit().await?;
        Ok((new, created))
    }

    pub async fn webhook(&self, registry_id: &str, name: &str) -> Result<Option<WebhookRow>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM webhooks WHERE registry_id = $1 AND lower(name) = lower($2)"
        ))
        .bind(registry_id)
        .bind(name)
        .fetch_optional(self.reader())
        .await?
        .map(from_row)
        .transpose()
    }

    pub async fn webhooks(&self, registry_id: &str) -> Result<Vec<WebhookRow>> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM webhooks WHERE registry_id = $1 ORDER BY name"
        ))
        .bind(registry_id)
        .fetch_all(self.reader())
        .await?
        .into_iter()
        .map(from_row)
        .collect()
    }

    /// Every webhook, with its registry's lower-case name (the audit log names registries, not ids).
    pub async fn all_webhooks(&self) -> Result<Vec<(String, WebhookRow)>> {
        let cols = COLUMNS
            .split(", ")
            .map(|c| format!("w.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!(
            "SELECT r.name AS registry_name, {cols} FROM webhooks w JOIN registries r ON r.id = w.registry_id
             ORDER BY w.registry_id, w.name"
        ))
        .fetch_all(self.reader())
        .await?
        .into_iter()
        .map(|r| {
            let reg: String = r.get("registry_name");
            from_row(r).map(|w| (reg.to_ascii_lowercase(), w))
        })
        .collect()
    }

    /// Deletes a webhook and its deliveries; `activity` is written with the change. False when there was none.
    pub async fn delete_webhook(
        &self,
        registry_id: &str,
        name: &str,
        activity: &ActivityEvent,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM webhooks WHERE registry_id = $1 AND lower(name) = lower($2)"
        ))
        .bind(registry_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .map(from_row)
        .transpose()?;
        let Some(old) = existing else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM webhook_deliveries WHERE registry_id = $1 AND webhook = $2")
            .bind(registry_id)
            .bind(&old.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhooks WHERE registry_id = $1 AND name = $2")
            .bind(registry_id)
            .bind(&old.name)
            .execute(&mut *tx)
            .await?;
        insert_activity(
            &mut tx,
            &activity.clone().with_change(Some(old.public()), None),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Queues `deliveries` (to try at `now`) and, when `cursor` is given, moves the `webhooks` consumer of the
    /// audit log there, in one transaction. A delivery whose webhook is gone meanwhile is dropped. Returns the
    /// ids of the queued deliveries.
    pub async fn queue_webhook_deliveries(
        &self,
        deliveries: &[NewDelivery],
        cursor: Option<i64>,
        now: &str,
    ) -> Result<Vec<i64>> {
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::new();
        for d in deliveries {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO webhook_deliveries(registry_id, webhook, event_id, action, payload, created_at, next_try)
                 SELECT $1, name, $2, $3, $4, $5, $6 FROM webhooks WHERE registry_id = $7 AND name = $8
                 RETURNING id",
            )
            .bind(&d.registry_id)
            .bind(&d.event_id)
            .bind(&d.action)
            .bind(d.payload.to_string())
            .bind(now)
            .bind(now)
            .bind(&d.registry_id)
            .bind(&d.webhook)
            .fetch_optional(&mut *tx)
            .await?;
            ids.extend(id);
        }
        if let Some(seq) = cursor {
            set_consumer_seq_on(&mut tx, WEBHOOK_CONSUMER, "audit", None, seq).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Deliveries due at `now` (oldest first, per webhook in queue order), at most `limit`.
    pub async fn due_webhook_deliveries(&self, now: &str, limit: i64) -> Result<Vec<DeliveryRow>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE next_try IS NOT NULL AND next_try <= $1
             ORDER BY id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(self.reader())
        .await?
        .into_iter()
        .map(delivery_from_row)
        .collect()
    }

    /// Records an attempt: `next_try` `None` ends the delivery in `state` (`Delivered` or `Failed`).
    pub async fn record_webhook_attempt(
        &self,
        id: i64,
        next_try: Option<&str>,
        state: &str,
        request: &Value,
        response: &Value,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_try = $1, state = $2, request = $3,
                response = $4 WHERE id = $5",
        )
        .bind(next_try)
        .bind(state)
        .bind(request.to_string())
        .bind(response.to_string())
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// A webhook's deliveries, newest first, below `before_id` (paging), at most `limit`.
    pub async fn webhook_deliveries(
        &self,
        registry_id: &str,
        webhook: &str,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE registry_id = $1 AND webhook = $2 AND id < $3
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(registry_id)
        .bind(webhook)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.reader())
        .await?
        .into_iter()
        .map(delivery_from_row)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(registry_id: &str, name: &str) -> WebhookRow {
        WebhookRow {
            registry_id: registry_id.into(),
            name: name.into(),
            location: "westeurope".into(),
            tags: json!({}),
            enabled: true,
            scope: String::new(),
            actions: vec!["push".into()],
            service_uri_sealed: "sealed-uri".into(),
            custom_headers_sealed: "sealed-headers".into(),
            header_names: vec!["X-Key".into()],
            created: crate::time_fmt::now(),
            updated: crate::time_fmt::now(),
        }
    }

    fn activity() -> ActivityEvent {
        ActivityEvent::new(
            uuid_like(),
            crate::time_fmt::now(),
            "Microsoft.ContainerRegistry/registries/webhooks/write",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/app/webhooks/h",
            "c",
            "ip",
            "corr",
        )
    }

    fn uuid_like() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        format!("ev-{}", N.fetch_add(1, Ordering::Relaxed))
    }

    #[tokio::test]
    async fn webhooks_are_limited_keep_secrets_and_go_with_their_registry() {
        let db = crate::testing::test_db().await;
        let meta = db.open().await;
        let reg = meta
            .create_registry(
                "app",
                "app.test",
                "rg",
                &moat_model::RegistrySettings::new(
                    moat_model::Sku::Basic,
                    moat_model::Location::parse("local").unwrap(),
                ),
                false,
                None,
            )
            .await
            .unwrap();
        let (row, created) = meta
            .put_webhook(&hook(&reg.id, "hook1"), 2, &activity())
            .await
            .unwrap();
        assert!(created);
        assert_eq!(row.service_uri_sealed, "sealed-uri");
        // A replacement without secrets keeps the stored ones; the name keeps its first spelling.
        let mut update = hook(&reg.id, "HOOK1");
        update.service_uri_sealed.clear();
        update.custom_headers_sealed.clear();
        update.enabled = false;
        let (row, created) = meta.put_webhook(&update, 2, &activity()).await.unwrap();
        assert!(!created);
        assert_eq!(row.name, "hook1");
        assert_eq!(row.service_uri_sealed, "sealed-uri");
        assert_eq!(row.header_names, vec!["X-Key"]);
        assert!(
            !meta
                .webhook(&reg.id, "hook1")
                .await
                .unwrap()
                .unwrap()
                .enabled
        );
        meta.put_webhook(&hook(&reg.id, "hook2"), 2, &activity())
            .await
            .unwrap();
        let err = meta
            .put_webhook(&hook(&reg.id, "hook3"), 2, &activity())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Limit(_)), "{err}");

        // Deliveries are queued with the cursor; a delivery to a deleted webhook is dropped.
        let now = crate::time_fmt::now();
        let d = |w: &str| NewDelivery {
            registry_id: reg.id.clone(),
            webhook: w.into(),
            event_id: "e".into(),
            action: "push".into(),
            payload: json!({"action": "push"}),
        };
        let ids = meta
            .queue_webhook_deliveries(&[d("hook1"), d("nohook"), d("hook2")], Some(7), &now)
            .await
            .unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(
            meta.consumer_seq(WEBHOOK_CONSUMER, "audit").await.unwrap(),
            7
        );
        let due = meta.due_webhook_deliveries(&now, 10).await.unwrap();
        assert_eq!(due.len(), 2);
        meta.record_webhook_attempt(
            due[0].id,
            None,
            "Delivered",
            &json!({}),
            &json!({"statusCode": "200"}),
        )
        .await
        .unwrap();
        assert_eq!(
            meta.due_webhook_deliveries(&now, 10).await.unwrap().len(),
            1
        );
        let listed = meta
            .webhook_deliveries(&reg.id, "hook1", None, 10)
            .await
            .unwrap();
        assert_eq!(listed[0].state, "Delivered");
        assert_eq!(listed[0].attempts, 1);

        assert!(meta
            .delete_webhook(&reg.id, "hook2", &activity())
            .await
            .unwrap());
        assert!(!meta
            .delete_webhook(&reg.id, "hook2", &activity())
            .await
            .unwrap());
        assert!(meta
            .due_webhook_deliveries(&now, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(meta.all_webhooks().await.unwrap().len(), 1);
        meta.delete_registry("app", &activity()).await.unwrap();
        assert!(meta.all_webhooks().await.unwrap().is_empty());
        assert!(meta
            .webhook_deliveries(&reg.id, "hook1", None, 10)
            .await
            .unwrap()
            .is_empty());
    }
}
