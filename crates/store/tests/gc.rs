//! Garbage collection's queue rules on a real SQLite file and blob directory: what is queued when, what a run
//! removes and keeps, grace periods, pins, and (as a property over random interleavings of pushes, manifest
//! writes, deletions and runs) that no stored manifest ever references bytes that are gone.

use bytes::Bytes;
use moat_model::audit::AuditEvent;
use moat_model::{Digest, RegistrySettings, RepositoryName, Sku};
use moat_store::gc::{Collector, GcOptions, GcSummary, Removed};
use moat_store::meta::{FinishedBlob, ManifestRecord};
use moat_store::{BlobStore, LocalBlobStore, MetadataStore, ReceivedBlob};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

fn event() -> AuditEvent {
    AuditEvent {
        time_generated: moat_store::time_fmt::now(),
        category: "ContainerRegistryRepositoryEvents".into(),
        operation_name: "Push".into(),
        registry: "default".into(),
        login_server: "x".into(),
        result_type: "Success".into(),
        result_description: "201".into(),
        ..Default::default()
    }
}

fn repo(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

struct Env {
    _db: moat_store::testing::TestDb,
    meta: MetadataStore,
    blobs: Arc<LocalBlobStore>,
    check: sqlx::AnyPool,
    registry: String,
}

async fn env() -> Env {
    env_with(RegistrySettings::new(
        Sku::Premium,
        moat_model::Location::parse("local").unwrap(),
    ))
    .await
}

async fn env_with(settings: RegistrySettings) -> Env {
    let db = moat_store::testing::test_db().await;
    let meta = db.open().await;
    let blobs = Arc::new(LocalBlobStore::open(db.dir().join("storage")).unwrap());
    let registry = meta
        .create_registry("reg", "reg.test", "rg", &settings, true, None)
        .await
        .unwrap()
        .id;
    let check = moat_store::testing::raw_pool(&db.url).await;
    Env {
        _db: db,
        meta,
        blobs,
        check,
        registry,
    }
}

impl Env {
    async fn run(&self, grace_secs: u64) -> (Vec<Removed>, GcSummary) {
        let opts = GcOptions {
            grace: Duration::from_secs(grace_secs),
            dry_run: false,
            upload_ttl: Duration::from_secs(3600),
            share: None,
            sweep_files: true,
            clock_offset: Duration::ZERO,
        };
        let mut removed = Vec::new();
        let summary = Collector::new(self.meta.clone(), self.blobs.clone())
            .run(&opts, &|_| false, &mut |r| removed.push(r.clone()))
            .await
            .unwrap();
        (removed, summary)
    }

    /// A small blob, pushed whole (kept in the database).
    async fn push_inline(&self, r: &str, data: &'static [u8]) -> Digest {
        let d = Digest::sha256_of(data);
        self.meta
            .commit_blob(
                FinishedBlob {
                    registry_id: &self.registry,
                    repo: &repo(r),
                    blob: ReceivedBlob::from_bytes(Bytes::from_static(data), &d).unwrap(),
                    upload_id: "",
                },
                &event(),
            )
            .await
            .unwrap();
        d
    }

    /// Bytes written through an upload object and placed under their name with a pin; linked only by `link`.
    async fn place_file(&self, data: &[u8]) -> ReceivedBlob {
        let d = Digest::sha256_of(data);
        let id = uuid::Uuid::new_v4().to_string();
        self.blobs.create_upload(&id, false).unwrap();
        let mut w = self.blobs.open_upload(&id, 0, None).unwrap();
        w.write(Bytes::copy_from_slice(data)).unwrap();
        let pins = self
            .meta
            .pin_blobs(std::slice::from_ref(&d), Duration::from_secs(60))
            .await
            .unwrap();
        ReceivedBlob::commit(self.blobs.as_ref(), &id, w.finish().unwrap(), &d, &pins).unwrap()
    }

    async fn link(&self, r: &str, blob: ReceivedBlob) {
        self.meta
            .commit_blob(
                FinishedBlob {
                    registry_id: &self.registry,
                    repo: &repo(r),
                    blob,
                    upload_id: "",
                },
                &event(),
            )
            .await
            .unwrap();
    }

    async fn put_manifest(&self, r: &str, blobs: &[Digest], tag: &str) -> Result<Digest, String> {
        let body = format!("{{\"blobs\":{:?},\"tag\":\"{tag}\"}}", blobs).into_bytes();
        let digest = Digest::sha256_of(&body);
        let m = ManifestRecord {
            digest: digest.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: None,
            annotations: None,
            body,
            required_blobs: blobs.to_vec(),
            required_manifests: vec![],
        };
        self.meta
            .put_manifest(
                &self.registry,
                &repo(r),
                &m,
                Some(&tag.parse().unwrap()),
                &event(),
            )
            .await
            .map(|_| digest)
            .map_err(|e| e.to_string())
    }

    async fn delete_manifest(&self, r: &str, d: &Digest) {
        self.meta
            .delete_manifest(&self.registry, &repo(r), d, &event())
            .await
            .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.check)
            .await
            .unwrap()
    }

    /// Every stored manifest's blobs are linked in its repository and their bytes are stored (a row, or a file).
    async fn no_manifest_lacks_its_bytes(&self) {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT r.child,
               CASE WHEN EXISTS (SELECT 1 FROM blob_links l WHERE l.registry_id = r.registry_id
                       AND l.repository = r.repository AND l.digest = r.child) THEN 1 ELSE 0 END,
               CASE WHEN EXISTS (SELECT 1 FROM blob_data d WHERE d.digest = r.child) THEN 1 ELSE 0 END
             FROM manifest_references r WHERE r.kind = 'blob'",
        )
        .fetch_all(&self.check)
        .await
        .unwrap();
        for (digest, linked, in_database) in rows {
            let (linked, in_database) = (linked != 0, in_database != 0);
            let file = self.blobs.blob_exists(&digest.parse().unwrap());
            assert!(
                linked && (in_database || file),
                "a manifest references {digest}, which is gone (linked {linked})"
            );
        }
    }
}

