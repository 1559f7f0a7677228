//! The durable job runner (DESIGN principle 9): the services layer's home for work that outlives a request (a
//! remote import, a pipeline run). A job is a row in the metadata store (`moat_store::meta::jobs`); this process
//! claims jobs of the kinds it has handlers for, with a lease in its own name, runs a bounded number at once, and
//! renews each lease while the handler works (a heartbeat, and every checkpoint).
//!
//! What survives what:
//! - `kill -9` or a power cut: the job's lease lapses (or, at the next start of the only server on this data, is
//!   taken over at once: serve.lock guarantees there is no other) and it is claimed again; its handler is called
//!   with the last checkpoint it recorded. After [`MAX_ATTEMPTS`] claims that were each interrupted, it fails with
//!   a message that says so instead of being tried forever.
//! - A graceful stop (SIGTERM): the runner stops claiming, stops its handlers, and hands their jobs over at once
//!   without counting the attempt; the next start resumes them from their checkpoints.
//! - A handler's failure is terminal: the job fails with the handler's message. Nothing is silently dropped.
//! - Cancellation (`Jobs::cancel`, e.g. a deleted pipeline run) is seen at the handler's next checkpoint.
//!
//! Periodic work (a source trigger's poll) is [`Jobs::every`]: a timer in the runner, guarded by a named lease
//! (`job_leases`) so that among processes sharing one store only one runs it. What a tick finds that must be done
//! durably it submits as jobs.

pub mod pipeline_run;
pub mod remote_import;
pub mod source_trigger;
mod worker;

use crate::state::AppState;
use futures_util::future::BoxFuture;
use moat_store::meta::JobFilter;
pub use moat_store::meta::{JobRecord, JobState, Lease};
use moat_store::StoreError;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Claims of a job that were interrupted (its process died) before it is failed instead of claimed again.
pub const MAX_ATTEMPTS: i64 = 3;

/// What a handler returns when it does not succeed.
#[derive(Debug)]
pub enum JobFailure {
    /// Terminal: the job fails with this message (what went wrong and what to do).
    Failed(String),
    /// The job was cancelled or its lease was lost: stop without writing a result (a cancelled job is failed by
    /// the runner with a message saying so; a lost one belongs to its new owner).
    Stopped(JobError),
}

impl JobFailure {
    pub fn failed(message: impl Into<String>) -> JobFailure {
        JobFailure::Failed(message.into())
    }
}

impl From<JobError> for JobFailure {
    fn from(e: JobError) -> JobFailure {
        match e {
            JobError::Store(e) => JobFailure::Failed(format!("the metadata store failed: {e}")),
            other => JobFailure::Stopped(other),
        }
    }
}

/// Why a checkpoint did not go through.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the job was cancelled")]
    Cancelled,
    #[error("the job's lease was lost (another process runs it now)")]
    Lost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A job's handler: called with its context, returns the job's result.
pub type Handler =
    Arc<dyn Fn(JobCtx) -> BoxFuture<'static, Result<Value, JobFailure>> + Send + Sync>;

/// Told of a job of its kind that failed without its handler (cancelled while nobody ran it, or interrupted
/// [`MAX_ATTEMPTS`] times), with the job as it ended.
pub type Abandoned = Arc<dyn Fn(AppState, JobRecord) -> BoxFuture<'static, ()> + Send + Sync>;

/// How the runner paces itself (`moat serve --jobs-concurrency`; the rest are fixed but tests may shorten them).
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a claim holds a job without a renewal.
    pub lease: Duration,
    /// How often the runner looks for jobs when nothing woke it.
    pub poll: Duration,
}

impl Default for JobsConfig {
    fn default() -> JobsConfig {
        JobsConfig {
            concurrency: 2,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
        }
    }
}

/// The runner, in `AppState` as `state.jobs`. Cheap to clone.
#[derive(Clone)]
pub struct Jobs(Arc<Inner>);

struct Inner {
    meta: moat_store::MetadataStore,
    /// This process's name on the leases it takes.
    owner: String,
    config: JobsConfig,
    handlers: RwLock<HashMap<String, Handler>>,
    abandoned: RwLock<HashMap<String, Abandoned>>,
    wake: tokio::sync::Notify,
    stopping: AtomicBool,
    /// The handlers running now, by job id: aborted when the lease is lost or the server stops.
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Jobs {
    pub fn new(meta: moat_store::MetadataStore, config: JobsConfig) -> Jobs {
        Jobs(Arc::new(Inner {
            meta,
            owner: format!(
                "moat-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
            config,
            handlers: RwLock::new(HashMap::new()),
            abandoned: RwLock::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
        }))
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.0.owner
    }

    /// Adds the handler of jobs of `kind`. Register before [`Jobs::start`]: a kind without a handler is not
    /// claimed by this process.
    pub fn register<F, Fut>(&self, kind: &str, handler: F)
    where
        F: Fn(JobCtx) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, JobFailure>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx| Box::pin(handler(ctx)));
        self.0
            .handlers
            .write()
            .expect("lock")
            .insert(kind.to_string(), handler);
    }

