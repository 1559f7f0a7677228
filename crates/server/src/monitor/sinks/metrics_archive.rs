//! `AllMetrics` of a setting: the registry's metric minutes (from the metrics aggregator's points), one record
//! per metric per minute as Azure Monitor archives them (`insights-metrics-pt1m`), after the sink's own cursor by
//! minute. A minute is shipped once it is over and the aggregator has taken every audit record written before:
//! later points for it cannot appear.

use super::records::Scope;
use super::sink::{Sink, SinkError, SinkRecord};
use crate::state::AppState;
use moat_model::monitor::record_id;
use moat_model::monitor::resource_log::{metric_record, ALL_METRICS};
use std::collections::BTreeMap;

/// Seconds after a minute's end before it is shipped (requests in flight at its end are recorded by then).
const SETTLE_SECS: i64 = 5;
/// Minutes shipped per batch.
const MINUTES_PER_BATCH: i64 = 60;

/// One (metric, minute) summed over dimensions: count, total, min, max.
type Minute = (i64, f64, f64, f64);

/// The registry's points in `[from, to)`, summed over dimensions per (metric, minute).
async fn minutes(
    state: &AppState,
    registry: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<BTreeMap<(i64, String), Minute>> {
    let mut out: BTreeMap<(i64, String), Minute> = BTreeMap::new();
    for p in state.meta.metric_points(registry, None, from, to).await? {
        let e = out.entry((p.minute, p.metric.clone())).or_insert((
            0,
            0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ));
        e.0 += p.count;
        e.1 += p.total;
        e.2 = e.2.min(p.minimum);
        e.3 = e.3.max(p.maximum);
    }
    Ok(out)
}

/// Whether the aggregator has taken the audit log up to its current end.
async fn aggregator_caught_up(state: &AppState) -> anyhow::Result<bool> {
    let end = state.meta.audit_max_seq().await?;
    Ok(state
        .meta
        .consumer_seq(crate::monitor::metrics::aggregate::CONSUMER, "audit")
        .await?
        >= end)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Ships the finished minutes after the sink's metric cursor.
pub async fn ship(
    state: &AppState,
    scope: &Scope<'_>,
    consumer: &str,
    mut sink: Box<dyn Sink>,
) -> (Option<Box<dyn Sink>>, Result<(), SinkError>) {
    let fail = |e: anyhow::Error| SinkError::Unavailable {
        message: format!("{e:#}"),
        delivered: 0,
    };
    loop {
        let cursor = match state.meta.sink_metric_minute(consumer).await {
            Ok(Some(c)) => c,
            Ok(None) => return (Some(sink), Ok(())),
            Err(e) => return (Some(sink), Err(fail(e.into()))),
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // The last minute that is over (and settled).
        let last_done = (now - SETTLE_SECS).div_euclid(60) * 60 - 60;
        if last_done <= cursor {
            return (Some(sink), Ok(()));
        }
        match aggregator_caught_up(state).await {
            Ok(true) => {}
            Ok(false) => return (Some(sink), Ok(())),
            Err(e) => return (Some(sink), Err(fail(e))),
        }
        let to = (cursor + 60 * MINUTES_PER_BATCH).min(last_done);
        let data = match minutes(state, scope.registry, cursor + 60, to + 60).await {
            Ok(d) => d,
            Err(e) => return (Some(sink), Err(fail(e))),
        };
        let records: Vec<SinkRecord> = data
            .into_iter()
            .map(|((minute, metric), (count, total, min, max))| {
                let id = record_id(
                    scope.subscription,
                    &format!("metrics/{}/{metric}", scope.registry),
                    minute,
                );
                let time = rfc3339(minute);
                let json = metric_record(
                    scope.resource.id,
                    &metric,
                    &time,
                    count,
                    total,
                    min,
                    max,
                    &id,
                );
                SinkRecord::new(id, ALL_METRICS.into(), time, json)
            })
            .collect();
        if !records.is_empty() {
            let out = tokio::task::spawn_blocking(move || {
                let r = sink.deliver(&records);
                (sink, r)
            })
            .await;
            let (s, r) = match out {
                Ok(x) => x,
                Err(e) => {
                    return (
                        None,
                        Err(fail(anyhow::anyhow!("metric delivery task: {e}"))),
                    )
                }
            };
            sink = s;
            // A partial delivery is retried whole: the archive skips what is already in the blob by recordId.
            if let Err(e) = r {
                return (Some(sink), Err(e));
            }
        }
        if let Err(e) = state.meta.set_sink_metric_minute(consumer, to).await {
            return (Some(sink), Err(fail(e.into())));
        }
    }
}