fn kinds(removed: &[Removed]) -> Vec<(&'static str, String)> {
    let mut v: Vec<_> = removed
        .iter()
        .map(|r| {
            let d = match r {
                Removed::Link { digest, .. }
                | Removed::Blob { digest, .. }
                | Removed::Manifest { digest, .. }
                | Removed::OrphanFile { digest, .. }
                | Removed::Tag { digest, .. } => digest.clone(),
                Removed::Upload { id, .. } | Removed::OrphanUpload { id, .. } => id.clone(),
            };
            (r.kind(), d)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn what_a_run_removes_and_keeps() {
    let e = env().await;
    let layer = e.place_file(&[7u8; 100_000]).await;
    let layer_d = layer.digest().clone();
    e.link("app", layer).await;
    let config = e.push_inline("app", b"config").await;
    let orphan = e.push_inline("app", b"pushed, never referenced").await;
    let m = e
        .put_manifest("app", &[config.clone(), layer_d.clone()], "v1")
        .await
        .unwrap();
    // The same bytes in a second repository, referenced there: they outlive app's deletion.
    let shared = e.push_inline("other", b"config").await;
    e.put_manifest("other", &[shared], "v1").await.unwrap();

    // Nothing is due within the grace period.
    let (removed, s) = e.run(3600).await;
    assert!(removed.is_empty(), "{removed:?}");
    assert_eq!(s.reclaimed_bytes, 0);
    // With none, the blob nobody references goes, link and bytes.
    let (removed, s) = e.run(0).await;
    assert_eq!(
        kinds(&removed),
        vec![("blob", orphan.to_string()), ("link", orphan.to_string())]
    );
    assert_eq!(s.reclaimed_bytes, 24);
    assert!(e.blobs.blob_exists(&layer_d));

    e.delete_manifest("app", &m).await;
    let (removed, s) = e.run(0).await;
    let mut want = vec![
        ("blob", layer_d.to_string()),
        ("link", config.to_string()),
        ("link", layer_d.to_string()),
    ];
    want.sort();
    assert_eq!(
        kinds(&removed),
        want,
        "the config's bytes stay: 'other' links them"
    );
    assert_eq!(s.reclaimed_bytes, 100_000);
    assert!(!e.blobs.blob_exists(&layer_d), "the layer's file is gone");
    assert_eq!(e.count("SELECT COUNT(*) FROM blob_data").await, 1);
    // Every review ended: nothing left queued but what is still needed.
    assert_eq!(e.run(0).await.0, vec![]);
    assert_eq!(e.count("SELECT COUNT(*) FROM gc_review").await, 0);
}

#[tokio::test]
async fn a_link_collected_first_refuses_the_manifest_that_comes_later() {
    let e = env().await;
    let d = e.push_inline("app", b"layer").await;
    let (removed, _) = e.run(0).await;
    assert_eq!(removed.len(), 2);
    // The push that uploaded it and now sends its manifest is refused, not stored pointing at nothing.
    let err = e.put_manifest("app", &[d], "v1").await.unwrap_err();
    assert!(err.contains("does not hold"), "{err}");
    e.no_manifest_lacks_its_bytes().await;
}

#[tokio::test]
async fn pinned_bytes_stay_until_the_upload_links_them() {
    let e = env().await;
    let data = [3u8; 80_000];
    let first = e.place_file(&data).await;
    let d = first.digest().clone();
    e.link("app", first).await;
    e.meta
        .unlink_blob(&e.registry, &repo("app"), &d, &event())
        .await
        .unwrap();
    // A second upload of the same bytes pins them, finds them stored and drops its own copy; then a run comes.
    let second = e.place_file(&data).await;
    let (removed, s) = e.run(0).await;
    assert!(removed.is_empty(), "pinned bytes were removed: {removed:?}");
    assert_eq!(s.postponed, 1);
    assert!(e.blobs.blob_exists(&d));
    // The link takes over from the pin.
    e.link("app", second).await;
    assert_eq!(e.count("SELECT COUNT(*) FROM blob_pins").await, 0);
    assert_eq!(
        e.meta
            .linked_blob_size(&e.registry, &repo("app"), &d)
            .await
            .unwrap(),
        Some(80_000)
    );
    assert!(e.blobs.blob_exists(&d));
}

#[tokio::test]
async fn a_file_no_row_knows_is_swept_unless_pinned() {
    let e = env().await;
    // Placed and never linked: the remains of a crash between the two steps, once its pin has lapsed.
    let lost = e.place_file(&[9u8; 70_000]).await;
    let lost_d = lost.digest().clone();
    drop(lost);
    let (removed, _) = e.run(0).await;
    assert!(removed.is_empty(), "a pinned file was swept: {removed:?}");
    sqlx::query("UPDATE blob_pins SET expires_at = 0")
        .execute(&e.check)
        .await
        .unwrap();
    let (removed, s) = e.run(0).await;
    assert_eq!(kinds(&removed), vec![("orphanFile", lost_d.to_string())]);
    assert_eq!(s.reclaimed_bytes, 70_000);
    assert!(!e.blobs.blob_exists(&lost_d));
}

#[derive(Clone, Debug)]
enum Op {
    Push { repo: usize, blob: usize },
    Manifest { repo: usize, blobs: Vec<usize> },
    DeleteManifest { repo: usize, nth: usize },
    Collect,
}

const BLOBS: [&[u8]; 4] = [b"b0", b"b1", b"b2", b"b3"];
const REPOS: [&str; 2] = ["r0", "r1"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..4usize).prop_map(|(repo, blob)| Op::Push { repo, blob }),
        2 => (0..2usize, proptest::collection::vec(0..4usize, 1..3))
            .prop_map(|(repo, blobs)| Op::Manifest { repo, blobs }),
        1 => (0..2usize, 0..4usize).prop_map(|(repo, nth)| Op::DeleteManifest { repo, nth }),
        2 => Just(Op::Collect),
    ]
}

async fn interleaving(ops: Vec<Op>) {
    let e = env().await;
    let mut manifests: Vec<Vec<Digest>> = vec![vec![], vec![]];
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Push { repo, blob } => {
                e.push_inline(REPOS[repo], BLOBS[blob]).await;
            }
            Op::Manifest { repo, blobs } => {
                let ds: Vec<Digest> = blobs.iter().map(|b| Digest::sha256_of(BLOBS[*b])).collect();
                // Refused when a blob is not linked (never pushed, or collected since): never stored broken.
                if let Ok(d) = e.put_manifest(REPOS[repo], &ds, &format!("t{i}")).await {
                    manifests[repo].push(d);
                }
            }
            Op::DeleteManifest { repo, nth } => {
                if !manifests[repo].is_empty() {
                    let n = nth % manifests[repo].len();
                    let d = manifests[repo].remove(n);
                    e.delete_manifest(REPOS[repo], &d).await;
                }
            }
            Op::Collect => {
                e.run(0).await;
            }
        }
        e.no_manifest_lacks_its_bytes().await;
    }
    // With nothing pushing, one run leaves nothing unneeded: every link is referenced, all bytes are linked.
    e.run(0).await;
    e.no_manifest_lacks_its_bytes().await;
    let unreferenced = e
        .count(
            "SELECT COUNT(*) FROM blob_links l WHERE NOT EXISTS (SELECT 1 FROM manifest_references r
             WHERE r.registry_id = l.registry_id AND r.repository = l.repository AND r.child = l.digest)",
        )
        .await;
    assert_eq!(unreferenced, 0, "an unneeded link survived a run");
    let unlinked = e
        .count("SELECT COUNT(*) FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM blob_links l WHERE l.digest = b.digest)")
        .await;
    assert_eq!(unlinked, 0, "unlinked bytes survived a run");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn no_manifest_ever_references_collected_bytes(ops in proptest::collection::vec(op(), 1..30)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(interleaving(ops));
    }
}

