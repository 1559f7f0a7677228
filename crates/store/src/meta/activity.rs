//! The activity log's rows. A change's record is inserted with [`insert_activity`] on the change's own
//! transaction, so a change that is committed is recorded and a record never describes a change that was not
//! made; refusals, which change nothing, come in batches from the server's audit writer.

use super::audit::{conditions, order_and_limit};
use super::trail;
use super::MetadataStore;
use crate::error::{Result, StoreError};
use crate::meta::Conn;
use crate::meta::DbRow;
use moat_model::activity::{ActivityEvent, ActivityStatus};
use moat_model::trail::{chain_name, AuditCanonical, ACTIVITY_LOG};
use sqlx::Row;

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

/// The bytes an activity record is chained by: its stored columns, in order (shared with the verifier).
pub(crate) fn canonical<'c>(c: &'c mut AuditCanonical, cols: &ActivityColumns<'_>) -> &'c [u8] {
    c.start()
        .str(Some(cols.event_data_id))
        .str(Some(cols.time))
        .str(Some(cols.category))
        .str(Some(cols.operation_name))
        .str(Some(cols.resource_id))
        .str(cols.registry)
        .str(Some(cols.caller))
        .str(Some(cols.caller_ip_address))
        .str(Some(cols.status))
        .str(Some(cols.sub_status))
        .int(Some(cols.http_status_code))
        .str(Some(cols.level))
        .str(Some(cols.correlation_id))
        .str(Some(cols.properties));
    c.bytes()
}

/// An activity row's stored columns.
pub(crate) struct ActivityColumns<'a> {
    pub event_data_id: &'a str,
    pub time: &'a str,
    pub category: &'a str,
    pub operation_name: &'a str,
    pub resource_id: &'a str,
    pub registry: Option<&'a str>,
    pub caller: &'a str,
    pub caller_ip_address: &'a str,
    pub status: &'a str,
    pub sub_status: &'a str,
    pub http_status_code: i64,
    pub level: &'a str,
    pub correlation_id: &'a str,
    pub properties: &'a str,
}

/// Writes `event` (bounded and escaped) on `conn`: the transaction of the change it records. The record is
/// chained to its registry's activity chain (or the chain of records of no registry) in that transaction.
pub(crate) async fn insert_activity(conn: &mut Conn, event: &ActivityEvent) -> Result<()> {
    let e = event.sanitized();
    let properties = e.properties.to_string();
    let cols = ActivityColumns {
        event_data_id: &e.event_data_id,
        time: &e.time,
        category: &e.category,
        operation_name: &e.operation_name,
        resource_id: &e.resource_id,
        registry: e.registry.as_deref(),
        caller: &e.caller,
        caller_ip_address: &e.caller_ip_address,
        status: e.status.as_str(),
        sub_status: &e.sub_status,
        http_status_code: e.http_status_code as i64,
        level: &e.level,
        correlation_id: &e.correlation_id,
        properties: &properties,
    };
    let last: i64 = sqlx::query_scalar(&super::Dialect::of(conn).last_seq("activity_events"))
        .fetch_one(&mut *conn)
        .await?;
    let seq = last + 1;
    let chain = chain_name(ACTIVITY_LOG, cols.registry);
    let mut head = trail::head(conn, &chain).await?;
    let link = head.append(seq, canonical(&mut AuditCanonical::default(), &cols));
    sqlx::query(
        "INSERT INTO activity_events(seq, event_data_id, time, category, operation_name, resource_id, registry,
            caller, caller_ip_address, status, sub_status, http_status_code, level, correlation_id, properties,
            link)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)",
    )
    .bind(seq)
    .bind(cols.event_data_id)
    .bind(cols.time)
    .bind(cols.category)
    .bind(cols.operation_name)
    .bind(cols.resource_id)
    .bind(cols.registry)
    .bind(cols.caller)
    .bind(cols.caller_ip_address)
    .bind(cols.status)
    .bind(cols.sub_status)
    .bind(cols.http_status_code)
    .bind(cols.level)
    .bind(cols.correlation_id)
    .bind(cols.properties)
    .bind(link)
    .execute(&mut *conn)
    .await?;
    trail::set_head(conn, &chain, ACTIVITY_LOG, cols.registry, &head).await?;
    Ok(())
}

fn from_row(r: DbRow) -> Result<ActivityEvent> {
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
        let mut tx = self.begin_write().await?;
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
                sqlx::query_scalar("SELECT seq FROM activity_events WHERE event_data_id = $1")
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
        let sql = super::dialect::numbered(&sql);
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        q.bind(f.limit.filter(|n| *n >= 0).unwrap_or(i64::MAX))
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
            sqlx::query_scalar(&self.dialect.last_seq("activity_events"))
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
