//! The claim loop and one job's run: a bounded number at once, each with a heartbeat that renews its lease, and the
//! handler's outcome written back (or, when the lease was lost or the server is stopping, left to the next owner).

use super::{JobCtx, JobError, JobFailure, Jobs, Lease, MAX_ATTEMPTS};
use crate::state::AppState;
use moat_store::meta::JobRecord;
use moat_store::MetadataStore;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Progress is written at most this often (the last value is written when the job ends).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the heartbeat and checkpoints last learned about one job's lease, and its unwritten progress.
pub(super) struct LeaseWatch {
    owner: String,
    ttl: Duration,
    status: Mutex<Lease>,
    progress: Mutex<(Option<Value>, Instant)>,
}

impl LeaseWatch {
    fn new(owner: String, ttl: Duration) -> LeaseWatch {
        LeaseWatch {
            owner,
            ttl,
            status: Mutex::new(Lease::Held),
            progress: Mutex::new((None, Instant::now() - PROGRESS_EVERY)),
        }
    }

    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records what a renewal answered; `Err` when the handler must stop.
    pub(super) fn seen(&self, lease: Lease) -> Result<(), JobError> {
        let mut s = self.status.lock().expect("lock");
        // Lost is final: a later answer cannot give the job back.
        if *s != Lease::Lost {
            *s = lease;
        }
        drop(s);
        self.status()
    }

    pub(super) fn status(&self) -> Result<(), JobError> {
        match *self.status.lock().expect("lock") {
            Lease::Held => Ok(()),
            Lease::Cancelled => Err(JobError::Cancelled),
            Lease::Lost => Err(JobError::Lost),
        }
    }

    /// Keeps `v` as the progress to write; true when it is time to write it.
    pub(super) fn progress_due(&self, v: &Value) -> bool {
        let mut p = self.progress.lock().expect("lock");
        p.0 = Some(v.clone());
        p.1.elapsed() >= PROGRESS_EVERY
    }

    pub(super) async fn flush_progress(&self, meta: &MetadataStore, id: &str) {
        let pending = {
            let mut p = self.progress.lock().expect("lock");
            p.1 = Instant::now();
            p.0.take()
        };
        if let Some(v) = pending {
            if let Err(e) = meta.job_progress(id, &self.owner, &v).await {
                tracing::warn!(job = id, "recording progress: {e}");
            }
        }
    }
}

pub(super) async fn claim_loop(jobs: Jobs, state: AppState) {
    let inner = &jobs.0;
    let slots = Arc::new(tokio::sync::Semaphore::new(inner.config.concurrency.max(1)));
    loop {
        if inner.stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let kinds: Vec<String> = inner
            .handlers
            .read()
            .expect("lock")
            .keys()
            .cloned()
            .collect();
        let claimed = inner
            .meta
            .claim_job_reporting(&inner.owner, &kinds, inner.config.lease, MAX_ATTEMPTS)
            .await
            .map(|(job, abandoned)| {
                for job in abandoned {
                    tell_abandoned(&jobs, &state, job);
                }
                job
            });
        match claimed {
            Ok(Some(job)) if !inner.stopping.load(Ordering::Relaxed) => {
                let (jobs, state) = (jobs.clone(), state.clone());
                tokio::spawn(async move {
                    run(&jobs, state, job).await;
                    drop(slot);
                    // A slot is free: look again at once.
                    jobs.wake();
                });
                continue;
            }
            Ok(Some(_)) => return,
            Ok(None) => drop(slot),
            Err(e) => {
                drop(slot);
                tracing::warn!("claiming jobs: {e}");
            }
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(inner.config.poll) => {}
        }
    }
}

/// A job the claim failed (cancelled while nobody ran it, or interrupted too often): its kind's `on_abandoned`
/// callback records the end where its handler would have.
fn tell_abandoned(jobs: &Jobs, state: &AppState, job: JobRecord) {
    tracing::warn!(
        job = job.id,
        kind = job.kind,
        "job failed: {}",
        job.error.as_deref().unwrap_or("")
    );
    let callback = jobs
        .0
        .abandoned
        .read()
        .expect("lock")
        .get(&job.kind)
        .cloned();
    if let Some(callback) = callback {
        tokio::spawn(callback(state.clone(), job));
    }
}