/// A registry whose retention policy (0 days) was enabled at `enabled` (RFC 3339).
async fn retention_env(enabled: String) -> Env {
    let mut s = RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
    s.policies.retention.status = moat_model::registry::PolicyStatus::Enabled;
    s.policies.retention.days = 0;
    s.policies.retention.last_updated_time = Some(enabled);
    env_with(s).await
}

#[tokio::test]
async fn retention_purges_what_lost_its_tag_after_the_policy_was_enabled() {
    let e = retention_env("2000-01-01T00:00:00Z".into()).await;
    let shared = e.push_inline("app", b"shared").await;
    let only_old = e.push_inline("app", b"only-old").await;
    let old = e
        .put_manifest("app", &[shared.clone(), only_old.clone()], "v1")
        .await
        .unwrap();
    let new = e
        .put_manifest("app", std::slice::from_ref(&shared), "v1")
        .await
        .unwrap();
    let (removed, _) = e.run(0).await;
    let got = kinds(&removed);
    assert!(got.contains(&("manifest", old.to_string())), "{got:?}");
    assert!(got.contains(&("blob", only_old.to_string())), "{got:?}");
    assert!(
        !got.iter()
            .any(|(_, d)| *d == new.to_string() || *d == shared.to_string()),
        "{got:?}"
    );
    assert_eq!(
        e.meta
            .audit_events(&moat_store::meta::AuditFilter {
                operation: Some("Purge".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );
    e.no_manifest_lacks_its_bytes().await;

    // Untagged before the policy was enabled: kept, as ACR keeps it.
    let later = retention_env("2999-01-01T00:00:00Z".into()).await;
    let b = later.push_inline("app", b"b").await;
    let first = later
        .put_manifest("app", std::slice::from_ref(&b), "v1")
        .await
        .unwrap();
    later.put_manifest("app", &[b], "v2").await.unwrap();
    later
        .meta
        .delete_tag(
            &later.registry,
            &repo("app"),
            &"v1".parse().unwrap(),
            &event(),
        )
        .await
        .unwrap();
    let (removed, _) = later.run(0).await;
    assert!(
        !kinds(&removed).contains(&("manifest", first.to_string())),
        "{removed:?}"
    );
}

#[tokio::test]
async fn a_run_that_stopped_before_its_commit_takes_nothing_away() {
    let e = env().await;
    let kept = e.place_file(&[5u8; 90_000]).await;
    let kept_d = kept.digest().clone();
    e.link("app", kept).await;
    e.put_manifest("app", std::slice::from_ref(&kept_d), "v1")
        .await
        .unwrap();
    // As a run leaves it when it stops after moving the file out and before its commit: the rows still there.
    assert!(e.blobs.trash_blob(&kept_d).unwrap());
    // And as one leaves it when it stops after its commit: no row, the file still in the trash.
    let gone = Digest::sha256_of(b"committed gone");
    e.blobs.create_upload("ab-01", false).unwrap();
    let mut w = e.blobs.open_upload("ab-01", 0, None).unwrap();
    w.write(Bytes::from_static(b"committed gone")).unwrap();
    w.finish().unwrap();
    e.blobs.commit_upload("ab-01", &gone).unwrap();
    assert!(e.blobs.trash_blob(&gone).unwrap());

    e.run(0).await;
    assert!(
        e.blobs.blob_exists(&kept_d),
        "the file of a live row was not put back"
    );
    assert!(!e.blobs.blob_exists(&gone));
    assert!(e.blobs.list_trash().unwrap().is_empty());
    e.no_manifest_lacks_its_bytes().await;
}

#[tokio::test]
async fn soft_deleted_manifests_keep_their_bytes_until_purged_and_can_be_restored() {
    let mut settings =
        RegistrySettings::new(Sku::Basic, moat_model::Location::parse("local").unwrap());
    settings.policies.soft_delete.status = moat_model::registry::PolicyStatus::Enabled;
    settings.policies.soft_delete.retention_days = 1;
    let e = env_with(settings).await;
    let layer = e.push_inline("app", b"soft-layer").await;
    let m = e
        .put_manifest("app", std::slice::from_ref(&layer), "v1")
        .await
        .unwrap();
    e.delete_manifest("app", &m).await;
    let (removed, _) = e.run(0).await;
    assert!(removed.is_empty(), "kept: {removed:?}");
    let kept = e
        .meta
        .deleted_manifests(&e.registry, &repo("app"))
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    let tags = e
        .meta
        .deleted_tags(&e.registry, &repo("app"))
        .await
        .unwrap();
    assert_eq!(
        (tags[0].tag.as_str(), tags[0].digest.as_str()),
        ("v1", m.as_str())
    );
    let v1: moat_model::Tag = "v1".parse().unwrap();
    e.meta
        .restore_manifest(&e.registry, &repo("app"), &m, Some(&v1), false, &event())
        .await
        .unwrap();
    assert_eq!(e.count("SELECT COUNT(*) FROM tags").await, 1);
    e.no_manifest_lacks_its_bytes().await;

    // Deleted again: after one day (as if), the collector purges it and its bytes.
    e.delete_manifest("app", &m).await;
    let later = GcOptions {
        grace: Duration::ZERO,
        dry_run: false,
        upload_ttl: Duration::from_secs(3600),
        share: None,
        sweep_files: false,
        clock_offset: Duration::from_secs(86_400),
    };
    let mut removed = Vec::new();
    Collector::new(e.meta.clone(), e.blobs.clone())
        .run(&later, &|_| false, &mut |r| removed.push(r.clone()))
        .await
        .unwrap();
    let got = kinds(&removed);
    assert!(got.contains(&("manifest", m.to_string())), "{got:?}");
    assert!(got.contains(&("tag", m.to_string())), "{got:?}");
    assert!(got.contains(&("blob", layer.to_string())), "{got:?}");
    let err = e
        .meta
        .restore_manifest(&e.registry, &repo("app"), &m, Some(&v1), false, &event())
        .await
        .unwrap_err();
    assert!(
        matches!(err, moat_store::meta::RestoreError::NotFound(_)),
        "{err}"
    );
}
