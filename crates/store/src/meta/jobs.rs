//! Durable jobs (DESIGN principle 9): the rows the job runner (`moat_server::jobs`) claims, checkpoints and
//! finishes. A job is claimed with a lease (owner = one process, until a time); the owner renews it while it works;
//! a job whose lease lapsed (its process died) is claimed again with its last checkpoint, and after
//! `max_attempts` interrupted claims it fails with a message instead. Every write that changes a running job checks
//! that the caller still holds it, so a process that lost its lease cannot overwrite what the new owner does.
//!
//! Times the runner compares (leases, `not_before`) are unix seconds given by the caller; the SQL is plain enough
//! for PostgreSQL too (`$n` parameters, `ON CONFLICT`).

use crate::error::{Result, StoreError};
use crate::gc::BlobPins;
use crate::meta::Conn;
use crate::meta::MetadataStore;
use crate::ReceivedBlob;
use moat_model::Digest;
use serde_json::Value;
use sqlx::Row;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where a job is. Cancelled and abandoned jobs are `Failed` with a message that says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            _ => JobState::Failed,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// One job as stored.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    pub registry_id: String,
    pub state: JobState,
    pub payload: Value,
    pub checkpoint: Option<Value>,
    pub progress: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub lease_owner: Option<String>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub updated: String,
}

/// What a lease holder learns when it renews or checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Still ours: carry on.
    Held,
    /// Ours, but someone asked the job to stop: stop now (the job is failed as cancelled by `finish`/`fail`).
    Cancelled,
    /// No longer ours (it lapsed and another claim took it, or the job is gone): stop without writing anything.
    Lost,
}

pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).expect("a JSON value serializes")
}

fn parse_json(s: Option<String>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

const COLUMNS: &str = "id, kind, registry_id, state, payload, checkpoint, progress, result, error, attempts, \
                       cancel_requested, lease_owner, created_at, started_at, finished_at, updated_at";

fn record(row: &crate::meta::DbRow) -> Result<JobRecord> {
    let state: String = row.try_get("state")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        registry_id: row.try_get("registry_id")?,
        state: JobState::parse(&state),
        payload: parse_json(row.try_get("payload")?).unwrap_or(Value::Null),
        checkpoint: parse_json(row.try_get("checkpoint")?),
        progress: parse_json(row.try_get("progress")?).unwrap_or(Value::Null),
        result: parse_json(row.try_get("result")?),
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        lease_owner: row.try_get("lease_owner")?,
        created: row.try_get("created_at")?,
        started: row.try_get("started_at")?,
        finished: row.try_get("finished_at")?,
        updated: row.try_get("updated_at")?,
    })
}

/// Records a queued job inside the caller's transaction (a row that names the job, such as a pipeline run, and
/// the job then appear together or not at all). Returns the job's id.
pub async fn insert_job(
    conn: &mut Conn,
    kind: &str,
    registry_id: &str,
    payload: &Value,
) -> Result<String> {
    insert_job_at(conn, kind, registry_id, payload, 0.0).await
}

/// [`insert_job`] for a job not to be claimed before `not_before` (unix seconds).
pub async fn insert_job_at(
    conn: &mut Conn,
    kind: &str,
    registry_id: &str,
    payload: &Value,
    not_before: f64,
) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = crate::time_fmt::now();
    sqlx::query(
        "INSERT INTO jobs(id, kind, registry_id, state, payload, progress, not_before, created_at, updated_at)
         VALUES ($1, $2, $3, 'queued', $4, '{}', $5, $6, $6)",
    )
    .bind(&id)
    .bind(kind)
    .bind(registry_id)
    .bind(json_text(payload))
    .bind(not_before)
    .bind(&now)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Which jobs [`MetadataStore::jobs`] lists.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub registry_id: Option<String>,
    pub kind: Option<String>,
    pub state: Option<JobState>,
    pub limit: Option<i64>,
}

