//! Job rows on a real SQLite file: claiming with a lease, a lapsed lease handed over with its checkpoint, the
//! attempts limit, cancellation, a stale owner's writes refused, and a job inserted inside another transaction.

use moat_store::meta::{JobFilter, JobState, Lease};
use moat_store::MetadataStore;
use serde_json::json;
use std::time::Duration;

async fn store() -> (moat_store::testing::TestDb, MetadataStore) {
    let db = moat_store::testing::test_db().await;
    let meta = db.open().await;
    (db, meta)
}

fn kinds(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

const SHORT: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn claim_checkpoint_finish() {
    let (_d, meta) = store().await;
    let id = meta
        .insert_job("k", "reg", &json!({"a": 1}), None)
        .await
        .unwrap();
    assert!(meta
        .claim_job("p1", &kinds(&["other"]), LONG, 3)
        .await
        .unwrap()
        .is_none());
    let job = meta
        .claim_job("p1", &kinds(&["k"]), LONG, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.id.as_str(), job.state, job.attempts),
        (id.as_str(), JobState::Running, 1)
    );
    assert_eq!(job.payload, json!({"a": 1}));
    // Held: nobody else claims it.
    assert!(meta
        .claim_job("p2", &kinds(&["k"]), LONG, 3)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        meta.checkpoint_job(&id, "p1", LONG, &json!({"done": 2}))
            .await
            .unwrap(),
        Lease::Held
    );
    assert_eq!(
        meta.checkpoint_job(&id, "p2", LONG, &json!({"done": 9}))
            .await
            .unwrap(),
        Lease::Lost
    );
    meta.job_progress(&id, "p1", &json!({"pct": 50}))
        .await
        .unwrap();
    assert!(meta
        .finish_job(&id, "p1", Ok(&json!({"ok": true})))
        .await
        .unwrap());
    let job = meta.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.checkpoint, Some(json!({"done": 2})));
    assert_eq!(job.progress, json!({"pct": 50}));
    assert_eq!(job.result, Some(json!({"ok": true})));
    assert!(job.finished.is_some());
    // Ended: a late finish by anyone is refused.
    assert!(!meta.finish_job(&id, "p1", Err("late")).await.unwrap());
}

#[tokio::test]
async fn lapsed_lease_resumes_then_fails_after_max_attempts() {
    let (_d, meta) = store().await;
    let id = meta.insert_job("k", "reg", &json!({}), None).await.unwrap();
    for attempt in 1..=3 {
        let job = meta
            .claim_job(&format!("p{attempt}"), &kinds(&["k"]), SHORT, 3)
            .await
            .unwrap()
            .expect("claimable");
        assert_eq!(job.attempts, attempt);
        if attempt > 1 {
            assert_eq!(job.checkpoint, Some(json!({"n": attempt - 1})));
        }
        meta.checkpoint_job(&id, &format!("p{attempt}"), SHORT, &json!({"n": attempt}))
            .await
            .unwrap();
        tokio::time::sleep(SHORT * 2).await;
    }
    // The third lapse fails it instead of handing it over.
    assert!(meta
        .claim_job("p4", &kinds(&["k"]), SHORT, 3)
        .await
        .unwrap()
        .is_none());
    let job = meta.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.unwrap().contains("interrupted 3 times"));
    // The stale owner's writes are refused.
    assert_eq!(
        meta.renew_job_lease(&id, "p3", LONG).await.unwrap(),
        Lease::Lost
    );
}

#[tokio::test]
async fn take_over_and_graceful_release() {
    let (_d, meta) = store().await;
    let id = meta.insert_job("k", "reg", &json!({}), None).await.unwrap();
    meta.claim_job("old", &kinds(&["k"]), LONG, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.take_over_job_leases("new").await.unwrap(), 1);
    let job = meta
        .claim_job("new", &kinds(&["k"]), LONG, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.attempts, 2);
    // A graceful stop does not count as an attempt.
    assert_eq!(meta.release_job_leases("new").await.unwrap(), 1);
    let job = meta
        .claim_job("newer", &kinds(&["k"]), LONG, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.id, job.attempts), (id, 2));
}

#[tokio::test]
async fn cancel_queued_and_running() {
    let (_d, meta) = store().await;
    let queued = meta.insert_job("k", "reg", &json!({}), None).await.unwrap();
    assert!(meta.cancel_job(&queued).await.unwrap());
    assert_eq!(
        meta.job(&queued).await.unwrap().unwrap().state,
        JobState::Failed
    );
    assert!(!meta.cancel_job(&queued).await.unwrap());
    let running = meta.insert_job("k", "reg", &json!({}), None).await.unwrap();
    meta.claim_job("p", &kinds(&["k"]), LONG, 3)
        .await
        .unwrap()
        .unwrap();
    assert!(meta.cancel_job(&running).await.unwrap());
    assert_eq!(
        meta.renew_job_lease(&running, "p", LONG).await.unwrap(),
        Lease::Cancelled
    );
    assert!(!meta.cancel_job("nope").await.unwrap());
}

#[tokio::test]
async fn delayed_jobs_wait_and_list_filters() {
    let (_d, meta) = store().await;
    let later = moat_store_now() + 3600.0;
    meta.insert_job("k", "a", &json!({}), Some(later))
        .await
        .unwrap();
    assert!(meta
        .claim_job("p", &kinds(&["k"]), LONG, 3)
        .await
        .unwrap()
        .is_none());
    meta.insert_job("j", "b", &json!({}), None).await.unwrap();
    let all = meta.jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let b = meta
        .jobs(&JobFilter {
            registry_id: Some("b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((b.len(), b[0].kind.as_str()), (1, "j"));
    let queued = meta
        .jobs(&JobFilter {
            state: Some(JobState::Queued),
            kind: Some("k".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
}

fn moat_store_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
