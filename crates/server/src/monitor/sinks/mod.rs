//! Diagnostic-setting sinks: the delivery loop that takes each setting's records from the logs after its cursor
//! and ships them to its destinations.
//!
//! Each destination of each setting is a consumer `sink:<setting key>:<destination>` (`storage` or `partner`)
//! with a cursor on every log its categories read (`audit` for ACR's two categories, `activity` for
//! `Administrative`, `checkpoint` for `MoatAuditTrail`) and one on metric minutes (`AllMetrics`). A new setting
//! starts at the logs' end (what happened before it was created is not shipped, as in Azure). A tick (every
//! `--sink-interval-ms`) starts a task for each sink that is idle and not backing off: the task reads a batch
//! after the cursor, hands it to the sink on the blocking pool, moves the cursor past what arrived, and goes
//! on until the sink has caught up or a few seconds passed. A failing sink backs off (1 s doubling to 60 s) on its
//! own: it never delays another sink, nor the data plane, which only ever appends to the logs.

pub mod azure_archive;
mod destinations;
mod marketplace;
mod metrics_archive;
pub mod partner;
mod records;
pub mod sink;

pub use destinations::{check_destinations, register, Context, DestinationError};

use crate::state::AppState;
use sink::{Sink, SinkError, SinkRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one task delivers before it yields the sink back to the tick (so a deleted or changed setting is
/// seen, and so a sink with a huge backlog does not hold a blocking thread forever).
const RUN_BUDGET: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// One sink's state in this process: kept between ticks, never needed for correctness (the cursors are).
struct Worker {
    busy: bool,
    /// The setting's `updated` stamp the open sink was made for: a PUT that changes the setting reopens it.
    version: String,
    sink: Option<Box<dyn Sink>>,
    failures: u32,
    next_attempt: Instant,
}

type Workers = Arc<Mutex<HashMap<String, Worker>>>;

pub fn start(state: &AppState) {
    let interval = state.config.sink_interval;
    if interval.is_zero() {
        return;
    }
    let workers: Workers = Arc::default();
    let st = state.clone();
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    state.jobs.every("diagnostic-sinks", interval, move || {
        let (st, workers, ticks) = (st.clone(), workers.clone(), ticks.clone());
        async move {
            let n = ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = tick(&st, &workers, n).await {
                tracing::warn!("diagnostic settings: {e:#}");
            }
        }
    });
}

/// The backoff after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (BACKOFF_FIRST * 2u32.pow(exp)).min(BACKOFF_CAP)
}

async fn tick(state: &AppState, workers: &Workers, n: u64) -> anyhow::Result<()> {
    if n.is_multiple_of(30) {
        let forgotten = state.meta.forget_orphan_sinks().await?;
        if forgotten > 0 {
            tracing::info!("diagnostic settings: forgot {forgotten} cursor(s) of deleted settings");
        }
    }
    let settings = state.meta.all_diagnostic_settings().await?;
    let mut live = std::collections::HashSet::new();
    for row in settings {
        for dest in destinations::of(&row) {
            let consumer = format!("sink:{}:{dest}", row.key);
            live.insert(consumer.clone());
            {
                let mut w = workers.lock().expect("workers lock");
                let worker = w.entry(consumer.clone()).or_insert_with(|| Worker {
                    busy: false,
                    version: String::new(),
                    sink: None,
                    failures: 0,
                    next_attempt: Instant::now(),
                });
                if worker.busy || Instant::now() < worker.next_attempt {
                    continue;
                }
                if worker.version != row.updated {
                    worker.sink = None;
                    worker.version = row.updated.clone();
                }
                worker.busy = true;
            }
            let (st, ws, row, dest) = (state.clone(), workers.clone(), row.clone(), dest);
            tokio::spawn(async move {
                let sink = ws
                    .lock()
                    .expect("workers lock")
                    .get_mut(&consumer)
                    .and_then(|w| w.sink.take());
                let (sink, outcome) = run(&st, &row, dest, &consumer, sink).await;
                let mut w = ws.lock().expect("workers lock");
                if let Some(worker) = w.get_mut(&consumer) {
                    worker.busy = false;
                    match outcome {
                        Ok(()) => {
                            worker.failures = 0;
                            worker.sink = sink;
                        }
                        Err(e) => {
                            worker.failures += 1;
                            let wait = match e {
                                SinkError::Misconfigured(_) => BACKOFF_CAP,
                                SinkError::Unavailable { .. } => backoff(worker.failures),
                            };
                            worker.next_attempt = Instant::now() + wait;
                            // A sink that failed is opened again: its connection (and what it knew) is suspect.
                            worker.sink = None;
                            tracing::warn!(
                                "diagnostic setting '{}' ({consumer}): delivery failed ({} in a row), retrying in {}s: {e}",
                                row.name,
                                worker.failures,
                                wait.as_secs()
                            );
                        }
                    }
                }
            });
        }
    }
    workers.lock().expect("workers lock").retain(|k, w| {
        let keep = w.busy || live.contains(k);
        if !keep {
            for log in ["audit", "activity", "checkpoint"] {
                crate::monitor::metrics::prom::remove_sink_backlog(&format!("{k}:{log}"));
            }
        }
        keep
    });
    Ok(())
}

/// Delivers what `consumer` has waiting, batch by batch, until it caught up or its time is up.
async fn run(
    state: &AppState,
    row: &moat_store::meta::DiagnosticSettingRow,
    dest: &'static str,
    consumer: &str,
    sink: Option<Box<dyn Sink>>,
) -> (Option<Box<dyn Sink>>, Result<(), SinkError>) {
    let ctx = match destinations::context(state, row).await {
        Ok(c) => c,
        Err(e) => return (None, Err(SinkError::Misconfigured(format!("{e:#}")))),
    };
    let categories = ctx.setting.categories();
    let mut sink = match sink {
        Some(s) => s,
        None => match destinations::open(state, &ctx, dest).await {
            Ok(s) => s,
            Err(e) => {
                // Nothing moves while the destination cannot be opened: the gauge still says what waits.
                for log in records::logs_of(&categories) {
                    report_backlog(state, consumer, log).await;
                }
                return (None, Err(e));
            }
        },
    };
    let started = Instant::now();
    let scope = records::Scope {
        subscription: &ctx.subscription,
        registry: &ctx.registry_name,
        resource: moat_model::monitor::resource_log::Resource {
            id: &ctx.resource_id,
            location: &ctx.location,
        },
        categories: &categories,
    };
    for log in records::logs_of(&categories) {
        loop {
            let cursor = match state.meta.consumer_seq(consumer, log).await {
                Ok(c) => c,
                Err(e) => return (Some(sink), Err(unavailable(e))),
            };
            // The log's end, read before its rows: when the batch reaches it, the cursor moves there even if the
            // last rows were other registries' (so the backlog says what this sink has waiting).
            let end = match records::max_seq(state, log).await {
                Ok(e) => e,
                Err(e) => return (Some(sink), Err(unavailable(e))),
            };
            let batch = match records::next(state, &scope, log, cursor).await {
                Ok(b) => b,
                Err(e) => {
                    note_backlog(consumer, log, end, cursor);
                    return (Some(sink), Err(unavailable(e)));
                }
            };
            let target = if batch.exhausted {
                batch.last_seq.max(end)
            } else {
                batch.last_seq
            };
            if target <= cursor {
                break;
            }
            let (s, result) = match deliver(sink, batch.records).await {
                Ok(out) => out,
                Err(e) => return (None, Err(e)),
            };
            sink = s;
            let moved = match &result {
                Ok(()) => Some(target),
                Err(SinkError::Unavailable { delivered, .. }) if *delivered > 0 => {
                    Some(batch.seqs[delivered - 1])
                }
                Err(_) => None,
            };
            if let Some(seq) = moved {
                if let Err(e) = state
                    .meta
                    .set_consumer_seq(consumer, log, Some(&ctx.registry_name), seq)
                    .await
                {
                    note_backlog(consumer, log, end, cursor);
                    return (Some(sink), Err(unavailable(e)));
                }
            }
            // Every pass, not only once caught up: a sink that keeps failing or keeps running out of its budget
            // is the one whose backlog matters.
            note_backlog(consumer, log, end, moved.unwrap_or(cursor));
            if let Err(e) = result {
                return (Some(sink), Err(e));
            }
            if batch.exhausted {
                break;
            }
            if started.elapsed() > RUN_BUDGET {
                return (Some(sink), Ok(()));
            }
        }
        report_backlog(state, consumer, log).await;
    }
    if categories.contains(&moat_model::monitor::resource_log::ALL_METRICS) {
        return metrics_archive::ship(state, &scope, consumer, sink).await;
    }
    (Some(sink), Ok(()))
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable {
        message: e.to_string(),
        delivered: 0,
    }
}

/// Hands a batch to the sink on the blocking pool.
async fn deliver(
    mut sink: Box<dyn Sink>,
    records: Vec<SinkRecord>,
) -> Result<(Box<dyn Sink>, Result<(), SinkError>), SinkError> {
    if records.is_empty() {
        return Ok((sink, Ok(())));
    }
    tokio::task::spawn_blocking(move || {
        let r = sink.deliver(&records);
        (sink, r)
    })
    .await
    .map_err(|e| unavailable(format!("the delivery task failed: {e}")))
}

/// The sink's backlog on `log` (the log's last seq minus its cursor), for operators: a debug line, and the
/// Prometheus gauge `moat_sink_backlog{sink="<consumer>:<log>"}`.
async fn report_backlog(state: &AppState, consumer: &str, log: &str) {
    if let (Ok(max), Ok(cur)) = (
        records::max_seq(state, log).await,
        state.meta.consumer_seq(consumer, log).await,
    ) {
        let backlog = (max - cur).max(0);
        tracing::debug!(consumer, log, backlog, "sink backlog");
        crate::monitor::metrics::prom::set_sink_backlog(&format!("{consumer}:{log}"), backlog);
    }
}

/// Sets the gauge from what a pass knows: the log's end it read and the cursor it left.
fn note_backlog(consumer: &str, log: &str, end: i64, cursor: i64) {
    crate::monitor::metrics::prom::set_sink_backlog(
        &format!("{consumer}:{log}"),
        (end - cursor).max(0),
    );
}

/// Every sink's backlog per log (log's last seq minus cursor), for `/metrics` and the bench.
pub async fn backlogs(state: &AppState) -> anyhow::Result<Vec<(String, String, i64)>> {
    let mut out = vec![];
    for log in ["audit", "activity", "checkpoint"] {
        let max = records::max_seq(state, log).await?;
        for c in state.meta.consumers(log).await? {
            if c.consumer.starts_with("sink:") {
                out.push((c.consumer, log.to_string(), (max - c.seq).max(0)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(sink: &str) -> Option<String> {
        let text = crate::monitor::metrics::prom::render();
        let prefix = format!("moat_sink_backlog{{sink=\"{sink}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    #[test]
    fn every_pass_sets_the_backlog_even_one_that_does_not_catch_up() {
        let consumer = "sink:test-backlog:storage";
        // A pass that caught up.
        note_backlog(consumer, "audit", 100, 100);
        assert_eq!(gauge(&format!("{consumer}:audit")).as_deref(), Some("0"));
        // Later passes that stop on their budget or on a failing destination: the gauge follows the log's end.
        note_backlog(consumer, "audit", 59_721, 100);
        assert_eq!(
            gauge(&format!("{consumer}:audit")).as_deref(),
            Some("59621")
        );
        note_backlog(consumer, "audit", 70_000, 600);
        assert_eq!(
            gauge(&format!("{consumer}:audit")).as_deref(),
            Some("69400")
        );
        // A cursor past the end read before the batch (rows written meanwhile) is no negative backlog.
        note_backlog(consumer, "audit", 10, 12);
        assert_eq!(gauge(&format!("{consumer}:audit")).as_deref(), Some("0"));
    }
}
