//! The metadata store's rules, on a real SQLite file: visibility through links, manifests refused when they
//! reference what the repository does not hold, and audit events written only with the change they record.

use bytes::Bytes;
use moat_model::audit::AuditEvent;
use moat_model::{
    permit, Access, Digest, Egress, Origin, Reference, RegistrySettings, RepositoryName, Sku,
};
use moat_store::meta::{AuditFilter, FinishedBlob, ManifestRecord};
use moat_store::{MetadataStore, ReceivedBlob};

fn event(op: &str) -> AuditEvent {
    AuditEvent {
        time_generated: moat_store::time_fmt::now(),
        category: "ContainerRegistryRepositoryEvents".into(),
        operation_name: op.into(),
        registry: "default".into(),
        login_server: "x".into(),
        result_type: "Success".into(),
        result_description: "201".into(),
        ..Default::default()
    }
}

async fn store() -> (moat_store::testing::TestDb, MetadataStore) {
    let db = moat_store::testing::test_db().await;
    let meta = db.open().await;
    (db, meta)
}

/// A Premium registry in resource group `rg` (`default`: whether it is the server's default registry).
async fn premium_registry(
    meta: &MetadataStore,
    name: &str,
    login_server: &str,
    default: bool,
) -> moat_model::Registry {
    meta.create_registry(
        name,
        login_server,
        "rg",
        &RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap()),
        default,
        None,
    )
    .await
    .unwrap()
}