async fn run(jobs: &Jobs, state: AppState, job: JobRecord) {
    let inner = &jobs.0;
    let Some(handler) = inner.handlers.read().expect("lock").get(&job.kind).cloned() else {
        return;
    };
    let watch = Arc::new(LeaseWatch::new(inner.owner.clone(), inner.config.lease));
    tracing::info!(
        job = job.id,
        kind = job.kind,
        attempt = job.attempts,
        "job started"
    );
    let ctx = JobCtx {
        id: job.id.clone(),
        kind: job.kind.clone(),
        registry_id: job.registry_id.clone(),
        payload: job.payload.clone(),
        checkpoint: job.checkpoint.clone(),
        attempt: job.attempts,
        state: state.clone(),
        lease: watch.clone(),
    };
    let task = tokio::spawn(handler(ctx));
    inner
        .running
        .lock()
        .expect("lock")
        .insert(job.id.clone(), task.abort_handle());
    let heartbeat = tokio::spawn(heartbeat(
        state.meta.clone(),
        job.id.clone(),
        watch.clone(),
        task.abort_handle(),
    ));
    let outcome = task.await;
    heartbeat.abort();
    inner.running.lock().expect("lock").remove(&job.id);
    if inner.stopping.load(Ordering::Relaxed) {
        // `Jobs::shutdown` hands the job over; its next owner resumes it from its checkpoint.
        return;
    }
    watch.flush_progress(&state.meta, &job.id).await;
    let lost = matches!(watch.status(), Err(JobError::Lost));
    let end: Option<Result<Value, String>> = match outcome {
        Ok(Ok(v)) => Some(Ok(v)),
        Ok(Err(JobFailure::Failed(m))) => Some(Err(m)),
        Ok(Err(JobFailure::Stopped(JobError::Cancelled))) => {
            Some(Err("the job was cancelled".to_string()))
        }
        Ok(Err(JobFailure::Stopped(JobError::Store(e)))) => {
            Some(Err(format!("the metadata store failed: {e}")))
        }
        Ok(Err(JobFailure::Stopped(JobError::Lost))) => None,
        Err(e) if e.is_cancelled() => None,
        Err(e) => Some(Err(format!(
            "the job stopped on an internal error (a bug: please report it): {}",
            panic_message(e)
        ))),
    };
    let Some(end) = end.filter(|_| !lost) else {
        tracing::warn!(job = job.id, "job lost its lease; its new owner carries on");
        return;
    };
    match &end {
        Ok(_) => tracing::info!(job = job.id, kind = job.kind, "job succeeded"),
        Err(m) => tracing::warn!(job = job.id, kind = job.kind, "job failed: {m}"),
    }
    let written = state
        .meta
        .finish_job(&job.id, &inner.owner, end.as_ref().map_err(String::as_str))
        .await;
    if let Err(e) = written {
        // Left running: its lease lapses and the next claim tries again (or fails it after the attempts).
        tracing::warn!(job = job.id, "recording the job's end: {e}");
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(e) => e.to_string(),
    }
}

/// Renews the lease every third of its length (and writes pending progress); a lost lease stops the handler at
/// once: another process owns the job now.
async fn heartbeat(
    meta: MetadataStore,
    id: String,
    watch: Arc<LeaseWatch>,
    task: tokio::task::AbortHandle,
) {
    let every = watch.ttl / 3;
    loop {
        tokio::time::sleep(every).await;
        watch.flush_progress(&meta, &id).await;
        match meta.renew_job_lease(&id, &watch.owner, watch.ttl).await {
            Ok(lease) => {
                if let Err(JobError::Lost) = watch.seen(lease) {
                    task.abort();
                    return;
                }
            }
            Err(e) => tracing::warn!(job = id, "renewing the job's lease: {e}"),
        }
    }
}

/// Kinds that exist only for the end-to-end tests, registered when `MOAT_TEST_JOB_KINDS` names them:
/// `test-abort` records a checkpoint and then kills its process (a job whose handler keeps dying), `test-sleep`
/// checkpoints every 100 ms for `payload.secs` seconds (a job to cancel or interrupt).
pub(super) fn register_test_kinds(jobs: &Jobs) {
    let Ok(kinds) = std::env::var("MOAT_TEST_JOB_KINDS") else {
        return;
    };
    for kind in kinds.split(',').map(str::trim) {
        match kind {
            "abort" => {
                jobs.register("test-abort", |ctx: JobCtx| async move {
                    ctx.checkpoint(json!({"attempt": ctx.attempt})).await?;
                    if ctx.attempt > 0 {
                        tracing::error!(job = ctx.id, "test-abort: killing this process");
                        std::process::abort();
                    }
                    Ok(Value::Null)
                });
                jobs.on_abandoned("test-abort", |_state, job: JobRecord| async move {
                    tracing::warn!(job = job.id, "test-abort abandoned: {:?}", job.error);
                });
            }
            "sleep" => jobs.register("test-sleep", |ctx: JobCtx| async move {
                let secs = ctx.payload["secs"].as_f64().unwrap_or(1.0);
                let start = Instant::now();
                while start.elapsed().as_secs_f64() < secs {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ctx.checkpoint(json!({"elapsed": start.elapsed().as_secs_f64()}))
                        .await?;
                }
                Ok(json!({"slept": secs, "attempt": ctx.attempt}))
            }),
            _ => {}
        }
    }
}
