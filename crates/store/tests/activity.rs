//! The activity log in the store: a change's record is written with the change, a refused change writes neither.

use moat_model::activity::{ActivityEvent, ActivityStatus};
use moat_model::{RegistrySettings, Sku};
use moat_store::meta::{ActivityFilter, UpdateError};
use moat_store::MetadataStore;

async fn store() -> (moat_store::testing::TestDb, MetadataStore) {
    let db = moat_store::testing::test_db().await;
    let meta = db.open().await;
    (db, meta)
}

fn record(corr: &str) -> ActivityEvent {
    ActivityEvent::new(
        uuid(),
        moat_store::time_fmt::now(),
        "Microsoft.ContainerRegistry/registries/write",
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/actreg",
        "app\n\x1b[2J",
        "127.0.0.1",
        corr,
    )
}

fn uuid() -> String {
    format!("{:?}", std::time::SystemTime::now())
}

#[tokio::test]
async fn a_change_and_its_record_commit_together() {
    let (_d, meta) = store().await;
    let settings =
        RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
    let (_, created) = meta
        .upsert_registry::<_, UpdateError>("actreg", "a", "rg", record("c1"), |_| {
            Ok(settings.clone())
        })
        .await
        .unwrap();
    assert!(created);
    // Refused by the policy: exports off on a registry with public access and no private endpoint.
    let mut bad = settings.clone();
    bad.policies.export = moat_model::registry::PolicyStatus::Disabled;
    let refused = meta
        .upsert_registry::<_, UpdateError>("actreg", "a", "rg", record("c2"), |_| Ok(bad.clone()))
        .await;
    assert!(matches!(refused, Err(UpdateError::Policy(_))));
    let rows = meta
        .activity_events(&ActivityFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.correlation_id, "c1");
    assert_eq!(row.status, ActivityStatus::Succeeded);
    assert_eq!(row.http_status_code, 201);
    assert_eq!(row.registry.as_deref(), Some("actreg"));
    assert_eq!(row.caller, "app\\n\\x1b[2J", "stored escaped");
    assert!(row.properties["before"].is_null());
    assert_eq!(row.properties["after"]["sku"], "Premium");
}
