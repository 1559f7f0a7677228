//! The archive against a real metadata store and blob directory: what `collect_export` takes from a registry
//! (an index's children, referrers of referrers, blobs kept in the database and in files), and an import of the
//! archive into another registry through the store's transaction, with the blobs' proofs the reader returns.

use bytes::Bytes;
use moat_model::{Digest, ParsedManifest, RegistrySettings, RepositoryName, Sku, Tag};
use moat_store::meta::{ImportWrite, ManifestRecord};
use moat_store::{BlobStore, LocalBlobStore, MetadataStore, ReceivedBlob};
use moat_transfer::archive::{
    collect_export, read_archive, write_archive, ArchiveError, StorePinner, TransferSigner,
    TrustPolicy,
};
use std::sync::Arc;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

struct Env {
    _dir: tempfile::TempDir,
    meta: MetadataStore,
    blobs: Arc<LocalBlobStore>,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let meta = MetadataStore::open(&format!("sqlite://{}", dir.path().join("m.db").display()))
        .await
        .unwrap();
    let blobs = Arc::new(LocalBlobStore::open(dir.path().join("storage")).unwrap());
    Env {
        _dir: dir,
        meta,
        blobs,
    }
}

async fn registry(e: &Env, name: &str) -> String {
    let settings =
        RegistrySettings::new(Sku::Premium, moat_model::Location::parse("local").unwrap());
    e.meta
        .create_registry(name, &format!("{name}.test"), "rg", &settings, false, None)
        .await
        .unwrap()
        .id
}

fn record(body: serde_json::Value, media_type: &str) -> ManifestRecord {
    let body = serde_json::to_vec(&body).unwrap();
    let parsed = ParsedManifest::parse(&body, media_type).unwrap();
    ManifestRecord::new(Digest::sha256_of(&body), &parsed, body)
}

fn desc(d: &Digest, size: usize, mt: &str) -> serde_json::Value {
    serde_json::json!({"mediaType": mt, "digest": d, "size": size})
}

/// A blob received as an upload would: small ones inline, large ones through an upload object and pins.
async fn receive(e: &Env, data: &[u8]) -> ReceivedBlob {
    let d = Digest::sha256_of(data);
    if data.len() <= 64 * 1024 {
        return ReceivedBlob::from_bytes(Bytes::copy_from_slice(data), &d).unwrap();
    }
    let pins = e
        .meta
        .pin_blobs(
            std::slice::from_ref(&d),
            std::time::Duration::from_secs(600),
        )
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    e.blobs.create_upload(&id, false).unwrap();
    let mut w = e.blobs.open_upload(&id, 0, None).unwrap();
    w.write(Bytes::copy_from_slice(data)).unwrap();
    ReceivedBlob::commit(e.blobs.as_ref(), &id, w.finish().unwrap(), &d, &pins).unwrap()
}

/// Writes manifests (the last one tagged `tag` when given) and their blobs into `repo`.
async fn put(
    e: &Env,
    reg: &str,
    repo: &str,
    tag: Option<&str>,
    manifests: &[ManifestRecord],
    blobs: &[&[u8]],
) {
    let mut received = Vec::new();
    for b in blobs {
        received.push(receive(e, b).await);
    }
    let sizes: Vec<(Digest, u64)> = received
        .iter()
        .map(|b| (b.digest().clone(), b.size()))
        .collect();
    let targets = vec![(
        repo.parse::<RepositoryName>().unwrap(),
        tag.map(|t| t.parse::<Tag>().unwrap()),
    )];
    e.meta
        .import_remote::<String>(
            &ImportWrite {
                target_registry_id: reg,
                targets: &targets,
                manifests,
                blobs: &sizes,
                force: true,
                events: &[],
            },
            &received,
        )
        .await
        .unwrap();
}