impl MetadataStore {
    /// Records a queued job on its own (see [`insert_job`] for one inside another write).
    pub async fn insert_job(
        &self,
        kind: &str,
        registry_id: &str,
        payload: &Value,
        not_before: Option<f64>,
    ) -> Result<String> {
        let mut tx = self.begin_write().await?;
        let id = insert_job_at(
            &mut tx,
            kind,
            registry_id,
            payload,
            not_before.unwrap_or(0.0),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// Jobs, newest first.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM jobs
             WHERE ($1 IS NULL OR registry_id = $1) AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR state = $3)
             ORDER BY created_at DESC, id LIMIT $4"
        ))
        .bind(filter.registry_id.as_deref())
        .bind(filter.kind.as_deref())
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.limit.unwrap_or(1000))
        .fetch_all(self.reader())
        .await?;
        rows.iter().map(record).collect()
    }

    /// Claims the oldest claimable job of one of `kinds` for `owner` until `lease` from now: a queued job whose
    /// `not_before` has come, or a running job whose lease lapsed (an interrupted attempt: it is handed over with its
    /// last checkpoint). A lapsed job that has had `max_attempts` claims already is failed with a message instead.
    pub async fn claim_job(
        &self,
        owner: &str,
        kinds: &[String],
        lease: Duration,
        max_attempts: i64,
    ) -> Result<Option<JobRecord>> {
        Ok(self
            .claim_job_reporting(owner, kinds, lease, max_attempts)
            .await?
            .0)
    }

    /// [`MetadataStore::claim_job`], also returning the jobs it failed on the way (cancelled, or interrupted
    /// `max_attempts` times), as they ended: their handlers never see them again, so the runner tells whoever
    /// must know (a pipeline run's response, an import's audit trail).
    pub async fn claim_job_reporting(
        &self,
        owner: &str,
        kinds: &[String],
        lease: Duration,
        max_attempts: i64,
    ) -> Result<(Option<JobRecord>, Vec<JobRecord>)> {
        let mut abandoned = Vec::new();
        if kinds.is_empty() {
            return Ok((None, abandoned));
        }
        let kinds_json = json_text(&Value::from(kinds.to_vec()));
        let mut tx = self.begin_write().await?;
        let now = unix_now();
        loop {
            let candidate: Option<(String, String, i64, i64)> = sqlx::query_as(&format!(
                "SELECT id, state, attempts, cancel_requested FROM jobs
                 WHERE kind IN ({})
                   AND ((state = 'queued' AND not_before <= $2) OR (state = 'running' AND lease_until <= $2))
                 ORDER BY not_before, created_at LIMIT 1",
                self.dialect().json_strings(1)
            ))
            .bind(&kinds_json)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((id, state, attempts, cancel)) = candidate else {
                tx.commit().await?;
                return Ok((None, abandoned));
            };
            let stamp = crate::time_fmt::now();
            let why = if cancel != 0 {
                Some("the job was cancelled".to_string())
            } else if state == "running" && attempts >= max_attempts {
                Some(format!(
                    "the job was interrupted {attempts} times (its server stopped or restarted while it ran) and \
                     is not tried again: start it anew"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                sqlx::query(
                    "UPDATE jobs SET state = 'failed', error = $2, lease_owner = NULL, lease_until = NULL,
                     finished_at = $3, updated_at = $3 WHERE id = $1",
                )
                .bind(&id)
                .bind(&why)
                .bind(&stamp)
                .execute(&mut *tx)
                .await?;
                release_job_pins(&mut tx, &id).await?;
                let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
                    .bind(&id)
                    .fetch_one(&mut *tx)
                    .await?;
                abandoned.push(record(&row)?);
                continue;
            }
            sqlx::query(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $2, lease_until = $3,
                 started_at = COALESCE(started_at, $4), updated_at = $4 WHERE id = $1",
            )
            .bind(&id)
            .bind(owner)
            .bind(now + lease.as_secs_f64())
            .bind(&stamp)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"))
                .bind(&id)
                .fetch_one(&mut *tx)
                .await?;
            let job = record(&row)?;
            tx.commit().await?;
            return Ok((Some(job), abandoned));
        }
    }

    /// Extends `owner`'s lease on job `id` (the heartbeat).
    pub async fn renew_job_lease(&self, id: &str, owner: &str, lease: Duration) -> Result<Lease> {
        self.update_held(id, owner, lease, None).await
    }

    /// Records a checkpoint (what a resumed attempt starts from) and renews the lease.
    pub async fn checkpoint_job(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        checkpoint: &Value,
    ) -> Result<Lease> {
        self.update_held(id, owner, lease, Some(checkpoint)).await
    }

    async fn update_held(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        checkpoint: Option<&Value>,
    ) -> Result<Lease> {
        let row: Option<(i64,)> = sqlx::query_as(
            "UPDATE jobs SET lease_until = $3, checkpoint = COALESCE($4, checkpoint), updated_at = $5
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'
             RETURNING cancel_requested",
        )
        .bind(id)
        .bind(owner)
        .bind(unix_now() + lease.as_secs_f64())
        .bind(checkpoint.map(json_text))
        .bind(crate::time_fmt::now())
        .fetch_optional(self.writer())
        .await?;
        Ok(match row {
            None => Lease::Lost,
            Some((0,)) => Lease::Held,
            Some(_) => Lease::Cancelled,
        })
    }

    /// Records how far the job has come (shown to pollers; not a checkpoint).
    pub async fn job_progress(&self, id: &str, owner: &str, progress: &Value) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET progress = $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(json_text(progress))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Ends a job `owner` holds: succeeded with `result`, or failed with `error`. False if it was no longer ours.
    /// The job's pins and received-blob records go with it.
    pub async fn finish_job(
        &self,
        id: &str,
        owner: &str,
        outcome: std::result::Result<&Value, &str>,
    ) -> Result<bool> {
        let (state, result, error) = match outcome {
            Ok(v) => ("succeeded", Some(json_text(v)), None),
            Err(e) => ("failed", None, Some(e)),
        };
        let mut tx = self.begin_write().await?;
        let stamp = crate::time_fmt::now();
        let done = sqlx::query(
            "UPDATE jobs SET state = $3, result = $4, error = $5, lease_owner = NULL, lease_until = NULL,
             finished_at = $6, updated_at = $6 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(state)
        .bind(result)
        .bind(error)
        .bind(&stamp)
        .execute(&mut *tx)
        .await?;
        let ours = done.rows_affected() == 1;
        if ours {
            release_job_pins(&mut tx, id).await?;
        }
        tx.commit().await?;
        Ok(ours)
    }

    /// Asks job `id` to stop: a queued job fails at once, a running one stops at its next checkpoint or renewal.
    /// False if there is no such job or it has ended.
    pub async fn cancel_job(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let stamp = crate::time_fmt::now();
        let queued = sqlx::query(
            "UPDATE jobs SET state = 'failed', cancel_requested = 1, error = 'the job was cancelled before it started',
             finished_at = $2, updated_at = $2 WHERE id = $1 AND state = 'queued'",
        )
        .bind(id)
        .bind(&stamp)
        .execute(&mut *tx)
        .await?;
        let running = sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = $2 WHERE id = $1 AND state = 'running'",
        )
        .bind(id)
        .bind(&stamp)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(queued.rows_affected() + running.rows_affected() > 0)
    }

    /// At the start of the only server on this data (serve.lock): the running jobs of its previous process are
    /// handed over at once rather than after their leases lapse. Returns how many.
    pub async fn take_over_job_leases(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = 0 WHERE state = 'running' AND (lease_owner IS NULL OR lease_owner <> $1)",
        )
        .bind(owner)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// A graceful stop: `owner`'s running jobs are handed over at once, and the interrupted attempt is not counted
    /// against them (only a crash is).
    pub async fn release_job_leases(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = 0, lease_owner = NULL, attempts = CASE WHEN attempts - 1 >= 0 THEN attempts - 1 ELSE 0 END
             WHERE state = 'running' AND lease_owner = $1",
        )
        .bind(owner)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected())
    }

    /// Pins `digests` under job `id` for `ttl`: a resumed attempt of the job finds them pinned still, under the
    /// same holder. Renews pins the job took already.
    pub async fn pin_blobs_for_job(
        &self,
        id: &str,
        digests: &[Digest],
        ttl: Duration,
    ) -> Result<BlobPins> {
        let holder = job_pin_holder(id);
        let mut tx = self.begin_write().await?;
        let until = unix_now() + ttl.as_secs_f64();
        for d in digests {
            sqlx::query(
                "INSERT INTO blob_pins(holder, digest, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT(holder, digest) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .bind(&holder)
            .bind(d.as_str())
            .bind(until)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(BlobPins::new(holder, digests.to_vec()))
    }

    /// Records that job `id` received `blob` (downloaded, hashed and placed under its digest, pinned under the job):
    /// a resumed attempt gets it back from [`MetadataStore::job_received_blobs`] instead of downloading it again.
    /// Small blobs kept inline are not recorded (their bytes are not placed anywhere: they are fetched again).
    pub async fn record_job_blob(&self, id: &str, blob: &ReceivedBlob) -> Result<()> {
        if blob.inline().is_some() || blob.pin() != Some(job_pin_holder(id).as_str()) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO job_blobs(job_id, digest, size) VALUES ($1, $2, $3)
             ON CONFLICT(job_id, digest) DO NOTHING",
        )
        .bind(id)
        .bind(blob.digest().as_str())
        .bind(blob.size() as i64)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// The blobs an earlier attempt of job `id` received and that are still pinned under it (so their bytes are
    /// still in the blob store): proofs of possession carried over a restart. Only [`record_job_blob`], which
    /// takes a [`ReceivedBlob`], writes what this reads.
    ///
    /// [`record_job_blob`]: MetadataStore::record_job_blob
    pub async fn job_received_blobs(&self, id: &str) -> Result<Vec<ReceivedBlob>> {
        let holder = job_pin_holder(id);
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT b.digest, b.size FROM job_blobs b
             WHERE b.job_id = $1 AND EXISTS (SELECT 1 FROM blob_pins p WHERE p.holder = $2 AND p.digest = b.digest)",
        )
        .bind(id)
        .bind(&holder)
        .fetch_all(self.writer())
        .await?;
        rows.into_iter()
            .map(|(d, size)| {
                let digest: Digest = d.parse().map_err(|_| {
                    StoreError::Invalid(format!("job {id} recorded a bad digest {d}"))
                })?;
                Ok(ReceivedBlob::recorded(digest, size as u64, holder.clone()))
            })
            .collect()
    }
}

fn job_pin_holder(id: &str) -> String {
    format!("job:{id}")
}

/// A job that ended lets go of what it pinned and its received-blob records (what it linked is linked: the
/// link writer removed those pins already).
async fn release_job_pins(conn: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM blob_pins WHERE holder = $1")
        .bind(job_pin_holder(id))
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM job_blobs WHERE job_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
