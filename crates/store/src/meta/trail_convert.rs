//! The one-time conversion of rows written before the trail: the old `audit_events` table (renamed
//! `audit_events_v1` by migration 0020) into compact chained rows with the same seqs, and activity rows without a
//! link chained in seq order. In batches, each its own transaction, resuming where a crash stopped it.

use super::activity::{canonical, ActivityColumns};
use super::audit::insert_events_at;
use super::trail;
use crate::error::Result;
use crate::meta::{begin_write, Dialect, Pool};
use moat_model::audit::AuditEvent;
use moat_model::trail::{chain_name, AuditCanonical, ACTIVITY_LOG};
use sqlx::Row;

const BATCH: i64 = 5000;

pub(crate) async fn run(writer: &Pool, dialect: Dialect) -> Result<()> {
    let legacy: Option<i64> = sqlx::query_scalar(dialect.table_exists())
        .bind("audit_events_v1")
        .fetch_optional(writer)
        .await?;
    if legacy.is_some() {
        convert_audit(writer, dialect).await?;
    }
    chain_activity(writer, dialect).await
}

async fn convert_audit(writer: &Pool, dialect: Dialect) -> Result<()> {
    loop {
        let mut tx = begin_write(writer, dialect).await?;
        let done: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_records")
            .fetch_one(&mut *tx)
            .await?;
        let rows =
            sqlx::query("SELECT * FROM audit_events_v1 WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(done)
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            sqlx::query("DROP TABLE audit_events_v1")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(());
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.get("seq")).collect();
        let events: Vec<AuditEvent> = rows
            .iter()
            .map(|r| AuditEvent {
                time_generated: r.get("time_generated"),
                category: r.get("category"),
                operation_name: r.get("operation_name"),
                registry: r.get("registry"),
                login_server: r.get("login_server"),
                repository: r.get("repository"),
                tag: r.get("tag"),
                digest: r.get("digest"),
                media_type: r.get("media_type"),
                size: r.get("size"),
                identity: r.get("identity"),
                caller_ip_address: r.get("caller_ip_address"),
                user_agent: r.get("user_agent"),
                duration_ms: r.get("duration_ms"),
                result_type: r.get("result_type"),
                result_description: r.get("result_description"),
                correlation_id: r.get("correlation_id"),
                endpoint: r.get("endpoint"),
            })
            .collect();
        insert_events_at(&mut tx, &events, None, Some(&seqs)).await?;
        tx.commit().await?;
    }
}

async fn chain_activity(writer: &Pool, dialect: Dialect) -> Result<()> {
    loop {
        let mut tx = begin_write(writer, dialect).await?;
        let rows = sqlx::query(
            "SELECT seq, event_data_id, time, category, operation_name, resource_id, registry, caller,
                caller_ip_address, status, sub_status, http_status_code, level, correlation_id, properties
             FROM activity_events WHERE link IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(());
        }
        let mut canon = AuditCanonical::default();
        for r in &rows {
            let seq: i64 = r.get("seq");
            let cols = columns(r);
            let chain = chain_name(ACTIVITY_LOG, cols.registry);
            let mut head = trail::head(&mut tx, &chain).await?;
            let link = head.append(seq, canonical(&mut canon, &cols));
            sqlx::query("UPDATE activity_events SET link = $1 WHERE seq = $2")
                .bind(link)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            trail::set_head(&mut tx, &chain, ACTIVITY_LOG, cols.registry, &head).await?;
        }
        tx.commit().await?;
    }
}

/// The columns of an activity row read with the names above.
pub(crate) fn columns(r: &crate::meta::DbRow) -> ActivityColumns<'_> {
    ActivityColumns {
        event_data_id: r.get("event_data_id"),
        time: r.get("time"),
        category: r.get("category"),
        operation_name: r.get("operation_name"),
        resource_id: r.get("resource_id"),
        registry: r.get("registry"),
        caller: r.get("caller"),
        caller_ip_address: r.get("caller_ip_address"),
        status: r.get("status"),
        sub_status: r.get("sub_status"),
        http_status_code: r.get("http_status_code"),
        level: r.get("level"),
        correlation_id: r.get("correlation_id"),
        properties: r.get("properties"),
    }
}