/// An index over two images (one with a 300 KB layer, kept as a file), a signature of the index, and an
/// attestation of the signature: everything `collect_export` must find from `app:v1`.
async fn seed(e: &Env, reg: &str) -> (Vec<ManifestRecord>, Vec<Vec<u8>>) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let small = b"small layer".to_vec();
    let img = |layer: &[u8]| {
        record(
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": desc(&Digest::sha256_of(&config), config.len(), "application/vnd.oci.image.config.v1+json"),
                "layers": [desc(&Digest::sha256_of(layer), layer.len(), "application/vnd.oci.image.layer.v1.tar")]}),
            OCI_MANIFEST,
        )
    };
    let (a, b) = (img(&big), img(&small));
    let index = record(
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            desc(&a.digest, a.body.len(), OCI_MANIFEST), desc(&b.digest, b.body.len(), OCI_MANIFEST)]}),
        OCI_INDEX,
    );
    put(
        e,
        reg,
        "app",
        Some("v1"),
        &[a.clone(), b.clone(), index.clone()],
        &[&config, &big, &small],
    )
    .await;
    let empty = b"{}".to_vec();
    let referrer = |subject: &ManifestRecord, payload: &[u8], mt: &str| {
        record(
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": mt,
                "config": desc(&Digest::sha256_of(&empty), 2, "application/vnd.oci.empty.v1+json"),
                "layers": [desc(&Digest::sha256_of(payload), payload.len(), "application/octet-stream")],
                "subject": desc(&subject.digest, subject.body.len(), &subject.media_type)}),
            OCI_MANIFEST,
        )
    };
    let sig_payload = b"signature".to_vec();
    let sig = referrer(&index, &sig_payload, "application/vnd.example.sig");
    put(
        e,
        reg,
        "app",
        None,
        std::slice::from_ref(&sig),
        &[&empty, &sig_payload],
    )
    .await;
    let att_payload = b"attestation of the signature".to_vec();
    let att = referrer(&sig, &att_payload, "application/vnd.example.att");
    put(
        e,
        reg,
        "app",
        None,
        std::slice::from_ref(&att),
        &[&empty, &att_payload],
    )
    .await;
    (
        vec![a, b, index, sig, att],
        vec![config, big, small, empty, sig_payload, att_payload],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn collect_finds_children_and_referrers_of_referrers() {
    let e = env().await;
    let reg = registry(&e, "src").await;
    let (manifests, blobs) = seed(&e, &reg).await;
    let set = collect_export(&e.meta, &reg, &["app:v1".into(), "app:v1".into()])
        .await
        .unwrap();
    assert_eq!(
        set.artifacts.len(),
        1,
        "the same artifact twice is exported once"
    );
    let a = &set.artifacts[0];
    assert_eq!(
        (a.repository.as_str(), a.tag.as_deref()),
        ("app", Some("v1"))
    );
    assert_eq!(a.digest, manifests[2].digest);
    assert_eq!(a.manifests.last(), Some(&manifests[2].digest), "root last");
    let mut want: Vec<Digest> = manifests.iter().map(|m| m.digest.clone()).collect();
    want.sort();
    let mut got = a.manifests.clone();
    got.sort();
    assert_eq!(
        got, want,
        "both children, the signature and the signature's attestation"
    );
    let mut want_blobs: Vec<(Digest, u64)> = blobs
        .iter()
        .map(|b| (Digest::sha256_of(b), b.len() as u64))
        .collect();
    want_blobs.sort();
    want_blobs.dedup();
    assert_eq!(set.blobs, want_blobs);
    assert_eq!(
        set.inline.len(),
        want_blobs.len() - 1,
        "all but the large layer are in the database"
    );
    for m in &manifests {
        let got = set.manifests.iter().find(|x| x.digest == m.digest).unwrap();
        assert_eq!(got.body, m.body, "byte for byte");
    }
    assert_eq!(set.exporter, "src.test");

    // By digest: no tag; `repo` alone means `repo:latest`, which does not exist.
    let by_digest = collect_export(&e.meta, &reg, &[format!("app@{}", manifests[0].digest)])
        .await
        .unwrap();
    assert_eq!(by_digest.artifacts[0].tag, None);
    assert_eq!(
        by_digest.artifacts[0].manifests,
        vec![manifests[0].digest.clone()]
    );
    let err = collect_export(&e.meta, &reg, &["app".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ArchiveError::ArtifactNotFound(a) if a == "app:latest"),
        "{err}"
    );
    let err = collect_export(&e.meta, &reg, &["app:v1".into(), "other:v2".into()])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("'other:v2' does not exist"),
        "{err}"
    );
    let many: Vec<String> = (0..51).map(|i| format!("app:t{i}")).collect();
    assert!(matches!(
        collect_export(&e.meta, &reg, &many).await.unwrap_err(),
        ArchiveError::TooManyArtifacts { given: 51, max: 50 }
    ));
    assert!(matches!(
        collect_export(&e.meta, &reg, &["Bad Name".into()])
            .await
            .unwrap_err(),
        ArchiveError::BadArtifact { .. }
    ));
    // Another registry of the same store sees none of it.
    let other = registry(&e, "other").await;
    assert!(matches!(
        collect_export(&e.meta, &other, &["app:v1".into()])
            .await
            .unwrap_err(),
        ArchiveError::ArtifactNotFound(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_imports_into_another_server_with_every_digest() {
    let src = env().await;
    let reg = registry(&src, "src").await;
    let (manifests, _) = seed(&src, &reg).await;
    let set = collect_export(&src.meta, &reg, &["app:v1".into()])
        .await
        .unwrap();
    let signer = TransferSigner::from_seed("kid-1", &[9u8; 32]).unwrap();
    let blobs = src.blobs.clone();
    let (bytes, summary) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let s = write_archive(&set, blobs.as_ref(), &signer, &mut out, 0, &mut |_, _| {
            Ok(())
        })
        .unwrap();
        (out, s)
    })
    .await
    .unwrap();

    // The other side shares nothing with the first but the archive's bytes.
    let dst = env().await;
    let target = registry(&dst, "dst").await;
    let trust = TrustPolicy::Require(vec![TransferSigner::from_seed("kid-1", &[9u8; 32])
        .unwrap()
        .public_key()]);
    let pinner = StorePinner {
        meta: dst.meta.clone(),
        handle: tokio::runtime::Handle::current(),
        ttl: std::time::Duration::from_secs(600),
        job: None,
    };
    let blobs = dst.blobs.clone();
    let expected = summary.digest.clone();
    let read = tokio::task::spawn_blocking(move || {
        read_archive(
            &mut &bytes[..],
            &trust,
            Some(&expected),
            blobs.as_ref(),
            &pinner,
            &|_, _| {},
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(read.catalog_digest, summary.digest);
    assert_eq!(read.signed_by.as_deref(), Some("kid-1"));
    let artifact = &read.artifacts[0];
    let (ms, bs) = read.image(artifact);
    let targets = vec![(
        artifact.repository.parse::<RepositoryName>().unwrap(),
        artifact.tag.as_ref().map(|t| t.parse::<Tag>().unwrap()),
    )];
    let outcomes = dst
        .meta
        .import_archive(
            &[ImportWrite {
                target_registry_id: &target,
                targets: &targets,
                manifests: &ms,
                blobs: &bs,
                force: false,
                events: &[],
            }],
            &read.received,
            false,
        )
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.is_ok()));
    if let Some(p) = &read.pins {
        dst.meta.unpin(p).await.unwrap();
    }
    let repo: RepositoryName = "app".parse().unwrap();
    let tagged = dst
        .meta
        .manifest(
            &target,
            &repo,
            &moat_model::Reference::Tag("v1".parse().unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tagged.digest, manifests[2].digest.as_str());
    for m in &manifests {
        let got = dst
            .meta
            .manifest(
                &target,
                &repo,
                &moat_model::Reference::Digest(m.digest.clone()),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.body.as_ref(), m.body.as_slice());
    }
    for (d, size) in &bs {
        assert_eq!(
            dst.meta.linked_blob_size(&target, &repo, d).await.unwrap(),
            Some(*size as i64)
        );
    }
    // The referrers API of the target lists the signature under the index, and the attestation under it.
    let refs = dst
        .meta
        .referrers(&target, &repo, &manifests[2].digest)
        .await
        .unwrap();
    assert_eq!(
        refs.iter().map(|r| r.digest.as_str()).collect::<Vec<_>>(),
        [manifests[3].digest.as_str()]
    );
    let refs = dst
        .meta
        .referrers(&target, &repo, &manifests[3].digest)
        .await
        .unwrap();
    assert_eq!(
        refs.iter().map(|r| r.digest.as_str()).collect::<Vec<_>>(),
        [manifests[4].digest.as_str()]
    );
    // The large layer is a file in the target's blob store.
    assert!(dst.blobs.blob_exists(&Digest::sha256_of(
        &(0..300_000u32)
            .map(|i| (i * 31 % 253) as u8)
            .collect::<Vec<u8>>()
    )));
}

/// Rough throughput of an archive write and read against a plain copy of the same bytes, in the same run
/// (`cargo test --release -p moat-transfer --test archive_store -- --ignored --nocapture`). The benchmark proper
/// (Azurite, LocalDirectory with fsync) is the runs' workload in crates/bench.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn throughput_against_a_plain_copy() {
    use std::io::{Read, Write};
    let e = env().await;
    let reg = registry(&e, "src").await;
    let layers: Vec<Vec<u8>> = (0..4u8)
        .map(|n| {
            (0..(128u32 << 20))
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ n)
                .collect()
        })
        .collect();
    let config = b"{}".to_vec();
    let m = record(
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": desc(&Digest::sha256_of(&config), 2, "application/vnd.oci.image.config.v1+json"),
            "layers": layers.iter().map(|l| desc(&Digest::sha256_of(l), l.len(), "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>()}),
        OCI_MANIFEST,
    );
    let refs: Vec<&[u8]> = std::iter::once(config.as_slice())
        .chain(layers.iter().map(|l| l.as_slice()))
        .collect();
    put(&e, &reg, "big", Some("v1"), &[m], &refs).await;
    drop(layers);
    let set = collect_export(&e.meta, &reg, &["big:v1".into()])
        .await
        .unwrap();
    let dir = tempfile::tempdir_in("/work").unwrap();
    let blobs = e.blobs.clone();
    let meta = e.meta.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let signer = TransferSigner::from_seed("k", &[1u8; 32]).unwrap();
        for round in 0..2 {
            let t = std::time::Instant::now();
            let mut f = std::fs::File::create(dir.path().join("plain")).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            for (d, size) in &set.blobs {
                let mut r = blobs.open_blob(d, 0, *size).unwrap_or_else(|_| Box::new(std::io::empty()));
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    f.write_all(&buf[..n]).unwrap();
                }
            }
            f.sync_all().unwrap();
            let plain = t.elapsed();
            let t = std::time::Instant::now();
            let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.path().join("a.tar")).unwrap());
            let s = write_archive(&set, blobs.as_ref(), &signer, &mut f, 0, &mut |_, _| Ok(())).unwrap();
            f.into_inner().unwrap().sync_all().unwrap();
            let write = t.elapsed();
            let mb = s.size as f64 / 1e6;
            // Reading: a plain read of the file against the archive read into a fresh blob store.
            let t = std::time::Instant::now();
            let mut r = std::fs::File::open(dir.path().join("a.tar")).unwrap();
            let _ = std::io::copy(&mut r, &mut std::io::sink());
            let plain_read = t.elapsed();
            let target = LocalBlobStore::open(dir.path().join(format!("dst{round}"))).unwrap();
            let pinner = StorePinner { meta: meta.clone(), handle: handle.clone(), ttl: std::time::Duration::from_secs(600), job: None };
            let t = std::time::Instant::now();
            let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(dir.path().join("a.tar")).unwrap());
            read_archive(&mut r, &TrustPolicy::AnySignatureOrNone, Some(&s.digest), &target, &pinner, &|_, _| {}).unwrap();
            let read = t.elapsed();
            println!(
                "round {round}: {mb:.0} MB; write {:.0} MB/s vs plain copy {:.0} MB/s ({:.0}%); read into a store {:.0} MB/s vs plain read {:.0} MB/s",
                mb / write.as_secs_f64(),
                mb / plain.as_secs_f64(),
                100.0 * plain.as_secs_f64() / write.as_secs_f64(),
                mb / read.as_secs_f64(),
                mb / plain_read.as_secs_f64(),
            );
        }
    })
    .await
    .unwrap();
}
