//! Several stores on one database, as several nodes share one PostgreSQL: migrations run once when they start
//! together, a schema newer than the binary is refused by name, and check-and-write transactions stay serialized
//! across stores. The PostgreSQL tests need the server `scripts/test` starts (they fail without it).

use moat_model::activity::ActivityEvent;
use moat_model::{Location, RegistrySettings, Sku};
use moat_store::meta::WebhookRow;
use moat_store::testing::{postgres_db, raw_pool, test_db};
use moat_store::{MetadataStore, StoreError};
use serde_json::json;

#[tokio::test]
async fn three_nodes_starting_on_an_empty_postgres_database_migrate_it_once() {
    let db = postgres_db().await;
    let opens = (0..3).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { MetadataStore::open(&url).await })
    });
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap().expect("every node opens"));
    }
    let pool = raw_pool(&db.url).await;
    let (rows, versions): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT version) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rows, versions, "a migration ran twice");
    assert!(rows >= 22, "{rows} migrations applied");
    for s in &stores {
        assert!(s.ready().await.unwrap());
    }
    // Each node sees what another wrote.
    stores[0].init_setting("k", "from-a").await.unwrap();
    assert_eq!(
        stores[2].get_setting("k").await.unwrap().as_deref(),
        Some("from-a")
    );
}

#[tokio::test]
async fn a_database_newer_than_the_binary_is_refused_naming_both_versions() {
    let db = test_db().await;
    drop(db.open().await);
    let pool = raw_pool(&db.url).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations(version, description, success, checksum, execution_time)
         VALUES (9999, 'from a newer moat', true, $1, 0)",
    )
    .bind(vec![0u8; 48])
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    match MetadataStore::open(&db.url).await {
        Err(
            e @ StoreError::SchemaTooNew {
                database: 9999,
                binary,
            },
        ) => {
            let msg = e.to_string();
            assert!((25..9999).contains(&binary), "{msg}");
            assert!(
                msg.contains("9999") && msg.contains(&binary.to_string()),
                "{msg}"
            );
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a binary older than its database's schema started"),
    }
}

fn hook(registry_id: &str, name: &str) -> WebhookRow {
    WebhookRow {
        registry_id: registry_id.into(),
        name: name.into(),
        location: "westeurope".into(),
        tags: json!({}),
        enabled: true,
        scope: String::new(),
        actions: vec!["push".into()],
        service_uri_sealed: "sealed-uri".into(),
        custom_headers_sealed: String::new(),
        header_names: vec![],
        created: moat_store::time_fmt::now(),
        updated: moat_store::time_fmt::now(),
    }
}

fn activity(i: usize) -> ActivityEvent {
    ActivityEvent::new(
        format!("ev-{i}-{}", uuid_suffix()),
        moat_store::time_fmt::now(),
        "Microsoft.ContainerRegistry/registries/webhooks/write",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/app/webhooks/h",
        "c",
        "ip",
        "corr",
    )
}

fn uuid_suffix() -> String {
    format!("{:?}", std::time::SystemTime::now())
}

/// A count-then-insert rule (a registry's webhook limit) checked by transactions of three stores at once: with
/// write transactions serialized across stores, the limit holds exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_checked_by_three_stores_at_once_holds() {
    let db = test_db().await;
    let stores = [db.open().await, db.open().await, db.open().await];
    let reg = stores[0]
        .create_registry(
            "app",
            "app.test",
            "rg",
            &RegistrySettings::new(Sku::Basic, Location::parse("local").unwrap()),
            false,
            None,
        )
        .await
        .unwrap();
    const LIMIT: usize = 10;
    let tries = (0..60).map(|i| {
        let store = stores[i % stores.len()].clone();
        let reg = reg.id.clone();
        tokio::spawn(async move {
            store
                .put_webhook(&hook(&reg, &format!("hook{i}")), LIMIT, &activity(i))
                .await
        })
    });
    let mut made = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok((_, created)) => {
                assert!(created);
                made += 1;
            }
            Err(StoreError::Limit(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made, LIMIT);
    assert_eq!(stores[1].webhooks(&reg.id).await.unwrap().len(), LIMIT);
}