fn repo(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

#[tokio::test]
async fn blobs_are_visible_only_where_linked() {
    let (_d, meta) = store().await;
    let r1 = premium_registry(&meta, "regone", "one", true).await;
    let r2 = premium_registry(&meta, "regtwo", "two", false).await;
    let d = Digest::sha256_of(b"layer");
    meta.commit_blob(
        FinishedBlob {
            registry_id: &r1.id,
            repo: &repo("a"),
            blob: ReceivedBlob::from_bytes(Bytes::from_static(b"layer"), &d).unwrap(),
            upload_id: "u1",
        },
        &event("Push"),
    )
    .await
    .unwrap();
    assert_eq!(
        meta.linked_blob_size(&r1.id, &repo("a"), &d).await.unwrap(),
        Some(5)
    );
    assert_eq!(
        meta.linked_blob_size(&r1.id, &repo("b"), &d).await.unwrap(),
        None
    );
    assert_eq!(
        meta.linked_blob_size(&r2.id, &repo("a"), &d).await.unwrap(),
        None
    );
    // A mount from a repository that does not hold the blob links nothing.
    let mount = |from: &str| {
        let (from, to) = (repo(from), repo("c"));
        let egress = Egress::Mount {
            source_registry: &r1,
            from: &from,
            to: &to,
        };
        let origin = Origin::trusted_service("127.0.0.1".parse().unwrap());
        permit(&r1, &origin, &Access::everything(), &egress).unwrap()
    };
    assert_eq!(
        meta.mount_blob(&mount("b"), &repo("c"), &d, &event("Mount"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        meta.mount_blob(&mount("a"), &repo("c"), &d, &event("Mount"))
            .await
            .unwrap(),
        Some(5)
    );
    assert_eq!(
        meta.linked_blob_size(&r1.id, &repo("c"), &d).await.unwrap(),
        Some(5)
    );
    assert_eq!(meta.blob_count().await.unwrap(), 1, "stored once");
}

#[tokio::test]
async fn manifest_needs_its_blobs_and_failed_push_leaves_no_trace() {
    let (_d, meta) = store().await;
    let r = premium_registry(&meta, "regone", "one", true).await;
    let layer = Digest::sha256_of(b"layer");
    let body = b"{}".to_vec();
    let m = ManifestRecord {
        digest: Digest::sha256_of(&body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        subject: None,
        annotations: None,
        body,
        required_blobs: vec![layer.clone()],
        required_manifests: vec![],
    };
    let tag: moat_model::Tag = "v1".parse().unwrap();
    let err = meta
        .put_manifest(&r.id, &repo("a"), &m, Some(&tag), &event("Push"))
        .await
        .unwrap_err();
    assert!(matches!(err, moat_store::StoreError::ManifestBlobUnknown(d) if d == layer));
    assert!(meta
        .manifest(&r.id, &repo("a"), &Reference::Tag(tag.clone()))
        .await
        .unwrap()
        .is_none());
    let pushes = meta
        .audit_events(&AuditFilter {
            operation: Some("Push".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        pushes.is_empty(),
        "no audit event for a change that did not happen"
    );

    meta.commit_blob(
        FinishedBlob {
            registry_id: &r.id,
            repo: &repo("a"),
            blob: ReceivedBlob::from_bytes(Bytes::from_static(b"layer"), &layer).unwrap(),
            upload_id: "u1",
        },
        &event("Push"),
    )
    .await
    .unwrap();
    meta.put_manifest(&r.id, &repo("a"), &m, Some(&tag), &event("Push"))
        .await
        .unwrap();
    let got = meta
        .manifest(&r.id, &repo("a"), &Reference::Tag(tag))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.digest, m.digest.as_str());
    assert_eq!(
        meta.list_tags(&r.id, &repo("a"), None, None).await.unwrap(),
        vec!["v1"]
    );
    assert_eq!(
        meta.list_repositories(&r.id, None, None).await.unwrap(),
        vec!["a"]
    );
    let pushes = meta
        .audit_events(&AuditFilter {
            operation: Some("Push".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pushes.len(), 2);
}

#[tokio::test]
async fn concurrent_blob_commits_all_land() {
    let (_d, meta) = store().await;
    let r = premium_registry(&meta, "regone", "one", true).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (meta, rid) = (meta.clone(), r.id.clone());
        tasks.push(tokio::spawn(async move {
            let bytes = Bytes::from(format!("blob {i}"));
            let d = Digest::sha256_of(&bytes);
            let blob = FinishedBlob {
                registry_id: &rid,
                repo: &repo("a"),
                blob: ReceivedBlob::from_bytes(bytes, &d).unwrap(),
                upload_id: &format!("u{i}"),
            };
            meta.commit_blob(blob, &event("Push")).await.unwrap();
            d
        }));
    }
    for t in tasks {
        let d = t.await.unwrap();
        assert!(meta
            .linked_blob_size(&r.id, &repo("a"), &d)
            .await
            .unwrap()
            .is_some());
    }
    assert_eq!(meta.blob_count().await.unwrap(), 64);
    let events = meta.audit_events(&AuditFilter::default()).await.unwrap();
    assert_eq!(events.len(), 64);
}

/// Other nodes follow changes through the epochs the triggers bump in the change's own transaction: a push and a
/// tag delete move `manifests`, a registry change moves `registries`, a read moves nothing.
#[tokio::test]
async fn changes_move_the_epochs_other_nodes_follow() {
    use moat_store::meta::change_epochs::{MANIFESTS, REGISTRIES};
    let (_d, meta) = store().await;
    let epoch = |all: Vec<(String, i64)>, scope: &str| {
        all.into_iter()
            .find(|(s, _)| s == scope)
            .map(|(_, e)| e)
            .unwrap_or_else(|| panic!("no epoch {scope}"))
    };
    let e0 = meta.change_epochs().await.unwrap();
    let r = premium_registry(&meta, "regepoch", "epoch", true).await;
    let e1 = meta.change_epochs().await.unwrap();
    assert!(epoch(e1.clone(), REGISTRIES) > epoch(e0.clone(), REGISTRIES));
    assert_eq!(epoch(e1.clone(), MANIFESTS), epoch(e0, MANIFESTS));

    let body = b"{\"epoch\":1}".to_vec();
    let m = ManifestRecord {
        digest: Digest::sha256_of(&body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        subject: None,
        annotations: None,
        body,
        required_blobs: vec![],
        required_manifests: vec![],
    };
    let tag: moat_model::Tag = "v1".parse().unwrap();
    meta.put_manifest(&r.id, &repo("a"), &m, Some(&tag), &event("Push"))
        .await
        .unwrap();
    let e2 = meta.change_epochs().await.unwrap();
    assert!(epoch(e2.clone(), MANIFESTS) > epoch(e1.clone(), MANIFESTS));
    meta.manifest(&r.id, &repo("a"), &Reference::Tag(tag.clone()))
        .await
        .unwrap()
        .expect("pushed");
    assert_eq!(
        meta.change_epochs().await.unwrap(),
        e2,
        "a read moves nothing"
    );

    assert!(meta
        .delete_tag(&r.id, &repo("a"), &tag, &event("Untag"))
        .await
        .unwrap());
    let e3 = meta.change_epochs().await.unwrap();
    assert!(epoch(e3, MANIFESTS) > epoch(e2, MANIFESTS));
}
