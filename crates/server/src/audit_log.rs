//! Audit events that record no state change (pulls, logins, denials) go through a queue that a background task
//! writes in batches: one fsync'd commit for many events, so that a pull costs no synchronous disk write.
//! Events that record a change are written by the store in the change's own transaction instead.
//!
//! The queue is bounded: a flood of refused requests must not grow memory without limit, and dropping events would
//! leave holes in the trail an auditor reads. When the queue is full, the request that records an event waits for
//! the writer (backpressure) instead: the flood slows itself down, nothing is lost.

use moat_model::activity::ActivityEvent;
use moat_model::audit::AuditEvent;
use moat_store::MetadataStore;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

/// Events queued at most (a few hundred bytes each: a few MiB in all).
pub const QUEUE_CAPACITY: usize = 16_384;
/// Events written in one transaction at most. Large enough that one commit (one fsync) per batch keeps up with the
/// fastest pulls: the writer, not the fsync, must set the pace once the queue is busy.
const MAX_BATCH: usize = 4_096;
/// When the writer finds the queue nearly empty, it waits this long before the next batch so that a light load
/// still shares one commit among many events.
const GATHER: Duration = Duration::from_millis(2);

enum Msg {
    Event(Box<AuditEvent>),
    /// A refused management request (the activity log's change-less rows).
    Activity(Box<ActivityEvent>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

impl AuditLog {
    pub fn start(meta: MetadataStore) -> AuditLog {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE_CAPACITY);
        tokio::spawn(async move {
            let mut batch: Vec<AuditEvent> = Vec::new();
            let mut activity: Vec<ActivityEvent> = Vec::new();
            let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                // Gather what is already queued, then write it in one transaction.
                while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                    match msg {
                        Msg::Event(e) => batch.push(*e),
                        Msg::Activity(e) => activity.push(*e),
                        Msg::Flush(w) => waiters.push(w),
                    }
                    if batch.len() + activity.len() >= MAX_BATCH {
                        break;
                    }
                }
                // A full batch means events are waiting: write the next one at once.
                let busy = batch.len() + activity.len() >= MAX_BATCH;
                if !batch.is_empty() {
                    if let Err(e) = meta.record_batch(&batch).await {
                        tracing::error!("audit batch of {} events not written: {e}", batch.len());
                    }
                    batch.clear();
                }
                if !activity.is_empty() {
                    if let Err(e) = meta.record_activity_batch(&activity).await {
                        tracing::error!(
                            "activity batch of {} events not written: {e}",
                            activity.len()
                        );
                    }
                    activity.clear();
                }
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
                if !busy {
                    tokio::time::sleep(GATHER).await;
                }
            }
        });
        AuditLog { tx }
    }

    pub fn record(&self, event: AuditEvent) {
        crate::monitor::metrics::observe(&event);
        self.enqueue(Msg::Event(Box::new(event)));
    }

    pub fn record_activity(&self, event: ActivityEvent) {
        self.enqueue(Msg::Activity(Box::new(event)));
    }

    /// Queues without waiting while there is room; when the queue is full, blocks this request until the writer
    /// has made room. `block_in_place` hands the worker's other tasks to another thread meanwhile, so the writer
    /// (and every other request) keeps running. Callers stay synchronous, which keeps recording an event a plain
    /// statement wherever a handler decides.
    fn enqueue(&self, msg: Msg) {
        let msg = match self.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(msg)) => msg,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                let tx = self.tx.clone();
                tokio::task::block_in_place(move || {
                    let _ = tx.blocking_send(msg);
                });
            }
            // A single-threaded runtime (unit tests) cannot block for its own writer: a task waits instead.
            Ok(h) => {
                let tx = self.tx.clone();
                h.spawn(async move {
                    let _ = tx.send(msg).await;
                });
            }
            Err(_) => {
                tracing::error!("an audit event was recorded outside the runtime and is lost")
            }
        }
    }

    /// Events queued and not yet taken by the writer (Prometheus' `moat_audit_queue_depth`).
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Waits until every event queued before this call is committed (used at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three queues' worth of events recorded as fast as possible: every one is written (the recorders waited
    /// instead of growing the queue or dropping events).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_slows_recorders_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/moat.db", dir.path().display());
        let meta = MetadataStore::open(&url).await.unwrap();
        let log = AuditLog::start(meta.clone());
        let n = 3 * QUEUE_CAPACITY;
        let recorders: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    for i in 0..n / 4 {
                        log.record(AuditEvent {
                            time_generated: "2026-12-07T00:00:00Z".into(),
                            operation_name: "Pull".into(),
                            registry: "r".into(),
                            result_type: "Denied".into(),
                            result_description: format!("403: {t}/{i}"),
                            ..Default::default()
                        });
                    }
                })
            })
            .collect();
        for r in recorders {
            r.await.unwrap();
        }
        log.flush().await;
        let written = meta.audit_events(&Default::default()).await.unwrap();
        assert_eq!(written.len(), n);
    }
}
