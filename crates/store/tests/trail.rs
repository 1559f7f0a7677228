//! The compact, chained audit trail: records read back exactly, verification passes on an intact trail and names
//! the first edited, deleted or swapped record, and pruning keeps the chain verifiable.

use moat_model::activity::ActivityEvent;
use moat_model::audit::AuditEvent;
use moat_store::meta::AuditFilter;
use moat_store::testing::{test_db, TestDb};
use moat_store::MetadataStore;
use sqlx::sqlite::SqlitePoolOptions;

fn pull(i: i64, registry: &str) -> AuditEvent {
    AuditEvent {
        time_generated: format!("2026-12-07T08:00:{:02}.{:06}Z", i / 1000 % 60, i % 1000),
        category: "ContainerRegistryRepositoryEvents".into(),
        operation_name: "Pull".into(),
        registry: registry.into(),
        login_server: format!("{registry}.example.test"),
        repository: Some("app".into()),
        tag: Some("v1".into()),
        digest: Some(format!("sha256:{:064x}", i % 3)),
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        size: Some(1234),
        identity: Some(if i % 2 == 0 { "alice" } else { "bob" }.into()),
        caller_ip_address: Some("127.0.0.1".into()),
        user_agent: Some("docker/27".into()),
        duration_ms: Some(3),
        result_type: "Success".into(),
        result_description: "200".into(),
        correlation_id: Some(format!("0f8fad5b-d9cb-469f-a165-{:012x}", i)),
        endpoint: Some("public".into()),
    }
}

async fn open(db: &TestDb) -> (MetadataStore, String) {
    (db.open().await, db.url.clone())
}

/// Runs `sql` behind the store's back (a tampering operator).
async fn raw(url: &str, sql: &str) {
    moat_store::testing::raw_execute(url, sql).await.unwrap();
}

/// Moves record `seq`'s stored time by `delta` microseconds (PostgreSQL keeps `t` as text).
async fn shift_time(url: &str, seq: i64, delta: i64) {
    let sql = if url.starts_with("postgres") {
        format!(
            "UPDATE audit_records SET t = (CAST(t AS BIGINT) + {delta})::text WHERE seq = {seq}"
        )
    } else {
        format!("UPDATE audit_records SET t = t + {delta} WHERE seq = {seq}")
    };
    raw(url, &sql).await;
}

