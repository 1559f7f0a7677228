//! The data-plane log, stored compactly and chained (see `moat_model::trail`): one `audit_records` row per
//! event, its repeated strings by id (`trail_strings`), the rest packed. Every writer goes through
//! [`insert_events`], which appends each record to its registry's chain and moves the chain's head in the same
//! transaction, so a committed record is always chained and a chained record always committed.

use super::trail::{intern, map_times, Dictionary};
use super::MetadataStore;
use crate::error::Result;
use crate::meta::Conn;
use moat_model::audit::AuditEvent;
use moat_model::trail::codec::{micros_of, put_opt_i, put_u, uuid_bytes};
use moat_model::trail::{chain_name, AuditCanonical, ChainState, TimeValue, AUDIT_LOG};
use std::collections::HashMap;
use std::sync::Arc;

/// What `moat audit` asks for. Times are in the stored form (see `time_fmt`). Text filters match in any case.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub registry: Option<String>,
    pub repository: Option<String>,
    pub operation: Option<String>,
    /// `ResultType`: `Success`, `Failure` or `Denied`.
    pub result: Option<String>,
    /// Only this identity's events (any case).
    pub identity: Option<String>,
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
                "~" => ("=", true),
                op => (op, false),
            };
            if collate {
                sql.push_str(&format!(" AND lower({col}) = lower(?)"));
            } else {
                sql.push_str(&format!(" AND {col} {op} ?"));
            }
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

/// The record's time as stored: microseconds when the text is in the stored form, else the text itself.
pub(crate) fn stored_time(s: &str) -> TimeValue<'_> {
    match micros_of(s) {
        Some(us) => TimeValue::Micros(us),
        None => TimeValue::Text(s),
    }
}

/// The bytes an audit record is chained by, from its resolved fields (the one definition writers and the
/// verifier share).
pub(crate) fn canonical<'c>(
    c: &'c mut AuditCanonical,
    time: TimeValue<'_>,
    e: &AuditEvent,
) -> &'c [u8] {
    c.start()
        .time(time)
        .str(Some(&e.category))
        .str(Some(&e.operation_name))
        .str(Some(&e.registry))
        .str(Some(&e.login_server))
        .str(e.repository.as_deref())
        .str(e.tag.as_deref())
        .str(e.digest.as_deref())
        .str(e.media_type.as_deref())
        .int(e.size)
        .str(e.identity.as_deref())
        .str(e.caller_ip_address.as_deref())
        .str(e.user_agent.as_deref())
        .int(e.duration_ms)
        .str(Some(&e.result_type))
        .str(Some(&e.result_description))
        .str(e.correlation_id.as_deref())
        .str(e.endpoint.as_deref());
    c.bytes()
}

/// The strings of `e` that go to the dictionary.
fn strings(e: &AuditEvent) -> impl Iterator<Item = &str> {
    let corr = e
        .correlation_id
        .as_deref()
        .filter(|c| uuid_bytes(c).is_none());
    [
        Some(e.category.as_str()),
        Some(&e.operation_name),
        Some(&e.registry),
        Some(&e.login_server),
        e.repository.as_deref(),
        e.tag.as_deref(),
        e.digest.as_deref(),
        e.media_type.as_deref(),
        e.identity.as_deref(),
        e.caller_ip_address.as_deref(),
        e.user_agent.as_deref(),
        Some(&e.result_type),
        Some(&e.result_description),
        corr,
        e.endpoint.as_deref(),
    ]
    .into_iter()
    .flatten()
}

/// The packed fields (`f`): string ids (0: none), optional integers, the correlation id.
fn pack(e: &AuditEvent, ids: &HashMap<String, i64>, out: &mut Vec<u8>) {
    let id = |s: &str| ids.get(s).copied().unwrap_or(0) as u64;
    let opt = |s: &Option<String>| s.as_deref().map(id).unwrap_or(0);
    out.clear();
    put_u(out, id(&e.category));
    put_u(out, id(&e.operation_name));
    put_u(out, id(&e.login_server));
    put_u(out, opt(&e.repository));
    put_u(out, opt(&e.tag));
    put_u(out, opt(&e.digest));
    put_u(out, opt(&e.media_type));
    put_opt_i(out, e.size);
    put_u(out, opt(&e.caller_ip_address));
    put_u(out, opt(&e.user_agent));
    put_opt_i(out, e.duration_ms);
    put_u(out, id(&e.result_type));
    put_u(out, id(&e.result_description));
    match e.correlation_id.as_deref() {
        None => put_u(out, 0),
        Some(c) => match uuid_bytes(c) {
            Some(b) => {
                put_u(out, 1);
                out.extend_from_slice(&b);
            }
            None => {
                put_u(out, 2);
                put_u(out, id(c));
            }
        },
    }
    put_u(out, opt(&e.endpoint));
}

/// A row about to be inserted: seq, time, registry id, identity id, packed fields, link.
type NewRow<'a> = (i64, TimeValue<'a>, i64, Option<i64>, Vec<u8>, i64);

/// Rows per multi-row INSERT (6 parameters each).
const ROWS_PER_STATEMENT: usize = 100;

