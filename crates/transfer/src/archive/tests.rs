//! Round trips through the writer and the reader, and every way an archive can be damaged.

use super::write::write_inner;
use super::*;
use bytes::Bytes;
use moat_model::ParsedManifest;
use moat_store::{BlobStore, LocalBlobStore};
use std::collections::BTreeMap;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalBlobStore,
    set: ExportSet,
    signer: TransferSigner,
}

fn put(store: &LocalBlobStore, data: &[u8]) -> (Digest, u64) {
    let d = Digest::sha256_of(data);
    let id = uuid::Uuid::new_v4().to_string();
    store.create_upload(&id, false).unwrap();
    let mut w = store.open_upload(&id, 0, None).unwrap();
    w.write(Bytes::copy_from_slice(data)).unwrap();
    w.finish().unwrap();
    store.commit_upload(&id, &d).unwrap();
    (d, data.len() as u64)
}

fn manifest(body: serde_json::Value, media_type: &str) -> ManifestRecord {
    let body = serde_json::to_vec(&body).unwrap();
    let d = Digest::sha256_of(&body);
    let parsed = ParsedManifest::parse(&body, media_type).unwrap();
    ManifestRecord::new(d, &parsed, body)
}

fn desc(d: &Digest, size: u64, mt: &str) -> serde_json::Value {
    serde_json::json!({"mediaType": mt, "digest": d, "size": size})
}

/// A two-platform index (one layer is large, one config inline) with a signature referring to the index.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::open(dir.path()).unwrap();
    let big: Vec<u8> = (0..(3 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let layer_a = put(&store, &big);
    let layer_b = put(&store, &vec![9u8; 200_000]);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_d = Digest::sha256_of(&config);
    let img = |layer: &(Digest, u64)| {
        manifest(
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": desc(&config_d, config.len() as u64, "application/vnd.oci.image.config.v1+json"),
                "layers": [desc(&layer.0, layer.1, "application/vnd.oci.image.layer.v1.tar")]}),
            OCI_MANIFEST,
        )
    };
    let (m1, m2) = (img(&layer_a), img(&layer_b));
    let index = manifest(
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            desc(&m1.digest, m1.body.len() as u64, OCI_MANIFEST),
            desc(&m2.digest, m2.body.len() as u64, OCI_MANIFEST)]}),
        OCI_INDEX,
    );
    let sig_layer = put(&store, &vec![1u8; 100_000]);
    let empty = b"{}".to_vec();
    let empty_d = Digest::sha256_of(&empty);
    let sig = manifest(
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
            "config": desc(&empty_d, 2, "application/vnd.oci.empty.v1+json"),
            "layers": [desc(&sig_layer.0, sig_layer.1, "application/octet-stream")],
            "subject": desc(&index.digest, index.body.len() as u64, OCI_INDEX)}),
        OCI_MANIFEST,
    );
    let mut inline = BTreeMap::new();
    inline.insert(config_d.clone(), Bytes::from(config.clone()));
    inline.insert(empty_d.clone(), Bytes::from(empty.clone()));
    let mut blobs = vec![
        layer_a.clone(),
        layer_b.clone(),
        sig_layer.clone(),
        (config_d.clone(), config.len() as u64),
        (empty_d.clone(), 2),
    ];
    blobs.sort();
    let artifact = ExportedArtifact {
        repository: "app/web".into(),
        tag: Some("v1".into()),
        digest: index.digest.clone(),
        media_type: OCI_INDEX.into(),
        size: index.body.len() as u64,
        manifests: vec![
            sig.digest.clone(),
            m2.digest.clone(),
            m1.digest.clone(),
            index.digest.clone(),
        ],
        blobs: blobs.iter().map(|(d, _)| d.clone()).collect(),
    };
    let set = ExportSet {
        artifacts: vec![artifact],
        manifests: vec![index, m1, m2, sig],
        blobs,
        inline,
        exporter: "127.0.0.1:5000".into(),
        created: "2026-12-07T12:00:00Z".into(),
    };
    Fixture {
        _dir: dir,
        store,
        set,
        signer: TransferSigner::from_seed("1765108800-000000000-abcd", &[42u8; 32]).unwrap(),
    }
}