#[tokio::test]
async fn records_read_back_exactly_and_filters_match() {
    let dir = test_db().await;
    let (meta, _) = open(&dir).await;
    let mut events: Vec<AuditEvent> = (0..3000).map(|i| pull(i, "prod")).collect();
    events[5].correlation_id = Some("Not-A-UUID".into());
    events[6].time_generated = "2026-12-07T08:00:00Z".into();
    events[7].identity = None;
    events[7].size = Some(-5);
    events[8].user_agent = Some("a \"quoted\" \\ agent ü </>".into());
    events[9].tag = None;
    events[9].duration_ms = None;
    meta.record_batch(&events).await.unwrap();
    meta.record(&pull(3000, "other")).await.unwrap();
    let all = meta.audit_rows(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3001);
    let back: Vec<AuditEvent> = all[..3000].iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(back, events);
    assert_eq!(all[0].0, 1);
    // JSON export is byte for byte the events' serialisation.
    let mut out = Vec::new();
    let n = meta
        .audit_export(&AuditFilter::default(), &mut out)
        .await
        .unwrap();
    assert_eq!(n, 3001);
    let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
    assert_eq!(lines[7], serde_json::to_string(&events[7]).unwrap());
    assert_eq!(lines[5], serde_json::to_string(&events[5]).unwrap());
    // Every line, not a sample: the export writes strings from per-id JSON text, times and uuids unescaped.
    assert_eq!(lines.len(), all.len());
    for (line, (_, e)) in lines.iter().zip(&all) {
        assert_eq!(*line, serde_json::to_string(e).unwrap());
    }
    let by = |f: AuditFilter| {
        let meta = meta.clone();
        async move { meta.audit_rows(&f).await.unwrap() }
    };
    assert_eq!(
        by(AuditFilter {
            identity: Some("ALICE".into()),
            ..Default::default()
        })
        .await
        .len(),
        1501
    );
    assert_eq!(
        by(AuditFilter {
            registry: Some("other".into()),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert!(by(AuditFilter {
        registry: Some("none".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    let newest = by(AuditFilter {
        newest_first: true,
        limit: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(
        newest.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![3001, 3000]
    );
    let ranged = by(AuditFilter {
        since: Some("2026-12-07T08:00:01.000000Z".into()),
        until: Some("2026-12-07T08:00:02.000000Z".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ranged.len(), 1000);
    assert_eq!(
        by(AuditFilter {
            operation: Some("pull".into()),
            after_seq: Some(2990),
            ..Default::default()
        })
        .await
        .len(),
        11
    );
    assert_eq!(
        meta.audit_operation_names().await.unwrap(),
        vec!["Pull".to_string()]
    );
    assert_eq!(meta.audit_max_seq().await.unwrap(), 3001);
    let report = meta.verify_trail(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.audit_records, 3001);
}

#[tokio::test]
async fn verification_names_the_edited_deleted_and_swapped_records() {
    let dir = test_db().await;
    let (meta, url) = open(&dir).await;
    let events: Vec<AuditEvent> = (0..50).map(|i| pull(i, "prod")).collect();
    meta.record_batch(&events).await.unwrap();
    let a = ActivityEvent::new(
        "e1".into(),
        "2026-12-07T08:00:00.000000Z".into(),
        "Microsoft.ContainerRegistry/registries/write",
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.ContainerRegistry/registries/prod",
        "local:root",
        "127.0.0.1",
        "c1",
    );
    meta.record_activity(&a).await.unwrap();
    assert!(meta.verify_trail(None).await.unwrap().problems.is_empty());
    drop(meta);

    // An edited record (its time moved).
    shift_time(&url, 20, 1).await;
    let meta = MetadataStore::open(&url).await.unwrap();
    let r = meta.verify_trail(None).await.unwrap();
    assert_eq!(r.problems[0].seq, 20, "{:?}", r.problems);
    assert!(meta.verify_trail(Some("prod")).await.unwrap().problems[0].seq == 20);
    drop(meta);
    shift_time(&url, 20, -1).await;

    // A deleted one.
    raw(&url, "DELETE FROM audit_records WHERE seq = 30").await;
    let meta = MetadataStore::open(&url).await.unwrap();
    let r = meta.verify_trail(None).await.unwrap();
    assert_eq!(r.problems[0].seq, 30, "{:?}", r.problems);
    assert!(r.problems[0].what.contains("deleted"), "{:?}", r.problems);
    drop(meta);

    // Two swapped (fresh store).
    let dir2 = test_db().await;
    let (meta, url) = open(&dir2).await;
    meta.record_batch(&events).await.unwrap();
    drop(meta);
    raw(&url, "UPDATE audit_records SET seq = -1 WHERE seq = 10").await;
    raw(&url, "UPDATE audit_records SET seq = 10 WHERE seq = 11").await;
    raw(&url, "UPDATE audit_records SET seq = 11 WHERE seq = -1").await;
    let meta = MetadataStore::open(&url).await.unwrap();
    let r = meta.verify_trail(None).await.unwrap();
    assert_eq!(r.problems[0].seq, 10, "{:?}", r.problems);
    drop(meta);

    // An edited dictionary string breaks the records that use it.
    let dir3 = test_db().await;
    let (meta, url) = open(&dir3).await;
    meta.record_batch(&events).await.unwrap();
    drop(meta);
    raw(
        &url,
        "UPDATE trail_strings SET s = 'mallory' WHERE s = 'bob'",
    )
    .await;
    let meta = MetadataStore::open(&url).await.unwrap();
    let r = meta.verify_trail(None).await.unwrap();
    assert_eq!(r.problems[0].seq, 2, "{:?}", r.problems);
    drop(meta);

    // An edited activity record; a truncated log (head says more).
    let dir4 = test_db().await;
    let (meta, url) = open(&dir4).await;
    meta.record_batch(&events).await.unwrap();
    meta.record_activity(&a).await.unwrap();
    drop(meta);
    raw(&url, "UPDATE activity_events SET caller = 'someone-else'").await;
    raw(&url, "DELETE FROM audit_records WHERE seq = 50").await;
    let meta = MetadataStore::open(&url).await.unwrap();
    let r = meta.verify_trail(None).await.unwrap();
    let logs: Vec<(String, i64)> = r.problems.iter().map(|p| (p.log.clone(), p.seq)).collect();
    assert!(logs.contains(&("audit".into(), 50)), "{:?}", r.problems);
    assert!(logs.contains(&("activity".into(), 1)), "{:?}", r.problems);
}

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable() {
    let dir = test_db().await;
    let (meta, _) = open(&dir).await;
    let mut events: Vec<AuditEvent> = Vec::new();
    for i in 0..40 {
        events.push(pull(i, if i % 4 == 0 { "other" } else { "prod" }));
    }
    meta.record_batch(&events).await.unwrap();
    let mut c = meta
        .prune_point(
            "audit",
            Some("prod"),
            21,
            "2026-12-07T09:00:00.000000Z".into(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.last_seq, 20);
    c.key_id = "k".into();
    c.signature = "00".into();
    let done = meta.prune_trail(&c).await.unwrap();
    assert_eq!(done.removed, 15);
    let left = meta.audit_rows(&AuditFilter::default()).await.unwrap();
    assert_eq!(left.len(), 25);
    let r = meta.verify_trail(None).await.unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(meta
        .verify_trail(Some("prod"))
        .await
        .unwrap()
        .problems
        .is_empty());
    // Nothing more to prune up to the same point.
    assert!(meta
        .prune_point("audit", Some("prod"), 21, String::new())
        .await
        .unwrap()
        .is_none());
    // More records after the prune chain on.
    meta.record_batch(&[pull(41, "prod")]).await.unwrap();
    assert!(meta.verify_trail(None).await.unwrap().problems.is_empty());
    assert_eq!(meta.checkpoint_rows(0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn rows_of_an_older_version_are_converted_with_their_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/moat.db", dir.path().display());
    {
        let meta = MetadataStore::open(&url).await.unwrap();
        meta.record_batch(&(0..10).map(|i| pull(i, "prod")).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    // Recreate the pre-trail table from the rows, as a database of the previous version holds them.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE audit_events_v1 (seq INTEGER PRIMARY KEY AUTOINCREMENT, time_generated TEXT NOT NULL,
            category TEXT NOT NULL, operation_name TEXT NOT NULL, registry TEXT NOT NULL, login_server TEXT NOT NULL,
            repository TEXT, tag TEXT, digest TEXT, media_type TEXT, size INTEGER, identity TEXT,
            caller_ip_address TEXT, user_agent TEXT, duration_ms INTEGER, result_type TEXT NOT NULL,
            result_description TEXT NOT NULL, correlation_id TEXT, endpoint TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    for i in [3i64, 7, 12] {
        let e = pull(i, "old");
        sqlx::query("INSERT INTO audit_events_v1(seq, time_generated, category, operation_name, registry, login_server, result_type, result_description, identity) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)")
            .bind(i + 100).bind(&e.time_generated).bind(&e.category).bind(&e.operation_name).bind(&e.registry)
            .bind(&e.login_server).bind(&e.result_type).bind(&e.result_description).bind(&e.identity)
            .execute(&pool).await.unwrap();
    }
    sqlx::query("DELETE FROM audit_records")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM trail_heads")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_time_map")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let meta = MetadataStore::open(&url).await.unwrap();
    let rows = meta.audit_rows(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![103, 107, 112]
    );
    assert_eq!(rows[1].1.identity.as_deref(), Some("bob"));
    meta.record(&pull(1, "old")).await.unwrap();
    assert!(meta.audit_max_seq().await.unwrap() > 112);
    let r = meta.verify_trail(Some("old")).await.unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}