/// Writes events on `conn` (the transaction of the change they record where there is one), chained. `dict` is
/// the writer's cache of committed ids; the pairs this call took from the database are returned so that the
/// caller can [`Dictionary::learn`] them once its transaction has committed.
pub(crate) async fn insert_events(
    conn: &mut Conn,
    events: &[AuditEvent],
    dict: Option<&Dictionary>,
) -> Result<Vec<(Arc<str>, i64)>> {
    insert_events_at(conn, events, dict, None).await
}

/// [`insert_events`] at given sequence numbers (ascending, after every existing row of their chains): the
/// conversion of rows written before the trail keeps their seqs.
pub(crate) async fn insert_events_at(
    conn: &mut Conn,
    events: &[AuditEvent],
    dict: Option<&Dictionary>,
    seqs: Option<&[i64]>,
) -> Result<Vec<(Arc<str>, i64)>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // Stored bounded and escaped: these fields carry client input, and `moat audit` prints them.
    let events: Vec<AuditEvent> = events.iter().map(AuditEvent::sanitized).collect();
    let all: Vec<&str> = events.iter().flat_map(strings).collect();
    let (ids, fresh) = intern(conn, dict, &all).await?;
    let last: i64 = sqlx::query_scalar(&super::Dialect::of(conn).last_seq("audit_records"))
        .fetch_one(&mut *conn)
        .await?;
    let mut heads: HashMap<String, (ChainState, String)> = HashMap::new();
    let mut canon = AuditCanonical::default();
    let mut rows: Vec<NewRow<'_>> = Vec::with_capacity(events.len());
    let (mut min_t, mut max_t) = (i64::MAX, i64::MIN);
    for (i, e) in events.iter().enumerate() {
        let seq = seqs.map_or(last + 1 + i as i64, |s| s[i]);
        let time = stored_time(&e.time_generated);
        if let TimeValue::Micros(us) = time {
            min_t = min_t.min(us);
            max_t = max_t.max(us);
        }
        let chain = chain_name(AUDIT_LOG, Some(&e.registry));
        if !heads.contains_key(&chain) {
            let h = super::trail::head(conn, &chain).await?;
            heads.insert(chain.clone(), (h, e.registry.clone()));
        }
        let (head, _) = heads.get_mut(&chain).expect("inserted above");
        let link = head.append(seq, canonical(&mut canon, time, e));
        let mut f = Vec::with_capacity(48);
        pack(e, &ids, &mut f);
        let reg = ids.get(e.registry.as_str()).copied().unwrap_or(0);
        let ident = e.identity.as_deref().and_then(|s| ids.get(s).copied());
        rows.push((seq, time, reg, ident, f, link));
    }
    let dialect = super::Dialect::of(conn);
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql =
            String::from("INSERT INTO audit_records(seq, t, reg, ident, f, link) VALUES ");
        sql.push_str(&super::dialect::value_rows(chunk.len(), 6));
        let mut q = sqlx::query(&sql);
        for (seq, time, reg, ident, f, link) in chunk {
            q = q.bind(seq);
            q = match (time, dialect) {
                (TimeValue::Micros(us), super::Dialect::Sqlite) => q.bind(*us),
                (TimeValue::Text(s), super::Dialect::Sqlite) => q.bind(*s),
                // PostgreSQL's column is text (it has no column of either type): see `raw_row`.
                (TimeValue::Micros(us), super::Dialect::Postgres) => q.bind(us.to_string()),
                (TimeValue::Text(s), super::Dialect::Postgres) => q.bind(format!("t:{s}")),
            };
            q = q.bind(reg).bind(ident).bind(f.as_slice()).bind(link);
        }
        q.execute(&mut *conn).await?;
    }
    for (chain, (head, registry)) in &heads {
        super::trail::set_head(conn, chain, AUDIT_LOG, Some(registry), head).await?;
    }
    let (first, end) = match seqs {
        Some(s) => (s[0], s[s.len() - 1]),
        None => (last + 1, last + events.len() as i64),
    };
    if min_t <= max_t {
        map_times(conn, first, end, min_t, max_t).await?;
    }
    let mut ops: Vec<i64> = events
        .iter()
        .filter_map(|e| ids.get(e.operation_name.as_str()).copied())
        .collect();
    ops.sort_unstable();
    ops.dedup();
    for op in ops {
        sqlx::query("INSERT INTO audit_operations(id) VALUES ($1) ON CONFLICT(id) DO NOTHING")
            .bind(op)
            .execute(&mut *conn)
            .await?;
    }
    Ok(fresh)
}

/// Writes one event in the caller's transaction (a change's own record).
pub(crate) async fn insert_event(conn: &mut Conn, e: &AuditEvent) -> Result<()> {
    insert_events(conn, std::slice::from_ref(e), None).await?;
    Ok(())
}

impl MetadataStore {
    /// Records an event that has no state change of its own (a pull, a login, a denial).
    pub async fn record(&self, event: &AuditEvent) -> Result<()> {
        self.record_batch(std::slice::from_ref(event)).await
    }

    /// Records many change-less events in one commit.
    pub async fn record_batch(&self, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let fresh = insert_events(&mut tx, events, Some(&self.dictionary)).await?;
        tx.commit().await?;
        self.dictionary.learn(fresh);
        Ok(())
    }
}
