//! Audit events that record no state change (pulls, logins, denials) go through a queue that a background task
//! writes in batches: one fsync'd commit for many events, so that a pull costs no synchronous disk write.
//! Events that record a change are written by the store in the change's own transaction instead.

use moat_model::activity::ActivityEvent;
use moat_model::audit::AuditEvent;
use moat_store::MetadataStore;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Event(Box<AuditEvent>),
    /// A refused management request (the activity log's change-less rows).
    Activity(Box<ActivityEvent>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Msg>,
}

impl AuditLog {
    pub fn start(meta: MetadataStore) -> AuditLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
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
                    if batch.len() + activity.len() >= 512 {
                        break;
                    }
                }
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
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        AuditLog { tx }
    }

    pub fn record(&self, event: AuditEvent) {
        let _ = self.tx.send(Msg::Event(Box::new(event)));
    }

    pub fn record_activity(&self, event: ActivityEvent) {
        let _ = self.tx.send(Msg::Activity(Box::new(event)));
    }

    /// Waits until every event queued before this call is committed (used at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}
