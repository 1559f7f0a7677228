//! The write of an import pipeline run (`MetadataStore::import_archive`): every artifact of an archive in one
//! transaction, each whole or not at all. Without ContinueOnErrors one artifact that cannot be written (an existing
//! tag without OverwriteTags) leaves the registry exactly as it was; with it, the others are written.

use bytes::Bytes;
use moat_model::{Digest, Reference, RegistrySettings, RepositoryName, Sku, Tag};
use moat_store::meta::{ImportWrite, ImportWriteError, ManifestRecord};
use moat_store::ReceivedBlob;

fn manifest(layer: &Digest, size: usize, salt: &str) -> ManifestRecord {
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{layer}","size":{size}}},"layers":[],"annotations":{{"salt":"{salt}"}}}}"#
    )
    .into_bytes();
    ManifestRecord {
        digest: Digest::sha256_of(&body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        subject: None,
        annotations: None,
        body,
        required_blobs: vec![layer.clone()],
        required_manifests: vec![],
    }
}

#[tokio::test]
async fn artifacts_are_written_whole_in_one_transaction() {
    let db = moat_store::testing::test_db().await;
    let meta = db.open().await;
    let settings =
        RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
    let reg = meta
        .create_registry("target", "target.test", "rg", &settings, false, None)
        .await
        .unwrap();
    let data = Bytes::from_static(b"layer bytes");
    let layer = Digest::sha256_of(&data);
    let received = || vec![ReceivedBlob::from_bytes(data.clone(), &layer).unwrap()];
    let (app, lib): (RepositoryName, RepositoryName) =
        ("app".parse().unwrap(), "lib".parse().unwrap());
    let v1: Tag = "v1".parse().unwrap();
    let (old, new, other) = (
        manifest(&layer, 11, "old"),
        manifest(&layer, 11, "new"),
        manifest(&layer, 11, "lib"),
    );
    let blobs = [(layer.clone(), 11u64)];
    let t_app = [(app.clone(), Some(v1.clone()))];
    let t_lib = [(lib.clone(), Some(v1.clone()))];
    let w = |targets: &[(RepositoryName, Option<Tag>)], m: &ManifestRecord| {
        (targets.to_vec(), vec![m.clone()])
    };
    let (first_t, first_m) = w(&t_app, &old);
    let first = ImportWrite {
        target_registry_id: &reg.id,
        targets: &first_t,
        manifests: &first_m,
        blobs: &blobs,
        force: false,
        events: &[],
    };
    let r = meta
        .import_archive(&[first], &received(), false)
        .await
        .unwrap();
    assert!(r.iter().all(Result::is_ok));
    let tag_of = |repo: RepositoryName| {
        let meta = meta.clone();
        let id = reg.id.clone();
        let v1 = v1.clone();
        async move {
            meta.manifest(&id, &repo, &Reference::Tag(v1))
                .await
                .unwrap()
                .map(|m| m.digest.to_string())
        }
    };
    assert_eq!(tag_of(app.clone()).await, Some(old.digest.to_string()));

    let (a_t, a_m) = w(&t_app, &new);
    let (b_t, b_m) = w(&t_lib, &other);
    let writes = |force| {
        [
            ImportWrite {
                target_registry_id: &reg.id,
                targets: &a_t,
                manifests: &a_m,
                blobs: &blobs,
                force,
                events: &[],
            },
            ImportWrite {
                target_registry_id: &reg.id,
                targets: &b_t,
                manifests: &b_m,
                blobs: &blobs,
                force,
                events: &[],
            },
        ]
    };
    // Without ContinueOnErrors: the existing tag refuses the whole archive; lib is not written either.
    let r = meta
        .import_archive(&writes(false), &received(), false)
        .await;
    assert!(matches!(r, Err(ImportWriteError::TagExists(_))), "{r:?}");
    assert_eq!(tag_of(lib.clone()).await, None);
    assert_eq!(tag_of(app.clone()).await, Some(old.digest.to_string()));
    // With it: app is left as it was, lib is written.
    let r = meta
        .import_archive(&writes(false), &received(), true)
        .await
        .unwrap();
    assert!(
        matches!(r[0], Err(ImportWriteError::TagExists(_))) && r[1].is_ok(),
        "{r:?}"
    );
    assert_eq!(tag_of(app.clone()).await, Some(old.digest.to_string()));
    assert_eq!(tag_of(lib.clone()).await, Some(other.digest.to_string()));
    // OverwriteTags: the tag moves.
    let r = meta
        .import_archive(&writes(true), &received(), false)
        .await
        .unwrap();
    assert!(r.iter().all(Result::is_ok));
    assert_eq!(tag_of(app).await, Some(new.digest.to_string()));
    // A blob neither received nor linked in the registry proves nothing.
    let stranger = Digest::sha256_of(b"never received");
    let (s_t, s_m) = w(&t_lib, &manifest(&stranger, 3, "s"));
    let unproven = ImportWrite {
        target_registry_id: &reg.id,
        targets: &s_t,
        manifests: &s_m,
        blobs: &[(stranger.clone(), 3)],
        force: true,
        events: &[],
    };
    let r = meta.import_archive(&[unproven], &[], false).await;
    assert!(matches!(r, Err(ImportWriteError::Unproven(_))), "{r:?}");
}
