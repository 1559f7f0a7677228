//! The activity log's rows. A change's record is inserted with [`insert_activity`] on the change's own
//! transaction, so a change that is committed is recorded and a record never describes a change that was not
//! made; refusals, which change nothing, come in batches from the server's audit writer.

use super::audit::{conditions, order_and_limit};
use super::MetadataStore;
use crate::error::{Result, StoreError};
use moat_model::activity::{ActivityEvent, ActivityStatus};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

/// What `moat audit --log activity` asks for. Times are in the stored form (see `time_fmt`). Text filters match
/// in any case.
#[derive(Clone, Debug, Default)]
pub struct ActivityFilter {
    pub registry: Option<String>,
    pub operation: Option<String>,
    /// `Started`, `Succeeded` or `Failed`.
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only rows written after the row with this sequence number (`moat audit --follow`).
    pub after_seq: Option<i64>,
    /// At most this many rows: the newest ones when `newest_first`, else the oldest.
    pub limit: Option<i64>,
    pub newest_first: bool,
}

/// Writes `event` (bounded and escaped) on `conn`: the transaction of the change it records.
pub(crate) async fn insert_activity(
    conn: &mut SqliteConnection,
    event: &ActivityEvent,
) -> Result<()> {
    let e = event.sanitized();
    sqlx::query(
        "INSERT INTO activity_events(event_data_id, time, category, operation_name, resource_id, registry, caller,
            caller_ip_address, status, sub_status, http_status_code, level, correlation_id, properties)
         VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    )
    .bind(&e.event_data_id)
    .bind(&e.time)
    .bind(&e.category)
    .bind(&e.operation_name)
    .bind(&e.resource_id)
    .bind(&e.registry)
    .bind(&e.caller)
    .bind(&e.caller_ip_address)
    .bind(e.status.as_str())
    .bind(&e.sub_status)
    .bind(e.http_status_code as i64)
    .bind(&e.level)
    .bind(&e.correlation_id)
    .bind(e.properties.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn from_row(r: SqliteRow) -> Result<ActivityEvent> {
    let status: String = r.get("status");
    let properties: String = r.get("properties");
    let code: i64 = r.get("http_status_code");
    Ok(ActivityEvent {
        event_data_id: r.get("event_data_id"),
        time: r.get("time"),
        category: r.get("category"),
        operation_name: r.get("operation_name"),
        resource_id: r.get("resource_id"),
        registry: r.get("registry"),
        caller: r.get("caller"),
        caller_ip_address: r.get("caller_ip_address"),
        status: ActivityStatus::parse(&status)
            .ok_or_else(|| StoreError::Invalid(format!("stored activity status '{status}'")))?,
        sub_status: r.get("sub_status"),
        http_status_code: u16::try_from(code).unwrap_or(0),
        level: r.get("level"),
        correlation_id: r.get("correlation_id"),
        properties: serde_json::from_str(&properties)
            .map_err(|e| StoreError::Invalid(format!("stored activity properties: {e}")))?,
    })
}

impl MetadataStore {
    /// Records activity events that come with no change of their own (refusals) in one commit.
    pub async fn record_activity_batch(&self, events: &[ActivityEvent]) -> Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for e in events {
            insert_activity(&mut tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records one change made outside the store's own change functions, in a transaction of its own.
    pub async fn record_activity(&self, event: &ActivityEvent) -> Result<()> {
        self.record_activity_batch(std::slice::from_ref(event))
            .await
    }

    /// Whether any of the records `event_data_ids` is written.
    pub async fn activity_recorded(&self, event_data_ids: &[String]) -> Result<bool> {
        for id in event_data_ids {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM activity_events WHERE event_data_id = ?")
                    .bind(id)
                    .fetch_optional(&self.reader)
                    .await?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub async fn activity_events(&self, f: &ActivityFilter) -> Result<Vec<ActivityEvent>> {
        Ok(self
            .activity_rows(f)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// The records `f` selects with their sequence numbers (the order they were written in).
    pub async fn activity_rows(&self, f: &ActivityFilter) -> Result<Vec<(i64, ActivityEvent)>> {
        let mut sql = String::from("SELECT * FROM activity_events WHERE 1=1");
        let mut binds: Vec<&str> = Vec::new();
        conditions(
            &mut sql,
            &mut binds,
            &[
                ("registry", "=", &f.registry),
                ("operation_name", "~", &f.operation),
                ("status", "~", &f.status),
                ("time", ">=", &f.since),
                ("time", "<", &f.until),
            ],
        );
        order_and_limit(&mut sql, f.after_seq, f.newest_first);
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.bind(f.limit.unwrap_or(-1))
            .fetch_all(&self.reader)
            .await?
            .into_iter()
            .map(|r| {
                let seq: i64 = r.get("seq");
                from_row(r).map(|e| (seq, e))
            })
            .collect()
    }

    /// The sequence number of the last record written (0 when there is none).
    pub async fn activity_max_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM activity_events")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// The operation names the activity log holds.
    pub async fn activity_operation_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT operation_name FROM activity_events ORDER BY operation_name",
        )
        .fetch_all(&self.reader)
        .await?)
    }
}
