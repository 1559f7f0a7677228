//! What one sink takes from the logs next: the records after its cursor on one log, those of its registry and
//! categories, as [`SinkRecord`]s in their shipping schema, bounded in count and bytes.

use super::sink::SinkRecord;
use crate::state::AppState;
use moat_model::monitor::diagnostic_setting::{LOGIN_EVENTS, REPOSITORY_EVENTS};
use moat_model::monitor::resource_log::{self, Resource, ADMINISTRATIVE, AUDIT_TRAIL};
use moat_model::monitor::{activity_json, record_id};
use moat_store::meta::{ActivityFilter, AuditFilter};

/// Rows read from a log per batch.
pub const BATCH_ROWS: i64 = 500;
/// Bytes of serialized records per batch (a batch is cut before the record that would pass it).
pub const BATCH_BYTES: usize = 1 << 20;

/// Whom the records are for.
pub struct Scope<'a> {
    pub subscription: &'a str,
    /// The registry's lower-case name (the logs' registry column).
    pub registry: &'a str,
    pub resource: Resource<'a>,
    /// Enabled categories (canonical names).
    pub categories: &'a [&'static str],
}

/// A batch from one log: the records to ship with their seqs, and the seq the cursor moves to once they have
/// arrived (past rows of other categories too).
pub struct Batch {
    pub records: Vec<SinkRecord>,
    pub seqs: Vec<i64>,
    pub last_seq: i64,
    /// Every row after the cursor was read (none left out by the bounds): the log's end was reached.
    pub exhausted: bool,
}

fn push(batch: &mut Batch, bytes: &mut usize, seq: i64, r: SinkRecord) -> bool {
    let n = r.text.len() + 1;
    if !batch.records.is_empty() && *bytes + n > BATCH_BYTES {
        return false;
    }
    *bytes += n;
    batch.records.push(r);
    batch.seqs.push(seq);
    batch.last_seq = seq;
    true
}

/// Which logs a category set reads.
pub fn logs_of(categories: &[&str]) -> Vec<&'static str> {
    let mut logs = vec![];
    if categories
        .iter()
        .any(|c| *c == REPOSITORY_EVENTS || *c == LOGIN_EVENTS)
    {
        logs.push("audit");
    }
    if categories.contains(&ADMINISTRATIVE) {
        logs.push("activity");
    }
    if categories.contains(&AUDIT_TRAIL) {
        logs.push("checkpoint");
    }
    logs
}

/// The log's last seq (0 when empty).
pub async fn max_seq(state: &AppState, log: &str) -> anyhow::Result<i64> {
    Ok(match log {
        "audit" => state.meta.audit_max_seq().await?,
        "activity" => state.meta.activity_max_seq().await?,
        _ => {
            // Checkpoints are few (one per interval): page to the end.
            let mut after = 0;
            loop {
                let rows = checkpoints(state, after, 1000).await?;
                match rows.last() {
                    Some((s, _)) if rows.len() == 1000 => after = *s,
                    Some((s, _)) => break *s,
                    None => break after,
                }
            }
        }
    })
}

/// The trail's signed chain heads after `after`.
async fn checkpoints(
    state: &AppState,
    after: i64,
    limit: i64,
) -> anyhow::Result<Vec<(i64, serde_json::Value)>> {
    Ok(state
        .meta
        .checkpoint_rows(after, limit)
        .await?
        .into_iter()
        .map(|(s, c)| (s, serde_json::to_value(c).unwrap_or_default()))
        .collect())
}

/// The next batch of `log` after `cursor` for `scope`; empty `records` with `last_seq` > cursor when only
/// other categories' rows followed, `last_seq` == cursor when the log has nothing more.
pub async fn next(
    state: &AppState,
    scope: &Scope<'_>,
    log: &str,
    cursor: i64,
) -> anyhow::Result<Batch> {
    let mut batch = Batch {
        records: vec![],
        seqs: vec![],
        last_seq: cursor,
        exhausted: false,
    };
    let mut bytes = 0;
    let read;
    let mut cut = false;
    match log {
        "audit" => {
            let rows = state
                .meta
                .audit_rows(&AuditFilter {
                    registry: Some(scope.registry.to_string()),
                    after_seq: Some(cursor),
                    limit: Some(BATCH_ROWS),
                    ..Default::default()
                })
                .await?;
            read = rows.len();
            for (seq, e) in rows {
                if !scope
                    .categories
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&e.category))
                {
                    batch.last_seq = seq;
                    continue;
                }
                let id = record_id(scope.subscription, "audit", seq);
                let json = resource_log::audit_record(&e, &scope.resource, &id);
                let r = SinkRecord::new(id, e.category.clone(), e.time_generated.clone(), json);
                if !push(&mut batch, &mut bytes, seq, r) {
                    cut = true;
                    break;
                }
            }
        }
        "activity" => {
            let rows = state
                .meta
                .activity_rows(&ActivityFilter {
                    registry: Some(scope.registry.to_string()),
                    after_seq: Some(cursor),
                    limit: Some(BATCH_ROWS),
                    ..Default::default()
                })
                .await?;
            read = rows.len();
            for (seq, e) in rows {
                let id = record_id(scope.subscription, "activity", seq);
                let mut json = activity_json::archive_record(&e, scope.subscription);
                json["recordId"] = id.clone().into();
                let r = SinkRecord::new(id, ADMINISTRATIVE.into(), e.time.clone(), json);
                if !push(&mut batch, &mut bytes, seq, r) {
                    cut = true;
                    break;
                }
            }
        }
        "checkpoint" => {
            let rows = checkpoints(state, cursor, BATCH_ROWS).await?;
            read = rows.len();
            for (seq, c) in rows {
                // Only this registry's chains: another registry's heads, and those of the subscription's own
                // chain (`activity/-`, changes to no registry), prove records this setting does not ship.
                if !c["registry"]
                    .as_str()
                    .is_some_and(|r| r.eq_ignore_ascii_case(scope.registry))
                {
                    batch.last_seq = seq;
                    continue;
                }
                let id = record_id(scope.subscription, "checkpoint", seq);
                let now = moat_store::time_fmt::now();
                let mut json = serde_json::json!({
                    "category": AUDIT_TRAIL,
                    "operationName": "MoatAuditTrail/checkpoint",
                    "resourceId": scope.resource.id.to_ascii_uppercase(),
                    "recordId": id,
                    "properties": c,
                });
                let time = json["properties"]["time"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(now);
                json["time"] = time.clone().into();
                let r = SinkRecord::new(id, AUDIT_TRAIL.into(), time, json);
                if !push(&mut batch, &mut bytes, seq, r) {
                    cut = true;
                    break;
                }
            }
        }
        other => anyhow::bail!("no log named {other}"),
    }
    batch.exhausted = !cut && (read as i64) < BATCH_ROWS;
    Ok(batch)
}
