use super::MetadataStore;
use crate::error::Result;
use moat_model::audit::AuditEvent;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

/// What `moat audit` asks for. Times are in the stored form (see `time_fmt`). Text filters match in any case.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub registry: Option<String>,
    pub repository: Option<String>,
    pub operation: Option<String>,
    /// `ResultType`: `Success`, `Failure` or `Denied`.
    pub result: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only rows written after the row with this sequence number (`moat audit --follow`).
    pub after_seq: Option<i64>,
    /// At most this many rows: the newest ones when `newest_first`, else the oldest.
    pub limit: Option<i64>,
    pub newest_first: bool,
}

/// Appends `WHERE` conditions for the filters that are set. `~` is an equality in any case (text as stored
/// by earlier versions, repositories as clients spelled them); registries are stored lower-case, and compared
/// exactly so that their index serves.
pub(crate) fn conditions<'a>(
    sql: &mut String,
    binds: &mut Vec<&'a str>,
    filters: &[(&str, &str, &'a Option<String>)],
) {
    for (col, op, v) in filters {
        if let Some(v) = v {
            let (op, collate) = match *op {
                "~" => ("=", " COLLATE NOCASE"),
                op => (op, ""),
            };
            sql.push_str(&format!(" AND {col} {op} ?{collate}"));
            binds.push(v);
        }
    }
}

/// `ORDER BY` and `LIMIT` of a filtered read.
pub(crate) fn order_and_limit(sql: &mut String, after_seq: Option<i64>, newest_first: bool) {
    if let Some(seq) = after_seq {
        sql.push_str(&format!(" AND seq > {seq}"));
    }
    sql.push_str(if newest_first {
        " ORDER BY seq DESC LIMIT ?"
    } else {
        " ORDER BY seq LIMIT ?"
    });
}

const COLUMNS: &str = "INSERT INTO audit_events(time_generated, category, operation_name, registry, login_server,
    repository, tag, digest, media_type, size, identity, caller_ip_address, user_agent, duration_ms, result_type,
    result_description, correlation_id, endpoint) VALUES ";
const ROW: &str = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
/// Rows per multi-row INSERT: one statement per many pulls keeps the batch writer's cost per event small.
const ROWS_PER_STATEMENT: usize = 50;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(COLUMNS);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(ROW);
    }
    sql
}

/// Writes events on `conn`, which is the transaction of the change they record where there is one.
async fn insert_events(conn: &mut SqliteConnection, events: &[AuditEvent]) -> Result<()> {
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        // Stored bounded and escaped: these fields carry client input, and `moat audit` prints them.
        let chunk: Vec<AuditEvent> = chunk.iter().map(AuditEvent::sanitized).collect();
        let sql = insert_sql(chunk.len());
        let mut q = sqlx::query(&sql);
        for e in &chunk {
            q = q
                .bind(&e.time_generated)
                .bind(&e.category)
                .bind(&e.operation_name)
                .bind(&e.registry)
                .bind(&e.login_server)
                .bind(&e.repository)
                .bind(&e.tag)
                .bind(&e.digest)
                .bind(&e.media_type)
                .bind(e.size)
                .bind(&e.identity)
                .bind(&e.caller_ip_address)
                .bind(&e.user_agent)
                .bind(e.duration_ms)
                .bind(&e.result_type)
                .bind(&e.result_description)
                .bind(&e.correlation_id)
                .bind(&e.endpoint);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) async fn insert_event(conn: &mut SqliteConnection, e: &AuditEvent) -> Result<()> {
    insert_events(conn, std::slice::from_ref(e)).await
}

fn from_row(r: SqliteRow) -> AuditEvent {
    AuditEvent {
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
    }
}

impl MetadataStore {
    /// Records an event that has no state change of its own (a pull, a login, a denial).
    pub async fn record(&self, event: &AuditEvent) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        insert_event(&mut conn, event).await
    }

    /// Records many change-less events in one commit.
    pub async fn record_batch(&self, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        insert_events(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        Ok(self
            .audit_rows(f)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect())
    }

    /// The events `f` selects with their sequence numbers (the order they were written in).
    pub async fn audit_rows(&self, f: &AuditFilter) -> Result<Vec<(i64, AuditEvent)>> {
        let mut sql = String::from("SELECT * FROM audit_events WHERE 1=1");
        let mut binds: Vec<&str> = Vec::new();
        conditions(
            &mut sql,
            &mut binds,
            &[
                ("registry", "=", &f.registry),
                ("repository", "~", &f.repository),
                ("operation_name", "~", &f.operation),
                ("result_type", "~", &f.result),
                ("time_generated", ">=", &f.since),
                ("time_generated", "<", &f.until),
            ],
        );
        order_and_limit(&mut sql, f.after_seq, f.newest_first);
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(f.limit.unwrap_or(-1))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<i64, _>("seq"), from_row(r)))
            .collect())
    }

    /// The sequence number of the last event written (0 when there is none).
    pub async fn audit_max_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_events")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    /// The operation names the data-plane log holds (names recorded by earlier versions included).
    pub async fn audit_operation_names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT operation_name FROM audit_events ORDER BY operation_name",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Whether either log holds a row of `registry` (a registry deleted since still has its trail).
    pub async fn logs_mention_registry(&self, registry: &str) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM activity_events WHERE registry = ?1)
                OR EXISTS (SELECT 1 FROM audit_events WHERE registry = ?1)",
        )
        .bind(registry.to_ascii_lowercase())
        .fetch_optional(&self.reader)
        .await?;
        Ok(found.is_some())
    }
}
