//! The `metrics` consumer of the audit log: every interval it reads the events after its cursor, folds them into
//! one-minute points per (registry, metric, dimensions) and stores the points and its new cursor in one
//! transaction, so an event is counted exactly once whatever crashes. It also samples `StorageUsed` and prunes
//! points older than Azure Monitor's 93 days.

use crate::state::AppState;
use moat_model::monitor::metric::{self, MetricDef};
use moat_store::meta::{AuditFilter, MetricPoint};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The consumer's name in `log_consumers`.
pub const CONSUMER: &str = "metrics";
/// Events read per transaction.
const BATCH: i64 = 5_000;
/// Batches per tick at most, so that a long backlog does not hold the lease's tick forever.
const MAX_BATCHES: usize = 20;
/// Azure Monitor keeps platform metrics 93 days.
pub const RETENTION_SECS: i64 = 93 * 86_400;
/// How often `StorageUsed` is sampled (its points have a one-hour grain; the last sample of the hour stands).
const STORAGE_SAMPLE_SECS: i64 = 300;
const PRUNE_SECS: i64 = 3600;

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn start(state: &AppState) {
    let interval = state.config.metrics.interval.max(Duration::from_millis(10));
    let s = state.clone();
    let last_sample = Arc::new(AtomicI64::new(0));
    let last_prune = Arc::new(AtomicI64::new(0));
    state.jobs.every("metrics", interval, move || {
        let s = s.clone();
        let (last_sample, last_prune) = (last_sample.clone(), last_prune.clone());
        async move {
            if let Err(e) = fold(&s).await {
                tracing::warn!("metrics: folding the audit log: {e}");
            }
            let now = now_secs();
            if now - last_sample.load(Ordering::Relaxed) >= STORAGE_SAMPLE_SECS {
                match sample_storage(&s, now).await {
                    Ok(()) => last_sample.store(now, Ordering::Relaxed),
                    Err(e) => tracing::warn!("metrics: sampling StorageUsed: {e}"),
                }
            }
            if now - last_prune.load(Ordering::Relaxed) >= PRUNE_SECS {
                match s.meta.prune_metric_points(now - RETENTION_SECS).await {
                    Ok(_) => last_prune.store(now, Ordering::Relaxed),
                    Err(e) => tracing::warn!("metrics: pruning points: {e}"),
                }
            }
            if let Err(e) = super::prom::refresh_gauges(&s).await {
                tracing::warn!("metrics: refreshing gauges: {e}");
            }
        }
    });
}

/// Folds the events after the cursor; returns how many it took.
pub async fn fold(state: &AppState) -> moat_store::error::Result<usize> {
    let mut taken = 0;
    for _ in 0..MAX_BATCHES {
        let cursor = state.meta.consumer_seq(CONSUMER, "audit").await?;
        let rows = state
            .meta
            .audit_rows(&AuditFilter {
                after_seq: Some(cursor),
                limit: Some(BATCH),
                ..Default::default()
            })
            .await?;
        let Some(last) = rows.last().map(|(seq, _)| *seq) else {
            break;
        };
        let points = points_of(rows.iter().map(|(_, e)| e));
        state
            .meta
            .fold_metric_points(CONSUMER, "audit", last, &points)
            .await?;
        taken += rows.len();
        if (rows.len() as i64) < BATCH {
            break;
        }
    }
    Ok(taken)
}

type Key = (String, &'static str, Vec<(String, String)>, i64);

/// The points a batch of events adds, one per (registry, metric, dimensions, minute).
pub fn points_of<'a>(
    events: impl Iterator<Item = &'a moat_model::audit::AuditEvent>,
) -> Vec<(String, MetricPoint)> {
    let mut acc: HashMap<Key, MetricPoint> = HashMap::new();
    for e in events {
        // A time that is not one (an older row written by hand) is no minute: nothing to add it to.
        let Some(minute) = metric::minute_of(&e.time_generated) else {
            continue;
        };
        for c in metric::contributions(e) {
            let p = MetricPoint::sample(c.metric, c.dimensions.clone(), minute, c.value);
            acc.entry((
                e.registry.to_ascii_lowercase(),
                c.metric,
                c.dimensions,
                minute,
            ))
            .and_modify(|q| q.merge(&p))
            .or_insert(p);
        }
    }
    let mut out: Vec<(String, MetricPoint)> = acc.into_iter().map(|((r, ..), p)| (r, p)).collect();
    // A stable order: writes in the same order every time take the same locks in the same order.
    out.sort_by(|a, b| (&a.0, &a.1.metric, a.1.minute).cmp(&(&b.0, &b.1.metric, b.1.minute)));
    out
}

/// `StorageUsed` of every registry (listUsages' `Size`), as the point of the current hour.
async fn sample_storage(state: &AppState, now: i64) -> moat_store::error::Result<()> {
    let def: &MetricDef = metric::find(metric::STORAGE_USED).expect("defined");
    let hour = now - now.rem_euclid(def.grain_secs);
    for r in state.meta.list_registries().await? {
        let size = state.meta.registry_size(&r.id).await?;
        let dims = vec![(
            "Geolocation".to_string(),
            r.settings.location.as_str().to_string(),
        )];
        let p = MetricPoint::sample(metric::STORAGE_USED, dims, hour, size as f64);
        state.meta.put_metric_sample(&r.name, &p).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_model::audit::AuditEvent;

    #[test]
    fn a_batch_folds_into_one_point_per_series_and_minute() {
        let e = |t: &str, reg: &str, who: &str, size: i64| AuditEvent {
            time_generated: t.into(),
            operation_name: "Pull".into(),
            registry: reg.into(),
            repository: Some("web".into()),
            identity: Some(who.into()),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            size: Some(size),
            result_type: "Success".into(),
            ..Default::default()
        };
        let events = [
            e("2026-12-07T10:00:01.000000Z", "App", "alice", 10),
            e("2026-12-07T10:00:59.000000Z", "app", "alice", 20),
            e("2026-12-07T10:01:00.000000Z", "app", "bob", 5),
            e("not a time", "app", "bob", 5),
        ];
        let pts = points_of(events.iter());
        let pulls: Vec<_> = pts
            .iter()
            .filter(|(_, p)| p.metric == metric::SUCCESSFUL_PULL_COUNT)
            .map(|(r, p)| (r.as_str(), p.minute % 3600, p.count, p.total))
            .collect();
        assert_eq!(pulls, [("app", 0, 2, 2.0), ("app", 60, 1, 1.0)]);
        let alice: Vec<_> = pts
            .iter()
            .filter(|(_, p)| p.metric == metric::PULLED_BYTES && p.dimensions[0].1 == "alice")
            .map(|(_, p)| (p.count, p.total, p.minimum, p.maximum))
            .collect();
        assert_eq!(alice, [(2, 30.0, 10.0, 20.0)]);
    }
}
