//! SIEM sinks registered by the operator (migration 0025): what `moat monitor sink add` stores and what a
//! diagnostic setting's `marketplacePartnerId` names. The store keeps `config` (nothing secret) and an opaque
//! sealed string; sealing and opening happen in the server (`moat_server::monitor::sinks::partner`). Every change
//! is recorded in the activity log in its own transaction.

use super::activity::insert_activity;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::DbRow;
use moat_model::activity::ActivityEvent;
use sqlx::Row;

/// One registered sink.
#[derive(Clone, Debug, PartialEq)]
pub struct PartnerSinkRow {
    /// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Moat.Monitor/partnerSinks/{name}`: the
    /// `marketplacePartnerId` a diagnostic setting gives.
    pub id: String,
    pub name: String,
    /// `syslog` or `http`.
    pub kind: String,
    /// Address or URL, CA certificates, app name, header names, token secret URI: never a secret in clear.
    pub config: serde_json::Value,
    pub created: String,
    /// The sink's secrets (header values, a client key) sealed under the secrets key, bound to `id`; `None` when
    /// it has none. Never shown.
    pub sealed: Option<String>,
}

const COLUMNS: &str = "id, name, kind, config, created, sealed";

fn sink_row(r: DbRow) -> PartnerSinkRow {
    let config: String = r.get(3);
    PartnerSinkRow {
        id: r.get(0),
        name: r.get(1),
        kind: r.get(2),
        // Written only by `set_partner_sink` from a `serde_json::Value`: always JSON.
        config: serde_json::from_str(&config).unwrap_or(serde_json::Value::Null),
        created: r.get(4),
        sealed: r.get(5),
    }
}

impl MetadataStore {
    /// Registers a sink, or replaces the one with the same id (a new address, a rotated header). A name already
    /// used by a sink in another resource group is a `Conflict`.
    pub async fn set_partner_sink(
        &self,
        row: &PartnerSinkRow,
        activity: &ActivityEvent,
    ) -> Result<PartnerSinkRow> {
        let mut tx = self.begin_write().await?;
        let config = row.config.to_string();
        let updated = sqlx::query(
            "UPDATE partner_sinks SET kind = $1, config = $2, sealed = $3 WHERE lower(id) = lower($4)",
        )
        .bind(&row.kind)
        .bind(&config)
        .bind(&row.sealed)
        .bind(&row.id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            let r = sqlx::query(
                "INSERT INTO partner_sinks(id, name, kind, config, sealed, created) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&row.id)
            .bind(&row.name)
            .bind(&row.kind)
            .bind(&config)
            .bind(&row.sealed)
            .bind(&row.created)
            .execute(&mut *tx)
            .await;
            match r {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(StoreError::Conflict(format!(
                        "a sink named '{}' exists in another resource group",
                        row.name
                    )));
                }
                r => {
                    r?;
                }
            }
        }
        insert_activity(&mut tx, activity).await?;
        let stored = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM partner_sinks WHERE lower(id) = lower($1)"
        ))
        .bind(&row.id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(sink_row(stored))
    }

    /// The sink with this id (compared case-insensitively, as ARM compares resource ids).
    pub async fn partner_sink(&self, id: &str) -> Result<Option<PartnerSinkRow>> {
        Ok(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM partner_sinks WHERE lower(id) = lower($1)"
        ))
        .bind(id)
        .fetch_optional(self.reader())
        .await?
        .map(sink_row))
    }

    /// The sink named `name` (case-insensitive).
    pub async fn partner_sink_named(&self, name: &str) -> Result<Option<PartnerSinkRow>> {
        Ok(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM partner_sinks WHERE lower(name) = lower($1)"
        ))
        .bind(name)
        .fetch_optional(self.reader())
        .await?
        .map(sink_row))
    }

    pub async fn partner_sinks(&self) -> Result<Vec<PartnerSinkRow>> {
        Ok(sqlx::query(&format!(
            "SELECT {COLUMNS} FROM partner_sinks ORDER BY lower(name)"
        ))
        .fetch_all(self.reader())
        .await?
        .into_iter()
        .map(sink_row)
        .collect())
    }

    /// Forgets a sink; `false` if there was none. Settings naming it stop delivering there (their loop finds no
    /// sink and keeps the records, as for an unreachable one).
    pub async fn delete_partner_sink(&self, id: &str, activity: &ActivityEvent) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM partner_sinks WHERE lower(id) = lower($1)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        insert_activity(&mut tx, activity).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Replaces a sink's sealed secrets only if they still are `old` (a rotation of the secrets key).
    pub async fn reseal_partner_sink(&self, id: &str, old: &str, new: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE partner_sinks SET sealed = $1 WHERE lower(id) = lower($2) AND sealed = $3",
        )
        .bind(new)
        .bind(id)
        .bind(old)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str) -> PartnerSinkRow {
        PartnerSinkRow {
            id: id.into(),
            name: name.into(),
            kind: "syslog".into(),
            config: serde_json::json!({"address": "127.0.0.1:6514"}),
            created: crate::time_fmt::now(),
            sealed: Some("sealed".into()),
        }
    }

    /// A distinct record each call: event ids are unique in the activity log.
    fn event() -> ActivityEvent {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ActivityEvent::new(
            format!("c{n}"),
            crate::time_fmt::now(),
            "Moat.Monitor/partnerSinks/write",
            "/x",
            "op",
            "local",
            "k",
        )
    }

    #[tokio::test]
    async fn rows_are_found_by_id_in_any_case_replaced_and_deleted() {
        let db = crate::testing::test_db().await;
        let meta = db.open().await;
        let id = "/subscriptions/s/resourceGroups/moat/providers/Moat.Monitor/partnerSinks/siem";
        meta.set_partner_sink(&row(id, "siem"), &event())
            .await
            .unwrap();
        let got = meta
            .partner_sink(&id.to_uppercase())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name, "siem");
        assert_eq!(got.config["address"], "127.0.0.1:6514");
        let mut changed = row(&id.to_lowercase(), "siem");
        changed.config = serde_json::json!({"address": "127.0.0.1:7514"});
        meta.set_partner_sink(&changed, &event()).await.unwrap();
        assert_eq!(meta.partner_sinks().await.unwrap().len(), 1);
        assert_eq!(
            meta.partner_sink(id).await.unwrap().unwrap().config["address"],
            "127.0.0.1:7514"
        );
        let other =
            "/subscriptions/s/resourceGroups/other/providers/Moat.Monitor/partnerSinks/SIEM";
        assert!(matches!(
            meta.set_partner_sink(&row(other, "SIEM"), &event()).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(meta
            .reseal_partner_sink(id, "sealed", "resealed")
            .await
            .unwrap());
        assert!(!meta
            .reseal_partner_sink(id, "sealed", "again")
            .await
            .unwrap());
        assert!(meta.delete_partner_sink(id, &event()).await.unwrap());
        assert!(!meta.delete_partner_sink(id, &event()).await.unwrap());
        assert!(meta.partner_sink_named("siem").await.unwrap().is_none());
    }
}
