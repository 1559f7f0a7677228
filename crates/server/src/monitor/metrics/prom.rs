//! The Prometheus registry served at `GET /metrics` on the admin listener (text format 0.0.4). Counters are fed on
//! the request path by [`observe`] (atomics behind a label map keyed by static strings: no allocation per event
//! once a label pair has been seen); gauges that describe stored state (job queues, log consumers' backlogs) are
//! read from the store at scrape time, so every process sharing a store reports the same figures.

use crate::state::AppState;
use moat_model::audit::{AuditEvent, Operation, ResultType};
use moat_model::monitor::metric::denial_reason;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;

type StaticLabels = [(&'static str, &'static str); 2];
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the process exports, registered once.
pub struct Metrics {
    pub requests: Family<StaticLabels, Counter>,
    pub pulled_bytes: Counter,
    pub pushed_bytes: Counter,
    pub denied: Family<StaticLabels, Counter>,
    pub upload_seconds: Histogram,
    pub sink_backlog: Family<[(&'static str, String); 1], Gauge>,
    pub consumer_backlog: Family<[(&'static str, String); 2], Gauge>,
    pub job_queue: Family<[(&'static str, String); 2], Gauge>,
    pub audit_queue: Gauge,
    pub gc_runs: Counter,
    pub gc_reclaimed_bytes: Counter,
    pub gc_removed: Family<[(&'static str, String); 1], Counter>,
    pub gc_last_seconds: FloatGauge,
    registry: Registry,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let m = Metrics {
        requests: Family::default(),
        pulled_bytes: Counter::default(),
        pushed_bytes: Counter::default(),
        denied: Family::default(),
        // 5 ms to about 80 s: a manifest PUT to a multi-GiB layer's final chunk.
        upload_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 15)),
        sink_backlog: Family::default(),
        consumer_backlog: Family::default(),
        job_queue: Family::default(),
        audit_queue: Gauge::default(),
        gc_runs: Counter::default(),
        gc_reclaimed_bytes: Counter::default(),
        gc_removed: Family::default(),
        gc_last_seconds: FloatGauge::default(),
        registry: Registry::default(),
    };
    registry.register(
        "moat_requests",
        "Data-plane requests recorded in the audit log, by operation and result",
        m.requests.clone(),
    );
    registry.register(
        "moat_pulled_bytes",
        "Bytes of blobs and manifests served by successful pulls",
        m.pulled_bytes.clone(),
    );
    registry.register(
        "moat_pushed_bytes",
        "Bytes of blobs and manifests received by successful pushes",
        m.pushed_bytes.clone(),
    );
    registry.register(
        "moat_denied_requests",
        "Data-plane requests refused, by reason and operation",
        m.denied.clone(),
    );
    registry.register(
        "moat_upload_duration_seconds",
        "Duration of the request that completes a blob upload or stores a manifest",
        m.upload_seconds.clone(),
    );
    registry.register(
        "moat_sink_backlog",
        "Records a diagnostic-setting sink has not delivered yet",
        m.sink_backlog.clone(),
    );
    registry.register(
        "moat_log_consumer_backlog",
        "Records of a log after a consumer's cursor (sinks, metrics, alerts, webhooks)",
        m.consumer_backlog.clone(),
    );
    registry.register(
        "moat_job_queue_depth",
        "Durable jobs queued or running, by kind",
        m.job_queue.clone(),
    );
    registry.register(
        "moat_audit_queue_depth",
        "Audit events waiting for the batch writer in this process",
        m.audit_queue.clone(),
    );
    registry.register("moat_gc_runs", "Garbage collection runs", m.gc_runs.clone());
    registry.register(
        "moat_gc_reclaimed_bytes",
        "Bytes garbage collection reclaimed",
        m.gc_reclaimed_bytes.clone(),
    );
    registry.register(
        "moat_gc_removed",
        "Items garbage collection removed, by kind",
        m.gc_removed.clone(),
    );
    registry.register(
        "moat_gc_last_duration_seconds",
        "Duration of the last garbage collection run",
        m.gc_last_seconds.clone(),
    );
    Metrics { registry, ..m }
});

/// Counts one audit event (the request path: a label lookup and atomic adds).
pub fn observe(e: &AuditEvent) {
    let m = &*METRICS;
    let op = Operation::parse(&e.operation_name).map_or("Other", Operation::as_str);
    let result = ResultType::parse(&e.result_type).map_or("Other", ResultType::as_str);
    m.requests
        .get_or_create(&[("operation", op), ("result", result)])
        .inc();
    let size = e.size.unwrap_or(0).max(0) as u64;
    let success = result == "Success";
    match op {
        "Pull" if success => {
            m.pulled_bytes.inc_by(size);
        }
        "Push" if success => {
            m.pushed_bytes.inc_by(size);
            if let Some(ms) = e.duration_ms {
                m.upload_seconds.observe(ms.max(0) as f64 / 1000.0);
            }
        }
        _ => {}
    }
    if result == "Denied" {
        m.denied
            .get_or_create(&[
                ("reason", denial_reason(&e.result_description)),
                ("operation", op),
            ])
            .inc();
    }
}

/// A sink's undelivered records (the diagnostic-settings delivery loop sets it after each pass).
pub fn set_sink_backlog(sink: &str, n: i64) {
    METRICS
        .sink_backlog
        .get_or_create(&[("sink", sink.to_string())])
        .set(n);
}

/// Forgets a deleted sink's gauge.
pub fn remove_sink_backlog(sink: &str) {
    METRICS.sink_backlog.remove(&[("sink", sink.to_string())]);
}

/// A garbage collection run's figures (from `crate::gc`).
pub fn gc_run(s: &moat_store::gc::GcSummary) {
    let m = &*METRICS;
    m.gc_runs.inc();
    m.gc_reclaimed_bytes.inc_by(s.reclaimed_bytes.max(0) as u64);
    for (kind, n) in &s.removed {
        m.gc_removed
            .get_or_create(&[("kind", kind.clone())])
            .inc_by(*n);
    }
    m.gc_last_seconds.set(s.duration_ms as f64 / 1000.0);
}

/// Reads the gauges that describe stored state: job queues and every log consumer's backlog.
pub async fn refresh_gauges(state: &AppState) -> moat_store::error::Result<()> {
    let m = &*METRICS;
    m.job_queue.clear();
    for (kind, st, n) in state.meta.job_queue_depths().await? {
        m.job_queue
            .get_or_create(&[("kind", kind), ("state", st)])
            .set(n);
    }
    m.consumer_backlog.clear();
    for (log, max) in [
        ("audit", state.meta.audit_max_seq().await?),
        ("activity", state.meta.activity_max_seq().await?),
    ] {
        for c in state.meta.consumers(log).await? {
            m.consumer_backlog
                .get_or_create(&[("consumer", c.consumer), ("log", log.to_string())])
                .set((max - c.seq).max(0));
        }
    }
    m.audit_queue.set(state.audit.queue_depth() as i64);
    Ok(())
}

/// The registry in Prometheus text format 0.0.4.
pub fn render() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &METRICS.registry);
    out
}

pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_feed_counters_and_the_text_names_them() {
        let mut e = AuditEvent {
            operation_name: "Pull".into(),
            result_type: "Success".into(),
            size: Some(1234),
            ..Default::default()
        };
        let before = METRICS.pulled_bytes.get();
        observe(&e);
        assert_eq!(METRICS.pulled_bytes.get() - before, 1234);
        e.result_type = "Denied".into();
        e.result_description = "403: public network access is disabled".into();
        observe(&e);
        let text = render();
        assert!(
            text.contains("# TYPE moat_pulled_bytes_total counter"),
            "{text}"
        );
        assert!(text.contains("moat_requests_total{operation=\"Pull\",result=\"Success\"}"));
        assert!(text.contains("moat_denied_requests_total{reason=\"Network\",operation=\"Pull\"}"));
    }
}