fn write(f: &Fixture, signed: bool) -> (Vec<u8>, Digest) {
    let mut out = Vec::new();
    let s = write_inner(
        &f.set,
        &f.store,
        signed.then_some(&f.signer),
        &mut out,
        0,
        &mut |_, _| Ok(()),
    )
    .unwrap();
    assert_eq!(s.size, out.len() as u64);
    (out, s.digest)
}

struct NoPins;
impl Pinner for NoPins {
    fn pin(&self, _: &[Digest]) -> Result<moat_store::gc::BlobPins, ArchiveError> {
        Err(ArchiveError::Stopped("pins need a metadata store".into()))
    }
    fn unpin(&self, _: &moat_store::gc::BlobPins) {}
}

fn trusted(f: &Fixture) -> TrustPolicy {
    TrustPolicy::Require(vec![f.signer.public_key()])
}

/// Reads an archive's head and entries into a fresh store, with the large blobs' pins made by a real metadata
/// store.
async fn read_into(
    bytes: Vec<u8>,
    trust: TrustPolicy,
    expected: Option<Digest>,
) -> Result<ReadArchive, ArchiveError> {
    let dir = tempfile::tempdir().unwrap();
    let meta = moat_store::MetadataStore::open(&format!("sqlite://{}/m.db", dir.path().display()))
        .await
        .unwrap();
    let store = LocalBlobStore::open(dir.path().join("blobs")).unwrap();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let pinner = StorePinner {
            meta,
            handle,
            ttl: std::time::Duration::from_secs(3600),
            job: None,
        };
        let _keep = dir;
        read_archive(
            &mut &bytes[..],
            &trust,
            expected.as_ref(),
            &store,
            &pinner,
            &|_, _| {},
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_preserves_every_manifest_and_blob() {
    let f = fixture();
    let (bytes, digest) = write(&f, true);
    assert_eq!(bytes.len() as u64, archive_size(&f.set, &f.signer));
    assert_eq!(digest, Digest::sha256_of(&bytes));
    let read = read_into(bytes, trusted(&f), Some(digest.clone()))
        .await
        .unwrap();
    assert_eq!(read.catalog_digest, digest);
    assert_eq!(read.signed_by.as_deref(), Some(f.signer.kid()));
    assert_eq!(read.artifacts, f.set.artifacts);
    assert_eq!(read.exporter, "127.0.0.1:5000");
    let mut got: Vec<_> = read
        .manifests
        .iter()
        .map(|m| (m.digest.clone(), m.body.clone()))
        .collect();
    let mut want: Vec<_> = f
        .set
        .manifests
        .iter()
        .map(|m| (m.digest.clone(), m.body.clone()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "manifests byte for byte");
    let mut received: Vec<_> = read
        .received
        .iter()
        .map(|b| (b.digest().clone(), b.size()))
        .collect();
    received.sort();
    assert_eq!(received, f.set.blobs);
    assert!(
        read.received.iter().any(|b| b.inline().is_some()),
        "small blobs kept inline"
    );
    assert!(read.pins.is_some());
    let (ms, bs) = read.image(&read.artifacts[0]);
    assert_eq!(
        ms.last().unwrap().digest,
        f.set.artifacts[0].digest,
        "root last"
    );
    assert_eq!(bs.len(), 5);
    // Unsigned archives pass a policy that does not require signatures.
    let (unsigned, _) = write(&f, false);
    let read = read_into(unsigned, TrustPolicy::AnySignatureOrNone, None)
        .await
        .unwrap();
    assert!(read.signed_by.is_none());
}

#[test]
fn writes_are_deterministic_and_skip_resumes_the_same_stream() {
    let f = fixture();
    let (a, da) = write(&f, true);
    let (b, db) = write(&f, true);
    assert_eq!(a, b);
    assert_eq!(da, db);
    for skip in [
        0u64,
        1,
        512,
        5000,
        a.len() as u64 / 2,
        a.len() as u64 - 1,
        a.len() as u64,
    ] {
        let mut tail = Vec::new();
        let s = write_archive(&f.set, &f.store, &f.signer, &mut tail, skip, &mut |_, _| {
            Ok(())
        })
        .unwrap();
        assert_eq!(s.digest, da, "skip {skip}");
        assert_eq!(tail, a[skip as usize..], "skip {skip}");
    }
}

#[test]
fn steps_report_boundaries_and_can_stop_the_write() {
    let f = fixture();
    let mut steps = Vec::new();
    let mut out = Vec::new();
    write_archive(&f.set, &f.store, &f.signer, &mut out, 0, &mut |_, s| {
        steps.push(s);
        Ok(())
    })
    .unwrap();
    let last = steps.last().unwrap();
    assert!(last.boundary);
    assert_eq!(last.blobs_done, 9, "4 manifests and 5 blobs");
    assert_eq!(last.total, out.len() as u64);
    let mut n = 0;
    let e = write_archive(
        &f.set,
        &f.store,
        &f.signer,
        &mut Vec::new(),
        0,
        &mut |_, s| {
            n += s.boundary as usize;
            if n == 3 {
                return Err(ArchiveError::Stopped("cancelled".into()));
            }
            Ok(())
        },
    )
    .unwrap_err();
    assert!(matches!(e, ArchiveError::Stopped(_)));
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

/// The offset of an entry's data: its header is the 512 bytes before it.
fn data_of(bytes: &[u8], name: &str) -> usize {
    find(bytes, name.as_bytes()) + 512
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_archives_are_refused_with_what_is_wrong() {
    let f = fixture();
    let (good, digest) = write(&f, true);
    let big = f
        .set
        .blobs
        .iter()
        .max_by_key(|(_, s)| *s)
        .unwrap()
        .0
        .clone();
    let small = f.set.inline.keys().next().unwrap().clone();
    let check = |bytes: Vec<u8>, trust: TrustPolicy, expected: Option<Digest>| async move {
        read_into(bytes, trust, expected).await.unwrap_err()
    };

    // One byte of a large blob.
    let mut b = good.clone();
    let at = data_of(&good, &blob_path(&big)) + 1000;
    b[at] ^= 1;
    let e = check(b, trusted(&f), None).await;
    assert!(
        matches!(&e, ArchiveError::DigestMismatch { digest, .. } if digest == &big),
        "{e}"
    );

    // One byte of a small (inline) blob.
    let mut b = good.clone();
    b[data_of(&good, &blob_path(&small))] ^= 1;
    let e = check(b, trusted(&f), None).await;
    assert!(
        matches!(&e, ArchiveError::DigestMismatch { digest, .. } if digest == &small),
        "{e}"
    );

    // The contents list: a size changed (a digit that keeps the JSON valid).
    let mut b = good.clone();
    let c = data_of(&good, "moat-transfer.json\0");
    let at = c + find(&good[c..], b"\"created\":\"2026") + 14;
    b[at] = b'7';
    let e = check(b, trusted(&f), None).await;
    assert!(matches!(e, ArchiveError::BadSignature(_)), "{e}");

    // The signature.
    let mut b = good.clone();
    let at = data_of(&good, "moat-transfer.json.sig") + 3;
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    let e = check(b, trusted(&f), None).await;
    assert!(matches!(e, ArchiveError::BadSignature(_)), "{e}");

    // Truncated anywhere: in the head, in a blob, before the end marker.
    for cut in [100, 3000, good.len() / 2, good.len() - 1024 - 10] {
        let e = check(good[..cut].to_vec(), trusted(&f), None).await;
        assert!(matches!(e, ArchiveError::Truncated(_)), "cut at {cut}: {e}");
    }

    // The end marker cut off entirely: the archive's digest no longer matches.
    let e = check(
        good[..good.len() - 1024].to_vec(),
        trusted(&f),
        Some(digest.clone()),
    )
    .await;
    assert!(matches!(e, ArchiveError::CatalogMismatch { .. }), "{e}");

    // Unsigned with a required signature; signed by a key this import does not trust.
    let (unsigned, _) = write(&f, false);
    let e = check(unsigned, trusted(&f), None).await;
    assert!(matches!(e, ArchiveError::Unsigned), "{e}");
    let other = TransferSigner::from_seed("k2", &[3u8; 32]).unwrap();
    let e = check(
        good.clone(),
        TrustPolicy::Require(vec![other.public_key()]),
        None,
    )
    .await;
    assert!(matches!(e, ArchiveError::UntrustedSigner { .. }), "{e}");
    let e = check(good.clone(), TrustPolicy::Require(vec![]), None).await;
    assert!(matches!(e, ArchiveError::UntrustedSigner { .. }), "{e}");

    // The wrong archive for the run.
    let e = check(good.clone(), trusted(&f), Some(Digest::sha256_of(b"other"))).await;
    assert!(matches!(e, ArchiveError::CatalogMismatch { .. }), "{e}");

    // Extra data after the end.
    let mut b = good.clone();
    b.extend_from_slice(&tar::header("extra", 0, tar::Kind::File));
    let e = check(b, trusted(&f), None).await;
    assert!(matches!(e, ArchiveError::Corrupt(_)), "{e}");

    // Not an archive at all.
    let e = check(b"hello".repeat(200), trusted(&f), None).await;
    assert!(
        matches!(e, ArchiveError::Corrupt(_) | ArchiveError::NotAnArchive(_)),
        "{e}"
    );
}

#[test]
fn reordered_entries_are_refused_before_any_blob_is_stored() {
    let f = fixture();
    let (good, _) = write(&f, true);
    // Swap two blob entries of equal length (their headers and data): the list's order no longer holds.
    let entries = contents::entries(&f.set);
    let (a, b) = (&entries[4], &entries[5]);
    let (pa, pb) = (
        data_of(&good, &blob_path(&a.digest)) - 512,
        data_of(&good, &blob_path(&b.digest)) - 512,
    );
    let (la, lb) = (
        tar::entry_len("x", a.size) as usize,
        tar::entry_len("x", b.size) as usize,
    );
    let mut swapped = good[..pa].to_vec();
    swapped.extend_from_slice(&good[pb..pb + lb]);
    swapped.extend_from_slice(&good[pa + la..pb]);
    swapped.extend_from_slice(&good[pa..pa + la]);
    swapped.extend_from_slice(&good[pb + lb..]);
    assert_eq!(swapped.len(), good.len());
    let dir = tempfile::tempdir().unwrap();
    let store = LocalBlobStore::open(dir.path()).unwrap();
    let mut input = &swapped[..];
    let r = ArchiveReader::open(&mut input, &trusted(&f)).unwrap();
    let e = r.receive(&store, None, None, &|_, _| {}).unwrap_err();
    assert!(
        matches!(e, ArchiveError::Corrupt(_) | ArchiveError::Stopped(_)),
        "{e}"
    );
    assert!(store.list_blobs().unwrap().is_empty());
    // Without pins, a large blob is never stored.
    let mut input = &good[..];
    let r = ArchiveReader::open(&mut input, &trusted(&f)).unwrap();
    assert!(!r.blobs_to_pin().is_empty());
    let e = r.receive(&store, None, None, &|_, _| {}).unwrap_err();
    assert!(matches!(e, ArchiveError::Stopped(_)), "{e}");
    let _ = NoPins;
}

#[test]
fn index_names_each_artifact_once() {
    let f = fixture();
    let mut a2 = f.set.artifacts[0].clone();
    a2.repository = "other".into();
    let json: serde_json::Value =
        serde_json::from_slice(&contents::index_json(&[f.set.artifacts[0].clone(), a2])).unwrap();
    let names: Vec<&str> = json["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["annotations"][contents::REF_NAME].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app/web:v1", "other:v1"]);
    let one: serde_json::Value =
        serde_json::from_slice(&contents::index_json(&f.set.artifacts)).unwrap();
    assert_eq!(one["manifests"][0]["annotations"][contents::REF_NAME], "v1");
    assert_eq!(
        one["manifests"][0]["annotations"]["io.moat.repository"],
        "app/web"
    );
}