    /// Adds what to do when a job of `kind` fails without its handler (its handler never sees it again): e.g.
    /// write the failure where the handler would have (a pipeline run's response, an import's audit events).
    pub fn on_abandoned<F, Fut>(&self, kind: &str, callback: F)
    where
        F: Fn(AppState, JobRecord) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let callback: Abandoned = Arc::new(move |state, job| Box::pin(callback(state, job)));
        self.0
            .abandoned
            .write()
            .expect("lock")
            .insert(kind.to_string(), callback);
    }

    /// Records a queued job and nudges the runner.
    pub async fn submit(
        &self,
        kind: &str,
        registry_id: &str,
        payload: Value,
    ) -> Result<String, StoreError> {
        let id = self
            .0
            .meta
            .insert_job(kind, registry_id, &payload, None)
            .await?;
        self.wake();
        Ok(id)
    }

    /// Records a job to be claimed no earlier than `delay` from now.
    pub async fn submit_later(
        &self,
        kind: &str,
        registry_id: &str,
        payload: Value,
        delay: Duration,
    ) -> Result<String, StoreError> {
        let at = unix_now() + delay.as_secs_f64();
        self.0
            .meta
            .insert_job(kind, registry_id, &payload, Some(at))
            .await
    }

    /// Looks for claimable jobs now (after a job was inserted inside another store transaction).
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.0.meta.job(id).await
    }

    pub async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        self.0.meta.jobs(filter).await
    }

    /// Asks a job to stop: a queued one fails at once, a running one at its next checkpoint.
    pub async fn cancel(&self, id: &str) -> Result<(), StoreError> {
        self.0.meta.cancel_job(id).await?;
        Ok(())
    }

    /// Runs `tick` every `interval` in one process at a time among those sharing the store (a named lease).
    pub fn every<F, Fut>(&self, name: &str, interval: Duration, tick: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let jobs = self.clone();
        let lease_name = format!("every:{name}");
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                if jobs.0.stopping.load(Ordering::Relaxed) {
                    return;
                }
                let ttl = (interval * 3).max(Duration::from_secs(10));
                match jobs
                    .0
                    .meta
                    .take_lease(&lease_name, &jobs.0.owner, ttl)
                    .await
                {
                    Ok(true) => tick().await,
                    Ok(false) => {}
                    Err(e) => tracing::warn!("periodic job {lease_name}: {e}"),
                }
            }
        });
    }

    /// Starts claiming. `single_node`: this process is the only server on its data (serve.lock), so the running
    /// jobs of a previous process are handed over at once.
    pub async fn start(&self, state: &AppState, single_node: bool) -> Result<(), StoreError> {
        if single_node {
            let n = self.0.meta.take_over_job_leases(&self.0.owner).await?;
            if n > 0 {
                tracing::info!("resuming {n} job(s) interrupted when the server last stopped");
            }
        }
        tokio::spawn(worker::claim_loop(self.clone(), state.clone()));
        Ok(())
    }

    /// A graceful stop: no more claims; running handlers are stopped and their jobs handed over at once (the
    /// interrupted attempt is not counted), to resume from their checkpoints at the next start.
    pub async fn shutdown(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
        self.0.wake.notify_waiters();
        let running: Vec<_> = self
            .0
            .running
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in running {
            h.abort();
        }
        if let Err(e) = self.0.meta.release_job_leases(&self.0.owner).await {
            tracing::warn!("handing running jobs over: {e}");
        }
    }
}

/// What a handler gets: its job's payload and last checkpoint, the server's state, and ways to record progress.
pub struct JobCtx {
    pub id: String,
    pub kind: String,
    pub registry_id: String,
    pub payload: Value,
    /// What the last attempt recorded with [`JobCtx::checkpoint`]; `None` on the first attempt.
    pub checkpoint: Option<Value>,
    /// Which claim this is (1 on the first).
    pub attempt: i64,
    pub state: AppState,
    lease: Arc<worker::LeaseWatch>,
}

impl JobCtx {
    /// Records `v` as where a resumed attempt starts, and renews the lease. `Err(Cancelled)` when the job was
    /// cancelled and `Err(Lost)` when another process holds it now: the handler stops (return the error).
    pub async fn checkpoint(&self, v: Value) -> Result<(), JobError> {
        let lease = self
            .state
            .meta
            .checkpoint_job(&self.id, self.lease.owner(), self.lease.ttl(), &v)
            .await?;
        self.lease.seen(lease)
    }

    /// Whether the job was asked to stop or lost (as of the last renewal): `Ok` to carry on.
    pub fn still_ours(&self) -> Result<(), JobError> {
        self.lease.status()
    }

    /// Records how far the job has come, for pollers (written at most about once a second).
    pub async fn progress(&self, v: Value) {
        if self.lease.progress_due(&v) {
            self.lease.flush_progress(&self.state.meta, &self.id).await;
        }
    }

    /// The lease owner id, for pins and rows the job writes under its own name.
    pub fn owner(&self) -> &str {
        self.lease.owner()
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Registers every job kind this server runs and starts the runner (`moat serve`).
pub async fn start(state: &AppState) -> Result<(), StoreError> {
    remote_import::register(&state.jobs);
    pipeline_run::register(&state.jobs);
    source_trigger::register(&state.jobs, state);
    worker::register_test_kinds(&state.jobs);
    state.jobs.start(state, true).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[tokio::test]
    async fn every_runs_in_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let meta = moat_store::MetadataStore::open(&url).await.unwrap();
        let (a, b) = (
            Jobs::new(meta.clone(), JobsConfig::default()),
            Jobs::new(meta, JobsConfig::default()),
        );
        let ticks = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        for (jobs, n) in [(&a, ticks[0].clone()), (&b, ticks[1].clone())] {
            jobs.every("poll", Duration::from_millis(50), move || {
                let n = n.clone();
                async move {
                    n.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (ta, tb) = (
            ticks[0].load(Ordering::Relaxed),
            ticks[1].load(Ordering::Relaxed),
        );
        // One of the two holds the lease and ticks; the other never does while the holder lives.
        assert!(ta.max(tb) >= 5, "{ta} {tb}");
        assert_eq!(ta.min(tb), 0, "{ta} {tb}");
    }
}
